/* Device-cgroup access for the nodes the helper injects: v1 devices.allow, v2 eBPF filters. */
#ifndef NVHOOK_CGROUP_H
#define NVHOOK_CGROUP_H

#include <stddef.h>
#include <sys/types.h>

/* A major or minor of CG_ANY matches every number (written as '*' on cgroup v1). */
#define CG_ANY ((unsigned int)-1)

/*
 * One device rule: type 'c' (char), 'b' (block) or 'a' (both); major and minor (or CG_ANY);
 * access: a NUL-terminated non-empty subset of "rwm". Example: { 'c', 195, 0, "rw" }.
 */
struct cg_rule {
	char type;
	unsigned int major, minor;
	char access[4];
};

/* What cgroup_allow changed, so that cgroup_undo can put it back. Opaque. */
struct cg_undo;

/*
 * Give the device cgroup of host pid `pid` access to `rules`. procfd is its /proc/<pid>
 * directory, opened once by the caller so that the number is not resolved again (-1: opened
 * here).
 *
 * The cgroup is found from /proc/<pid>/mountinfo and /proc/<pid>/cgroup: a cgroup v1 `devices`
 * hierarchy wins over cgroup2 (hybrid hosts). The directory is reached through the caller's own
 * mounts of that hierarchy, else the container's, and is checked to list `pid` in cgroup.procs;
 * so it works from the host mount namespace and from the container's before pivot_root. v1
 * appends to devices.allow; v2 replaces each BPF_CGROUP_DEVICE program attached to the cgroup
 * (by fd as runc and crun do, or inside a bpf link as youki does) with one that allows `rules`
 * first and then runs the old program's instructions. A v2 cgroup with no program attached has
 * no device filtering of its own, so nothing is changed there.
 *
 * Returns 0 on success; *undo then holds what was changed (it may be NULL when nothing was).
 * Returns -1 on failure, the reason recorded with set_error (error.h; steps cgroup-rule,
 * cgroup-find, cgroup-allow, cgroup-bpf); everything this call changed has been put back and
 * *undo is NULL.
 */
int cgroup_allow(int procfd, pid_t pid, const struct cg_rule *rules, size_t n,
		 struct cg_undo **undo);

/*
 * Best-effort restore of what cgroup_allow changed; keeps going past failures. It works through
 * file descriptors taken by cgroup_allow, so any mount namespace will do. Returns 0 when every
 * step succeeded, -1 otherwise. NULL is a no-op; a second call does nothing more.
 */
int cgroup_undo(struct cg_undo *undo);

/* Release the undo record (closes the file descriptors it holds); NULL is fine. */
void cgroup_undo_free(struct cg_undo *undo);

#endif
