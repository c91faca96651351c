/* cgroup v1: rules appended to devices.allow, undone through devices.deny. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup_int.h"
#include "error.h"
#include "procfile.h"

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
		e.access = cg_access_bits(p);
		if (e.type == 'a')
			*allow_all = 1;
		else if (n < cap)
			out[n++] = e;
	}
	return n;
}

void cg_v1_undo(struct cg_undo *u, int *failed)
{
	/* Newest first, so that a partial undo leaves the oldest changes, like a stack. */
	while (u->ndeny > 0) {
		u->ndeny--;
		if (write_str_at(u->dir_fd, "devices.deny", u->deny[u->ndeny]) < 0)
			*failed = 1;
	}
}

int cg_v1_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n)
{
	struct v1_entry *list = NULL;
	size_t nlist = 0, len = 0;
	int allow_all = 0, failed = 0;
	char *text;

	text = read_all_at(u->dir_fd, "devices.list", &len);
	if (text == NULL) {
		set_error("cgroup-allow", u->path, "read devices.list: %s", strerror(errno));
		return -1;
	}
	/* Every entry is at least "c 1:1 m\n": the count bounds the array. */
	list = calloc(len / 8 + 1, sizeof(*list));
	u->deny = calloc(2 * n + 1, sizeof(*u->deny));
	if (list == NULL || u->deny == NULL) {
		free(text);
		free(list);
		set_error("cgroup-allow", u->path, "%s", strerror(ENOMEM));
		return -1;
	}
	nlist = parse_devices_list(text, list, len / 8 + 1, &allow_all);
	free(text);

	for (size_t i = 0; i < n; i++) {
		/* An "a" line would switch the whole cgroup to allow-all: spell it as c and b. */
		const char *types = rules[i].type == 'a' ? "cb" : rules[i].type == 'c' ? "c" : "b";

		for (const char *t = types; *t != '\0'; t++) {
			struct cg_rule one = rules[i];
			unsigned int had = 0, want = cg_access_bits(rules[i].access), missing;
			char line[64], acc[4];

			one.type = *t;
			cg_rule_str(&one, line);
			if (write_str_at(u->dir_fd, "devices.allow", line) < 0) {
				int saved = errno;

				cg_v1_undo(u, &failed);
				free(list);
				set_error("cgroup-allow", u->path,
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
			cg_access_str(missing, acc);
			memcpy(one.access, acc, sizeof(acc));
			cg_rule_str(&one, u->deny[u->ndeny++]);
		}
	}
	free(list);
	return 0;
}
