/* The state of one helper run: the container root and the undo journal. Depends on nothing. */
#ifndef NVHOOK_CTX_H
#define NVHOOK_CTX_H

#include <stddef.h>
#include <sys/types.h>

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
	int rootfd;         /* O_PATH fd of the container's root, opened inside its mount namespace */
	const char *rootfs; /* its path there (the input's rootfs) */
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

#endif
