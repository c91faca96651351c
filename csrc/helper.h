/* Shared declarations of nvhook-helper: the parsed plan, the undo journal, error reporting. */
#ifndef NVHOOK_HELPER_H
#define NVHOOK_HELPER_H

#include <stddef.h>
#include <sys/types.h>

#include "cgroup.h"

/* ---------------------------------------------------------- the plan (docs/contracts.md §2) */
struct device_rec {
	char *path, *host_path;
	unsigned int major, minor;
	mode_t mode;
	char type; /* 'c' or 'b' */
};

struct mount_rec {
	char *path, *host_path;
	unsigned long flags;       /* MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC applied by the remount */
	unsigned long propagation; /* 0 or MS_PRIVATE/MS_SLAVE (| MS_REC) applied last */
	int recursive;             /* rbind */
	char *options;             /* as written, for messages */
};

struct symlink_rec {
	char *link, *target;
};

struct procmask_rec {
	char *path, *host_dir;
	char **files;
	size_t nfiles;
	char **bus_ids;
	size_t nbus_ids;
};

struct plan {
	int version;
	pid_t pid;
	char *rootfs;
	int have_owner;
	uid_t uid;
	gid_t gid;
	struct device_rec *devices;
	size_t ndevices;
	struct mount_rec *mounts;
	size_t nmounts;
	struct symlink_rec *symlinks;
	size_t nsymlinks;
	struct procmask_rec *procmasks;
	size_t nprocmasks;
	struct cg_rule *rules;
	size_t nrules;
	int have_cgroup;
	char *ldconfig;
	char **ldconfig_dirs;
	size_t nldconfig_dirs;
};

/* Parse the helper's stdin; 0 ok, -1 with the error set (step "input"). Points into buf. */
int parse_plan(char *buf, size_t len, struct plan *plan);

/* ------------------------------------------------------------------ the undo journal */
enum undo_kind {
	UNDO_MOUNT,    /* fd: O_PATH fd of the mount's root; undone with umount2(MNT_DETACH) */
	UNDO_CREATED,  /* fd: parent dir; name was created by us (a dir when is_dir) */
	UNDO_REPLACED, /* fd: parent dir; the old entry at name now waits at aside */
};

struct undo_entry {
	enum undo_kind kind;
	int fd;
	char *name;
	char *aside;
	int is_dir;
};

struct ctx {
	int rootfd; /* O_PATH fd of the container's root, opened inside its mount namespace */
	int have_owner;
	uid_t uid;
	gid_t gid;
	struct undo_entry *undo;
	size_t nundo, capundo;
	struct sealed {
		int fd;     /* root of one of our tmpfs mounts, remounted read-only at the end */
		char *path; /* its container path, for messages */
	} *seal;
	size_t nseal;
	unsigned int aside_counter;
};

/* ------------------------------------------------------------------ errors */
/* Record the first failure as "<step> <path>: <reason>"; later calls are ignored. */
void set_error(const char *step, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int has_error(void);
const char *error_text(void);

/* ------------------------------------------------------------------ inject.c */
/* openat2(rootfd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), O_CLOEXEC added. */
int in_root_open(int rootfd, const char *path, int flags);
/* O_PATH fd of directory `dir` inside the root, creating missing components (0755). */
int ensure_dir(struct ctx *c, const char *step, const char *what, const char *dir);
int inject_device(struct ctx *c, const struct device_rec *d);
int inject_mount(struct ctx *c, const struct mount_rec *m);
int inject_symlink(struct ctx *c, const struct symlink_rec *s);
int inject_procmask(struct ctx *c, const struct procmask_rec *p);
int seal_tmpfs(struct ctx *c);
void undo_all(struct ctx *c);
void commit_all(struct ctx *c);
void ctx_release(struct ctx *c);
/* "/proc/self/fd/N" of fd, in a static buffer chosen by slot (0 or 1). */
const char *fd_path(int fd, int slot);

/* ------------------------------------------------------------------ ldconfig.c */
/* Refuse what cannot run safely inside the container root: scripts and dynamic executables. */
int check_static_elf(int fd, const char *path);
/* Run the pre-opened host ldconfig (exefd, opened O_RDONLY) sandboxed in the container root. */
int run_ldconfig(struct ctx *c, int exefd, const char *exe_path, char **dirs, size_t ndirs,
		 int timeout_ms);

/* ------------------------------------------------------------------ caps.c */
/* Limit the bounding, permitted and effective sets to `keep` (a bit mask); clear the rest. */
int limit_capabilities(unsigned long long keep, const char **failed);

#endif
