/* What ldconfig will open by name from the image, checked before it runs: ld.so.conf, what it
 * includes, and its cache files must be regular files (docs/design.md, "ldconfig"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "inject.h"
#include "ldconfig.h"

#define CONF_DEPTH_MAX 8
#define CONF_FILES_MAX 1024
#define CONF_SIZE_MAX (1 << 20)

static const char *kind_of(mode_t m)
{
	return S_ISFIFO(m)   ? "a FIFO"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	       : S_ISSOCK(m) ? "a socket"
			     : "not a regular file";
}

struct conf_walk {
	struct ctx *c;
	size_t files;
};

static int check_conf(struct conf_walk *w, const char *path, int depth);

/* "include PATTERN": a path or a wildcard in its last component, relative to the including
 * file's directory when not absolute (as ldconfig reads it). */
static int check_include(struct conf_walk *w, const char *from, const char *pat, int depth)
{
	char full[4096], dir[4096];
	const char *slash = strrchr(from, '/');
	int n = pat[0] == '/' ? snprintf(full, sizeof(full), "%s", pat)
			      : snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - from), from, pat);
	if (n < 0 || (size_t)n >= sizeof(full)) {
		set_error("ldconfig", from, "an include path is too long");
		return -1;
	}
	const char *base = strrchr(full, '/') + 1;
	snprintf(dir, sizeof(dir), "%.*s", base - full > 1 ? (int)(base - full - 1) : 1, full);
	if (strpbrk(dir, "*?[") != NULL) {
		set_error("ldconfig", from,
			  "include %s: wildcards are supported in the last component only; list the "
			  "directories in the image's ld.so.conf", pat);
		return -1;
	}
	if (strpbrk(base, "*?[") == NULL)
		return check_conf(w, full, depth + 1);
	/* O_DIRECTORY: a FIFO or a device node in its place is refused, never opened. */
	int dfd = in_root_open(w->c->rootfd, dir, O_RDONLY | O_DIRECTORY | O_NONBLOCK);
	if (dfd < 0)
		return 0; /* missing: ldconfig's glob finds nothing either */
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return 0;
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char entry[4096];
		if (fnmatch(base, de->d_name, FNM_PERIOD) != 0)
			continue;
		if (snprintf(entry, sizeof(entry), "%s/%s", strcmp(dir, "/") ? dir : "", de->d_name) >=
		    (int)sizeof(entry))
			continue;
		rc = check_conf(w, entry, depth + 1);
	}
	closedir(d);
	return rc;
}

/*
 * Check, before ldconfig runs, every file it will open by name from the image: ld.so.conf and
 * what it includes must be regular files (a FIFO would block it, a device node would be opened
 * as root). Files are looked at through O_PATH handles, read through a reopening of the same
 * inode, so a swap between check and read changes nothing here. Directories need no check:
 * ldconfig opens them with O_DIRECTORY.
 */
static int check_conf(struct conf_walk *w, const char *path, int depth)
{
	struct stat st;
	if (depth > CONF_DEPTH_MAX) {
		set_error("ldconfig", path, "includes nest deeper than %d (an include loop?)",
			  CONF_DEPTH_MAX);
		return -1;
	}
	if (++w->files > CONF_FILES_MAX) {
		set_error("ldconfig", path, "more than %d configuration files", CONF_FILES_MAX);
		return -1;
	}
	int fd = in_root_open(w->c->rootfd, path, O_PATH);
	if (fd < 0)
		return 0; /* missing or unreachable: ldconfig skips it too */
	if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
		close(fd);
		return 0; /* a directory matched by a wildcard: ldconfig cannot read it as a file */
	}
	if (!S_ISREG(st.st_mode)) {
		set_error("ldconfig", path,
			  "is %s in the image, not a regular file; ldconfig would open it (make it a "
			  "regular file or remove it)", kind_of(st.st_mode));
		close(fd);
		return -1;
	}
	if (st.st_size > CONF_SIZE_MAX) {
		set_error("ldconfig", path, "is larger than %d bytes", CONF_SIZE_MAX);
		close(fd);
		return -1;
	}
	int rfd = open(fd_path(fd, 0), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	close(fd);
	char *buf = malloc((size_t)st.st_size + 1);
	size_t len = 0;
	ssize_t r = 0;
	while (rfd >= 0 && buf != NULL && len < (size_t)st.st_size &&
	       (r = read(rfd, buf + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)r;
	if (rfd >= 0)
		close(rfd);
	if (rfd < 0 || buf == NULL || r < 0) {
		set_error("ldconfig", path, "read: %s", buf == NULL ? "out of memory" : strerror(errno));
		free(buf);
		return -1;
	}
	buf[len] = '\0';
	int rc = 0;
	for (char *line = buf, *next; rc == 0 && line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		line[strcspn(line, "#")] = '\0';
		line += strspn(line, " \t");
		if (strncmp(line, "include", 7) != 0 || (line[7] != ' ' && line[7] != '\t'))
			continue;
		char *save = NULL;
		for (char *pat = strtok_r(line + 7, " \t\r", &save); rc == 0 && pat != NULL;
		     pat = strtok_r(NULL, " \t\r", &save))
			rc = check_include(w, path, pat, depth);
	}
	free(buf);
	return rc;
}

/* Files ldconfig opens besides the configuration: its aux cache (read), and the temporary
 * files it writes before renaming (a FIFO there would block the open for writing). */
static int check_other_files(struct ctx *c)
{
	static const char *const paths[] = {"/etc/ld.so.cache~", "/var/cache/ldconfig/aux-cache",
					     "/var/cache/ldconfig/aux-cache~"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct stat st;
		int fd = in_root_open(c->rootfd, paths[i], O_PATH);
		if (fd < 0)
			continue;
		int bad = fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
		close(fd);
		if (bad) {
			set_error("ldconfig", paths[i],
				  "is %s in the image, not a regular file; ldconfig would open it "
				  "(remove it)", kind_of(st.st_mode));
			return -1;
		}
	}
	return 0;
}

int check_ldconfig_inputs(struct ctx *c)
{
	struct conf_walk w = {.c = c};
	if (check_conf(&w, "/etc/ld.so.conf", 0) != 0)
		return -1;
	return check_other_files(c);
}
