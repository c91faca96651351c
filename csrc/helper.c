/* nvhook-helper: injects a plan (read from stdin) into a container's mount namespace, or undoes
 * everything it did and says, in one line, which step failed. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "caps.h"
#include "cgroup.h"
#include "error.h"
#include "inject.h"
#include "ldconfig.h"
#include "plan.h"

#define INPUT_MAX (4 << 20)
#define LDCONFIG_TIMEOUT_MS 2000

/* What the helper may ever need: setns and mounts (SYS_ADMIN, SYS_CHROOT), /proc/<pid>/ns of a
 * non-dumpable runc init (SYS_PTRACE), files of any owner (DAC_*, FOWNER, CHOWN), dropping the
 * child's bounding set (SETPCAP), and cgroup v2 eBPF programs (BPF, NET_ADMIN, SYS_RESOURCE for
 * RLIMIT_MEMLOCK on older kernels). Everything else leaves the bounding set at start. */
static const unsigned long long HELPER_CAPS =
	(1ULL << CAP_CHOWN) | (1ULL << CAP_DAC_OVERRIDE) | (1ULL << CAP_DAC_READ_SEARCH) |
	(1ULL << CAP_FOWNER) | (1ULL << CAP_SETPCAP) | (1ULL << CAP_SYS_ADMIN) |
	(1ULL << CAP_SYS_CHROOT) | (1ULL << CAP_SYS_PTRACE) | (1ULL << CAP_NET_ADMIN) |
	(1ULL << CAP_BPF) | (1ULL << CAP_SYS_RESOURCE);

/* ------------------------------------------------------------------ timing (-v) */
static int verbose;

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void timing(const char *step, size_t count, struct timespec *t0)
{
	if (verbose)
		fprintf(stderr, "nvhook-helper: %-8s %4zu %9.3f ms\n", step, count, ms_since(t0));
	clock_gettime(CLOCK_MONOTONIC, t0);
}

/* ------------------------------------------------------------------ main */
static char *read_input(size_t *len)
{
	char *buf = malloc(INPUT_MAX + 1);
	if (buf == NULL) {
		set_error("input", "stdin", "out of memory");
		return NULL;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(STDIN_FILENO, buf + n, INPUT_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			set_error("input", "stdin", "read: %s", strerror(errno));
			free(buf);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > INPUT_MAX) {
			set_error("input", "stdin", "more than %d bytes", INPUT_MAX);
			free(buf);
			return NULL;
		}
	}
	*len = n;
	return buf;
}

static int parse_args(int argc, char **argv, int *timeout_ms)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			verbose = 1;
		} else if (strcmp(argv[i], "-T") == 0 && i + 1 < argc) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (*end != '\0' || v <= 0 || v > 600000) {
				set_error("usage", argv[i], "-T wants milliseconds (1..600000)");
				return -1;
			}
			*timeout_ms = (int)v;
		} else {
			set_error("usage", argv[i],
				  "unknown argument; usage: nvhook-helper [-v] [-T ldconfig-timeout-ms] "
				  "< plan (docs/contracts.md)");
			return -1;
		}
	}
	return 0;
}

static int harden(void)
{
	const char *failed = NULL;
	if (limit_capabilities(HELPER_CAPS, &failed) != 0) {
		set_error("harden", "capabilities", "%s: %s", failed, strerror(errno));
		return -1;
	}
	/* No exec may gain privileges, and no other process may ptrace or read us. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		set_error("harden", "prctl", "%s", strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The container's init, resolved by number exactly once: a pidfd (Linux >= 5.8) and the
 * /proc/<pid> directory. Every later look at the process goes through these, which stay bound
 * to it even if its number were reused. The directory was opened while the pidfd's process
 * still held the number (checked after the open), so both name the same process.
 */
struct target {
	pid_t pid;
	int pidfd;  /* -1 where pidfd_open is missing (Linux < 5.3) */
	int procfd; /* /proc/<pid> */
	int nsfd;   /* its mount namespace, when setns cannot take the pidfd */
	char nspath[64];
};

static int pidfd_alive(int pidfd)
{
	struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
	/* A pidfd polls readable once its process has exited. */
	return poll(&pfd, 1, 0) == 0;
}

static long long start_time(int procfd)
{
	char buf[1024];
	int fd = openat(procfd, "stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid ..." — comm may hold anything, so count from the last ')'. */
	char *p = strrchr(buf, ')');
	for (int field = 2; p != NULL && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p != NULL ? strtoll(p + 1, NULL, 10) : -1;
}

static int open_target(pid_t pid, struct target *t)
{
	char path[32];
	snprintf(t->nspath, sizeof(t->nspath), "/proc/%d/ns/mnt", (int)pid);
	if (pid <= 1) {
		set_error("setns", t->nspath,
			  "pid %d is namespace-relative (createContainer hooks get 0 or 1); run nvhook "
			  "as a prestart or createRuntime hook, which get the host pid", (int)pid);
		return -1;
	}
	t->pid = pid;
	t->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (t->pidfd < 0 && errno != ENOSYS) {
		set_error("setns", t->nspath, "%s",
			  errno == ESRCH ? "no such process" : strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	long long before = -1;
	t->procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t->procfd >= 0 && t->pidfd < 0)
		before = start_time(t->procfd);
	if (t->procfd < 0 ||
	    (t->pidfd >= 0 ? !pidfd_alive(t->pidfd)
			   : before < 0 || start_time(t->procfd) != before)) {
		set_error("setns", t->nspath, "no such process (it exited meanwhile)");
		return -1;
	}
	/* Our own namespace would make every mount land on the host. */
	t->nsfd = openat(t->procfd, "ns/mnt", O_RDONLY | O_CLOEXEC);
	if (t->nsfd < 0) {
		/* A zombie keeps its number and its /proc directory, but no namespaces. */
		set_error("setns", t->nspath, "%s",
			  errno == ENOENT || errno == ESRCH ? "no such process (it exited meanwhile)"
							    : strerror(errno));
		return -1;
	}
	struct stat theirs, ours;
	if (fstat(t->nsfd, &theirs) != 0 || stat("/proc/self/ns/mnt", &ours) != 0) {
		set_error("setns", t->nspath, "stat: %s", strerror(errno));
		return -1;
	}
	if (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino) {
		set_error("setns", t->nspath,
			  "process %d shares the host's mount namespace: it is not a container init "
			  "(or the runtime gave no mount namespace)", (int)pid);
		return -1;
	}
	return 0;
}

/* Still the same, living process? (procfd is bound to it: reads fail once it is gone.) */
static int target_alive(const struct target *t)
{
	return t->pidfd >= 0 ? pidfd_alive(t->pidfd) : start_time(t->procfd) >= 0;
}

static void close_target(struct target *t)
{
	if (t->pidfd >= 0)
		close(t->pidfd);
	if (t->procfd >= 0)
		close(t->procfd);
	if (t->nsfd >= 0)
		close(t->nsfd);
}

static int enter(struct target *t, const char *path, struct ctx *c)
{
	/* Through the pidfd where the kernel takes one (5.8), else the namespace file of the
	 * same process; either way the process is the one checked in open_target. */
	if ((t->pidfd < 0 || setns(t->pidfd, CLONE_NEWNS) != 0) && setns(t->nsfd, CLONE_NEWNS) != 0) {
		set_error("setns", t->nspath, "%s", strerror(errno));
		return -1;
	}
	/* Every mount goes through /proc/self/fd: make sure that is a real procfs. */
	struct statfs sf;
	if (statfs("/proc/self/fd", &sf) != 0 || sf.f_type != PROC_SUPER_MAGIC) {
		set_error("setns", t->nspath, "the container's mount namespace has no procfs at /proc");
		return -1;
	}
	c->rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->rootfd < 0) {
		set_error("rootfs", path, "cannot open in the container's mount namespace: %s",
			  strerror(errno));
		return -1;
	}
	c->rootfs = path;
	return 0;
}

static int inject(struct ctx *c, const struct plan *p, int ldfd, int timeout_ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* The mask first: MIG access files from `mount` records land inside its tmpfs. */
	for (size_t i = 0; i < p->nprocmasks; i++)
		if (inject_procmask(c, &p->procmasks[i]) != 0)
			return -1;
	timing("procmask", p->nprocmasks, &t0);
	for (size_t i = 0; i < p->ndevices; i++)
		if (inject_device(c, &p->devices[i]) != 0)
			return -1;
	timing("device", p->ndevices, &t0);
	for (size_t i = 0; i < p->nmounts; i++)
		if (inject_mount(c, &p->mounts[i]) != 0)
			return -1;
	timing("mount", p->nmounts, &t0);
	for (size_t i = 0; i < p->nsymlinks; i++)
		if (inject_symlink(c, &p->symlinks[i]) != 0)
			return -1;
	timing("symlink", p->nsymlinks, &t0);
	if (seal_tmpfs(c) != 0)
		return -1;
	timing("seal", c->nseal, &t0);
	if (p->ldconfig != NULL) {
		if (run_ldconfig(c, ldfd, p->ldconfig, p->ldconfig_dirs, p->nldconfig_dirs,
				 timeout_ms) != 0)
			return -1;
		timing("ldconfig", 1, &t0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ctx c = {.rootfd = -1};
	struct plan p;
	struct cg_undo *cg = NULL;
	struct target t = {.pidfd = -1, .procfd = -1, .nsfd = -1};
	int timeout_ms = LDCONFIG_TIMEOUT_MS, ldfd = -1, status = 1;
	size_t len = 0;
	char *input = NULL;
	struct timespec t0, start;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	start = t0;

	umask(0); /* modes come from the plan and the sources, not from whoever started us */
	/* Every path in the plan is absolute; the caller's cwd (a bundle, or a rootfs the
	 * container owns) must not pin anything or be used by accident. */
	if (chdir("/") != 0) {
		set_error("harden", "/", "chdir: %s", strerror(errno));
		goto out;
	}
	if (parse_args(argc, argv, &timeout_ms) != 0 || harden() != 0)
		goto out;
	if ((input = read_input(&len)) == NULL || parse_plan(input, len, &p) != 0)
		goto out;
	timing("input", 1, &t0);
	c.have_owner = p.have_owner;
	c.uid = p.uid;
	c.gid = p.gid;
	/* Host-side opens come before setns: these paths mean the host's files. */
	if (open_target(p.pid, &t) != 0)
		goto out;
	if (p.ldconfig != NULL) {
		/* O_RDONLY, not O_PATH: execveat needs a readable fd. */
		ldfd = open(p.ldconfig, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (ldfd < 0 || fstat(ldfd, &st) != 0 || !S_ISREG(st.st_mode)) {
			set_error("ldconfig", p.ldconfig, "cannot open on the host: %s",
				  ldfd < 0 ? strerror(errno) : "not a regular file");
			goto out;
		}
		if (check_static_elf(ldfd, p.ldconfig) != 0)
			goto out;
	}
	/* The cgroup is found through the host's /proc/<pid>; do it while we still see the host. */
	if (p.nrules > 0) {
		if (cgroup_allow(t.procfd, p.pid, p.rules, p.nrules, &cg) != 0)
			goto out;
		timing("cgroup", p.nrules, &t0);
	}
	if (enter(&t, p.rootfs, &c) != 0)
		goto undo;
	/* The cgroup work above was for this process: it must not have exited meanwhile. */
	if (!target_alive(&t)) {
		set_error("setns", t.nspath, "no such process (it exited meanwhile)");
		goto undo;
	}
	timing("setns", 1, &t0);
	if (inject(&c, &p, ldfd, timeout_ms) != 0)
		goto undo;
	commit_all(&c);
	status = 0;
	goto out;
undo:
	undo_all(&c);
	cgroup_undo(cg);
out:
	cgroup_undo_free(cg);
	ctx_release(&c);
	close_target(&t);
	if (ldfd >= 0)
		close(ldfd);
	free(input);
	if (status != 0) {
		fprintf(stderr, "%s\n", has_error() ? error_text() : "helper: failed without a reason");
	} else if (verbose) {
		fprintf(stderr, "nvhook-helper: %-8s %4s %9.3f ms\n", "total", "", ms_since(&start));
	}
	return status;
}
