/* The helper's input: tab-separated records (docs/contracts.md §2) parsed into a struct plan. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "error.h"
#include "plan.h"

#define MAX_FIELDS 4096

static char line_ref[32];

static const char *where(size_t lineno)
{
	snprintf(line_ref, sizeof(line_ref), "line %zu", lineno);
	return line_ref;
}

/* Grow array `arr` (with `n` items) by one zeroed item; evaluates to it, or NULL. */
#define PUSH(arr, n)                                                                     \
	({                                                                               \
		__typeof__(arr) grown_ = realloc((arr), ((n) + 1) * sizeof(*(arr)));     \
		grown_ == NULL ? NULL                                                    \
			       : ((arr) = grown_, memset(&grown_[(n)], 0, sizeof(*grown_)), \
				  &grown_[(n)++]);                                       \
	})

static int parse_uint(const char *s, int base, unsigned long max, unsigned long *out)
{
	char *end;
	if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, base);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*out = v;
	return 0;
}

/* An absolute path; container paths must also be normalised (no ".", "..", "//", trailing "/"). */
static int check_path(const char *p, int container, size_t lineno, const char *what)
{
	if (p[0] != '/') {
		set_error("input", where(lineno), "%s '%s' is not an absolute path", what, p);
		return -1;
	}
	if (strlen(p) >= PATH_MAX) {
		set_error("input", where(lineno), "%s is longer than PATH_MAX", what);
		return -1;
	}
	if (!container)
		return 0;
	if (strcmp(p, "/") == 0) {
		set_error("input", where(lineno), "%s may not be the container root itself", what);
		return -1;
	}
	for (const char *c = p; *c != '\0';) {
		const char *s = c + 1, *e = strchr(s, '/');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
			set_error("input", where(lineno),
				  "%s '%s' is not normalised (empty, '.' or '..' component)", what, p);
			return -1;
		}
		if (e == NULL)
			break;
		c = e;
	}
	return 0;
}

/* A single directory-entry name (a /proc file or bus id): no '/', not "." or "..". */
static int check_name(const char *n, size_t lineno, const char *what)
{
	if (n[0] == '\0' || strchr(n, '/') != NULL || strcmp(n, ".") == 0 || strcmp(n, "..") == 0) {
		set_error("input", where(lineno), "%s '%s' is not a plain file name", what, n);
		return -1;
	}
	return 0;
}

/* Split a comma list in place; empty input gives no items. */
static int split_commas(char *s, char ***items, size_t *n)
{
	*items = NULL;
	*n = 0;
	if (*s == '\0')
		return 0;
	for (char *tok = s;;) {
		char *comma = strchr(tok, ',');
		if (comma)
			*comma = '\0';
		char **slot = PUSH(*items, *n);
		if (slot == NULL)
			return -1;
		*slot = tok;
		if (comma == NULL)
			return 0;
		tok = comma + 1;
	}
}

static int parse_mount_options(char *opts, struct mount_rec *m, size_t lineno)
{
	m->options = strdup(opts);
	if (m->options == NULL)
		return -1;
	char **items;
	size_t n;
	if (split_commas(opts, &items, &n) != 0)
		return -1;
	static const struct {
		const char *name;
		unsigned long flag, prop;
		int rec;
	} known[] = {
		{"bind", 0, 0, 0},         {"rbind", 0, 0, 1},
		{"rw", 0, 0, 0},           {"ro", MS_RDONLY, 0, 0},
		{"nosuid", MS_NOSUID, 0, 0}, {"nodev", MS_NODEV, 0, 0},
		{"noexec", MS_NOEXEC, 0, 0}, {"private", 0, MS_PRIVATE, 0},
		{"rprivate", 0, MS_PRIVATE | MS_REC, 0}, {"slave", 0, MS_SLAVE, 0},
		{"rslave", 0, MS_SLAVE | MS_REC, 0},
	};
	for (size_t i = 0; i < n; i++) {
		size_t k;
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strcmp(items[i], known[k].name) == 0)
				break;
		if (k == sizeof(known) / sizeof(known[0])) {
			set_error("input", where(lineno), "unknown mount option '%s'", items[i]);
			free(items);
			return -1;
		}
		m->flags |= known[k].flag;
		m->propagation |= known[k].prop;
		m->recursive |= known[k].rec;
	}
	free(items);
	return 0;
}

/* "c 195:0 rw", "b 8:* r", "a *:* rwm" (as devices.allow writes them). */
static int parse_rule(const char *text, struct cg_rule *r)
{
	char type, majs[16], mins[16], acc[8];
	char extra;
	if (sscanf(text, "%c %15[0-9*]:%15[0-9*] %7s %c", &type, majs, mins, acc, &extra) != 4)
		return -1;
	if (type != 'c' && type != 'b' && type != 'a')
		return -1;
	unsigned long v;
	r->type = type;
	if (strcmp(majs, "*") == 0)
		r->major = CG_ANY;
	else if (parse_uint(majs, 10, 0xfffff, &v) == 0)
		r->major = (unsigned int)v;
	else
		return -1;
	if (strcmp(mins, "*") == 0)
		r->minor = CG_ANY;
	else if (parse_uint(mins, 10, 0xfffff, &v) == 0)
		r->minor = (unsigned int)v;
	else
		return -1;
	size_t len = strlen(acc);
	if (len == 0 || len > 3 || strspn(acc, "rwm") != len)
		return -1;
	memcpy(r->access, acc, len + 1);
	return 0;
}

static int want_fields(size_t have, size_t want, int at_least, size_t lineno, const char *rec)
{
	if (at_least ? have >= want : have == want)
		return 0;
	set_error("input", where(lineno), "record '%s' needs %s%zu fields, got %zu", rec,
		  at_least ? "at least " : "", want - 1, have - 1);
	return -1;
}

static int parse_record(char **f, size_t nf, size_t lineno, struct plan *p)
{
	const char *kind = f[0];
	unsigned long v, v2;

	if (strcmp(kind, "pid") == 0) {
		if (want_fields(nf, 2, 0, lineno, kind) || p->pid != -1)
			goto dup_or_bad;
		if (parse_uint(f[1], 10, INT_MAX, &v) != 0) {
			set_error("input", where(lineno), "pid '%s' is not a number", f[1]);
			return -1;
		}
		p->pid = (pid_t)v;
	} else if (strcmp(kind, "rootfs") == 0) {
		if (want_fields(nf, 2, 0, lineno, kind) || p->rootfs != NULL)
			goto dup_or_bad;
		if (check_path(f[1], 0, lineno, "rootfs"))
			return -1;
		p->rootfs = f[1];
	} else if (strcmp(kind, "owner") == 0) {
		if (want_fields(nf, 3, 0, lineno, kind) || p->have_owner)
			goto dup_or_bad;
		if (parse_uint(f[1], 10, UINT_MAX - 1, &v) || parse_uint(f[2], 10, UINT_MAX - 1, &v2)) {
			set_error("input", where(lineno), "owner '%s %s' is not a uid and gid", f[1], f[2]);
			return -1;
		}
		p->have_owner = 1;
		p->uid = (uid_t)v;
		p->gid = (gid_t)v2;
	} else if (strcmp(kind, "device") == 0) {
		if (nf != 6 && nf != 7) {
			set_error("input", where(lineno), "record 'device' needs 5 or 6 fields, got %zu",
				  nf - 1);
			return -1;
		}
		struct device_rec *d = PUSH(p->devices, p->ndevices);
		if (d == NULL)
			goto nomem;
		if (check_path(f[1], 1, lineno, "device path") ||
		    check_path(f[2], 0, lineno, "device host path"))
			return -1;
		d->path = f[1];
		d->host_path = f[2];
		unsigned long maj, min, mode;
		if (parse_uint(f[3], 10, 0xfff, &maj) || parse_uint(f[4], 10, 0xfffff, &min) ||
		    parse_uint(f[5], 8, 07777, &mode)) {
			set_error("input", where(lineno), "device %s: bad major, minor or octal mode",
				  f[1]);
			return -1;
		}
		d->major = (unsigned int)maj;
		d->minor = (unsigned int)min;
		d->mode = (mode_t)mode;
		d->type = 'c';
		if (nf == 7) {
			if (strcmp(f[6], "c") != 0 && strcmp(f[6], "b") != 0) {
				set_error("input", where(lineno), "device type '%s' is not c or b", f[6]);
				return -1;
			}
			d->type = f[6][0];
		}
	} else if (strcmp(kind, "mount") == 0) {
		if (want_fields(nf, 4, 0, lineno, kind))
			return -1;
		struct mount_rec *m = PUSH(p->mounts, p->nmounts);
		if (m == NULL)
			goto nomem;
		if (check_path(f[1], 1, lineno, "mount path") ||
		    check_path(f[2], 0, lineno, "mount host path"))
			return -1;
		m->path = f[1];
		m->host_path = f[2];
		if (parse_mount_options(f[3], m, lineno))
			return -1;
	} else if (strcmp(kind, "symlink") == 0) {
		if (want_fields(nf, 3, 0, lineno, kind))
			return -1;
		struct symlink_rec *s = PUSH(p->symlinks, p->nsymlinks);
		if (s == NULL)
			goto nomem;
		if (check_path(f[1], 1, lineno, "symlink path"))
			return -1;
		if (f[2][0] == '\0') {
			set_error("input", where(lineno), "symlink %s has an empty target", f[1]);
			return -1;
		}
		s->link = f[1];
		s->target = f[2];
	} else if (strcmp(kind, "procmask") == 0) {
		if (want_fields(nf, 5, 0, lineno, kind))
			return -1;
		struct procmask_rec *m = PUSH(p->procmasks, p->nprocmasks);
		if (m == NULL)
			goto nomem;
		if (check_path(f[1], 1, lineno, "procmask path") ||
		    check_path(f[2], 0, lineno, "procmask host dir"))
			return -1;
		m->path = f[1];
		m->host_dir = f[2];
		if (split_commas(f[3], &m->files, &m->nfiles) ||
		    split_commas(f[4], &m->bus_ids, &m->nbus_ids))
			goto nomem;
		for (size_t i = 0; i < m->nfiles; i++)
			if (check_name(m->files[i], lineno, "procmask file"))
				return -1;
		for (size_t i = 0; i < m->nbus_ids; i++)
			if (check_name(m->bus_ids[i], lineno, "procmask bus id"))
				return -1;
	} else if (strcmp(kind, "cgroup") == 0) {
		p->have_cgroup = 1;
		for (size_t i = 1; i < nf; i++) {
			struct cg_rule *r = PUSH(p->rules, p->nrules);
			if (r == NULL)
				goto nomem;
			if (parse_rule(f[i], r) != 0) {
				set_error("input", where(lineno),
					  "cgroup rule '%s' is not like 'c 195:0 rw'", f[i]);
				return -1;
			}
		}
	} else if (strcmp(kind, "ldconfig") == 0) {
		if (want_fields(nf, 2, 1, lineno, kind) || p->ldconfig != NULL)
			goto dup_or_bad;
		if (check_path(f[1], 0, lineno, "ldconfig"))
			return -1;
		p->ldconfig = f[1];
		for (size_t i = 2; i < nf; i++) {
			if (check_path(f[i], 1, lineno, "ldconfig directory"))
				return -1;
			char **slot = PUSH(p->ldconfig_dirs, p->nldconfig_dirs);
			if (slot == NULL)
				goto nomem;
			*slot = f[i];
		}
	} else {
		set_error("input", where(lineno), "unknown record '%s'", kind);
		return -1;
	}
	return 0;
dup_or_bad:
	if (!has_error())
		set_error("input", where(lineno), "record '%s' given twice", kind);
	return -1;
nomem:
	set_error("input", where(lineno), "out of memory");
	return -1;
}

int parse_plan(char *buf, size_t len, struct plan *p)
{
	memset(p, 0, sizeof(*p));
	p->pid = -1;
	if (memchr(buf, '\0', len) != NULL) {
		set_error("input", "stdin", "contains a NUL byte");
		return -1;
	}
	char *fields[MAX_FIELDS];
	int ended = 0;
	size_t lineno = 0;
	char *pos = buf, *stop = buf + len;
	while (pos < stop) {
		char *nl = memchr(pos, '\n', (size_t)(stop - pos));
		if (nl == NULL) {
			set_error("input", where(lineno + 1), "the last line has no newline (truncated?)");
			return -1;
		}
		*nl = '\0';
		lineno++;
		char *line = pos;
		pos = nl + 1;
		if (ended) {
			set_error("input", where(lineno), "text after 'end'");
			return -1;
		}
		size_t nf = 0;
		for (char *tok = line;;) {
			if (nf == MAX_FIELDS) {
				set_error("input", where(lineno), "more than %d fields", MAX_FIELDS);
				return -1;
			}
			fields[nf++] = tok;
			char *tab = strchr(tok, '\t');
			if (tab == NULL)
				break;
			*tab = '\0';
			tok = tab + 1;
		}
		if (lineno == 1) {
			if (nf != 2 || strcmp(fields[0], "version") != 0) {
				set_error("input", where(1), "the first record must be 'version'");
				return -1;
			}
			if (strcmp(fields[1], "1") != 0) {
				set_error("input", where(1),
					  "protocol version %s is not supported (this helper speaks 1); "
					  "the helper and nvhook come from different builds", fields[1]);
				return -1;
			}
			p->version = 1;
			continue;
		}
		if (nf == 1 && strcmp(fields[0], "end") == 0) {
			ended = 1;
			continue;
		}
		if (parse_record(fields, nf, lineno, p) != 0)
			return -1;
	}
	if (p->version != 1) {
		set_error("input", "stdin", "empty input");
		return -1;
	}
	if (!ended) {
		set_error("input", "stdin", "no 'end' record (truncated input?)");
		return -1;
	}
	if (p->pid == -1) {
		set_error("input", "stdin", "no 'pid' record");
		return -1;
	}
	if (p->rootfs == NULL) {
		set_error("input", "stdin", "no 'rootfs' record");
		return -1;
	}
	return 0;
}
