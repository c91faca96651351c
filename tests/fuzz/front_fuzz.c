/* libFuzzer harness for the front door's scanners (csrc/front/scan.c): the OCI state's
 * bundle, the config.json byte search, the facts and memo parsers and the strict JSON walk, on arbitrary bytes.
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc/front \
 *     tests/fuzz/front_fuzz.c csrc/front/scan.c -o front_fuzz && ./front_fuzz -max_total_time=20
 * tests/unit/test_front.py builds and runs it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct front_str needles[] = {
		{ "NVIDIA_VISIBLE_DEVICES", 22 }, { "CUDA_VERSION", 12 }, { "x", 1 },
	};
	static struct front_facts facts;
	static struct front_view view;
	static struct front_memo memo;
	static char unhexed[4096];
	char bundle[64], *copy;
	size_t i, j;

	/* An exact-size heap copy, so that ASan sees any read past the end. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (front_bundle(copy, size, bundle, sizeof(bundle))) {
		if (strlen(bundle) == 0 || strlen(bundle) >= sizeof(bundle))
			abort();
	}
	(void)front_spec_may_ask(copy, size, needles, 3);
	if (front_parse_facts(copy, size, &facts) == 0) {
		const char *end = copy + size;

		if (facts.nneedles > FRONT_MAX_NEEDLES || facts.nruntimes > FRONT_MAX_RUNTIMES)
			abort();
		for (i = 0; i < facts.nneedles; i++)
			if (facts.needles[i].p < copy || facts.needles[i].p + facts.needles[i].n > end)
				abort();
		for (i = 0; i < facts.nruntimes; i++)
			for (j = 0; j < facts.runtimes[i].nstats; j++) {
				struct front_stat *s = &facts.runtimes[i].stats[j];

				if (s->path.p < copy || s->path.p + s->path.n > end ||
				    memchr(s->sig.p, ' ', s->sig.n))
					abort();
			}
	}
	for (i = 1; i <= 2; i++)
		if (front_view(copy, size, (int)i, &view) == 0) {
			for (j = 0; j < view.nenv; j++)
				if (view.env[j].p < copy || view.env[j].p + view.env[j].n > copy + size ||
				    memchr(view.env[j].p, '\\', view.env[j].n))
					abort();
			if (view.root_path.n && (view.root_path.p < copy ||
			    view.root_path.p + view.root_path.n > copy + size))
				abort();
		}
	if (front_parse_memo(copy, size, &memo) == 0) {
		for (i = 0; i < memo.nentries; i++) {
			size_t len;

			if (memo.entries[i].nchecks > FRONT_MAX_CHECKS)
				abort();
			if (front_unhex(memo.entries[i].body, unhexed, sizeof(unhexed), &len) == 0 &&
			    len > sizeof(unhexed))
				abort();
		}
	}
	(void)front_crc32(copy, size, (int)(size & 1));
	free(copy);
	return 0;
}
