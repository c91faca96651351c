/* The host's ldconfig run against the container root in a sandbox (docs/design.md, "ldconfig"). */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "caps.h"
#include "error.h"
#include "inject.h"
#include "ldconfig.h"
#include "mounts.h"
#include "procfile.h"

#define OUTPUT_MAX 8192

/* Lower (never raise: CAP_SYS_RESOURCE may be missing) both limits of `res` to `value`. */
static int cap_limit(int res, rlim_t value)
{
	struct rlimit rl;
	if (getrlimit(res, &rl) != 0)
		return -1;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < value)
		value = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = value;
	return setrlimit(res, &rl);
}

static void __attribute__((noreturn)) child_fail(int errfd, const char *what)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	if (n > 0 && write(errfd, msg, (size_t)n) < 0)
		_exit(126);
	_exit(126);
}

static int mount_setattr_fd(int fd, unsigned int flags, unsigned long long set,
			    unsigned long long clr)
{
	struct mount_attr attr = {.attr_set = set, .attr_clr = clr};
	return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | flags, &attr, sizeof(attr));
}

/* Before Linux 5.12 (no mount_setattr): the same flags by bind remounts. Each mount at or below
 * `root`, read from mountinfo (this is the child's own copy of the namespace), is made
 * read-only by its path; then each of the `nkeep` mounts whose roots `keep` holds is made
 * writable again through its fd, which names that very mount whatever else shares its path
 * (the runtime's rootfs mount and its bind onto itself do). */
static int remount_each(const char *root, const int *keep, size_t nkeep)
{
	size_t rlen = strlen(root), len = 0;
	char *text = read_all_at(AT_FDCWD, "/proc/self/mountinfo", &len);
	if (text == NULL)
		return -1;
	int rc = 0;
	for (char *line = text, *next; rc == 0 && line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		char *save = NULL, *point = NULL, *tok = strtok_r(line, " ", &save);
		for (int i = 0; tok != NULL && i < 4; i++)
			tok = strtok_r(NULL, " ", &save);
		point = tok;
		if (point == NULL)
			continue;
		unescape_octal(point);
		if (strcmp(point, root) != 0 && (strncmp(point, root, rlen) != 0 || point[rlen] != '/'))
			continue;
		struct statvfs sv;
		if (statvfs(point, &sv) != 0)
			continue; /* covered by a later mount: that one is in the list too */
		unsigned long flags = MS_BIND | MS_REMOUNT | MS_NODEV | MS_NOSUID | MS_RDONLY;
		if (sv.f_flag & ST_NOEXEC)
			flags |= MS_NOEXEC;
		if (mount(NULL, point, NULL, flags, NULL) != 0)
			rc = -1;
	}
	free(text);
	for (size_t i = 0; rc == 0 && i < nkeep; i++) {
		struct statvfs sv;
		unsigned long flags = MS_BIND | MS_REMOUNT | MS_NODEV | MS_NOSUID;
		if (fstatvfs(keep[i], &sv) != 0)
			return -1;
		if (sv.f_flag & ST_NOEXEC)
			flags |= MS_NOEXEC;
		rc = mount(NULL, fd_path(keep[i], 0), NULL, flags, NULL);
	}
	return rc;
}

/*
 * ldconfig's view of the container (in the child's private copy of its mount namespace): the
 * rootfs bound onto itself (so that it is a mount of its own even where the runtime did not
 * make it one) with every mount in it nodev and nosuid, so that no device node of the image or
 * of a volume can be opened whatever ldconfig is made to open; and read-only except the
 * mounts the helper itself may write to (mounts.h, check_write_dir), each only if it was
 * writable already: the rootfs's own, and for each library directory of the plan the mount
 * its path names when walked without following a symbolic link (a volume the operator put at
 * /usr or at the directory itself), where ldconfig makes the SONAME links. So ldconfig's
 * writes (the cache, SONAME links) never land in a volume reached through an image symlink.
 * Leaves the cwd at the rootfs's mount root.
 */
static void restrict_view(struct ctx *c, char **dirs, size_t ndirs, int errfd)
{
	struct stat want, got;
	struct statvfs sv;
	if (fstat(c->rootfd, &want) != 0)
		child_fail(errfd, "stat the container root");
	if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) != 0)
		child_fail(errfd, "bind the container root");
	int fd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &got) != 0 || got.st_dev != want.st_dev ||
	    got.st_ino != want.st_ino || fchdir(fd) != 0)
		child_fail(errfd, "reach the container root again");
	/* The mounts that stay writable (their roots, O_PATH), found before any is made
	 * read-only; ids to count each once. */
	int *keep = calloc(ndirs + 1, sizeof(*keep));
	uint64_t *ids = calloc(ndirs + 1, sizeof(*ids));
	size_t nkeep = 0;
	if (keep == NULL || ids == NULL)
		child_fail(errfd, "calloc");
	if (fstatvfs(fd, &sv) != 0)
		child_fail(errfd, "statvfs the container root");
	if (!(sv.f_flag & ST_RDONLY))
		keep[nkeep++] = fd;
	for (size_t i = 0; i < ndirs; i++) {
		uint64_t id;
		int mfd, seen = 0;
		if (path_mount(fd, dirs[i], &id, &mfd) != 0)
			child_fail(errfd, "read the mount of a library directory");
		if (mfd < 0)
			continue; /* on the rootfs's own mount */
		for (size_t k = 0; k < nkeep; k++)
			seen |= keep[k] != fd && ids[k] == id;
		if (seen || fstatvfs(mfd, &sv) != 0 || (sv.f_flag & ST_RDONLY)) {
			close(mfd);
			continue;
		}
		ids[nkeep] = id;
		keep[nkeep++] = mfd;
	}
	if (mount_setattr_fd(fd, AT_RECURSIVE,
			     MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, 0) == 0) {
		for (size_t i = 0; i < nkeep; i++)
			if (mount_setattr_fd(keep[i], 0, 0, MOUNT_ATTR_RDONLY) != 0)
				child_fail(errfd, keep[i] == fd
							  ? "make the container root writable again"
							  : "make a library directory's mount writable again");
	} else if (errno != ENOSYS || remount_each(c->rootfs, keep, nkeep) != 0) {
		child_fail(errfd, "make the container's mounts nodev, nosuid, read-only");
	}
	for (size_t i = 0; i < nkeep; i++)
		if (keep[i] != fd)
			close(keep[i]);
	free(keep);
	free(ids);
	close(fd);
}

/* The child: private mount namespace, chroot into the container, masks, limits, few caps. */
static void __attribute__((noreturn)) child(struct ctx *c, int exefd, char **argv,
					   char **dirs, size_t ndirs, int outfd, int errfd)
{
	static char *const empty_env[] = {NULL};
	if (dup2(outfd, STDOUT_FILENO) < 0 || dup2(outfd, STDERR_FILENO) < 0)
		child_fail(errfd, "dup2");
	if (unshare(CLONE_NEWNS) != 0)
		child_fail(errfd, "unshare the mount namespace");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		child_fail(errfd, "make the mounts private");
	restrict_view(c, dirs, ndirs, errfd);
	if (chroot(".") != 0 || chdir("/") != 0)
		child_fail(errfd, "chroot into the container root");
	/* ldconfig has no business with the container's (or host's) /proc, /sys or /dev. */
	static const char *const masked[] = {"/proc", "/sys", "/dev"};
	for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
		struct stat st;
		if (lstat(masked[i], &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		if (mount("tmpfs", masked[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0555,size=4k,nr_inodes=2") != 0)
			child_fail(errfd, "mask with a read-only tmpfs");
	}
	if (cap_limit(RLIMIT_CPU, 2) != 0 || cap_limit(RLIMIT_AS, 2ULL << 30) != 0 ||
	    cap_limit(RLIMIT_NOFILE, 64) != 0 || cap_limit(RLIMIT_FSIZE, 64ULL << 20) != 0)
		child_fail(errfd, "setrlimit");
	/* Nothing but the executable and the error pipe may cross exec, and both close on it. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
		child_fail(errfd, "close_range");
	const char *failed = NULL;
	if (limit_capabilities((1ULL << CAP_DAC_OVERRIDE) | (1ULL << CAP_CHOWN), &failed) != 0)
		child_fail(errfd, failed);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		child_fail(errfd, "no_new_privs");
	syscall(SYS_execveat, exefd, "", argv, empty_env, AT_EMPTY_PATH);
	child_fail(errfd, "execveat");
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append a chunk (smaller than OUTPUT_MAX) keeping only the tail: a failure's reason is last. */
static void keep_tail(char *buf, size_t *len, const char *chunk, size_t n)
{
	if (*len + n > OUTPUT_MAX) {
		size_t drop = *len + n - OUTPUT_MAX;
		memmove(buf, buf + drop, *len - drop);
		*len -= drop;
	}
	memcpy(buf + *len, chunk, n);
	*len += n;
}

/* The last non-empty line of the output (set_error makes control characters printable). */
static void last_line(const char *buf, size_t len, char *out, size_t outlen)
{
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		len--;
	size_t start = len;
	while (start > 0 && buf[start - 1] != '\n')
		start--;
	size_t n = len - start < outlen - 1 ? len - start : outlen - 1;
	memcpy(out, buf + start, n);
	out[n] = '\0';
}

int check_static_elf(int fd, const char *path)
{
	unsigned char ehdr[64];
	if (pread(fd, ehdr, sizeof(ehdr), 0) != (ssize_t)sizeof(ehdr) ||
	    memcmp(ehdr, ELFMAG, SELFMAG) != 0 ||
	    (ehdr[EI_CLASS] != ELFCLASS64 && ehdr[EI_CLASS] != ELFCLASS32)) {
		set_error("ldconfig", path, "is not an ELF executable (a wrapper script?); point "
			  "[hook] ldconfig at the real binary, e.g. @/sbin/ldconfig.real");
		return -1;
	}
	int is64 = ehdr[EI_CLASS] == ELFCLASS64;
	Elf64_Ehdr e64;
	Elf32_Ehdr e32;
	unsigned long long phoff;
	unsigned int phnum, phentsize;
	if (is64) {
		memcpy(&e64, ehdr, sizeof(e64));
		phoff = e64.e_phoff, phnum = e64.e_phnum, phentsize = e64.e_phentsize;
	} else {
		memcpy(&e32, ehdr, sizeof(e32));
		phoff = e32.e_phoff, phnum = e32.e_phnum, phentsize = e32.e_phentsize;
	}
	if (phentsize < (is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)) || phnum > 4096) {
		set_error("ldconfig", path, "has a malformed ELF header");
		return -1;
	}
	for (unsigned int i = 0; i < phnum; i++) {
		Elf64_Phdr p64;
		Elf32_Phdr p32;
		void *ph = is64 ? (void *)&p64 : (void *)&p32;
		size_t size = is64 ? sizeof(p64) : sizeof(p32);
		if (pread(fd, ph, size, (off_t)(phoff + (unsigned long long)i * phentsize)) !=
		    (ssize_t)size) {
			set_error("ldconfig", path, "has a malformed ELF header");
			return -1;
		}
		if ((is64 ? p64.p_type : p32.p_type) == PT_INTERP) {
			/* Inside the container root its ld.so and libc are the image's: refuse to run
			 * the image's code with our capabilities. glibc always links ldconfig statically. */
			set_error("ldconfig", path, "is dynamically linked and would run the container's "
				  "ld.so; use a static ldconfig such as the host's /sbin/ldconfig");
			return -1;
		}
	}
	return 0;
}

int run_ldconfig(struct ctx *c, int exefd, const char *exe_path, char **dirs, size_t ndirs,
		 int timeout_ms)
{
	if (check_ldconfig_inputs(c) != 0)
		return -1;

	/* Made here, not in the child, so that the journal can take it back on failure. */
	int etc = ensure_dir(c, "ldconfig", "/etc", "/etc");
	if (etc < 0)
		return -1;
	/* ldconfig may write only on the root's own mount (its view is read-only elsewhere): say
	 * so here rather than through its "Read-only file system". */
	uint64_t etc_mnt, root_mnt;
	if (mount_id(etc, &etc_mnt) != 0 || mount_id(c->rootfd, &root_mnt) != 0 ||
	    etc_mnt != root_mnt) {
		set_error("ldconfig", "/etc",
			  "is on another mount than the container's root (a volume, or an image "
			  "symlink into one?); ldconfig would write ld.so.cache there; fix the image's "
			  "/etc or the volume's place");
		close(etc);
		return -1;
	}
	close(etc);

	char **argv = calloc(ndirs + 6, sizeof(char *));
	if (argv == NULL) {
		set_error("ldconfig", exe_path, "out of memory");
		return -1;
	}
	size_t a = 0;
	argv[a++] = "ldconfig";
	argv[a++] = "-f";
	argv[a++] = "/etc/ld.so.conf";
	argv[a++] = "-C";
	argv[a++] = "/etc/ld.so.cache";
	for (size_t i = 0; i < ndirs; i++)
		argv[a++] = dirs[i];
	argv[a] = NULL;

	int out[2], err[2];
	if (pipe2(out, O_CLOEXEC) != 0) {
		set_error("ldconfig", exe_path, "pipe: %s", strerror(errno));
		free(argv);
		return -1;
	}
	if (pipe2(err, O_CLOEXEC) != 0) {
		set_error("ldconfig", exe_path, "pipe: %s", strerror(errno));
		close(out[0]);
		close(out[1]);
		free(argv);
		return -1;
	}
	fflush(NULL);
	/* fork() semantics plus new pid (ldconfig, running as uid 0, cannot see or signal host
	 * processes), IPC and network namespaces (no socket reaches anything, abstract unix ones
	 * included). Safe as a raw syscall: we are single-threaded. */
	pid_t pid = (pid_t)syscall(SYS_clone,
				   (unsigned long)(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD),
				   NULL, NULL, NULL, NULL);
	if (pid < 0) {
		set_error("ldconfig", exe_path, "clone: %s", strerror(errno));
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		free(argv);
		return -1;
	}
	if (pid == 0) {
		close(out[0]);
		close(err[0]);
		child(c, exefd, argv, dirs, ndirs, out[1], err[1]);
	}
	close(out[1]);
	close(err[1]);
	free(argv);

	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	char output[OUTPUT_MAX];
	size_t outlen = 0;
	int killed = 0, out_open = 1, reaped = 0, status = 0;
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0) {
			kill(pid, SIGKILL);
			killed = 1;
			break;
		}
		struct pollfd fds[2] = {{.fd = out_open ? out[0] : -1, .events = POLLIN},
					{.fd = pidfd, .events = POLLIN}};
		int n = poll(fds, 2, (int)(left > 1000 ? 1000 : left));
		if (n < 0 && errno != EINTR) {
			kill(pid, SIGKILL);
			killed = 1;
			break;
		}
		if (out_open && (fds[0].revents & (POLLIN | POLLHUP))) {
			char chunk[1024];
			ssize_t r = read(out[0], chunk, sizeof(chunk));
			if (r <= 0) {
				out_open = 0;
			} else {
				keep_tail(output, &outlen, chunk, (size_t)r);
			}
		}
		if (pidfd < 0) { /* no pidfd (old kernel): poll the child's status instead */
			if (waitpid(pid, &status, WNOHANG | __WALL) == 0)
				continue;
			reaped = 1;
			break;
		}
		if (fds[1].revents & POLLIN)
			break;
	}
	while (!reaped && waitpid(pid, &status, __WALL) < 0 && errno == EINTR)
		;
	if (pidfd >= 0)
		close(pidfd);
	/* Whatever the child wrote just before it ended. */
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	while (out_open) {
		char chunk[1024];
		ssize_t r = read(out[0], chunk, sizeof(chunk));
		if (r <= 0)
			break;
		keep_tail(output, &outlen, chunk, (size_t)r);
	}
	close(out[0]);
	char setup[512];
	ssize_t sn = read(err[0], setup, sizeof(setup) - 1);
	close(err[0]);

	if (sn > 0) {
		setup[sn] = '\0';
		set_error("ldconfig", exe_path, "sandbox setup failed: %s", setup);
		return -1;
	}
	char line[512];
	last_line(output, outlen, line, sizeof(line));
	if (killed) {
		set_error("ldconfig", exe_path, "killed after the %d ms limit%s%s", timeout_ms,
			  line[0] ? ": " : "", line);
		return -1;
	}
	if (WIFSIGNALED(status)) {
		set_error("ldconfig", exe_path, "terminated by signal %d (%s)%s%s", WTERMSIG(status),
			  strsignal(WTERMSIG(status)), line[0] ? ": " : "", line);
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		set_error("ldconfig", exe_path, "exited with status %d%s%s",
			  WIFEXITED(status) ? WEXITSTATUS(status) : -1, line[0] ? ": " : "", line);
		return -1;
	}
	return 0;
}
