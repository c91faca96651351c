/* The parsed plan (docs/contracts.md §2) and its parser (parse.c). Depends on cgroup.h for the
 * rule type only. */
#ifndef NVHOOK_PLAN_H
#define NVHOOK_PLAN_H

#include <stddef.h>
#include <sys/types.h>

#include "cgroup.h"

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

#endif
