/* Device-cgroup rules as text and access bits: checks and formatting, no system calls. */
#include "cgroup_rule.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

unsigned int cg_access_bits(const char *s)
{
	unsigned int bits = 0;

	for (; *s != '\0'; s++)
		bits |= *s == 'm' ? ACC_MKNOD : *s == 'r' ? ACC_READ : *s == 'w' ? ACC_WRITE : 0;
	return bits;
}

void cg_access_str(unsigned int bits, char out[4])
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

void cg_rule_str(const struct cg_rule *r, char out[V1_LINE])
{
	char maj[12], min[12];

	number_str(r->major, maj);
	number_str(r->minor, min);
	snprintf(out, V1_LINE, "%c %s:%s %.3s", r->type, maj, min, r->access);
}

int cg_check_rules(const struct cg_rule *rules, size_t n)
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
			if (shown.type == '\0') /* it would end the text early */
				shown.type = '?';
			cg_rule_str(&shown, text);
			snprintf(where, sizeof(where), "rules[%zu]", i);
			set_error("cgroup-rule", where, "%s, not \"%s\" (a bug in the caller)", why,
				  text);
			return -1;
		}
	}
	return 0;
}
