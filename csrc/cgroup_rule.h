/* Device-cgroup rules: access bits, v1 text, validity. Pure (no system calls); used by the v1
 * writer, the BPF program builder and the API's input check. */
#ifndef NVHOOK_CGROUP_RULE_H
#define NVHOOK_CGROUP_RULE_H

#include <stddef.h>

#include "cgroup.h"

/* The kernel's dev_t has 12 bits of major and 20 of minor; larger numbers cannot name a node. */
#define CG_MAJOR_MAX 0xfffu
#define CG_MINOR_MAX 0xfffffu

/* Access bits, equal on v1 (m, r, w) and in the BPF context (BPF_DEVCG_ACC_*). */
#define ACC_MKNOD 1u
#define ACC_READ 2u
#define ACC_WRITE 4u

/* Room for one rule as a v1 line ("c 4095:1048575 rwm" needs 19). */
#define V1_LINE 64

unsigned int cg_access_bits(const char *s);
void cg_access_str(unsigned int bits, char out[4]);
/* "c 195:0 rw", with '*' for CG_ANY. */
void cg_rule_str(const struct cg_rule *r, char out[V1_LINE]);
/* 0, or -1 with set_error("cgroup-rule", "rules[i]", ...) for the first invalid rule. */
int cg_check_rules(const struct cg_rule *rules, size_t n);

#endif
