/* Device-cgroup access for injected nodes (the API of cgroup.h): find the cgroup
 * (cgroup_find.c), then v1 (cgroup_v1.c) or v2 (cgroup_bpf.c, with bpfprog.c's programs). */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup_int.h"
#include "error.h"

int cgroup_allow(int procfd, pid_t pid, const struct cg_rule *rules, size_t n,
		 struct cg_undo **undo)
{
	struct cg_undo *u;
	int rc, own_fd = -1;

	*undo = NULL;
	if (cg_check_rules(rules, n) < 0)
		return -1;
	if (n == 0)
		return 0;
	if (pid <= 0) {
		char p[16];

		snprintf(p, sizeof(p), "%d", (int)pid);
		set_error("cgroup-find", p,
			  "not a host pid (pass the container's pid as seen from the host)");
		return -1;
	}
	if (procfd < 0) {
		char p[32];

		snprintf(p, sizeof(p), "/proc/%d", (int)pid);
		procfd = own_fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (procfd < 0) {
			set_error("cgroup-find", p, "%s", strerror(errno));
			return -1;
		}
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		set_error("cgroup-allow", "-", "%s", strerror(ENOMEM));
		if (own_fd >= 0)
			close(own_fd);
		return -1;
	}
	u->dir_fd = cg_find(procfd, pid, &u->version, u->path, sizeof(u->path));
	if (own_fd >= 0)
		close(own_fd);
	if (u->dir_fd < 0) {
		free(u);
		return -1;
	}
	rc = u->version == 1 ? cg_v1_allow(u, rules, n) : cg_v2_allow(u, rules, n);
	if (rc < 0 || (u->ndeny == 0 && u->nswaps == 0)) {
		cgroup_undo_free(u);
		return rc;
	}
	*undo = u;
	return 0;
}

int cgroup_undo(struct cg_undo *undo)
{
	int failed = 0;

	if (undo == NULL)
		return 0;
	if (undo->version == 1)
		cg_v1_undo(undo, &failed);
	else
		cg_v2_undo(undo, &failed);
	return failed ? -1 : 0;
}

void cgroup_undo_free(struct cg_undo *undo)
{
	if (undo == NULL)
		return;
	/*
	 * Closing the fds drops our references only: an attached program stays alive through
	 * the cgroup, a detached old one is freed by the kernel.
	 */
	for (size_t i = 0; i < undo->nswaps; i++) {
		if (undo->swaps[i].old_fd >= 0)
			close(undo->swaps[i].old_fd);
		if (undo->swaps[i].new_fd >= 0)
			close(undo->swaps[i].new_fd);
		if (undo->swaps[i].link_fd >= 0)
			close(undo->swaps[i].link_fd);
	}
	free(undo->deny);
	if (undo->dir_fd >= 0)
		close(undo->dir_fd);
	free(undo->swaps);
	free(undo);
}
