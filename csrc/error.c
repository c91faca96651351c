/* The first failure of a helper run, kept as the one line the caller will print. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static char error_line[2048];

void set_error(const char *step, const char *path, const char *fmt, ...)
{
	if (error_line[0] != '\0')
		return;
	char reason[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(error_line, sizeof(error_line), "%s %s: %s", step, path, reason);
	/* One line, whatever the paths, the kernel or ldconfig put into it. */
	for (char *p = error_line; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

int has_error(void)
{
	return error_line[0] != '\0';
}

const char *error_text(void)
{
	return error_line;
}

void clear_error(void)
{
	error_line[0] = '\0';
}
