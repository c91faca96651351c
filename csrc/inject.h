/* Injection into the container root (inject.c): nodes, mounts, symlinks, the /proc mask, the
 * journal that undoes them. */
#ifndef NVHOOK_INJECT_H
#define NVHOOK_INJECT_H

#include "ctx.h"
#include "plan.h"

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

#endif
