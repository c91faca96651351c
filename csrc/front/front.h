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

/* zlib's crc32 of buf, in forward or (reverse != 0) reverse byte order. */
uint32_t front_crc32(const char *buf, size_t n, int reverse);

const void *front_memmem(const char *hay, size_t n, const char *needle, size_t m);

#endif
