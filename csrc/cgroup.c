/* Device-cgroup access for injected nodes: cgroup v1 devices.allow and cgroup v2 eBPF programs. */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/magic.h>

/* The kernel's dev_t has 12 bits of major and 20 of minor; larger numbers cannot name a node. */
#define CG_MAJOR_MAX 0xfffu
#define CG_MINOR_MAX 0xfffffu

/* Access bits, equal on v1 (m, r, w) and in the BPF context (BPF_DEVCG_ACC_*). */
#define ACC_MKNOD 1u
#define ACC_READ 2u
#define ACC_WRITE 4u

/* Room for one rule as a v1 line ("c 4095:1048575 rwm" needs 19). */
#define V1_LINE 64

struct cg_swap {
	int old_fd, new_fd;
	int attached; /* the new program is attached */
	int detached; /* the old program is detached (multi mode only) */
	int link_fd;  /* >= 0: the old program sat in this bpf link, now holding the new one */
};

struct cg_undo {
	int version;
	int dir_fd;
	char path[PATH_MAX];
	/* v1: lines for devices.deny that take back exactly what we added */
	char (*deny)[V1_LINE];
	size_t ndeny;
	/* v2: one swap per program that was attached to the cgroup */
	unsigned int attach_flags;
	struct cg_swap *swaps;
	size_t nswaps;
};

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

__attribute__((format(printf, 5, 6))) static void seterr(char *err, size_t errlen,
							 const char *step, const char *path,
							 const char *fmt, ...)
{
	va_list ap;
	int k;

	if (err == NULL || errlen == 0)
		return;
	k = snprintf(err, errlen, "%s %s: ", step, path);
	if (k >= 0 && (size_t)k < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
		va_end(ap);
	}
	/* The caller promises its user one line, whatever the kernel or a path contained. */
	for (char *p = err; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

/* Read a whole (proc or cgroup) file; these report no size, so read until EOF. */
static char *read_all_at(int dir_fd, const char *name, size_t *len_out)
{
	size_t cap = 4096, len = 0;
	char *buf, *bigger;
	ssize_t r;
	int fd, saved;

	fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(cap);
	if (buf == NULL)
		goto fail;
	for (;;) {
		if (cap - len < 2) {
			bigger = realloc(buf, cap * 2);
			if (bigger == NULL)
				goto fail;
			buf = bigger;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	if (len_out != NULL)
		*len_out = len;
	return buf;
fail:
	saved = errno;
	free(buf);
	close(fd);
	errno = saved;
	return NULL;
}

static int write_str_at(int dir_fd, const char *name, const char *s)
{
	ssize_t r;
	int fd, saved;

	fd = openat(dir_fd, name, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	/* One rule per write(2): the devices controller parses exactly one per call. */
	do
		r = write(fd, s, strlen(s));
	while (r < 0 && errno == EINTR);
	saved = errno;
	close(fd);
	errno = saved;
	return r < 0 ? -1 : 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *out = s;

	while (*s != '\0') {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
			s += 4;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

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
static int read_mounts(const char *file, struct cg_mounts *out)
{
	char *line, *next, *f[64];
	struct cg_mount *grown;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->text = read_all_at(AT_FDCWD, file, NULL);
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
 * Find and open the device cgroup of `pid`. The version is the container's view (its
 * mountinfo); the directory is reached through our own mounts of that hierarchy first (their
 * paths are valid here by construction), then through the container's.
 */
static int find_cgroup(pid_t pid, int *version, char *path, size_t pathlen, char *err,
		       size_t errlen)
{
	char file[64], cgpath[PATH_MAX];
	struct cg_mounts theirs, ours;
	const struct cg_mount *hier = NULL;
	char *cgtext;
	int fd = -1;

	snprintf(file, sizeof(file), "/proc/%d/mountinfo", (int)pid);
	if (read_mounts(file, &theirs) < 0) {
		seterr(err, errlen, "cgroup-find", file, "%s", strerror(errno));
		return -1;
	}
	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)pid);
	cgtext = read_all_at(AT_FDCWD, file, NULL);
	if (cgtext == NULL) {
		seterr(err, errlen, "cgroup-find", file, "%s", strerror(errno));
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
		seterr(err, errlen, "cgroup-find", file,
		       "no cgroup v1 devices hierarchy or cgroup2 mount for this process "
		       "(is cgroup support mounted? set no-cgroups to skip device cgroups)");
		mounts_free(&theirs);
		return -1;
	}
	*version = hier->version;
	if (read_mounts("/proc/self/mountinfo", &ours) < 0)
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
		seterr(err, errlen, "cgroup-find", cgpath,
		       "no mount of the %s hierarchy here reaches the cgroup of pid %d "
		       "(mount it, or set no-cgroups)",
		       hier->version == 1 ? "cgroup v1 devices" : "cgroup2", (int)pid);
	mounts_free(&theirs);
	mounts_free(&ours);
	return fd;
}

static unsigned int access_bits(const char *s)
{
	unsigned int bits = 0;

	for (; *s != '\0'; s++)
		bits |= *s == 'm' ? ACC_MKNOD : *s == 'r' ? ACC_READ : *s == 'w' ? ACC_WRITE : 0;
	return bits;
}

static void access_str(unsigned int bits, char out[4])
{
	size_t k = 0;

	if (bits & ACC_READ)
		out[k++] = 'r';
	if (bits & ACC_WRITE)
		out[k++] = 'w';
	if (bits & ACC_MKNOD)
		out[k++] = 'm';
	out[k] = '\0';
}

static void number_str(unsigned int v, char out[12])
{
	if (v == CG_ANY)
		snprintf(out, 12, "*");
	else
		snprintf(out, 12, "%u", v);
}

static void rule_str(const struct cg_rule *r, char out[V1_LINE])
{
	char maj[12], min[12];

	number_str(r->major, maj);
	number_str(r->minor, min);
	snprintf(out, V1_LINE, "%c %s:%s %.3s", r->type, maj, min, r->access);
}

static int check_rules(const struct cg_rule *rules, size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		const struct cg_rule *r = &rules[i];
		const char *why = NULL;
		char text[V1_LINE];

		if (r->type != 'c' && r->type != 'b' && r->type != 'a')
			why = "the type must be c, b or a";
		else if (r->major != CG_ANY && r->major > CG_MAJOR_MAX)
			why = "the major number is larger than 4095";
		else if (r->minor != CG_ANY && r->minor > CG_MINOR_MAX)
			why = "the minor number is larger than 1048575";
		else if (memchr(r->access, '\0', sizeof(r->access)) == NULL || r->access[0] == '\0' ||
			 strspn(r->access, "rwm") != strlen(r->access))
			why = "the access must be a non-empty subset of rwm";
		if (why != NULL) {
			struct cg_rule shown = *r;
			char where[32];

			shown.access[3] = '\0';
			for (char *c = shown.access; *c != '\0'; c++)
				if (*c < ' ' || *c > '~')
					*c = '?';
			if (shown.type < ' ' || shown.type > '~')
				shown.type = '?';
			rule_str(&shown, text);
			snprintf(where, sizeof(where), "rules[%zu]", i);
			seterr(err, errlen, "cgroup-rule", where, "%s, not \"%s\" (a bug in the caller)",
			       why, text);
			return -1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- cgroup v1 */

struct v1_entry {
	char type;
	unsigned int major, minor, access;
};

static unsigned int parse_number(const char *s, char **end)
{
	if (*s == '*') {
		*end = (char *)s + 1;
		return CG_ANY;
	}
	return (unsigned int)strtoul(s, end, 10);
}

/* devices.list: "c 195:0 rw" per exception, or just "a *:* rwm" when the default is allow. */
static size_t parse_devices_list(char *text, struct v1_entry *out, size_t cap, int *allow_all)
{
	size_t n = 0;

	*allow_all = 0;
	for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
		struct v1_entry e;
		char *p;

		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if (strlen(line) < 7)
			continue;
		p = line + 2;
		e.type = line[0];
		e.major = parse_number(p, &p);
		if (*p++ != ':')
			continue;
		e.minor = parse_number(p, &p);
		if (*p++ != ' ')
			continue;
		e.access = access_bits(p);
		if (e.type == 'a')
			*allow_all = 1;
		else if (n < cap)
			out[n++] = e;
	}
	return n;
}

static void v1_undo(struct cg_undo *u, int *failed)
{
	/* Newest first, so that a partial undo leaves the oldest changes, like a stack. */
	while (u->ndeny > 0) {
		u->ndeny--;
		if (write_str_at(u->dir_fd, "devices.deny", u->deny[u->ndeny]) < 0)
			*failed = 1;
	}
}

static int v1_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n, char *err,
		    size_t errlen)
{
	struct v1_entry *list = NULL;
	size_t nlist = 0, len = 0;
	int allow_all = 0, failed = 0;
	char *text;

	text = read_all_at(u->dir_fd, "devices.list", &len);
	if (text == NULL) {
		seterr(err, errlen, "cgroup-allow", u->path, "read devices.list: %s", strerror(errno));
		return -1;
	}
	/* Every entry is at least "c 1:1 m\n": the count bounds the array. */
	list = calloc(len / 8 + 1, sizeof(*list));
	u->deny = calloc(2 * n + 1, sizeof(*u->deny));
	if (list == NULL || u->deny == NULL) {
		free(text);
		free(list);
		seterr(err, errlen, "cgroup-allow", u->path, "%s", strerror(ENOMEM));
		return -1;
	}
	nlist = parse_devices_list(text, list, len / 8 + 1, &allow_all);
	free(text);

	for (size_t i = 0; i < n; i++) {
		/* An "a" line would switch the whole cgroup to allow-all: spell it as c and b. */
		const char *types = rules[i].type == 'a' ? "cb" : rules[i].type == 'c' ? "c" : "b";

		for (const char *t = types; *t != '\0'; t++) {
			struct cg_rule one = rules[i];
			unsigned int had = 0, want = access_bits(rules[i].access), missing;
			char line[64], acc[4];

			one.type = *t;
			rule_str(&one, line);
			if (write_str_at(u->dir_fd, "devices.allow", line) < 0) {
				int saved = errno;

				v1_undo(u, &failed);
				free(list);
				seterr(err, errlen, "cgroup-allow", u->path,
				       "write \"%s\" to devices.allow: %s%s", line, strerror(saved),
				       failed ? " (taking back the earlier rules failed too)" : "");
				return -1;
			}
			/*
			 * The kernel merges an allowed rule into the exception with the same
			 * type:major:minor, and a deny takes bits away from it; so denying just
			 * the bits that exception lacked before restores the list exactly. With
			 * allow as the default the kernel lists no exceptions (the deny ones
			 * are hidden), so there is nothing we could restore faithfully.
			 */
			if (allow_all)
				continue;
			for (size_t k = 0; k < nlist; k++)
				if (list[k].type == one.type && list[k].major == one.major &&
				    list[k].minor == one.minor)
					had |= list[k].access;
			missing = want & ~had;
			if (missing == 0)
				continue;
			access_str(missing, acc);
			memcpy(one.access, acc, sizeof(acc));
			rule_str(&one, u->deny[u->ndeny++]);
		}
	}
	free(list);
	return 0;
}

/* ---------------------------------------------------------------- cgroup v2 */

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static uint64_t ptr_u64(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static struct bpf_insn mkinsn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	struct bpf_insn i;

	memset(&i, 0, sizeof(i));
	i.code = code;
	i.dst_reg = dst & 0xf;
	i.src_reg = src & 0xf;
	i.off = off;
	i.imm = imm;
	return i;
}

/*
 * The allow checks that go in front of an existing program. They leave r1 (the context)
 * untouched, because the old instructions start from it; r0 and r2-r5 are free, since the old
 * program was verified to write a register before reading it.
 *   r2 = device type, r3 = requested access, r4 = major, r5 = minor
 *   per rule: if type/major/minor differ, or access asks for more than the rule gives, go to
 *   the next rule; else return 1 (allow).
 * Falling off the last rule continues into the old program unchanged; its jumps are relative.
 */
static size_t build_prelude(const struct cg_rule *rules, size_t n, struct bpf_insn *out)
{
	size_t k = 0;

	const uint8_t ldx_w = BPF_LDX | BPF_MEM | BPF_W;

	out[k++] = mkinsn(ldx_w, 2, 1, offsetof(struct bpf_cgroup_dev_ctx, access_type), 0);
	out[k++] = mkinsn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 2, 0, 0);
	out[k++] = mkinsn(BPF_ALU64 | BPF_AND | BPF_K, 2, 0, 0, 0xffff);
	out[k++] = mkinsn(BPF_ALU64 | BPF_RSH | BPF_K, 3, 0, 0, 16);
	out[k++] = mkinsn(ldx_w, 4, 1, offsetof(struct bpf_cgroup_dev_ctx, major), 0);
	out[k++] = mkinsn(ldx_w, 5, 1, offsetof(struct bpf_cgroup_dev_ctx, minor), 0);
	for (size_t i = 0; i < n; i++) {
		const struct cg_rule *r = &rules[i];
		size_t checks = (r->type != 'a') + (r->major != CG_ANY) + (r->minor != CG_ANY);
		size_t end = k + checks + 5; /* index of the next rule's first instruction */
		unsigned int acc = access_bits(r->access);

#define JNE_NEXT(reg, val) \
	mkinsn(BPF_JMP | BPF_JNE | BPF_K, (reg), 0, (int16_t)(end - (k + 1)), (int32_t)(val))
		if (r->type != 'a')
			out[k] = JNE_NEXT(2, r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK), k++;
		if (r->major != CG_ANY)
			out[k] = JNE_NEXT(4, r->major), k++;
		if (r->minor != CG_ANY)
			out[k] = JNE_NEXT(5, r->minor), k++;
		out[k++] = mkinsn(BPF_ALU64 | BPF_MOV | BPF_X, 0, 3, 0, 0);
		out[k++] = mkinsn(BPF_ALU64 | BPF_AND | BPF_K, 0, 0, 0, (int32_t)~acc);
		out[k] = JNE_NEXT(0, 0), k++;
#undef JNE_NEXT
		out[k++] = mkinsn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1);
		out[k++] = mkinsn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	}
	return k;
}

/* The last line of the verifier's log that says something about the failure. */
static void verifier_reason(char *log, char *out, size_t outlen)
{
	char *best = NULL;

	for (char *line = log, *next; line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if (*line != '\0' && strncmp(line, "processed ", 10) != 0 &&
		    strncmp(line, "verification time", 17) != 0 && strncmp(line, "stack depth", 11) != 0)
			best = line;
	}
	snprintf(out, outlen, "%s", best != NULL ? best : "no verifier log");
}

static int load_program(const struct bpf_insn *insns, size_t cnt, char *why, size_t whylen)
{
	static const char license[] = "Apache-2.0";
	union bpf_attr attr;
	char *log;
	int fd, saved;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = ptr_u64(insns);
	attr.insn_cnt = (uint32_t)cnt;
	attr.license = ptr_u64(license);
	memcpy(attr.prog_name, "nvhook_devices", sizeof("nvhook_devices"));
	fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd >= 0)
		return fd;
	saved = errno;
	/* Only on failure pay for the verifier's log: it names the instruction it rejected. */
	log = calloc(1, 1 << 16);
	if (log != NULL) {
		attr.log_level = 1;
		attr.log_buf = ptr_u64(log);
		attr.log_size = 1 << 16;
		fd = sys_bpf(BPF_PROG_LOAD, &attr);
		if (fd >= 0) {
			free(log);
			return fd;
		}
		char reason[256];

		verifier_reason(log, reason, sizeof(reason));
		snprintf(why, whylen, "BPF_PROG_LOAD: %s (verifier: %s)", strerror(saved), reason);
		free(log);
	} else {
		snprintf(why, whylen, "BPF_PROG_LOAD: %s", strerror(saved));
	}
	errno = saved;
	return -1;
}

static int prog_attach(int cg_fd, int prog_fd, unsigned int flags)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cg_fd;
	attr.attach_bpf_fd = (uint32_t)prog_fd;
	attr.attach_type = BPF_CGROUP_DEVICE;
	attr.attach_flags = flags;
	return sys_bpf(BPF_PROG_ATTACH, &attr);
}

static int prog_detach(int cg_fd, int prog_fd)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cg_fd;
	attr.attach_bpf_fd = (uint32_t)prog_fd;
	attr.attach_type = BPF_CGROUP_DEVICE;
	return sys_bpf(BPF_PROG_DETACH, &attr);
}

/* The program ids attached to the cgroup itself (not inherited), and the cgroup's flags. */
static int query_programs(int cg_fd, uint32_t **ids, uint32_t *cnt, uint32_t *flags)
{
	union bpf_attr attr;

	*ids = NULL;
	for (int tries = 0; tries < 4; tries++) {
		uint32_t want;

		memset(&attr, 0, sizeof(attr));
		attr.query.target_fd = (uint32_t)cg_fd;
		attr.query.attach_type = BPF_CGROUP_DEVICE;
		if (sys_bpf(BPF_PROG_QUERY, &attr) < 0)
			return -1;
		want = attr.query.prog_cnt;
		*flags = attr.query.attach_flags;
		if (want == 0) {
			*cnt = 0;
			return 0;
		}
		free(*ids);
		*ids = calloc(want, sizeof(**ids));
		if (*ids == NULL) {
			errno = ENOMEM;
			return -1;
		}
		memset(&attr, 0, sizeof(attr));
		attr.query.target_fd = (uint32_t)cg_fd;
		attr.query.attach_type = BPF_CGROUP_DEVICE;
		attr.query.prog_ids = ptr_u64(*ids);
		attr.query.prog_cnt = want;
		if (sys_bpf(BPF_PROG_QUERY, &attr) == 0) {
			*cnt = attr.query.prog_cnt;
			*flags = attr.query.attach_flags;
			return 0;
		}
		/* ENOSPC: a program was attached between the two calls; ask again. */
		if (errno != ENOSPC)
			break;
	}
	free(*ids);
	*ids = NULL;
	return -1;
}

/* The old program's instructions as the kernel holds them (its "translated" form). */
static struct bpf_insn *program_insns(int prog_fd, uint32_t *cnt, char *why, size_t whylen)
{
	struct bpf_prog_info info;
	union bpf_attr attr;
	struct bpf_insn *insns;
	uint32_t len;

	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)prog_fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = ptr_u64(&info);
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0) {
		snprintf(why, whylen, "BPF_OBJ_GET_INFO_BY_FD: %s", strerror(errno));
		return NULL;
	}
	if (info.type != BPF_PROG_TYPE_CGROUP_DEVICE || info.xlated_prog_len == 0 ||
	    info.xlated_prog_len % sizeof(struct bpf_insn) != 0) {
		snprintf(why, whylen,
			 "program %u cannot be read back (type %u, %u bytes; needs CAP_BPF or "
			 "CAP_SYS_ADMIN)",
			 info.id, info.type, info.xlated_prog_len);
		return NULL;
	}
	len = info.xlated_prog_len;
	insns = calloc(len / sizeof(*insns), sizeof(*insns));
	if (insns == NULL) {
		snprintf(why, whylen, "%s", strerror(ENOMEM));
		return NULL;
	}
	memset(&info, 0, sizeof(info));
	errno = 0;
	info.xlated_prog_len = len;
	info.xlated_prog_insns = ptr_u64(insns);
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)prog_fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = ptr_u64(&info);
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0 || info.xlated_prog_len != len) {
		snprintf(why, whylen, "BPF_OBJ_GET_INFO_BY_FD (instructions): %s",
			 errno ? strerror(errno) : "size changed");
		free(insns);
		return NULL;
	}
	*cnt = len / (uint32_t)sizeof(*insns);
	/*
	 * A dump can be loaded again only if nothing in it points into the kernel: helper and
	 * subprogram calls carry kernel offsets, map loads carry map ids instead of fds. Device
	 * programs from runc, crun and systemd use neither.
	 */
	for (uint32_t i = 0; i < *cnt; i++) {
		uint8_t code = insns[i].code;

		if ((BPF_CLASS(code) == BPF_JMP || BPF_CLASS(code) == BPF_JMP32) &&
		    BPF_OP(code) == BPF_CALL) {
			snprintf(why, whylen,
				 "program %u calls a helper or subprogram at instruction %u; only "
				 "plain device filters (as runc, crun and systemd write) can be extended",
				 info.id, i);
			free(insns);
			return NULL;
		}
		if (code == (BPF_LD | BPF_IMM | BPF_DW)) {
			if (insns[i].src_reg != 0) {
				snprintf(why, whylen,
					 "program %u uses a map at instruction %u; only plain device "
					 "filters (as runc, crun and systemd write) can be extended",
					 info.id, i);
				free(insns);
				return NULL;
			}
			i++;
		}
	}
	return insns;
}

static int link_update(int link_fd, int new_fd, int expected_fd)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.link_update.link_fd = (uint32_t)link_fd;
	attr.link_update.new_prog_fd = (uint32_t)new_fd;
	attr.link_update.flags = BPF_F_REPLACE;
	attr.link_update.old_prog_fd = (uint32_t)expected_fd;
	return sys_bpf(BPF_LINK_UPDATE, &attr);
}

/*
 * The bpf link that holds program `prog_id` on the cgroup `cg_fd`, or -1. BPF_PROG_DETACH
 * cannot remove a program attached through a link (youki, through aya, attaches that way);
 * the link's program can instead be swapped in place, atomically.
 */
static int find_link(int cg_fd, uint32_t prog_id)
{
	union bpf_attr attr;
	struct stat st;
	uint32_t id = 0;

	/* A cgroup2 directory's inode number is the cgroup id that link info reports. */
	if (fstat(cg_fd, &st) < 0)
		return -1;
	for (;;) {
		struct bpf_link_info info;
		int fd;

		memset(&attr, 0, sizeof(attr));
		attr.start_id = id;
		if (sys_bpf(BPF_LINK_GET_NEXT_ID, &attr) < 0)
			return -1;
		id = attr.next_id;
		memset(&attr, 0, sizeof(attr));
		attr.link_id = id;
		fd = sys_bpf(BPF_LINK_GET_FD_BY_ID, &attr);
		if (fd < 0)
			continue; /* gone meanwhile */
		memset(&info, 0, sizeof(info));
		memset(&attr, 0, sizeof(attr));
		attr.info.bpf_fd = (uint32_t)fd;
		attr.info.info_len = sizeof(info);
		attr.info.info = ptr_u64(&info);
		if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
		    info.prog_id == prog_id && info.cgroup.attach_type == BPF_CGROUP_DEVICE &&
		    info.cgroup.cgroup_id == (uint64_t)st.st_ino)
			return fd;
		close(fd);
	}
}

static void v2_undo(struct cg_undo *u, int *failed)
{
	int multi = (u->attach_flags & BPF_F_ALLOW_MULTI) != 0;

	/* Newest first; each swap's flags make a second call a no-op. */
	for (size_t i = u->nswaps; i-- > 0;) {
		struct cg_swap *s = &u->swaps[i];

		if (s->link_fd >= 0) {
			if (s->attached) {
				if (link_update(s->link_fd, s->old_fd, s->new_fd) < 0)
					*failed = 1;
				else
					s->attached = 0;
			}
			continue;
		}
		if (!multi) {
			/* Single-program mode: attaching the old one replaces ours in one step. */
			if (s->attached) {
				if (prog_attach(u->dir_fd, s->old_fd, u->attach_flags) < 0)
					*failed = 1;
				else
					s->attached = 0;
			}
			continue;
		}
		/* Old first, then ours: in between both run, and together they deny what the old one did. */
		if (s->detached) {
			if (prog_attach(u->dir_fd, s->old_fd, u->attach_flags) < 0) {
				/* Keep ours: it still denies all the old one denied except our nodes. */
				*failed = 1;
				continue;
			}
			s->detached = 0;
		}
		if (s->attached) {
			if (prog_detach(u->dir_fd, s->new_fd) < 0)
				*failed = 1;
			else
				s->attached = 0;
		}
	}
}

static void raise_memlock(void)
{
	struct rlimit rl;

	/*
	 * Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK; later ones to the memory
	 * cgroup. Raising the hard limit needs CAP_SYS_RESOURCE, which some hosts drop: then the
	 * soft limit up to the hard one is the most we can do, and a new kernel needs none.
	 */
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return;
	struct rlimit inf = { RLIM_INFINITY, RLIM_INFINITY };

	if (setrlimit(RLIMIT_MEMLOCK, &inf) == 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	(void)setrlimit(RLIMIT_MEMLOCK, &rl);
}

static int v2_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n, char *err,
		    size_t errlen)
{
	uint32_t *ids = NULL, cnt = 0, flags = 0;
	struct bpf_insn *prelude;
	size_t nprelude;
	char why[512];
	int failed = 0;

	if (query_programs(u->dir_fd, &ids, &cnt, &flags) < 0) {
		seterr(err, errlen, "cgroup-bpf", u->path, "BPF_PROG_QUERY: %s", strerror(errno));
		return -1;
	}
	/* No program of its own: this cgroup does no device filtering, so there is nothing to open. */
	if (cnt == 0)
		return 0;
	/* 6 loads, then per rule at most 3 checks and 5 more instructions. */
	prelude = calloc(6 + 8 * n, sizeof(*prelude));
	u->swaps = calloc(cnt, sizeof(*u->swaps));
	if (prelude == NULL || u->swaps == NULL) {
		free(prelude);
		free(ids);
		seterr(err, errlen, "cgroup-bpf", u->path, "%s", strerror(ENOMEM));
		return -1;
	}
	nprelude = build_prelude(rules, n, prelude);
	u->attach_flags = flags & (BPF_F_ALLOW_MULTI | BPF_F_ALLOW_OVERRIDE);
	raise_memlock();

	for (uint32_t i = 0; i < cnt; i++) {
		struct cg_swap *s = &u->swaps[u->nswaps];
		struct bpf_insn *old, *joined;
		union bpf_attr attr;
		uint32_t nold = 0;

		s->old_fd = s->new_fd = s->link_fd = -1;
		memset(&attr, 0, sizeof(attr));
		attr.prog_id = ids[i];
		s->old_fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
		if (s->old_fd < 0) {
			snprintf(why, sizeof(why), "BPF_PROG_GET_FD_BY_ID %u: %s", ids[i], strerror(errno));
			goto fail;
		}
		u->nswaps++;
		old = program_insns(s->old_fd, &nold, why, sizeof(why));
		if (old == NULL)
			goto fail;
		joined = calloc(nprelude + nold, sizeof(*joined));
		if (joined == NULL) {
			free(old);
			snprintf(why, sizeof(why), "%s", strerror(ENOMEM));
			goto fail;
		}
		memcpy(joined, prelude, nprelude * sizeof(*joined));
		memcpy(joined + nprelude, old, nold * sizeof(*joined));
		free(old);
		s->new_fd = load_program(joined, nprelude + nold, why, sizeof(why));
		free(joined);
		if (s->new_fd < 0)
			goto fail;
		/*
		 * Attach before detach: in between both programs run and a device must pass both,
		 * which is just the old policy. Without BPF_F_ALLOW_MULTI the attach replaces the
		 * old program in one step.
		 */
		if (prog_attach(u->dir_fd, s->new_fd, u->attach_flags) < 0) {
			snprintf(why, sizeof(why), "BPF_PROG_ATTACH (flags %u): %s", u->attach_flags,
				 strerror(errno));
			goto fail;
		}
		s->attached = 1;
		if (u->attach_flags & BPF_F_ALLOW_MULTI) {
			if (prog_detach(u->dir_fd, s->old_fd) == 0) {
				s->detached = 1;
				continue;
			}
			if (errno != ENOENT) {
				snprintf(why, sizeof(why), "BPF_PROG_DETACH of program %u: %s", ids[i],
					 strerror(errno));
				goto fail;
			}
			/* ENOENT: not attached by fd but through a link; swap the link's program. */
			if (prog_detach(u->dir_fd, s->new_fd) < 0) {
				snprintf(why, sizeof(why), "BPF_PROG_DETACH of our program: %s",
					 strerror(errno));
				goto fail;
			}
			s->attached = 0;
			s->link_fd = find_link(u->dir_fd, ids[i]);
			if (s->link_fd < 0) {
				snprintf(why, sizeof(why),
					 "program %u can be neither detached nor found in a bpf link",
					 ids[i]);
				goto fail;
			}
			if (link_update(s->link_fd, s->new_fd, s->old_fd) < 0) {
				snprintf(why, sizeof(why), "BPF_LINK_UPDATE of program %u: %s", ids[i],
					 strerror(errno));
				goto fail;
			}
			s->attached = 1;
		}
	}
	free(prelude);
	free(ids);
	return 0;
fail:
	v2_undo(u, &failed);
	free(prelude);
	free(ids);
	seterr(err, errlen, "cgroup-bpf", u->path, "%s%s", why,
	       failed ? " (putting the old filters back failed too)" : "");
	return -1;
}

/* ---------------------------------------------------------------- API */

int cgroup_allow(pid_t pid, const struct cg_rule *rules, size_t n, struct cg_undo **undo,
		 char *err, size_t errlen)
{
	struct cg_undo *u;
	int rc;

	*undo = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (check_rules(rules, n, err, errlen) < 0)
		return -1;
	if (n == 0)
		return 0;
	if (pid <= 0) {
		char p[16];

		snprintf(p, sizeof(p), "%d", (int)pid);
		seterr(err, errlen, "cgroup-find", p,
		       "not a host pid (pass the container's pid as seen from the host)");
		return -1;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		seterr(err, errlen, "cgroup-allow", "-", "%s", strerror(ENOMEM));
		return -1;
	}
	u->dir_fd = find_cgroup(pid, &u->version, u->path, sizeof(u->path), err, errlen);
	if (u->dir_fd < 0) {
		free(u);
		return -1;
	}
	rc = u->version == 1 ? v1_allow(u, rules, n, err, errlen) : v2_allow(u, rules, n, err, errlen);
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
		v1_undo(undo, &failed);
	else
		v2_undo(undo, &failed);
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
