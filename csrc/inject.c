/* Injection inside the container's mount namespace: in-root path resolution, bind mounts,
 * symlinks, the /proc/driver/nvidia mask, and the journal that undoes all of it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "error.h"
#include "inject.h"
#include "mounts.h"

#define PROC_FILE_MAX (1 << 20)
#define PROCMASK_TMPFS_OPTS "mode=0555,size=1m,nr_inodes=4096"

const char *fd_path(int fd, int slot)
{
	static char buf[2][40];
	snprintf(buf[slot & 1], sizeof(buf[0]), "/proc/self/fd/%d", fd);
	return buf[slot & 1];
}

int in_root_open(int rootfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	/* The kernel answers EAGAIN when a rename or mount raced the walk; a retry is safe. */
	for (int tries = 0; tries < 32; tries++) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN)
			return -1;
	}
	return -1;
}

/* ------------------------------------------------------------------ journal */
static struct undo_entry *journal(struct ctx *c, enum undo_kind kind, int fd, const char *name)
{
	if (c->nundo == c->capundo) {
		size_t cap = c->capundo ? c->capundo * 2 : 64;
		struct undo_entry *grown = realloc(c->undo, cap * sizeof(*grown));
		if (grown == NULL)
			return NULL;
		c->undo = grown;
		c->capundo = cap;
	}
	int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	char *copy = name ? strdup(name) : NULL;
	if (dupfd < 0 || (name && copy == NULL)) {
		if (dupfd >= 0)
			close(dupfd);
		free(copy);
		return NULL;
	}
	struct undo_entry *e = &c->undo[c->nundo++];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->fd = dupfd;
	e->name = copy;
	return e;
}

static int note_created(struct ctx *c, const char *step, const char *what, int parent,
			const char *name, int is_dir)
{
	struct undo_entry *e = journal(c, UNDO_CREATED, parent, name);
	if (e == NULL) {
		/* Without a journal entry the file would outlive a failure: remove it now. */
		unlinkat(parent, name, is_dir ? AT_REMOVEDIR : 0);
		set_error(step, what, "out of memory or file descriptors");
		return -1;
	}
	e->is_dir = is_dir;
	if (c->have_owner && fchownat(parent, name, c->uid, c->gid, AT_SYMLINK_NOFOLLOW) != 0) {
		set_error(step, what, "cannot give %s to the container owner %u:%u: %s", name,
			  (unsigned)c->uid, (unsigned)c->gid, strerror(errno));
		return -1;
	}
	return 0;
}

static int note_mount(struct ctx *c, const char *step, const char *what, int mount_root_fd)
{
	if (journal(c, UNDO_MOUNT, mount_root_fd, NULL) == NULL) {
		umount2(fd_path(mount_root_fd, 0), MNT_DETACH);
		set_error(step, what, "out of memory or file descriptors");
		return -1;
	}
	return 0;
}

void undo_all(struct ctx *c)
{
	/* Newest first: a mount goes before the file it covers, a file before its directory. */
	for (size_t i = c->nundo; i-- > 0;) {
		struct undo_entry *e = &c->undo[i];
		switch (e->kind) {
		case UNDO_MOUNT:
			umount2(fd_path(e->fd, 0), MNT_DETACH);
			break;
		case UNDO_CREATED:
			/* EROFS: it lives in one of our tmpfs mounts, which goes away with it. */
			unlinkat(e->fd, e->name, e->is_dir ? AT_REMOVEDIR : 0);
			break;
		case UNDO_REPLACED:
			renameat(e->fd, e->aside, e->fd, e->name);
			break;
		}
		close(e->fd);
		free(e->name);
		free(e->aside);
	}
	c->nundo = 0;
}

void commit_all(struct ctx *c)
{
	for (size_t i = 0; i < c->nundo; i++) {
		struct undo_entry *e = &c->undo[i];
		if (e->kind == UNDO_REPLACED)
			unlinkat(e->fd, e->aside, 0);
		close(e->fd);
		free(e->name);
		free(e->aside);
	}
	c->nundo = 0;
}

/* ------------------------------------------------------------------ paths */
/* Why a lookup inside the root failed, in words about the container's tree. */
static const char *lookup_error(int err)
{
	return err == ENOTDIR ? "something that is not a directory is in the way" : strerror(err);
}

static void split_path(const char *path, char *dir, size_t dirlen, const char **base)
{
	const char *slash = strrchr(path, '/');
	size_t n = (size_t)(slash - path);
	if (n == 0)
		n = 1; /* "/name" → "/" */
	if (n >= dirlen)
		n = dirlen - 1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	*base = slash + 1;
}

#define MAX_LINK_DEPTH 16

static int ensure_dir_at(struct ctx *c, const char *step, const char *what, const char *dir,
			 int depth);

/* The container path a symlink `name` in directory `dirfd` points to, in `out`. */
static int link_destination(struct ctx *c, int dirfd, const char *name, char *out, size_t outlen)
{
	char target[4096];
	ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
	if (n < 0)
		return -1;
	target[n] = '\0';
	if (target[0] == '/')
		return snprintf(out, outlen, "%s", target) < (int)outlen ? 0 : (errno = ENAMETOOLONG, -1);
	/* Relative: from the link's directory, whose container path is its path below the root
	 * (both seen through /proc/self/fd in this namespace). */
	char root[4096], here[4096];
	ssize_t rn = readlink(fd_path(c->rootfd, 0), root, sizeof(root) - 1);
	ssize_t hn = readlink(fd_path(dirfd, 1), here, sizeof(here) - 1);
	if (rn < 0 || hn < 0)
		return -1;
	root[rn] = here[hn] = '\0';
	size_t rl = strcmp(root, "/") == 0 ? 0 : (size_t)rn;
	if (strncmp(here, root, rl) != 0 || (here[rl] != '/' && here[rl] != '\0')) {
		errno = EXDEV;
		return -1;
	}
	return snprintf(out, outlen, "%s/%s", here + rl, target) < (int)outlen
		       ? 0
		       : (errno = ENAMETOOLONG, -1);
}

/* A dangling symlink `name` in `dirfd` is in the way: make the directory it names, inside the
 * root (an image's "/usr/lib/x86_64-linux-gnu -> /some/host/dir" means <rootfs>/some/host/dir). */
static int create_link_dir(struct ctx *c, const char *step, const char *what, int dirfd,
			   const char *name, int depth)
{
	char dest[8192];
	if (depth >= MAX_LINK_DEPTH) {
		set_error(step, what, "too many levels of symbolic links");
		return -1;
	}
	if (link_destination(c, dirfd, name, dest, sizeof(dest)) != 0) {
		set_error(step, what, "cannot follow the symbolic link %s: %s", name, strerror(errno));
		return -1;
	}
	int fd = ensure_dir_at(c, step, what, dest, depth + 1);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

int ensure_dir(struct ctx *c, const char *step, const char *what, const char *dir)
{
	return ensure_dir_at(c, step, what, dir, 0);
}

static int ensure_dir_at(struct ctx *c, const char *step, const char *what, const char *dir,
			 int depth)
{
	int cur = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0) {
		set_error(step, what, "dup: %s", strerror(errno));
		return -1;
	}
	char prefix[4096] = "";
	size_t plen = 0;
	for (const char *s = dir; *s != '\0';) {
		while (*s == '/')
			s++;
		if (*s == '\0')
			break;
		const char *e = strchrnul(s, '/');
		size_t len = (size_t)(e - s);
		if (plen + len + 2 > sizeof(prefix)) {
			set_error(step, what, "path too long");
			goto fail;
		}
		prefix[plen++] = '/';
		memcpy(prefix + plen, s, len);
		plen += len;
		prefix[plen] = '\0';
		char name[256];
		if (len >= sizeof(name)) {
			set_error(step, what, "path component too long");
			goto fail;
		}
		memcpy(name, s, len);
		name[len] = '\0';
		s = e;

		int fd = in_root_open(c->rootfd, prefix, O_PATH | O_DIRECTORY);
		if (fd < 0 && errno == ENOENT) {
			char parent[4096];
			snprintf(parent, sizeof(parent), "%.*s", plen - len > 1 ? (int)(plen - len - 1) : 1,
				 prefix);
			if (check_write_dir(c, step, what, cur, parent) != 0)
				goto fail;
			if (mkdirat(cur, name, 0755) == 0) {
				if (note_created(c, step, what, cur, name, 1) != 0)
					goto fail;
			} else if (errno != EEXIST) {
				set_error(step, what, "cannot create directory %s: %s", prefix,
					  strerror(errno));
				goto fail;
			} else if (create_link_dir(c, step, what, cur, name, depth) != 0) {
				goto fail;
			}
			fd = in_root_open(c->rootfd, prefix, O_PATH | O_DIRECTORY);
		}
		if (fd < 0) {
			set_error(step, what, "cannot open directory %s in the container: %s", prefix,
				  lookup_error(errno));
			goto fail;
		}
		close(cur);
		cur = fd;
	}
	return cur;
fail:
	close(cur);
	return -1;
}

/* Create the missing mount point `path` (a dir or an empty file) with `mode`. A dangling
 * symlink at its place is followed inside the root, and what it names is created instead. */
static int create_target(struct ctx *c, const char *step, const char *what, const char *path,
			 int want_dir, mode_t mode, int depth)
{
	char dir[4096];
	const char *base;
	split_path(path, dir, sizeof(dir), &base);
	int parent = ensure_dir_at(c, step, what, dir, depth);
	if (parent < 0)
		return -1;
	if (check_write_dir(c, step, what, parent, dir) != 0) {
		close(parent);
		return -1;
	}
	int rc;
	if (want_dir) {
		rc = mkdirat(parent, base, mode);
	} else {
		rc = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
		if (rc >= 0)
			rc = close(rc);
	}
	if (rc != 0 && errno == EEXIST) {
		char dest[8192];
		struct stat st;
		if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISLNK(st.st_mode)) {
			set_error(step, what, "cannot create the mount point: it appeared meanwhile");
			rc = -1;
		} else if (depth >= MAX_LINK_DEPTH) {
			set_error(step, what, "too many levels of symbolic links");
			rc = -1;
		} else if (link_destination(c, parent, base, dest, sizeof(dest)) != 0) {
			set_error(step, what, "cannot follow the symbolic link at %s: %s", path,
				  strerror(errno));
			rc = -1;
		} else {
			rc = create_target(c, step, what, dest, want_dir, mode, depth + 1);
		}
		close(parent);
		return rc;
	}
	if (rc != 0) {
		set_error(step, what, "cannot create the mount point: %s", strerror(errno));
		close(parent);
		return -1;
	}
	rc = note_created(c, step, what, parent, base, want_dir);
	close(parent);
	return rc;
}

/* O_PATH fd of the target `path`, created (with `mode`, as a dir or an empty file) when missing. */
static int prepare_target(struct ctx *c, const char *step, const char *path, int want_dir,
			  mode_t mode)
{
	struct stat st;
	int fd = in_root_open(c->rootfd, path, O_PATH);
	if (fd < 0 && errno == ENOENT) {
		if (create_target(c, step, path, path, want_dir, mode, 0) != 0)
			return -1;
		fd = in_root_open(c->rootfd, path, O_PATH);
	}
	if (fd < 0) {
		set_error(step, path, "cannot open in the container: %s", lookup_error(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		set_error(step, path, "stat: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (want_dir && !S_ISDIR(st.st_mode)) {
		set_error(step, path, "the source is a directory but the target is not");
		close(fd);
		return -1;
	}
	if (!want_dir && S_ISDIR(st.st_mode)) {
		set_error(step, path, "the target is a directory but the source is not");
		close(fd);
		return -1;
	}
	return fd;
}

static unsigned long locked_flags(int fd)
{
	struct statvfs sv;
	unsigned long f = 0;
	if (fstatvfs(fd, &sv) != 0)
		return 0;
	if (sv.f_flag & ST_RDONLY)
		f |= MS_RDONLY;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

/* Bind-remount the mount whose root is `fd` with `flags`. A mount made in a namespace owned by a
 * less privileged user namespace has locked flags; keep those (as runc does) and try again. */
static int remount_flags(int fd, unsigned long flags)
{
	if (mount(NULL, fd_path(fd, 0), NULL, MS_BIND | MS_REMOUNT | flags, NULL) == 0)
		return 0;
	if (errno != EPERM)
		return -1;
	return mount(NULL, fd_path(fd, 0), NULL, MS_BIND | MS_REMOUNT | flags | locked_flags(fd),
		     NULL);
}

/* Bind `srcfd` over the target `path` (created like the source when missing), then remount. */
static int bind_into(struct ctx *c, const char *step, const char *path, int srcfd,
		     const struct stat *src, mode_t mode, unsigned long flags, int recursive,
		     unsigned long propagation)
{
	int tfd = prepare_target(c, step, path, S_ISDIR(src->st_mode), mode);
	if (tfd < 0)
		return -1;
	if (check_not_shared(step, path, tfd) != 0) {
		close(tfd);
		return -1;
	}
	int rc = mount(fd_path(srcfd, 0), fd_path(tfd, 1), NULL, MS_BIND | (recursive ? MS_REC : 0),
		       NULL);
	close(tfd);
	if (rc != 0) {
		set_error(step, path, "bind mount: %s", strerror(errno));
		return -1;
	}
	/* Re-resolve: the path now leads to the new mount's root, a handle for remount and undo. */
	int mfd = in_root_open(c->rootfd, path, O_PATH);
	struct stat st;
	if (mfd < 0 || fstat(mfd, &st) != 0 || st.st_dev != src->st_dev || st.st_ino != src->st_ino) {
		set_error(step, path, "the bind mount is not where it was made (raced?)");
		if (mfd >= 0)
			close(mfd);
		return -1;
	}
	if (note_mount(c, step, path, mfd) != 0) {
		close(mfd);
		return -1;
	}
	if (remount_flags(mfd, flags) != 0) {
		set_error(step, path, "remount with the requested flags: %s", strerror(errno));
		close(mfd);
		return -1;
	}
	if (propagation != 0 && mount(NULL, fd_path(mfd, 0), NULL, propagation, NULL) != 0) {
		set_error(step, path, "set mount propagation: %s", strerror(errno));
		close(mfd);
		return -1;
	}
	close(mfd);
	return 0;
}

/* ------------------------------------------------------------------ records */
int inject_device(struct ctx *c, const struct device_rec *d)
{
	int sfd = open(d->host_path, O_PATH | O_CLOEXEC);
	struct stat st;
	if (sfd < 0) {
		set_error("device", d->path, "host node %s: %s", d->host_path, strerror(errno));
		return -1;
	}
	if (fstat(sfd, &st) != 0) {
		set_error("device", d->path, "host node %s: %s", d->host_path, strerror(errno));
		close(sfd);
		return -1;
	}
	int is_type = d->type == 'b' ? S_ISBLK(st.st_mode) : S_ISCHR(st.st_mode);
	if (!is_type) {
		set_error("device", d->path, "host path %s is not a %s device", d->host_path,
			  d->type == 'b' ? "block" : "character");
		close(sfd);
		return -1;
	}
	if (st.st_rdev != makedev(d->major, d->minor)) {
		set_error("device", d->path, "host node %s is %u:%u, expected %u:%u", d->host_path,
			  major(st.st_rdev), minor(st.st_rdev), d->major, d->minor);
		close(sfd);
		return -1;
	}
	/* Device nodes work on a read-only mount; nodev would make them useless. */
	int rc = bind_into(c, "device", d->path, sfd, &st, d->mode, MS_RDONLY | MS_NOSUID | MS_NOEXEC,
			   0, 0);
	close(sfd);
	return rc;
}

int inject_mount(struct ctx *c, const struct mount_rec *m)
{
	int sfd = open(m->host_path, O_PATH | O_CLOEXEC);
	struct stat st;
	if (sfd < 0 || fstat(sfd, &st) != 0) {
		set_error("mount", m->path, "host path %s: %s", m->host_path, strerror(errno));
		if (sfd >= 0)
			close(sfd);
		return -1;
	}
	int rc = bind_into(c, "mount", m->path, sfd, &st, st.st_mode & 07777, m->flags,
			   m->recursive, m->propagation);
	close(sfd);
	return rc;
}

int inject_symlink(struct ctx *c, const struct symlink_rec *s)
{
	char dir[4096];
	const char *base;
	split_path(s->link, dir, sizeof(dir), &base);
	int parent = ensure_dir(c, "symlink", s->link, dir);
	if (parent < 0)
		return -1;
	int rc = -1;
	struct stat st;
	if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno != ENOENT) {
			set_error("symlink", s->link, "stat: %s", strerror(errno));
			goto out;
		}
		if (check_write_dir(c, "symlink", s->link, parent, dir) != 0)
			goto out;
		if (symlinkat(s->target, parent, base) != 0) {
			set_error("symlink", s->link, "cannot create: %s", strerror(errno));
			goto out;
		}
		rc = note_created(c, "symlink", s->link, parent, base, 0);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		set_error("symlink", s->link, "a directory is in the way");
		goto out;
	}
	if (S_ISLNK(st.st_mode)) {
		char cur[4096];
		ssize_t n = readlinkat(parent, base, cur, sizeof(cur) - 1);
		if (n >= 0) {
			cur[n] = '\0';
			if (strcmp(cur, s->target) == 0) {
				rc = 0; /* already right: leave it */
				goto out;
			}
		}
	}
	/* Replace a wrong file or link atomically; the old one waits aside until commit or undo. */
	if (check_write_dir(c, "symlink", s->link, parent, dir) != 0)
		goto out;
	char aside[64];
	snprintf(aside, sizeof(aside), ".nvhook-%d-%u", (int)getpid(), c->aside_counter++);
	if (symlinkat(s->target, parent, aside) != 0) {
		set_error("symlink", s->link, "cannot create: %s", strerror(errno));
		goto out;
	}
	if (c->have_owner && fchownat(parent, aside, c->uid, c->gid, AT_SYMLINK_NOFOLLOW) != 0) {
		set_error("symlink", s->link, "cannot set the owner: %s", strerror(errno));
		unlinkat(parent, aside, 0);
		goto out;
	}
	if (renameat2(parent, aside, parent, base, RENAME_EXCHANGE) != 0) {
		set_error("symlink", s->link, "cannot replace the existing %s: %s",
			  S_ISLNK(st.st_mode) ? "link" : "file", strerror(errno));
		unlinkat(parent, aside, 0);
		goto out;
	}
	struct undo_entry *e = journal(c, UNDO_REPLACED, parent, base);
	if (e == NULL || (e->aside = strdup(aside)) == NULL) {
		renameat2(parent, aside, parent, base, RENAME_EXCHANGE);
		unlinkat(parent, aside, 0);
		if (e != NULL) {
			close(e->fd);
			free(e->name);
			c->nundo--;
		}
		set_error("symlink", s->link, "out of memory or file descriptors");
		goto out;
	}
	rc = 0;
out:
	close(parent);
	return rc;
}

/* ------------------------------------------------------------------ /proc/driver/nvidia mask */
static int dir_is_empty(int fd)
{
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return 0;
	}
	int empty = 1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	closedir(d);
	return empty;
}

static int mount_tmpfs(struct ctx *c, const char *path, int onfd, const char *opts)
{
	if (check_not_shared("procmask", path, onfd) != 0)
		return -1;
	if (mount("tmpfs", fd_path(onfd, 0), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) != 0) {
		set_error("procmask", path, "mount tmpfs: %s", strerror(errno));
		return -1;
	}
	int mfd = in_root_open(c->rootfd, path, O_PATH | O_DIRECTORY);
	struct statfs sf;
	if (mfd < 0 || fstatfs(mfd, &sf) != 0 || sf.f_type != TMPFS_MAGIC) {
		set_error("procmask", path, "the tmpfs is not where it was mounted (raced?)");
		if (mfd >= 0)
			close(mfd);
		return -1;
	}
	if (note_mount(c, "procmask", path, mfd) != 0) {
		close(mfd);
		return -1;
	}
	struct sealed *grown = realloc(c->seal, (c->nseal + 1) * sizeof(*grown));
	char *copy = strdup(path);
	if (grown != NULL)
		c->seal = grown;
	if (grown == NULL || copy == NULL) {
		set_error("procmask", path, "out of memory");
		free(copy);
		close(mfd);
		return -1;
	}
	c->seal[c->nseal].fd = mfd;
	c->seal[c->nseal++].path = copy;
	return mfd;
}

/*
 * The directory to cover. Without a loaded driver (a fake driver root) the container's procfs has
 * no /proc/driver/nvidia and none can be made there; then an EMPTY parent (/proc/driver is) is
 * covered by a tmpfs first, which hides nothing, and the directory is made in it.
 */
static int procmask_target(struct ctx *c, const char *path)
{
	int fd = in_root_open(c->rootfd, path, O_PATH | O_DIRECTORY);
	if (fd >= 0 || errno != ENOENT) {
		if (fd < 0)
			set_error("procmask", path, "cannot open in the container: %s", strerror(errno));
		return fd;
	}
	char dir[4096];
	const char *base;
	split_path(path, dir, sizeof(dir), &base);
	int parent = ensure_dir(c, "procmask", path, dir);
	if (parent < 0)
		return -1;
	if (check_write_dir(c, "procmask", path, parent, dir) != 0) {
		close(parent);
		return -1;
	}
	if (mkdirat(parent, base, 0555) == 0) {
		int rc = note_created(c, "procmask", path, parent, base, 1);
		close(parent);
		return rc != 0 ? -1 : in_root_open(c->rootfd, path, O_PATH | O_DIRECTORY);
	}
	int mkdir_errno = errno;
	if (!dir_is_empty(parent)) {
		set_error("procmask", path, "cannot create it (%s) and %s is not empty",
			  strerror(mkdir_errno), dir);
		close(parent);
		return -1;
	}
	int shadow = mount_tmpfs(c, dir, parent, "mode=0555,size=16k,nr_inodes=16");
	close(parent);
	if (shadow < 0)
		return -1;
	if (mkdirat(shadow, base, 0555) != 0) {
		set_error("procmask", path, "mkdir in the tmpfs over %s: %s", dir, strerror(errno));
		return -1;
	}
	fd = in_root_open(c->rootfd, path, O_PATH | O_DIRECTORY);
	if (fd < 0)
		set_error("procmask", path, "cannot open in the container: %s", strerror(errno));
	return fd;
}

static int copy_proc_file(const char *path, int hostfd, int maskfd, const char *name,
			  const char *host_dir)
{
	char where[4096];
	if (snprintf(where, sizeof(where), "%s/%s", path, name) >= (int)sizeof(where)) {
		set_error("procmask", path, "path too long");
		return -1;
	}
	int in = openat(hostfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0) {
		set_error("procmask", where, "host file %s/%s: %s", host_dir, name, strerror(errno));
		return -1;
	}
	char *buf = malloc(PROC_FILE_MAX);
	size_t len = 0;
	ssize_t n = 0;
	/* procfs files report size 0: read until EOF. */
	while (buf != NULL && len < PROC_FILE_MAX &&
	       (n = read(in, buf + len, PROC_FILE_MAX - len)) > 0)
		len += (size_t)n;
	close(in);
	if (buf == NULL || n < 0) {
		set_error("procmask", where, "read host file: %s",
			  buf == NULL ? "out of memory" : strerror(errno));
		free(buf);
		return -1;
	}
	if (strcmp(name, "params") == 0) {
		/* The driver inside must not recreate or chmod device nodes. */
		static const char key[] = "ModifyDeviceFiles: 1";
		for (size_t i = 0; i + sizeof(key) - 1 <= len; i++)
			if (memcmp(buf + i, key, sizeof(key) - 1) == 0 && (i == 0 || buf[i - 1] == '\n'))
				buf[i + sizeof(key) - 2] = '0';
	}
	int out = openat(maskfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
	if (out < 0) {
		set_error("procmask", where, "create: %s", strerror(errno));
		free(buf);
		return -1;
	}
	for (size_t off = 0; off < len;) {
		n = write(out, buf + off, len - off);
		if (n <= 0) {
			set_error("procmask", where, "write: %s", n < 0 ? strerror(errno) : "short write");
			close(out);
			free(buf);
			return -1;
		}
		off += (size_t)n;
	}
	close(out);
	free(buf);
	return 0;
}

/* The host's gpus/<bus id> entry: the given form, then the other domain width, each as given and
 * in lower case (NVML writes upper-case hex, the driver's /proc lower-case). */
static int open_host_gpu(int hostfd, const char *bus, char *found, size_t foundlen)
{
	char cand[4][80];
	if (strlen(bus) > 64) {
		errno = ENAMETOOLONG;
		return -1;
	}
	const char *colon = strchr(bus, ':');
	size_t dlen = colon ? (size_t)(colon - bus) : 0;
	snprintf(cand[0], sizeof(cand[0]), "%.64s", bus);
	if (dlen == 8 && strncmp(bus, "0000", 4) == 0)
		snprintf(cand[1], sizeof(cand[1]), "%.64s", bus + 4);
	else if (dlen == 4)
		snprintf(cand[1], sizeof(cand[1]), "0000%.64s", bus);
	else
		snprintf(cand[1], sizeof(cand[1]), "%.64s", bus);
	for (int i = 0; i < 2; i++) {
		memcpy(cand[i + 2], cand[i], sizeof(cand[0]));
		for (char *p = cand[i + 2]; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
	}
	for (int i = 0; i < 4; i++) {
		char rel[96];
		snprintf(rel, sizeof(rel), "gpus/%.80s", cand[i]);
		int fd = openat(hostfd, rel, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			snprintf(found, foundlen, "%.*s", (int)foundlen - 1, cand[i]);
			return fd;
		}
		if (errno != ENOENT)
			return -1;
	}
	errno = ENOENT;
	return -1;
}

int inject_procmask(struct ctx *c, const struct procmask_rec *p)
{
	int hostfd = open(p->host_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (hostfd < 0) {
		set_error("procmask", p->path, "host dir %s: %s", p->host_dir, strerror(errno));
		return -1;
	}
	int rc = -1, gpus = -1;
	int tfd = procmask_target(c, p->path);
	if (tfd < 0)
		goto out;
	int mask = mount_tmpfs(c, p->path, tfd, PROCMASK_TMPFS_OPTS);
	close(tfd);
	if (mask < 0)
		goto out;
	for (size_t i = 0; i < p->nfiles; i++)
		if (copy_proc_file(p->path, hostfd, mask, p->files[i], p->host_dir) != 0)
			goto out;
	if (p->nbus_ids == 0) {
		rc = 0;
		goto out;
	}
	char gpus_path[4096];
	if (snprintf(gpus_path, sizeof(gpus_path), "%s/gpus", p->path) >= (int)sizeof(gpus_path) - 100) {
		set_error("procmask", p->path, "path too long");
		goto out;
	}
	if (mkdirat(mask, "gpus", 0555) != 0 ||
	    (gpus = openat(mask, "gpus", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		set_error("procmask", gpus_path, "mkdir: %s", strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < p->nbus_ids; i++) {
		char name[80], where[4096 + 100];
		snprintf(where, sizeof(where), "%s/%.80s", gpus_path, p->bus_ids[i]);
		int src = open_host_gpu(hostfd, p->bus_ids[i], name, sizeof(name));
		struct stat st;
		if (src < 0 || fstat(src, &st) != 0) {
			set_error("procmask", where, "no such GPU in the host's %s/gpus: %s",
				  p->host_dir, strerror(errno));
			if (src >= 0)
				close(src);
			goto out;
		}
		snprintf(where, sizeof(where), "%s/%.79s", gpus_path, name);
		if (mkdirat(gpus, name, 0555) != 0 && errno != EEXIST) {
			set_error("procmask", where, "mkdir: %s", strerror(errno));
			close(src);
			goto out;
		}
		int r = bind_into(c, "procmask", where, src, &st, 0555,
				  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0, 0);
		close(src);
		if (r != 0)
			goto out;
	}
	rc = 0;
out:
	if (gpus >= 0)
		close(gpus);
	close(hostfd);
	return rc;
}

int seal_tmpfs(struct ctx *c)
{
	for (size_t i = 0; i < c->nseal; i++) {
		if (remount_flags(c->seal[i].fd, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC) != 0) {
			set_error("procmask", c->seal[i].path, "remount the tmpfs read-only: %s",
				  strerror(errno));
			return -1;
		}
	}
	return 0;
}

void ctx_release(struct ctx *c)
{
	for (size_t i = 0; i < c->nseal; i++) {
		close(c->seal[i].fd);
		free(c->seal[i].path);
	}
	free(c->seal);
	c->seal = NULL;
	c->nseal = 0;
	free(c->undo);
	c->undo = NULL;
	c->capundo = 0;
	if (c->rootfd >= 0)
		close(c->rootfd);
	c->rootfd = -1;
}
