/* Which device cgroup a process is in, and a checked directory fd for it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/magic.h>

#include "cgroup_int.h"
#include "error.h"
#include "procfile.h"

struct cg_mount {
	unsigned int dev_major, dev_minor;
	int version; /* 1: a v1 hierarchy carrying `devices`; 2: cgroup2 */
	char *root, *point;
};

struct cg_mounts {
	struct cg_mount *v;
	size_t n;
	char *text; /* the file the strings point into */
};


static int has_option(const char *list, const char *opt)
{
	size_t n = strlen(opt);

	for (const char *p = list; p != NULL && *p != '\0';) {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

		if (len == n && strncmp(p, opt, n) == 0)
			return 1;
		p = end != NULL ? end + 1 : NULL;
	}
	return 0;
}

static void mounts_free(struct cg_mounts *m)
{
	free(m->v);
	free(m->text);
	m->v = NULL;
	m->text = NULL;
	m->n = 0;
}

/* Keep only the mounts that can hold a device cgroup: v1 with `devices`, and cgroup2. */
static int read_mounts(int dir_fd, const char *file, struct cg_mounts *out)
{
	char *line, *next, *f[64];
	struct cg_mount *grown;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->text = read_all_at(dir_fd, file, NULL);
	if (out->text == NULL)
		return -1;
	for (line = out->text; line != NULL && *line != '\0'; line = next) {
		size_t nf = 0, sep = 0;
		char *save = NULL, *tok;
		unsigned int maj, min;
		int version = 0;

		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		for (tok = strtok_r(line, " ", &save); tok != NULL && nf < 64;
		     tok = strtok_r(NULL, " ", &save))
			f[nf++] = tok;
		for (size_t i = 6; i < nf; i++)
			if (strcmp(f[i], "-") == 0) {
				sep = i;
				break;
			}
		if (sep == 0 || sep + 3 >= nf)
			continue;
		if (strcmp(f[sep + 1], "cgroup2") == 0)
			version = 2;
		else if (strcmp(f[sep + 1], "cgroup") == 0 && has_option(f[sep + 3], "devices"))
			version = 1;
		if (version == 0 || sscanf(f[2], "%u:%u", &maj, &min) != 2)
			continue;
		if (out->n == cap) {
			cap = cap ? cap * 2 : 8;
			grown = realloc(out->v, cap * sizeof(*grown));
			if (grown == NULL) {
				mounts_free(out);
				errno = ENOMEM;
				return -1;
			}
			out->v = grown;
		}
		unescape_octal(f[3]);
		unescape_octal(f[4]);
		out->v[out->n++] = (struct cg_mount){ maj, min, version, f[3], f[4] };
	}
	return 0;
}

/* The path of `pid` in the v1 devices hierarchy or in cgroup2, from /proc/<pid>/cgroup. */
static int cgroup_line(const char *text, int version, char *out, size_t outlen)
{
	const char *line = text;

	while (line != NULL && *line != '\0') {
		const char *nl = strchr(line, '\n');
		size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
		const char *c1 = memchr(line, ':', len);
		const char *c2 = c1 != NULL ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;

		if (c2 != NULL) {
			size_t clen = (size_t)(c2 - c1 - 1), plen = len - (size_t)(c2 + 1 - line);
			char ctrl[256];
			int match;

			if (clen < sizeof(ctrl)) {
				memcpy(ctrl, c1 + 1, clen);
				ctrl[clen] = '\0';
				if (version == 2)
					match = c1 == line + 1 && line[0] == '0' && clen == 0;
				else
					match = has_option(ctrl, "devices");
				if (match && plen < outlen) {
					memcpy(out, c2 + 1, plen);
					out[plen] = '\0';
					return 0;
				}
			}
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	return -1;
}

static int pid_listed(const char *procs, pid_t pid)
{
	const char *p = procs;

	while (*p != '\0') {
		char *end;
		long v = strtol(p, &end, 10);

		if (end == p)
			break;
		if (v == (long)pid)
			return 1;
		p = end;
		while (*p == '\n')
			p++;
	}
	return 0;
}

/*
 * Open `cgpath` under mount `m` if the mount reaches it from here, and prove it is the right
 * directory: the hierarchy's own filesystem (st_dev, magic) and `pid` among its processes. The
 * proof matters because a path read from another mount namespace can name a different
 * directory (or a different cgroup of the same hierarchy) in ours.
 */
static int open_candidate(const struct cg_mount *m, const char *cgpath, pid_t pid, char *path,
			  size_t pathlen)
{
	size_t rootlen = strlen(m->root);
	const char *rel;
	struct statfs sfs;
	struct stat st;
	char *procs;
	int fd, n, ok;

	if (strcmp(m->root, "/") == 0)
		rel = cgpath;
	else if (strncmp(cgpath, m->root, rootlen) == 0 &&
		 (cgpath[rootlen] == '\0' || cgpath[rootlen] == '/'))
		rel = cgpath + rootlen;
	else
		return -1;
	if (strcmp(m->point, "/") == 0 && rel[0] != '\0')
		n = snprintf(path, pathlen, "%s", rel);
	else
		n = snprintf(path, pathlen, "%s%s", m->point, strcmp(rel, "/") == 0 ? "" : rel);
	if (n < 0 || (size_t)n >= pathlen)
		return -1;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ok = fstat(fd, &st) == 0 && st.st_dev == makedev(m->dev_major, m->dev_minor) &&
	     fstatfs(fd, &sfs) == 0 &&
	     (unsigned long)sfs.f_type ==
		     (m->version == 1 ? (unsigned long)CGROUP_SUPER_MAGIC : (unsigned long)CGROUP2_SUPER_MAGIC);
	if (ok) {
		procs = read_all_at(fd, "cgroup.procs", NULL);
		ok = procs != NULL && pid_listed(procs, pid);
		free(procs);
	}
	if (!ok) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Find and open the device cgroup of `pid` (whose /proc directory is procfd). The version is the container's view (its
 * mountinfo); the directory is reached through our own mounts of that hierarchy first (their
 * paths are valid here by construction), then through the container's.
 */
int cg_find(int procfd, pid_t pid, int *version, char *path, size_t pathlen)
{
	char file[64], cgpath[PATH_MAX];
	struct cg_mounts theirs, ours;
	const struct cg_mount *hier = NULL;
	char *cgtext;
	int fd = -1;

	snprintf(file, sizeof(file), "/proc/%d/mountinfo", (int)pid);
	if (read_mounts(procfd, "mountinfo", &theirs) < 0) {
		set_error("cgroup-find", file, "%s", strerror(errno));
		return -1;
	}
	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)pid);
	cgtext = read_all_at(procfd, "cgroup", NULL);
	if (cgtext == NULL) {
		set_error("cgroup-find", file, "%s", strerror(errno));
		mounts_free(&theirs);
		return -1;
	}
	/* Hybrid hosts: a v1 devices controller is the one the kernel enforces for this task. */
	for (int v = 1; v <= 2 && hier == NULL; v++) {
		for (size_t i = 0; i < theirs.n && hier == NULL; i++)
			if (theirs.v[i].version == v &&
			    cgroup_line(cgtext, v, cgpath, sizeof(cgpath)) == 0)
				hier = &theirs.v[i];
	}
	free(cgtext);
	if (hier == NULL) {
		set_error("cgroup-find", file,
			  "no cgroup v1 devices hierarchy or cgroup2 mount for this process "
			  "(is cgroup support mounted? set no-cgroups to skip device cgroups)");
		mounts_free(&theirs);
		return -1;
	}
	*version = hier->version;
	if (read_mounts(AT_FDCWD, "/proc/self/mountinfo", &ours) < 0)
		memset(&ours, 0, sizeof(ours));
	for (size_t i = 0; i < ours.n && fd < 0; i++)
		if (ours.v[i].version == hier->version && ours.v[i].dev_major == hier->dev_major &&
		    ours.v[i].dev_minor == hier->dev_minor)
			fd = open_candidate(&ours.v[i], cgpath, pid, path, pathlen);
	for (size_t i = 0; i < theirs.n && fd < 0; i++)
		if (theirs.v[i].version == hier->version && theirs.v[i].dev_major == hier->dev_major &&
		    theirs.v[i].dev_minor == hier->dev_minor)
			fd = open_candidate(&theirs.v[i], cgpath, pid, path, pathlen);
	if (fd < 0)
		set_error("cgroup-find", cgpath,
			  "no mount of the %s hierarchy here reaches the cgroup of pid %d "
			  "(mount it, or set no-cgroups)",
			  hier->version == 1 ? "cgroup v1 devices" : "cgroup2", (int)pid);
	mounts_free(&theirs);
	mounts_free(&ours);
	return fd;
}
