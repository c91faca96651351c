/* libFuzzer harness for the front door's scanners (csrc/front/scan.c): the OCI state's
 * bundle, the config.json byte search and the facts parser, on arbitrary bytes.
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
	struct front_facts facts;
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
	(void)front_crc32(copy, size, (int)(size & 1));
	free(copy);
	return 0;
}
