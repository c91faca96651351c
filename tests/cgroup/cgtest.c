/* Test driver for csrc/cgroup.c: probes device access, attaches runc-like filters, runs the API. */
#include "bpfprog.h"
#include "cgroup.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bpf.h>

/*
 * Subcommands (one line out per request, flushed, so a test can drive them over pipes):
 *   probe [--hide-v1]     prints "ready"; then per stdin line "open PATH r|rw" prints "ok" or
 *                         the errno name. --hide-v1 first unshares the mount namespace and
 *                         unmounts the v1 devices hierarchy there, so that the process looks
 *                         like a container on a cgroup2-only host.
 *   allow PID RULE...     runs cgroup_allow ("c 195:0 rw" per argument) and prints "ok" or
 *                         "err <message>"; then stdin "undo" prints "undo <rc>", "exit" frees.
 *   attach DIR MODE [--helper] RULE...
 *                         loads a filter that allows RULEs and denies the rest (the shape runc
 *                         generates) and attaches it to cgroup2 DIR; MODE multi|single|override,
 *                         or link: through a bpf link, which lives while this process does, so
 *                         it then waits for EOF on stdin. --helper makes the filter call a BPF
 *                         helper first. Prints the program id.
 *   query DIR             prints "flags=F ids=I,J" for the BPF_CGROUP_DEVICE programs of DIR.
 */

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int parse_rule(const char *s, struct cg_rule *r)
{
	char maj[16], min[16], acc[8];

	memset(r, 0, sizeof(*r));
	if (sscanf(s, "%c %15[^:]:%15s %7s", &r->type, maj, min, acc) != 4 || strlen(acc) > 3)
		return -1;
	r->major = strcmp(maj, "*") == 0 ? CG_ANY : (unsigned int)strtoul(maj, NULL, 10);
	r->minor = strcmp(min, "*") == 0 ? CG_ANY : (unsigned int)strtoul(min, NULL, 10);
	memcpy(r->access, acc, strlen(acc) + 1);
	return 0;
}

static int probe(int hide_v1)
{
	char line[4096];

	if (hide_v1) {
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    umount2("/sys/fs/cgroup/devices", MNT_DETACH) < 0) {
			printf("setup %s\n", strerror(errno));
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		char path[4096], mode[8];
		int fd;

		if (sscanf(line, "open %4095s %7s", path, mode) != 2)
			break;
		fd = open(path, strcmp(mode, "rw") == 0 ? O_RDWR : O_RDONLY);
		if (fd >= 0) {
			close(fd);
			printf("ok\n");
		} else {
			printf("%s\n", strerrorname_np(errno));
		}
		fflush(stdout);
	}
	return 0;
}

static int allow(pid_t pid, char **args, int nargs)
{
	struct cg_rule *rules = calloc((size_t)nargs + 1, sizeof(*rules));
	struct cg_undo *undo = NULL;
	char line[64];

	for (int i = 0; i < nargs; i++)
		if (parse_rule(args[i], &rules[i]) < 0) {
			printf("bad rule %s\n", args[i]);
			return 2;
		}
	if (cgroup_allow(-1, pid, rules, (size_t)nargs, &undo) < 0)
		printf("err %s\n", error_text());
	else
		printf("ok%s\n", undo == NULL ? " nothing-changed" : "");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (strncmp(line, "undo", 4) == 0)
			printf("undo %d\n", cgroup_undo(undo));
		else
			break;
		fflush(stdout);
	}
	cgroup_undo_free(undo);
	free(rules);
	return 0;
}

static unsigned int acc_bits(const char *a)
{
	unsigned int b = 0;

	for (; *a; a++)
		b |= *a == 'm' ? BPF_DEVCG_ACC_MKNOD : *a == 'r' ? BPF_DEVCG_ACC_READ : BPF_DEVCG_ACC_WRITE;
	return b;
}

static unsigned int prog_id(int fd)
{
	struct bpf_prog_info info;
	union bpf_attr attr;

	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = (uint64_t)(uintptr_t)&info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0 ? 0 : info.id;
}

/* The filter runc generates (libcontainer/cgroups/devices/devicefilter.go), rewritten here. */
static int attach(const char *dir, const char *mode, int helper, char **args, int nargs)
{
	struct bpf_insn prog[512];
	union bpf_attr attr;
	char log[8192];
	size_t k = 0;
	int cg, fd;

	if (helper) {
		prog[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0);
		prog[k++] = bpfprog_insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_current_uid_gid);
		prog[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0);
	}
	prog[k++] = bpfprog_insn(BPF_LDX | BPF_MEM | BPF_W, 2, 1, 0, 0);
	prog[k++] = bpfprog_insn(BPF_ALU | BPF_AND | BPF_K, 2, 0, 0, 0xffff);
	prog[k++] = bpfprog_insn(BPF_LDX | BPF_MEM | BPF_W, 3, 1, 0, 0);
	prog[k++] = bpfprog_insn(BPF_ALU | BPF_RSH | BPF_K, 3, 0, 0, 16);
	prog[k++] = bpfprog_insn(BPF_LDX | BPF_MEM | BPF_W, 4, 1, 4, 0);
	prog[k++] = bpfprog_insn(BPF_LDX | BPF_MEM | BPF_W, 5, 1, 8, 0);
	for (int i = 0; i < nargs; i++) {
		struct cg_rule r;
		size_t start = k, n;

		if (parse_rule(args[i], &r) < 0) {
			printf("bad rule %s\n", args[i]);
			return 2;
		}
		n = (r.type != 'a') + 3 + (r.major != CG_ANY) + (r.minor != CG_ANY) + 2;
#define NEXT (int16_t)(start + n - (k + 1))
		if (r.type != 'a')
			prog[k] = bpfprog_insn(BPF_JMP | BPF_JNE | BPF_K, 2, 0, NEXT,
				      r.type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK), k++;
		prog[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 3, 0, 0);
		prog[k++] = bpfprog_insn(BPF_ALU | BPF_AND | BPF_K, 1, 0, 0, (int32_t)acc_bits(r.access));
		prog[k] = bpfprog_insn(BPF_JMP | BPF_JNE | BPF_X, 1, 3, NEXT, 0), k++;
		if (r.major != CG_ANY)
			prog[k] = bpfprog_insn(BPF_JMP | BPF_JNE | BPF_K, 4, 0, NEXT, (int32_t)r.major), k++;
		if (r.minor != CG_ANY)
			prog[k] = bpfprog_insn(BPF_JMP | BPF_JNE | BPF_K, 5, 0, NEXT, (int32_t)r.minor), k++;
#undef NEXT
		prog[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1);
		prog[k++] = bpfprog_insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	}
	prog[k++] = bpfprog_insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0);
	prog[k++] = bpfprog_insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)prog;
	attr.insn_cnt = (uint32_t)k;
	attr.license = (uint64_t)(uintptr_t)"Apache-2.0";
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.log_size = sizeof(log);
	attr.log_level = 1;
	fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd < 0) {
		printf("load %s: %s\n", strerror(errno), log);
		return 1;
	}
	cg = open(dir, O_RDONLY | O_DIRECTORY);
	if (strcmp(mode, "link") == 0) {
		memset(&attr, 0, sizeof(attr));
		attr.link_create.prog_fd = (uint32_t)fd;
		attr.link_create.target_fd = (uint32_t)cg;
		attr.link_create.attach_type = BPF_CGROUP_DEVICE;
		if (cg < 0 || sys_bpf(BPF_LINK_CREATE, &attr) < 0) {
			printf("link %s\n", strerror(errno));
			return 1;
		}
		printf("%u\n", prog_id(fd));
		while (getchar() != EOF)
			;
		return 0;
	}
	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cg;
	attr.attach_bpf_fd = (uint32_t)fd;
	attr.attach_type = BPF_CGROUP_DEVICE;
	attr.attach_flags = strcmp(mode, "multi") == 0 ? BPF_F_ALLOW_MULTI
			    : strcmp(mode, "override") == 0 ? BPF_F_ALLOW_OVERRIDE : 0;
	if (cg < 0 || sys_bpf(BPF_PROG_ATTACH, &attr) < 0) {
		printf("attach %s\n", strerror(errno));
		return 1;
	}
	printf("%u\n", prog_id(fd));
	return 0;
}

static int query(const char *dir)
{
	uint32_t ids[64];
	union bpf_attr attr;
	int cg = open(dir, O_RDONLY | O_DIRECTORY);

	memset(&attr, 0, sizeof(attr));
	attr.query.target_fd = (uint32_t)cg;
	attr.query.attach_type = BPF_CGROUP_DEVICE;
	attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
	attr.query.prog_cnt = 64;
	if (cg < 0 || sys_bpf(BPF_PROG_QUERY, &attr) < 0) {
		printf("query %s\n", strerror(errno));
		return 1;
	}
	printf("flags=%u ids=", attr.query.attach_flags);
	for (uint32_t i = 0; i < attr.query.prog_cnt; i++)
		printf("%s%u", i ? "," : "", ids[i]);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "probe") == 0)
		return probe(argc >= 3 && strcmp(argv[2], "--hide-v1") == 0);
	if (argc >= 3 && strcmp(argv[1], "allow") == 0)
		return allow((pid_t)atoi(argv[2]), argv + 3, argc - 3);
	if (argc >= 4 && strcmp(argv[1], "attach") == 0) {
		int helper = argc >= 5 && strcmp(argv[4], "--helper") == 0;

		return attach(argv[2], argv[3], helper, argv + 4 + helper, argc - 4 - helper);
	}
	if (argc == 3 && strcmp(argv[1], "query") == 0)
		return query(argv[2]);
	fprintf(stderr, "usage: see the comment at the top of cgtest.c\n");
	return 2;
}
