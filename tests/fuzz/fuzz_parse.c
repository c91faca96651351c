/* libFuzzer harness for the helper's input parser (csrc/parse.c: parse_plan).
 * Built by tests/fuzz/test_libfuzzer.py from csrc/parse.c by name. The error functions the
 * helper defines elsewhere are given here weakly, so this still links if they move. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helper.h"

static char error_buf[1024];
static int error_set;

__attribute__((weak)) void set_error(const char *step, const char *path, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (error_set)
		return;
	error_set = 1;
	k = snprintf(error_buf, sizeof(error_buf), "%s %s: ", step, path);
	va_start(ap, fmt);
	if (k >= 0 && (size_t)k < sizeof(error_buf))
		vsnprintf(error_buf + k, sizeof(error_buf) - (size_t)k, fmt, ap);
	va_end(ap);
}

__attribute__((weak)) int has_error(void)
{
	return error_set;
}

__attribute__((weak)) const char *error_text(void)
{
	return error_buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct plan p;
	char *buf = malloc(size + 1);

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	error_set = 0;
	int rc = parse_plan(buf, size, &p);
	/* An error always says why; success always has what the helper needs. */
	if (rc != 0 && !error_set)
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
