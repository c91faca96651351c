/* Mount boundaries and propagation: where the helper may write, and where it may mount. */
#ifndef NVHOOK_MOUNTS_H
#define NVHOOK_MOUNTS_H

#include <stdint.h>

#include "ctx.h"

/* The mount id of what fd names (statx STATX_MNT_ID, Linux 5.8). */
int mount_id(int fd, uint64_t *id);

/*
 * The mount that container path `dir` names: walked from `rootfd` one component at a time
 * without following a symbolic link (nor "." or ".."), as far as directories go; *id is the
 * mount of the deepest directory reached. With `mount_root`, also an O_PATH fd of that
 * mount's root as met on the path (the deepest component whose mount differs from its
 * parent's; mount_setattr wants a mount's root), or -1 where the walk never left rootfd's
 * mount. 0, or -1 with errno when rootfd's own mount id cannot be read.
 */
int path_mount(int rootfd, const char *dir, uint64_t *id, int *mount_root);

/*
 * Before creating or replacing an entry in directory `dirfd` (container path `dir`): the
 * directory must be on the container root's own mount, or on the mount that `dir` lies on
 * when walked without following symbolic links. An image symlink that leads a fixed path
 * (/etc, a library directory) into a volume fails here: no write crosses a mount boundary.
 * 0, or -1 with set_error(step, what, ...).
 */
int check_write_dir(struct ctx *c, const char *step, const char *what, int dirfd,
		    const char *dir);

/*
 * Before mounting on `fd` (container path `what`): the mount it lies on must not be shared
 * (a volume with rshared / Bidirectional propagation), or the new mount would appear in every
 * peer of that mount, the host's included, and outlive the container. 0, or -1 with
 * set_error(step, what, ...).
 */
int check_not_shared(const char *step, const char *what, int fd);

#endif
