/* What the cgroup files share among themselves (not part of the API in cgroup.h). */
#ifndef NVHOOK_CGROUP_INT_H
#define NVHOOK_CGROUP_INT_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "cgroup.h"
#include "cgroup_rule.h"

struct cg_swap {
	int old_fd, new_fd;
	int attached; /* the new program is attached */
	int detached; /* the old program is detached (multi mode only) */
	int link_fd;  /* >= 0: the old program sat in this bpf link, now holding the new one */
};

struct cg_undo {
	int version;
	int dir_fd;
	char path[PATH_MAX];
	/* v1: lines for devices.deny that take back exactly what we added */
	char (*deny)[V1_LINE];
	size_t ndeny;
	/* v2: one swap per program that was attached to the cgroup */
	unsigned int attach_flags;
	struct cg_swap *swaps;
	size_t nswaps;
};

/* cgroup_find.c: open the device cgroup directory of `pid` (v1 devices, else cgroup2). */
int cg_find(int procfd, pid_t pid, int *version, char *path, size_t pathlen);

/* cgroup_v1.c: devices.allow, and devices.deny lines that take back exactly what was added. */
int cg_v1_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n);
void cg_v1_undo(struct cg_undo *u, int *failed);

/* cgroup_bpf.c: swap each attached BPF_CGROUP_DEVICE program for an extended copy. */
int cg_v2_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n);
void cg_v2_undo(struct cg_undo *u, int *failed);

#endif
