/* Mount ids (statx) and the propagation of mounts (/proc/self/mountinfo in the container's
 * namespace). */
#include "mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "procfile.h"

int mount_id(int fd, uint64_t *id)
{
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) == 0 &&
	    (stx.stx_mask & STATX_MNT_ID)) {
		*id = stx.stx_mnt_id;
		return 0;
	}
	/* Before Linux 5.8: name_to_handle_at reports the same id (a too-small handle is fine:
	 * EOVERFLOW still fills it in). */
	struct {
		struct file_handle fh;
		unsigned char room[128];
	} h = {.fh.handle_bytes = 128};
	int mnt;
	if (name_to_handle_at(fd, "", &h.fh, &mnt, AT_EMPTY_PATH) != 0 && errno != EOVERFLOW)
		return -1;
	*id = (uint64_t)mnt;
	return 0;
}

int path_mount(int rootfd, const char *dir, uint64_t *id, int *mount_root)
{
	uint64_t parent;
	if (mount_root != NULL)
		*mount_root = -1;
	int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0 || mount_id(cur, id) != 0) {
		if (cur >= 0)
			close(cur);
		return -1;
	}
	for (const char *s = dir; *s != '\0';) {
		while (*s == '/')
			s++;
		const char *e = strchrnul(s, '/');
		size_t len = (size_t)(e - s);
		char name[256];
		if (len == 0 || len >= sizeof(name))
			break;
		memcpy(name, s, len);
		name[len] = '\0';
		s = e;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			break;
		struct stat st;
		int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			break;
		parent = *id;
		if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode) || mount_id(fd, id) != 0) {
			*id = parent;
			close(fd);
			break;
		}
		if (*id != parent && mount_root != NULL) {
			/* A mount's root: the deepest one on the path is the mount the path names. */
			if (*mount_root >= 0)
				close(*mount_root);
			*mount_root = fcntl(fd, F_DUPFD_CLOEXEC, 0);
			if (*mount_root < 0) {
				close(fd);
				close(cur);
				return -1;
			}
		}
		close(cur);
		cur = fd;
	}
	close(cur);
	return 0;
}

int check_write_dir(struct ctx *c, const char *step, const char *what, int dirfd,
		    const char *dir)
{
	uint64_t actual, root, lexical;
	if (mount_id(dirfd, &actual) != 0 || mount_id(c->rootfd, &root) != 0 ||
	    path_mount(c->rootfd, dir, &lexical, NULL) != 0) {
		set_error(step, what, "cannot read the mount id of %s: %s", dir, strerror(errno));
		return -1;
	}
	if (actual == root || actual == lexical)
		return 0;
	set_error(step, what,
		  "%s leads through a symbolic link of the image into another mount (a volume?); "
		  "nvhook does not write across mount boundaries: fix the link in the image or the "
		  "volume's place", dir);
	return -1;
}

/* ---------------------------------------------------------------- propagation */
struct mnt_entry {
	uint64_t id;
	int shared;
	char *point;
};

static struct {
	struct mnt_entry *v;
	size_t n;
	char *text;
} table;

static int load_table(void)
{
	free(table.v);
	free(table.text);
	memset(&table, 0, sizeof(table));
	size_t len = 0;
	char *buf = read_all_at(AT_FDCWD, "/proc/self/mountinfo", &len);
	if (buf == NULL)
		return -1;
	table.text = buf;
	size_t lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	table.v = calloc(lines, sizeof(*table.v));
	if (table.v == NULL)
		return -1;
	for (char *line = buf, *next; line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		/* id parent major:minor root point options [optional fields...] - fstype ... */
		char *save = NULL, *f[6], *tok = strtok_r(line, " ", &save);
		size_t nf = 0;
		while (tok != NULL && nf < 6) {
			f[nf++] = tok;
			if (nf < 6)
				tok = strtok_r(NULL, " ", &save);
		}
		if (nf < 6)
			continue;
		struct mnt_entry *e = &table.v[table.n++];
		e->id = strtoull(f[0], NULL, 10);
		unescape_octal(f[4]);
		e->point = f[4];
		for (tok = strtok_r(NULL, " ", &save); tok != NULL && strcmp(tok, "-") != 0;
		     tok = strtok_r(NULL, " ", &save))
			if (strncmp(tok, "shared:", 7) == 0)
				e->shared = 1;
	}
	return 0;
}

static const struct mnt_entry *find_mount(uint64_t id)
{
	/* Our own new mounts are not in a table read earlier: read again on a miss. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < table.n; i++)
			if (table.v[i].id == id)
				return &table.v[i];
		if (load_table() != 0)
			return NULL;
	}
	return NULL;
}

int check_not_shared(const char *step, const char *what, int fd)
{
	uint64_t id;
	if (mount_id(fd, &id) != 0) {
		set_error(step, what, "cannot read the mount id: %s", strerror(errno));
		return -1;
	}
	const struct mnt_entry *m = find_mount(id);
	if (m == NULL) {
		set_error(step, what, "mount %llu is not in /proc/self/mountinfo",
			  (unsigned long long)id);
		return -1;
	}
	if (!m->shared)
		return 0;
	set_error(step, what,
		  "lies on the mount at %s, which has shared propagation (a volume with rshared or "
		  "Bidirectional propagation?): a mount here would appear on the host too and "
		  "outlive the container; give that volume private or rslave propagation",
		  m->point);
	return -1;
}
