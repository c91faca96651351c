/* cgroup v2: each BPF_CGROUP_DEVICE program swapped for an extended copy (bpfprog.c builds it),
 * attached before the old one is detached; bpf links are updated in place. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bpf.h>

#include "bpfprog.h"
#include "cgroup_int.h"
#include "error.h"

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static uint64_t ptr_u64(const void *p)
{
	return (uint64_t)(uintptr_t)p;
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

void cg_v2_undo(struct cg_undo *u, int *failed)
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

/* Why program `id` cannot be extended, in words. */
static void refused(enum bpfprog_refusal r, uint32_t id, size_t at, char *why, size_t whylen)
{
	switch (r) {
	case BPFPROG_CALL:
		snprintf(why, whylen,
			 "program %u calls a helper or subprogram at instruction %zu; only plain "
			 "device filters (as runc, crun and systemd write) can be extended",
			 id, at);
		break;
	case BPFPROG_MAP:
		snprintf(why, whylen,
			 "program %u uses a map at instruction %zu; only plain device filters (as "
			 "runc, crun and systemd write) can be extended",
			 id, at);
		break;
	case BPFPROG_EMPTY:
		snprintf(why, whylen, "program %u reads back empty", id);
		break;
	default:
		snprintf(why, whylen, "%s", strerror(ENOMEM));
		break;
	}
}

int cg_v2_allow(struct cg_undo *u, const struct cg_rule *rules, size_t n)
{
	uint32_t *ids = NULL, cnt = 0, flags = 0;
	char why[512];
	int failed = 0;

	if (query_programs(u->dir_fd, &ids, &cnt, &flags) < 0) {
		set_error("cgroup-bpf", u->path, "BPF_PROG_QUERY: %s", strerror(errno));
		return -1;
	}
	/* No program of its own: this cgroup does no device filtering, so there is nothing to open. */
	if (cnt == 0)
		return 0;
	u->swaps = calloc(cnt, sizeof(*u->swaps));
	if (u->swaps == NULL) {
		free(ids);
		set_error("cgroup-bpf", u->path, "%s", strerror(ENOMEM));
		return -1;
	}
	u->attach_flags = flags & (BPF_F_ALLOW_MULTI | BPF_F_ALLOW_OVERRIDE);
	raise_memlock();

	for (uint32_t i = 0; i < cnt; i++) {
		struct cg_swap *s = &u->swaps[u->nswaps];
		struct bpf_insn *old, *joined;
		enum bpfprog_refusal refusal;
		size_t njoined, at;
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
		refusal = bpfprog_extend(rules, n, old, nold, &joined, &njoined, &at);
		free(old);
		if (refusal != BPFPROG_OK) {
			refused(refusal, ids[i], at, why, sizeof(why));
			goto fail;
		}
		s->new_fd = load_program(joined, njoined, why, sizeof(why));
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
	free(ids);
	return 0;
fail:
	cg_v2_undo(u, &failed);
	free(ids);
	set_error("cgroup-bpf", u->path, "%s%s", why,
		  failed ? " (putting the old filters back failed too)" : "");
	return -1;
}
