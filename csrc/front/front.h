/* The front door's pure parts (scan.c): no I/O, no allocation, bounded by the
 * caller's buffers. front.c does the I/O; tests/fuzz/front_fuzz.c fuzzes these. */
#ifndef NVHOOK_FRONT_H
#define NVHOOK_FRONT_H

#include <stddef.h>
#include <stdint.h>

#define FRONT_MAX_NEEDLES 16
#define FRONT_NEEDLE_MAX 200
#define FRONT_MAX_RUNTIMES 4
#define FRONT_MAX_STATS 48

/* A view into a caller's buffer (never NUL-terminated by the parser itself). */
struct front_str {
	const char *p;
	size_t n;
};

struct front_stat {
	struct front_str sig;   /* "-" or DEV:INO:MODE(octal):SIZE:MTIME_NS */
	struct front_str path;
};

struct front_runtime {
	struct front_str path_env;
	struct front_str exec;
	struct front_stat stats[FRONT_MAX_STATS];
	size_t nstats;
};

struct front_facts {
	struct front_str key;   /* after "config " */
	struct front_str needles[FRONT_MAX_NEEDLES];
	size_t nneedles;
	int doubt;
	struct front_runtime runtimes[FRONT_MAX_RUNTIMES];
	size_t nruntimes;
};

/* The bundle of an OCI state, as nvhook/gate.py's _bundle_of reads it: "bundle" (else
 * "bundlePath") appearing exactly once, then ':' and a JSON string. Writes the decoded,
 * NUL-terminated value to out. Returns 1 when found, 0 when Python must decide (absent,
 * ambiguous, escapes other than the plain one-character ones, control or non-ASCII bytes,
 * empty, too long). */
int front_bundle(const char *state, size_t n, char *out, size_t outsz);

/* 1 when the config.json bytes may hold a request: a JSON \u escape (not searched
 * through), or any needle present. */
int front_spec_may_ask(const char *spec, size_t n, const struct front_str *needles,
		       size_t nneedles);

/* Parse a facts file (nvhook/frontprep.py's format). 0 on success, -1 if malformed. */
int front_parse_facts(const char *buf, size_t n, struct front_facts *out);

#define FRONT_MAX_ENV 64
#define FRONT_VIEW_SPEC 1
#define FRONT_VIEW_STATE 2

/* What the memo replay reads from config.json (process.env's NVIDIA_* and CUDA_* entries,
 * root.path) or from the state (pid, bundle, bundlePath, a crun "root"), by a strict JSON
 * walk: raw strings, so any escape in them sends the case to Python. */
struct front_view {
	struct front_str env[FRONT_MAX_ENV];
	size_t nenv;
	int has_process, has_env;
	struct front_str root_path;
	long long pid;                 /* -1: absent, negative, fractional or huge */
	struct front_str bundle, bundle_path;
	int state_root;
};

/* 0 when buf is one JSON object and the view was taken; -1 invalid JSON; -2 valid or not,
 * a case for Python (escapes where names matter, repeated keys, depth, non-ASCII...). */
int front_view(const char *buf, size_t n, int kind, struct front_view *v);

#define FRONT_MAX_MEMOS 4
#define FRONT_MAX_CHECKS 160

/* One host fact Python's decision rested on: "read HEX PATH" (the file's bytes), "list HEX
 * PATH" (the sorted names, a "/" after each directory's, NUL-separated), "stat SIG PATH". */
struct front_check {
	struct front_str kind, expected, path;
};

struct front_memo_entry {
	struct front_str layout, helper, body;   /* body: hex of the helper input's plan part */
	struct front_str env[FRONT_MAX_ENV];
	size_t nenv;
	struct front_check checks[FRONT_MAX_CHECKS];
	size_t nchecks;
};

/* nvhook/memo.py's file: "nvhook-memo 1", "config KEY", then entries. */
struct front_memo {
	struct front_str key;
	struct front_memo_entry entries[FRONT_MAX_MEMOS];
	size_t nentries;
};

int front_parse_memo(const char *buf, size_t n, struct front_memo *m);

/* Lower-case hex to bytes; -1 if malformed or longer than cap. */
int front_unhex(struct front_str hex, char *out, size_t cap, size_t *len);

/* zlib's crc32 of buf, in forward or (reverse != 0) reverse byte order. */
uint32_t front_crc32(const char *buf, size_t n, int reverse);

const void *front_memmem(const char *hay, size_t n, const char *needle, size_t m);

#endif
