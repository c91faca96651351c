/* The BPF_CGROUP_DEVICE program builder: pure (no system calls), so that it is unit-tested
 * without privileges (tests/cgroup/test_bpfprog.py); cgroup_bpf.c loads and attaches. */
#ifndef NVHOOK_BPFPROG_H
#define NVHOOK_BPFPROG_H

#include <stddef.h>

#include <linux/bpf.h>

#include "cgroup.h"

/* One instruction, the unused fields zero. */
struct bpf_insn bpfprog_insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm);

/* Room for the prelude of n rules: 6 loads, then per rule at most 3 checks and 5 more. */
#define BPFPROG_PRELUDE_MAX(n) (6 + 8 * (size_t)(n))

/*
 * The allow checks that go in front of an existing program, written to out (room for
 * BPFPROG_PRELUDE_MAX(n)); returns the count. Rules must have passed cg_check_rules.
 */
size_t bpfprog_prelude(const struct cg_rule *rules, size_t n, struct bpf_insn *out);

enum bpfprog_refusal {
	BPFPROG_OK = 0,
	BPFPROG_CALL, /* a helper or subprogram call: carries a kernel offset once loaded */
	BPFPROG_MAP,  /* a 64-bit load of a map: carries a map id, not an fd, once loaded */
	BPFPROG_EMPTY,
	BPFPROG_NOMEM,
};

/*
 * prelude(rules) followed by `old` (a program as the kernel reports it back), newly allocated
 * in *out with *nout instructions. On refusal *out is NULL and *at names the instruction of
 * `old` that cannot be loaded again.
 */
enum bpfprog_refusal bpfprog_extend(const struct cg_rule *rules, size_t n,
				    const struct bpf_insn *old, size_t nold, struct bpf_insn **out,
				    size_t *nout, size_t *at);

#endif
