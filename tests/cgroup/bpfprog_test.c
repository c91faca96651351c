/* Test driver for csrc/bpfprog.c (no privileges needed): reads rules and an old program on
 * stdin, prints what bpfprog_extend builds.
 *   stdin:  "rule c 195:0 rw" lines (type, major or *, minor or *, access), then
 *           "insn CODE DST SRC OFF IMM" lines (decimal) for the old program, then EOF.
 *   stdout: "ok N PRELUDE" and N lines "CODE DST SRC OFF IMM", or "refused KIND AT".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpfprog.h"

int main(void)
{
	struct cg_rule rules[256];
	struct bpf_insn old[4096];
	size_t nrules = 0, nold = 0, nout = 0, at = 0;
	struct bpf_insn *out = NULL;
	char line[256];

	while (fgets(line, sizeof(line), stdin) != NULL) {
		char type, maj[16], min[16], acc[8];
		int code, dst, src, off, imm;

		if (sscanf(line, "rule %c %15[^:]:%15s %7s", &type, maj, min, acc) == 4 &&
		    nrules < 256 && strlen(acc) <= 3) {
			struct cg_rule *r = &rules[nrules++];

			memset(r, 0, sizeof(*r));
			r->type = type;
			r->major = strcmp(maj, "*") == 0 ? CG_ANY : (unsigned int)strtoul(maj, NULL, 10);
			r->minor = strcmp(min, "*") == 0 ? CG_ANY : (unsigned int)strtoul(min, NULL, 10);
			memcpy(r->access, acc, strlen(acc) + 1);
		} else if (sscanf(line, "insn %d %d %d %d %d", &code, &dst, &src, &off, &imm) == 5 &&
			   nold < 4096) {
			struct bpf_insn *i = &old[nold++];

			memset(i, 0, sizeof(*i));
			i->code = (__u8)code;
			i->dst_reg = dst & 0xf;
			i->src_reg = src & 0xf;
			i->off = (__s16)off;
			i->imm = imm;
		} else {
			fprintf(stderr, "bad line: %s", line);
			return 2;
		}
	}
	switch (bpfprog_extend(rules, nrules, old, nold, &out, &nout, &at)) {
	case BPFPROG_OK:
		break;
	case BPFPROG_CALL:
		printf("refused call %zu\n", at);
		return 0;
	case BPFPROG_MAP:
		printf("refused map %zu\n", at);
		return 0;
	case BPFPROG_EMPTY:
		printf("refused empty 0\n");
		return 0;
	case BPFPROG_NOMEM:
		printf("refused nomem 0\n");
		return 0;
	}
	printf("ok %zu %zu\n", nout, nout - nold);
	for (size_t i = 0; i < nout; i++)
		printf("%u %u %u %d %d\n", out[i].code, out[i].dst_reg, out[i].src_reg, out[i].off,
		       out[i].imm);
	free(out);
	return 0;
}
