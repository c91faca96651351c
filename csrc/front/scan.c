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

/* ------------------------------------------------------------------ a strict JSON walk */
struct jp {
	const char *s;
	size_t n, i;
	int kind;                 /* FRONT_VIEW_SPEC or FRONT_VIEW_STATE */
	struct front_view *v;
};

enum ctx { C_NONE, C_TOP, C_PROCESS, C_ENV, C_ROOT };

#define MAX_DEPTH 64

static void jws(struct jp *p)
{
	while (p->i < p->n && is_ws(p->s[p->i]))
		p->i++;
}

/* A string at p->i (the opening quote): its raw bytes (between the quotes) and whether it
 * holds an escape. Validates escapes and rejects control characters, as Python's json. */
static int jstr(struct jp *p, struct front_str *raw, int *escaped)
{
	size_t start;

	if (p->i >= p->n || p->s[p->i] != '"')
		return -1;
	start = ++p->i;
	*escaped = 0;
	while (p->i < p->n) {
		unsigned char c = (unsigned char)p->s[p->i];

		if (c == '"') {
			raw->p = p->s + start;
			raw->n = p->i - start;
			p->i++;
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c == '\\') {
			*escaped = 1;
			if (++p->i >= p->n)
				return -1;
			c = (unsigned char)p->s[p->i];
			if (c == 'u') {
				int k;

				for (k = 0; k < 4; k++) {
					char h;

					if (++p->i >= p->n)
						return -1;
					h = p->s[p->i];
					if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
					      (h >= 'A' && h <= 'F')))
						return -1;
				}
			} else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
				return -1;
			}
		}
		p->i++;
	}
	return -1;
}

static int jdigits(struct jp *p)
{
	size_t start = p->i;

	while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
		p->i++;
	return p->i > start ? 0 : -1;
}

/* A number; *value gets a non-negative integer's value, or -1 for anything else. */
static int jnum(struct jp *p, long long *value)
{
	size_t start = p->i;
	int plain = 1;

	if (p->s[p->i] == '-') {
		p->i++;
		plain = 0;
	}
	if (p->i >= p->n)
		return -1;
	if (p->s[p->i] == '0')
		p->i++;
	else if (jdigits(p))
		return -1;
	if (p->i < p->n && p->s[p->i] == '.') {
		p->i++;
		plain = 0;
		if (jdigits(p))
			return -1;
	}
	if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
		p->i++;
		plain = 0;
		if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
			p->i++;
		if (jdigits(p))
			return -1;
	}
	*value = -1;
	if (plain && p->i - start <= 18) {
		long long v = 0;
		size_t k;

		for (k = start; k < p->i; k++)
			v = v * 10 + (p->s[k] - '0');
		*value = v;
	}
	return 0;
}

static int jvalue(struct jp *p, enum ctx ctx, int depth);

static int key_is(struct front_str k, const char *z)
{
	return k.n == strlen(z) && memcmp(k.p, z, k.n) == 0;
}

static int jobject(struct jp *p, enum ctx ctx, int depth)
{
	int seen_process = 0, seen_root = 0, seen_env = 0, seen_path = 0, seen_pid = 0;
	int seen_bundle = 0, seen_bundle_path = 0;

	p->i++;   /* { */
	jws(p);
	if (p->i < p->n && p->s[p->i] == '}') {
		p->i++;
		return 0;
	}
	for (;;) {
		struct front_str key;
		enum ctx child = C_NONE;
		int escaped, *seen = NULL;

		jws(p);
		if (jstr(p, &key, &escaped))
			return -1;
		if (escaped && ctx != C_NONE)
			return -2;   /* an escaped key where names matter: Python decides */
		jws(p);
		if (p->i >= p->n || p->s[p->i] != ':')
			return -1;
		p->i++;
		jws(p);
		if (p->i >= p->n)
			return -1;
		if (ctx == C_TOP && p->kind == FRONT_VIEW_SPEC) {
			if (key_is(key, "process")) {
				child = C_PROCESS;
				seen = &seen_process;
				if (p->s[p->i] != '{')
					return -2;
				p->v->has_process = 1;
			} else if (key_is(key, "root")) {
				child = C_ROOT;
				seen = &seen_root;
			}
		} else if (ctx == C_TOP) {          /* the state */
			if (key_is(key, "pid")) {
				seen = &seen_pid;
				if (p->s[p->i] == '-' || (p->s[p->i] >= '0' && p->s[p->i] <= '9')) {
					if (jnum(p, &p->v->pid))
						return -1;
					if (++*seen > 1)
						return -2;
					goto next;
				}
				p->v->pid = -1;
			} else if (key_is(key, "root")) {
				p->v->state_root = 1;
			} else if (key_is(key, "bundle") || key_is(key, "bundlePath")) {
				struct front_str *dst = key.n == 6 ? &p->v->bundle : &p->v->bundle_path;

				seen = key.n == 6 ? &seen_bundle : &seen_bundle_path;
				if (p->s[p->i] == '"') {
					if (jstr(p, dst, &escaped))
						return -1;
					if (escaped)
						return -2;
					if (++*seen > 1)
						return -2;
					goto next;
				}
			}
		} else if (ctx == C_PROCESS && key_is(key, "env")) {
			child = C_ENV;
			seen = &seen_env;
			p->v->has_env = 1;
		} else if (ctx == C_ROOT && key_is(key, "path")) {
			seen = &seen_path;
			if (p->s[p->i] == '"') {
				if (jstr(p, &p->v->root_path, &escaped))
					return -1;
				if (escaped)
					return -2;
				if (++*seen > 1)
					return -2;
				goto next;
			}
		}
		if (seen && ++*seen > 1)
			return -2;   /* a repeated key: Python takes the last; let it */
		{
			int r = jvalue(p, child, depth + 1);

			if (r)
				return r;
		}
next:
		jws(p);
		if (p->i >= p->n)
			return -1;
		if (p->s[p->i] == ',') {
			p->i++;
			continue;
		}
		if (p->s[p->i] == '}') {
			p->i++;
			return 0;
		}
		return -1;
	}
}

static int jarray(struct jp *p, enum ctx ctx, int depth)
{
	p->i++;   /* [ */
	jws(p);
	if (p->i < p->n && p->s[p->i] == ']') {
		p->i++;
		return 0;
	}
	for (;;) {
		jws(p);
		if (p->i >= p->n)
			return -1;
		if (ctx == C_ENV) {
			struct front_str raw;
			int escaped;

			if (p->s[p->i] != '"')
				return -2;   /* not a list of strings: Python reports it */
			if (jstr(p, &raw, &escaped))
				return -1;
			if (escaped)
				return -2;
			if ((raw.n >= 7 && memcmp(raw.p, "NVIDIA_", 7) == 0) ||
			    (raw.n >= 5 && memcmp(raw.p, "CUDA_", 5) == 0)) {
				if (p->v->nenv >= FRONT_MAX_ENV)
					return -2;
				p->v->env[p->v->nenv++] = raw;
			}
		} else {
			int r = jvalue(p, C_NONE, depth + 1);

			if (r)
				return r;
		}
		jws(p);
		if (p->i >= p->n)
			return -1;
		if (p->s[p->i] == ',') {
			p->i++;
			continue;
		}
		if (p->s[p->i] == ']') {
			p->i++;
			return 0;
		}
		return -1;
	}
}

static int jvalue(struct jp *p, enum ctx ctx, int depth)
{
	struct front_str raw;
	long long num;
	int escaped;

	if (depth > MAX_DEPTH)
		return -2;
	jws(p);
	if (p->i >= p->n)
		return -1;
	switch (p->s[p->i]) {
	case '{':
		return jobject(p, ctx, depth);
	case '[':
		if (ctx != C_ENV && ctx != C_NONE)
			return jarray(p, C_NONE, depth);
		return jarray(p, ctx, depth);
	case '"':
		if (ctx == C_ENV)
			return -2;
		return jstr(p, &raw, &escaped);
	case 't':
		if (p->n - p->i >= 4 && memcmp(p->s + p->i, "true", 4) == 0) {
			p->i += 4;
			return ctx == C_ENV ? -2 : 0;
		}
		return -1;
	case 'f':
		if (p->n - p->i >= 5 && memcmp(p->s + p->i, "false", 5) == 0) {
			p->i += 5;
			return ctx == C_ENV ? -2 : 0;
		}
		return -1;
	case 'n':
		if (p->n - p->i >= 4 && memcmp(p->s + p->i, "null", 4) == 0) {
			p->i += 4;
			return 0;   /* process.env null is "no env" for Python too */
		}
		return -1;
	default:
		if (p->s[p->i] == '-' || (p->s[p->i] >= '0' && p->s[p->i] <= '9'))
			return jnum(p, &num) ? -1 : (ctx == C_ENV ? -2 : 0);
		return -2;   /* NaN, Infinity (Python takes them), or garbage */
	}
}

int front_view(const char *buf, size_t n, int kind, struct front_view *v)
{
	struct jp p = { buf, n, 0, kind, v };
	size_t i;
	int r;

	memset(v, 0, sizeof(*v));
	v->pid = -1;
	for (i = 0; i < n; i++)
		if ((unsigned char)buf[i] >= 0x80)
			return -2;   /* Python decodes UTF-8 first: let it */
	jws(&p);
	if (p.i >= n || buf[p.i] != '{')
		return -2;
	r = jvalue(&p, C_TOP, 0);
	if (r)
		return r;
	jws(&p);
	return p.i == n ? 0 : -1;
}

/* ------------------------------------------------------------------ the memo file */
int front_parse_memo(const char *buf, size_t n, struct front_memo *m)
{
	static const char magic[] = "nvhook-memo 1";
	struct front_memo_entry *e = NULL;
	size_t i = 0, lineno = 0;

	memset(m, 0, sizeof(*m));
	while (i < n) {
		const char *line = buf + i, *nl = memchr(line, '\n', n - i);
		struct front_str rest;
		size_t len;

		if (!nl)
			return -1;
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
			m->key = rest;
			continue;
		}
		if (starts(line, len, "entry", &rest)) {
			if (m->nentries >= FRONT_MAX_MEMOS)
				return -1;
			e = &m->entries[m->nentries++];
			continue;
		}
		if (!e)
			return -1;
		if (starts(line, len, "layout", &rest)) {
			e->layout = rest;
		} else if (starts(line, len, "helper", &rest)) {
			e->helper = rest;
		} else if (starts(line, len, "body", &rest)) {
			e->body = rest;
		} else if (starts(line, len, "env", &rest)) {
			if (e->nenv >= FRONT_MAX_ENV)
				return -1;
			e->env[e->nenv++] = rest;
		} else if (starts(line, len, "check", &rest)) {
			struct front_check *c;
			const char *sp1, *sp2;

			if (e->nchecks >= FRONT_MAX_CHECKS)
				return -1;
			c = &e->checks[e->nchecks];
			sp1 = memchr(rest.p, ' ', rest.n);
			if (!sp1)
				return -1;
			sp2 = memchr(sp1 + 1, ' ', rest.n - (size_t)(sp1 + 1 - rest.p));
			if (!sp2)
				return -1;
			c->kind.p = rest.p;
			c->kind.n = (size_t)(sp1 - rest.p);
			c->expected.p = sp1 + 1;
			c->expected.n = (size_t)(sp2 - sp1 - 1);
			c->path.p = sp2 + 1;
			c->path.n = rest.n - (size_t)(sp2 + 1 - rest.p);
			if (!c->path.n)
				return -1;
			e->nchecks++;
		} else {
			return -1;
		}
	}
	for (i = 0; i < m->nentries; i++)
		if (!m->entries[i].layout.n || !m->entries[i].helper.n || !m->entries[i].body.n)
			return -1;
	return lineno >= 2 ? 0 : -1;
}

int front_unhex(struct front_str hex, char *out, size_t cap, size_t *len)
{
	size_t k;

	if (hex.n % 2 || hex.n / 2 > cap)
		return -1;
	for (k = 0; k < hex.n; k += 2) {
		int v = 0, j;

		for (j = 0; j < 2; j++) {
			char c = hex.p[k + (size_t)j];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= c - '0';
			else if (c >= 'a' && c <= 'f')
				v |= c - 'a' + 10;
			else
				return -1;
		}
		out[k / 2] = (char)v;
	}
	*len = hex.n / 2;
	return 0;
}
