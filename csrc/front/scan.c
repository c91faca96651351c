/* The front door's scanners: hostile bytes in, bounded answers out (see front.h). */
#include <string.h>

#include "front.h"

const void *front_memmem(const char *hay, size_t n, const char *needle, size_t m)
{
	size_t i;

	if (m == 0)
		return hay;
	if (m > n)
		return NULL;
	for (i = 0; i + m <= n; i++) {
		const char *hit = memchr(hay + i, needle[0], n - m + 1 - i);

		if (!hit)
			return NULL;
		i = (size_t)(hit - hay);
		if (memcmp(hit, needle, m) == 0)
			return hit;
	}
	return NULL;
}

/* Non-overlapping occurrences, as Python's str.count. */
static size_t count(const char *hay, size_t n, const char *needle, size_t m, size_t *first)
{
	size_t c = 0, i = 0;

	while (i + m <= n) {
		const char *hit = front_memmem(hay + i, n - i, needle, m);

		if (!hit)
			break;
		if (c++ == 0)
			*first = (size_t)(hit - hay);
		i = (size_t)(hit - hay) + m;
	}
	return c;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int front_bundle(const char *state, size_t n, char *out, size_t outsz)
{
	static const char *const keys[] = { "\"bundle\"", "\"bundlePath\"" };
	size_t k, i, o;

	for (i = 0; i < n; i++)
		if ((unsigned char)state[i] >= 0x80)
			return 0;   /* Python decodes the text first: let it */
	for (k = 0; k < 2; k++) {
		size_t m = strlen(keys[k]), at = 0;

		if (count(state, n, keys[k], m, &at) != 1)
			continue;
		i = at + m;
		while (i < n && is_ws(state[i]))
			i++;
		if (i >= n || state[i] != ':')
			return 0;
		i++;
		while (i < n && is_ws(state[i]))
			i++;
		if (i >= n || state[i] != '"')
			return 0;
		for (i++, o = 0; i < n; i++) {
			char c = state[i];

			if ((unsigned char)c < 0x20)
				return 0;
			if (c == '"') {
				if (o == 0)
					return 0;
				out[o] = '\0';
				return 1;
			}
			if (c == '\\') {
				if (++i >= n)
					return 0;
				switch (state[i]) {
				case '"': c = '"'; break;
				case '\\': c = '\\'; break;
				case '/': c = '/'; break;
				default: return 0;   /* \u, control escapes: Python decides */
				}
			}
			if (o + 1 >= outsz)
				return 0;
			out[o++] = c;
		}
		return 0;
	}
	return 0;
}

int front_spec_may_ask(const char *spec, size_t n, const struct front_str *needles,
		       size_t nneedles)
{
	size_t i;

	if (front_memmem(spec, n, "\\u", 2))
		return 1;
	for (i = 0; i < nneedles; i++)
		if (front_memmem(spec, n, needles[i].p, needles[i].n))
			return 1;
	return 0;
}

static int starts(const char *line, size_t n, const char *word, struct front_str *rest)
{
	size_t m = strlen(word);

	if (n < m || memcmp(line, word, m) != 0)
		return 0;
	if (n == m) {
		rest->p = line + m;
		rest->n = 0;
		return 1;
	}
	if (line[m] != ' ')
		return 0;
	rest->p = line + m + 1;
	rest->n = n - m - 1;
	return 1;
}

int front_parse_facts(const char *buf, size_t n, struct front_facts *f)
{
	static const char magic[] = "nvhook-front 1";
	size_t i = 0, lineno = 0;

	memset(f, 0, sizeof(*f));
	while (i < n) {
		const char *line = buf + i, *nl = memchr(line, '\n', n - i);
		size_t len;
		struct front_str rest;

		if (!nl)
			return -1;   /* every line ends with a newline: else a torn file */
		len = (size_t)(nl - line);
		i += len + 1;
		if (lineno++ == 0) {
			if (len != sizeof(magic) - 1 || memcmp(line, magic, len) != 0)
				return -1;
			continue;
		}
		if (lineno == 2) {
			if (!starts(line, len, "config", &rest) || rest.n == 0)
				return -1;
			f->key = rest;
			continue;
		}
		if (starts(line, len, "needle", &rest)) {
			if (f->nneedles >= FRONT_MAX_NEEDLES || rest.n == 0 ||
			    rest.n > FRONT_NEEDLE_MAX)
				return -1;
			f->needles[f->nneedles++] = rest;
		} else if (starts(line, len, "doubt", &rest)) {
			f->doubt = 1;
		} else if (starts(line, len, "runtime", &rest)) {
			if (f->nruntimes >= FRONT_MAX_RUNTIMES)
				return -1;
			f->runtimes[f->nruntimes++].path_env = rest;
		} else if (starts(line, len, "exec", &rest)) {
			if (!f->nruntimes || rest.n == 0)
				return -1;
			f->runtimes[f->nruntimes - 1].exec = rest;
		} else if (starts(line, len, "stat", &rest)) {
			struct front_runtime *r;
			const char *sp;

			if (!f->nruntimes)
				return -1;
			r = &f->runtimes[f->nruntimes - 1];
			sp = memchr(rest.p, ' ', rest.n);
			if (!sp || r->nstats >= FRONT_MAX_STATS)
				return -1;
			r->stats[r->nstats].sig.p = rest.p;
			r->stats[r->nstats].sig.n = (size_t)(sp - rest.p);
			r->stats[r->nstats].path.p = sp + 1;
			r->stats[r->nstats].path.n = rest.n - (size_t)(sp - rest.p) - 1;
			r->nstats++;
		} else {
			return -1;
		}
	}
	return lineno >= 2 ? 0 : -1;
}

uint32_t front_crc32(const char *buf, size_t n, int reverse)
{
	uint32_t crc = 0xffffffffu;
	size_t i;
	int b;

	for (i = 0; i < n; i++) {
		crc ^= (unsigned char)buf[reverse ? n - 1 - i : i];
		for (b = 0; b < 8; b++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}
