/* libFuzzer harness for the helper's input parser (csrc/parse.c: parse_plan).
 * Built by tests/fuzz/test_libfuzzer.py from csrc/parse.c and csrc/error.c by name. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct plan p;
	char *buf = malloc(size + 1);

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	clear_error();
	int rc = parse_plan(buf, size, &p);
	/* An error always says why; success always has what the helper needs. */
	if (rc != 0 && !has_error())
		abort();
	if (rc == 0 && (p.version != 1 || p.pid < 0))
		abort();
	free(p.devices);
	for (size_t i = 0; i < p.nmounts; i++)
		free(p.mounts[i].options); /* the one copy parse_mount_options makes */
	free(p.mounts);
	free(p.symlinks);
	for (size_t i = 0; i < p.nprocmasks; i++) {
		free(p.procmasks[i].files);
		free(p.procmasks[i].bus_ids);
	}
	free(p.procmasks);
	free(p.rules);
	free(p.ldconfig_dirs);
	free(buf);
	return 0;
}
