/* nvhook's front door: the program engines execute as nvidia-container-runtime-hook,
 * nvidia-container-toolkit, nvidia-container-runtime and nvhook.
 *
 * It answers, without an interpreter, the cases that need no decision:
 *   - a prestart/createRuntime hook for a container that surely asks for no GPU: exit 0;
 *   - poststart/poststop hooks: exit 0;
 *   - the runtime shim: every command but a `create` that may ask for a GPU is exec'd
 *     into the real runtime that Python chose before (same argv, env, cwd).
 * "Surely asks for nothing" is nvhook/gate.py's test on config.json's bytes, with the
 * byte strings and the runtime that Python prepared (nvhook/frontprep.py) while the config
 * file is unchanged. Every other case, and any doubt, execs the Python launcher of the same
 * name (NVHOOK_PYDIR/<name>) with the same argv; the hook's state goes along on stdin.
 *
 * Hostile input (the state, config.json) is read into fixed buffers; config.json is
 * opened O_NONBLOCK and must be a regular file; nothing is allocated from its sizes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "front.h"

#ifndef NVHOOK_PYDIR
#define NVHOOK_PYDIR "/usr/libexec/nvhook/py"
#endif
#ifndef NVHOOK_FRONT_DIR
#define NVHOOK_FRONT_DIR "/run/nvhook"
#endif
#define DEFAULT_CONFIG "/etc/nvhook/config.toml"

#define STATE_MAX (256 * 1024)
#define SPEC_MAX (4 * 1024 * 1024)
#define FACTS_MAX (64 * 1024)
#define MEMO_MAX (512 * 1024)
#define IO_MAX (256 * 1024)
#define LIST_NAMES 1024
#define PATHBUF 4096

/* nvhook/runtime.py looks for this to never take the front for a real runtime. */
__attribute__((used)) static const char front_marker[] = "nvhook-front-marker-1";

static const struct front_str base_needles[] = {
	{ "NVIDIA_VISIBLE_DEVICES", 22 }, { "CUDA_VERSION", 12 },
};

static char state[STATE_MAX];
static size_t state_len;
static int state_read, state_partial;
static char spec[SPEC_MAX];
static size_t spec_len;
static char memo_buf[MEMO_MAX];
static struct front_memo memo;
static char io_buf[IO_MAX], expect_buf[IO_MAX];
static char names_area[IO_MAX];
static char *names[LIST_NAMES];
static char facts_buf[FACTS_MAX];
static struct front_facts facts;
static char **g_argv;

static const char *const python_names[] = {
	"nvhook", "nvidia-container-runtime-hook", "nvidia-container-toolkit",
	"nvidia-container-runtime",
};

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static int str_is(struct front_str s, const char *z)
{
	return s.n == strlen(z) && memcmp(s.p, z, s.n) == 0;
}

/* Hand everything to Python: the launcher of the same name, the same argv. */
static __attribute__((noreturn)) void to_python(void)
{
	char path[PATHBUF];
	const char *name = "nvhook", *me = g_argv[0] ? base_name(g_argv[0]) : "";
	size_t i;

	for (i = 0; i < sizeof(python_names) / sizeof(python_names[0]); i++)
		if (strcmp(me, python_names[i]) == 0)
			name = python_names[i];
	if (state_read) {
		/* The state was read from stdin: give Python the same bytes (and the rest). */
		int fd = memfd_create("nvhook-state", MFD_CLOEXEC);
		size_t off = 0;

		if (fd < 0)
			goto fail;
		while (off < state_len) {
			ssize_t w = write(fd, state + off, state_len - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				goto fail;
			off += (size_t)w;
		}
		while (state_partial) {
			ssize_t r = read(0, state, sizeof(state)), w;

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			for (off = 0; off < (size_t)r; off += (size_t)w) {
				w = write(fd, state + off, (size_t)r - off);
				if (w < 0 && errno == EINTR) {
					w = 0;
					continue;
				}
				if (w <= 0)
					goto fail;
			}
		}
		if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0)
			goto fail;
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/%s", NVHOOK_PYDIR, name);
	g_argv[0] = path;
	execv(path, g_argv);
fail:
	fprintf(stderr, "nvhook: cannot start %s/%s: %s; fix: reinstall nvhook "
		"(python3 -m nvhook.install, or the .deb)\n", NVHOOK_PYDIR, name, strerror(errno));
	exit(1);
}

static int read_all(int fd, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;

	while (n < cap) {
		ssize_t r = read(fd, buf + n, cap - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			*len = n;
			return 0;
		}
		n += (size_t)r;
	}
	*len = n;
	return 1;   /* full: there may be more */
}

/* A path Python's os.path.abspath leaves as it is (absolute, no ., .., //, trailing /). */
static int plain_abs(const char *p)
{
	size_t n = strlen(p);

	return p[0] == '/' && n > 1 && n < PATHBUF && p[n - 1] != '/' && !strstr(p, "//") &&
	       !strstr(p, "/./") && !strstr(p, "/../") &&
	       !(n >= 2 && strcmp(p + n - 2, "/.") == 0) &&
	       !(n >= 3 && strcmp(p + n - 3, "/..") == 0);
}

/* Read a cache file nvhook wrote: a regular file owned by us, writable by no one else. */
static int read_trusted(const char *path, char *buf, size_t cap, size_t *len)
{
	struct stat st;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 022)) {
		close(fd);
		return -1;
	}
	r = read_all(fd, buf, cap, len);
	close(fd);
	return r == 0 ? 0 : -1;
}

/* The config's identity ("DEV INO SIZE MTIME_NS", "none" without a file) and the name of
 * its file of the given kind (nvhook/frontprep.py's facts_path, memo.py's memo_path). */
static int config_key(const char *config, char *key, size_t cap)
{
	struct stat st;

	if (!config) {
		snprintf(key, cap, "none");
		return 0;
	}
	if (!plain_abs(config) || stat(config, &st) != 0)
		return -1;
	snprintf(key, cap, "%llu %llu %lld %lld", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino, (long long)st.st_size,
		 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
	return 0;
}

static void cache_name(const char *config, const char *kind, const char *suffix, char *out,
		       size_t cap)
{
	const char *name = config ? config : "";

	snprintf(out, cap, "%s/%s-%08x%08x.%s", NVHOOK_FRONT_DIR, kind,
		 front_crc32(name, strlen(name), 0), front_crc32(name, strlen(name), 1), suffix);
}

/* The facts for config (NULL: no file), read into `facts` if trusted and current.
 * 0 when loaded, -1 when Python must prepare them. */
static int load_facts(const char *config)
{
	char path[PATHBUF], key[128];
	size_t len;

	if (config_key(config, key, sizeof(key)) != 0)
		return -1;
	cache_name(config, "front", "facts", path, sizeof(path));
	if (read_trusted(path, facts_buf, sizeof(facts_buf), &len) != 0 ||
	    front_parse_facts(facts_buf, len, &facts) != 0 || !str_is(facts.key, key))
		return -1;
	return 0;
}

/* The config file the hook or shim would use (nvhook/gate.py's config_file). */
static const char *config_file(const char *explicit)
{
	const char *env = getenv("NVHOOK_CONFIG");
	struct stat st;

	if (explicit && *explicit)
		return explicit;
	if (env && *env)
		return env;
	return stat(DEFAULT_CONFIG, &st) == 0 ? DEFAULT_CONFIG : NULL;
}

/* 0 when the container with this config.json surely asks for nothing; else 1. */
static int may_ask(const char *config_json, const char *config)
{
	struct stat st;
	size_t len;
	int fd, r;

	fd = open(config_json, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return 1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SPEC_MAX) {
		close(fd);
		return 1;
	}
	r = read_all(fd, spec, sizeof(spec), &len);
	close(fd);
	if (r != 0)
		return 1;
	spec_len = len;
	if (front_spec_may_ask(spec, len, base_needles, 2))
		return 1;
	if (!config)
		return 0;
	if (load_facts(config) != 0 || facts.doubt)
		return 1;
	return front_spec_may_ask(spec, len, facts.needles, facts.nneedles);
}


/* ------------------------------------------------------------------ the memo replay */
static void sig_of(const char *path, char *sig, size_t cap)
{
	struct stat st;

	if (stat(path, &st) != 0)
		snprintf(sig, cap, "-");
	else
		snprintf(sig, cap, "%llu:%llu:%o:%lld:%lld",
			 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
			 (unsigned)st.st_mode, (long long)st.st_size,
			 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
}

static int cstr(struct front_str s, char *out, size_t cap)
{
	if (s.n >= cap || memchr(s.p, '\0', s.n))
		return -1;
	memcpy(out, s.p, s.n);
	out[s.n] = '\0';
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The current value of one check, in expect_buf's form: 1 if it equals `expected`. */
static int check_holds(struct front_check *c)
{
	char path[PATHBUF], sig[160];
	size_t len = 0, elen;
	int absent = str_is(c->expected, "-");

	if (cstr(c->path, path, sizeof(path)))
		return 0;
	if (str_is(c->kind, "stat")) {
		sig_of(path, sig, sizeof(sig));
		return str_is(c->expected, sig);
	}
	if (!absent && front_unhex(c->expected, expect_buf, sizeof(expect_buf), &elen))
		return 0;
	if (str_is(c->kind, "read")) {
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY), r;
		struct stat st;

		if (fd < 0)
			return absent;
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
			close(fd);
			return 0;
		}
		r = read_all(fd, io_buf, sizeof(io_buf), &len);
		close(fd);
		return !absent && r == 0 && len == elen && memcmp(io_buf, expect_buf, len) == 0;
	}
	if (str_is(c->kind, "list")) {
		DIR *d = opendir(path);
		struct dirent *de;
		size_t count = 0, used = 0, k;

		if (!d)
			return absent;
		if (absent) {
			closedir(d);
			return 0;
		}
		while ((de = readdir(d))) {
			size_t m = strlen(de->d_name);
			struct stat st;

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (count >= LIST_NAMES || used + m + 2 > sizeof(names_area)) {
				closedir(d);
				return 0;
			}
			names[count++] = names_area + used;
			memcpy(names_area + used, de->d_name, m);
			if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode))
				names_area[used + m++] = '/';
			names_area[used + m] = '\0';
			used += m + 1;
		}
		closedir(d);
		qsort(names, count, sizeof(names[0]), by_name);
		for (k = 0; k < count; k++) {
			size_t m = strlen(names[k]);

			if (k && len < sizeof(io_buf))
				io_buf[len++] = '\0';
			if (len + m > sizeof(io_buf))
				return 0;
			memcpy(io_buf + len, names[k], m);
			len += m;
		}
		return len == elen && memcmp(io_buf, expect_buf, len) == 0;
	}
	return 0;
}

/* nvhook/rootfs.py's container_layout, with openat2(RESOLVE_IN_ROOT) for stat_in_root. */
static int in_root(int root_fd, const char *path)
{
	struct open_how how = { .flags = O_PATH | O_CLOEXEC,
				.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
	long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));

	if (fd >= 0) {
		close((int)fd);
		return 1;
	}
	return errno == ENOSYS || errno == E2BIG || errno == EINVAL ? -1 : 0;
}

static const char *layout_of(const char *rootfs)
{
	int fd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return NULL;
	r = in_root(fd, "/etc/debian_version");
	if (r == 0)
		r = in_root(fd, "/usr/lib32") == 1 ? 2 : (errno == ENOSYS ? -1 : 3);
	close(fd);
	return r == 1 ? "debian" : r == 2 ? "lib64 lib32" : r == 3 ? "lib64 lib" : NULL;
}

/* Run the helper on header + body as nvhook/apply.py does: posix_spawn, empty environment,
 * the input on stdin, stdout and stderr to /dev/null (a failure goes to Python, which runs
 * it again and reports). Returns the exit status, -1 if it could not run. */
static int run_helper(const char *helper, const char *header, size_t hlen, const char *body,
		      size_t blen)
{
	char *const argv[] = { (char *)helper, NULL }, *const envp[] = { NULL };
	posix_spawn_file_actions_t fa;
	int pipefd[2], status, ok = 1;
	pid_t pid;
	size_t k;

	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return -1;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return -1;
	posix_spawn_file_actions_adddup2(&fa, pipefd[0], 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&pid, helper, &fa, NULL, argv, envp) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[0]);
	for (k = 0; k < 2 && ok; k++) {
		const char *p = k ? body : header;
		size_t n = k ? blen : hlen, off = 0;

		while (off < n) {
			ssize_t w = write(pipefd[1], p + off, n - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				ok = 0;
				break;
			}
			off += (size_t)w;
		}
	}
	close(pipefd[1]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return ok && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int env_equal(struct front_memo_entry *e, struct front_view *v)
{
	size_t k;

	if (e->nenv != v->nenv)
		return 0;
	for (k = 0; k < e->nenv; k++)
		if (e->env[k].n != v->env[k].n || memcmp(e->env[k].p, v->env[k].p, v->env[k].n))
			return 0;
	return 1;
}

/* Replay Python's decision for this container if every input it rested on is unchanged
 * (docs/design.md, "The front door"). 0: done (the hook's work is complete); -1: Python. */
static int memo_replay(const char *config, const char *bundle)
{
	static struct front_view sv, cv;
	char path[PATHBUF], key[128], rootfs[PATHBUF], helper[PATHBUF], header[PATHBUF + 128];
	const char *layout, *state_bundle;
	struct front_memo_entry *e = NULL;
	size_t len, k, blen;
	struct stat st;
	int hlen;

	if (config_key(config, key, sizeof(key)) != 0)
		return -1;
	cache_name(config, "memo", "memo", path, sizeof(path));
	if (read_trusted(path, memo_buf, sizeof(memo_buf), &len) != 0 ||
	    front_parse_memo(memo_buf, len, &memo) != 0 || !str_is(memo.key, key))
		return -1;
	/* The state: one pid, above 1 (a host pid), the bundle the gate read, no crun root. */
	if (front_view(state, state_len, FRONT_VIEW_STATE, &sv) != 0 || sv.pid <= 1 ||
	    sv.pid > 0x7fffffff || sv.state_root)
		return -1;
	state_bundle = NULL;
	if (sv.bundle.n && !cstr(sv.bundle, path, sizeof(path)))
		state_bundle = path;
	else if (!sv.bundle.n && sv.bundle_path.n && !cstr(sv.bundle_path, path, sizeof(path)))
		state_bundle = path;
	if (!state_bundle || strcmp(state_bundle, bundle) || !plain_abs(bundle))
		return -1;
	/* config.json: unprivileged, a process, NVIDIA_* / CUDA_* entries, a plain root.path. */
	if (front_memmem(spec, spec_len, "CAP_SYS_ADMIN", 13) ||
	    front_view(spec, spec_len, FRONT_VIEW_SPEC, &cv) != 0 || !cv.has_process ||
	    !cv.root_path.n || cstr(cv.root_path, helper, sizeof(helper)))
		return -1;
	if (helper[0] == '/')
		snprintf(rootfs, sizeof(rootfs), "%s", helper);
	else if ((size_t)snprintf(rootfs, sizeof(rootfs), "%s/%s", bundle, helper) >= sizeof(rootfs))
		return -1;
	if (!plain_abs(rootfs) || strpbrk(rootfs, "\t\n\r") || !strcmp(helper, "."))
		return -1;
	layout = layout_of(rootfs);
	if (!layout)
		return -1;
	for (k = 0; k < memo.nentries && !e; k++)
		if ((str_is(memo.entries[k].layout, layout) || str_is(memo.entries[k].layout, "*")) &&
		    env_equal(&memo.entries[k], &cv))
			e = &memo.entries[k];
	if (!e)
		return -1;
	for (k = 0; k < e->nchecks; k++)
		if (!check_holds(&e->checks[k]))
			return -1;
	if (str_is(e->body, "-"))
		return 0;   /* Python found no request in these inputs */
	if (cstr(e->helper, helper, sizeof(helper)) ||
	    front_unhex(e->body, expect_buf, sizeof(expect_buf), &blen))
		return -1;
	snprintf(path, sizeof(path), "/proc/%lld", sv.pid);
	if (stat(path, &st) != 0)
		return -1;
	hlen = snprintf(header, sizeof(header), "version\t1\npid\t%lld\nrootfs\t%s\nowner\t%u\t%u\n",
			sv.pid, rootfs, (unsigned)st.st_uid, (unsigned)st.st_gid);
	if (hlen < 0 || (size_t)hlen >= sizeof(header))
		return -1;
	return run_helper(helper, header, (size_t)hlen, expect_buf, blen) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ the hook */
static int opt_value(char **args, int n, int *i, const char *name, const char **value)
{
	size_t m = strlen(name);

	if (strcmp(args[*i], name) == 0) {
		if (*i + 1 >= n)
			return -1;
		*value = args[++*i];
		return 1;
	}
	if (strncmp(args[*i], name, m) == 0 && args[*i][m] == '=') {
		*value = args[*i] + m + 1;
		return 1;
	}
	return 0;
}

static __attribute__((noreturn)) void hook(char **args, int n)
{
	const char *config = NULL, *command = NULL;
	char config_json[PATHBUF + 16], bundle[PATHBUF];
	int i, configs = 0, debugs = 0, r;

	for (i = 0; i < n; i++) {
		const char *v = NULL;

		if ((r = opt_value(args, n, &i, "--config", &v)) == 0)
			r = opt_value(args, n, &i, "-config", &v);
		if (r < 0)
			to_python();
		if (r > 0) {
			config = v;
			configs++;
		} else if (!strcmp(args[i], "-debug") || !strcmp(args[i], "--debug")) {
			debugs++;
		} else if (command) {
			to_python();
		} else {
			command = args[i];
		}
	}
	if (configs > 1 || debugs > 1 || !command)
		to_python();
	if (!strcmp(command, "poststart") || !strcmp(command, "poststop"))
		exit(0);
	if (strcmp(command, "prestart") && strcmp(command, "createRuntime"))
		to_python();
	state_read = 1;
	r = read_all(0, state, sizeof(state), &state_len);
	if (r != 0) {
		state_partial = r > 0;
		to_python();
	}
	if (!front_bundle(state, state_len, bundle, sizeof(bundle)))
		to_python();
	snprintf(config_json, sizeof(config_json), "%s%sconfig.json", bundle,
		 bundle[strlen(bundle) - 1] == '/' ? "" : "/");
	config = config_file(config);
	if (may_ask(config_json, config) && memo_replay(config, bundle) != 0)
		to_python();
	exit(0);
}

/* ------------------------------------------------------------------ the shim */
static const char *const global_value_options[] = {
	"root", "log", "log-format", "log-level", "criu", "rootless", "cgroup-manager", NULL,
};
static const char *const create_value_options[] = {
	"console-socket", "pid-file", "preserve-fds", "config", "f", "bundle", "b", NULL,
};

/* nvhook/runtime.py's _option: the name ("-x", "--name", "--name=v") and whether a value
 * is inline; 0 when arg is not an option. */
static int option(const char *arg, char *name, size_t cap, const char **inline_value)
{
	const char *p = arg, *eq;
	size_t m;

	if (strlen(arg) < 2 || arg[0] != '-' || !strcmp(arg, "--"))
		return 0;
	while (*p == '-')
		p++;
	eq = strchr(p, '=');
	m = eq ? (size_t)(eq - p) : strlen(p);
	if (m >= cap)
		m = cap - 1;   /* longer than any option we know: it stays unknown */
	memcpy(name, p, m);
	name[m] = '\0';
	*inline_value = eq ? eq + 1 : NULL;
	return 1;
}

static int in(const char *name, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(name, *list))
			return 1;
	return 0;
}

static int find_command(char **args, int n)
{
	char name[64];
	const char *v;
	int i = 0;

	while (i < n) {
		if (!strcmp(args[i], "--"))
			return i + 1 < n ? i + 1 : -1;
		if (!option(args[i], name, sizeof(name), &v))
			return i;
		i += in(name, global_value_options) && !v ? 2 : 1;
	}
	return -1;
}

/* The config.json of a create (relative to the cwd, as the kernel resolves it); NULL when
 * Python must decide (an empty --bundle, a ".." the lexical normpath would differ on). */
static const char *create_config_json(char **args, int n, char *out, size_t cap)
{
	const char *bundle = NULL, *v, *p;
	char name[64];
	int i;

	for (i = 0; i < n; i++) {
		if (!strcmp(args[i], "--"))
			break;
		if (!option(args[i], name, sizeof(name), &v) || !in(name, create_value_options))
			continue;
		if (!v)
			v = i + 1 < n ? args[++i] : NULL;
		if (!strcmp(name, "bundle") || !strcmp(name, "b")) {
			if (!v || !*v)
				return NULL;
			bundle = v;
		}
	}
	if (!bundle)
		return "config.json";
	for (p = bundle; (p = strstr(p, "..")); p += 2)
		if ((p == bundle || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
			return NULL;
	if ((size_t)snprintf(out, cap, "%s/config.json", bundle) >= cap)
		return NULL;
	return out;
}

static int signature_matches(struct front_stat *s)
{
	char path[PATHBUF], sig[160];
	struct stat st;

	if (s->path.n >= sizeof(path))
		return 0;
	memcpy(path, s->path.p, s->path.n);
	path[s->path.n] = '\0';
	if (stat(path, &st) != 0)
		snprintf(sig, sizeof(sig), "-");
	else
		snprintf(sig, sizeof(sig), "%llu:%llu:%o:%lld:%lld",
			 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
			 (unsigned)st.st_mode, (long long)st.st_size,
			 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
	return str_is(s->sig, sig);
}

static __attribute__((noreturn)) void shim(char **args, int n)
{
	const char *config = config_file(NULL), *path_env = getenv("PATH");
	char exec_path[PATHBUF], buf[PATHBUF + 16];
	struct front_runtime *rt = NULL;
	char *saved;
	int index = find_command(args, n);
	size_t i;

	if (index >= 0 && !strcmp(args[index], "create")) {
		const char *cj = create_config_json(args + index + 1, n - index - 1, buf,
						    sizeof(buf));

		/* CDI annotations (the device plugin's cdi-annotations strategy) are a request
		 * only the shim sees (nvhook/cdiannot.py): Python resolves them. */
		if (!cj || may_ask(cj, config) ||
		    front_memmem(spec, spec_len, "\"cdi.k8s.io/", 12))
			to_python();
	}
	if (load_facts(config) != 0)
		to_python();
	if (!path_env)
		path_env = "";
	for (i = 0; i < facts.nruntimes; i++)
		if (str_is(facts.runtimes[i].path_env, path_env))
			rt = &facts.runtimes[i];
	if (!rt || rt->exec.n == 0 || rt->exec.n >= sizeof(exec_path))
		to_python();
	for (i = 0; i < rt->nstats; i++)
		if (!signature_matches(&rt->stats[i]))
			to_python();
	memcpy(exec_path, rt->exec.p, rt->exec.n);
	exec_path[rt->exec.n] = '\0';
	saved = args[-1];
	args[-1] = exec_path;
	execv(exec_path, args - 1);
	args[-1] = saved;
	to_python();   /* it vanished since: Python says why */
}

int main(int argc, char **argv)
{
	const char *me;

	(void)front_marker;
	g_argv = argv;
	if (argc < 1 || !argv[0])
		to_python();
	me = base_name(argv[0]);
	if (!strcmp(me, "nvidia-container-runtime"))
		shim(argv + 1, argc - 1);
	if (argc >= 2 && !strcmp(argv[1], "runtime")) {
		if (argc >= 3 && !strcmp(argv[2], "configure"))
			to_python();
		shim(argv + 2, argc - 2);
	}
	hook(argv + 1, argc - 1);
}
