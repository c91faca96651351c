/* Builds the extended device filter: allow rules prepended to the old program. No syscalls. */
#include "bpfprog.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup_rule.h"

struct bpf_insn bpfprog_insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm)
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
 * The prelude leaves r1 (the context) untouched, because the old instructions start from it;
 * r0 and r2-r5 are free, since the old program was verified to write a register before
 * reading it.
 *   r2 = device type, r3 = requested access, r4 = major, r5 = minor
 *   per rule: if type/major/minor differ, or access asks for more than the rule gives, go to
 *   the next rule; else return 1 (allow).
 * Falling off the last rule continues into the old program unchanged; its jumps are relative.
 */
size_t bpfprog_prelude(const struct cg_rule *rules, size_t n, struct bpf_insn *out)
{
	size_t k = 0;

	const uint8_t ldx_w = BPF_LDX | BPF_MEM | BPF_W;

	out[k++] = bpfprog_insn(ldx_w, 2, 1, offsetof(struct bpf_cgroup_dev_ctx, access_type), 0);
	out[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 2, 0, 0);
	out[k++] = bpfprog_insn(BPF_ALU64 | BPF_AND | BPF_K, 2, 0, 0, 0xffff);
	out[k++] = bpfprog_insn(BPF_ALU64 | BPF_RSH | BPF_K, 3, 0, 0, 16);
	out[k++] = bpfprog_insn(ldx_w, 4, 1, offsetof(struct bpf_cgroup_dev_ctx, major), 0);
	out[k++] = bpfprog_insn(ldx_w, 5, 1, offsetof(struct bpf_cgroup_dev_ctx, minor), 0);
	for (size_t i = 0; i < n; i++) {
		const struct cg_rule *r = &rules[i];
		size_t checks = (r->type != 'a') + (r->major != CG_ANY) + (r->minor != CG_ANY);
		size_t end = k + checks + 5; /* index of the next rule's first instruction */
		unsigned int acc = cg_access_bits(r->access);

#define JNE_NEXT(reg, val) \
	bpfprog_insn(BPF_JMP | BPF_JNE | BPF_K, (reg), 0, (int16_t)(end - (k + 1)), (int32_t)(val))
		if (r->type != 'a')
			out[k] = JNE_NEXT(2, r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK), k++;
		if (r->major != CG_ANY)
			out[k] = JNE_NEXT(4, r->major), k++;
		if (r->minor != CG_ANY)
			out[k] = JNE_NEXT(5, r->minor), k++;
		out[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_X, 0, 3, 0, 0);
		out[k++] = bpfprog_insn(BPF_ALU64 | BPF_AND | BPF_K, 0, 0, 0, (int32_t)~acc);
		out[k] = JNE_NEXT(0, 0), k++;
#undef JNE_NEXT
		out[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1);
		out[k++] = bpfprog_insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	}
	return k;
}

/*
 * A dump can be loaded again only if nothing in it points into the kernel: helper and
 * subprogram calls carry kernel offsets, map loads carry map ids instead of fds. Device
 * programs from runc, crun and systemd use neither.
 */
static enum bpfprog_refusal check_old(const struct bpf_insn *old, size_t nold, size_t *at)
{
	if (nold == 0)
		return BPFPROG_EMPTY;
	for (size_t i = 0; i < nold; i++) {
		uint8_t code = old[i].code;

		*at = i;
		if ((BPF_CLASS(code) == BPF_JMP || BPF_CLASS(code) == BPF_JMP32) &&
		    BPF_OP(code) == BPF_CALL)
			return BPFPROG_CALL;
		if (code == (BPF_LD | BPF_IMM | BPF_DW)) {
			if (old[i].src_reg != 0)
				return BPFPROG_MAP;
			i++; /* its second half */
		}
	}
	return BPFPROG_OK;
}

enum bpfprog_refusal bpfprog_extend(const struct cg_rule *rules, size_t n,
				    const struct bpf_insn *old, size_t nold, struct bpf_insn **out,
				    size_t *nout, size_t *at)
{
	enum bpfprog_refusal why;
	struct bpf_insn *joined;
	size_t k;

	*out = NULL;
	*nout = 0;
	*at = 0;
	why = check_old(old, nold, at);
	if (why != BPFPROG_OK)
		return why;
	joined = calloc(BPFPROG_PRELUDE_MAX(n) + nold, sizeof(*joined));
	if (joined == NULL)
		return BPFPROG_NOMEM;
	k = bpfprog_prelude(rules, n, joined);
	memcpy(joined + k, old, nold * sizeof(*joined));
	*out = joined;
	*nout = k + nold;
	return BPFPROG_OK;
}
