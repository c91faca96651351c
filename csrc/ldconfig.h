/* The host's static ldconfig, run sandboxed against the container root (ldconfig.c). */
#ifndef NVHOOK_LDCONFIG_H
#define NVHOOK_LDCONFIG_H

#include <stddef.h>

#include "ctx.h"

/* Refuse what cannot run safely inside the container root: scripts and dynamic executables. */
int check_static_elf(int fd, const char *path);
/* ldconf.c: ld.so.conf and every file it includes, and ldconfig's cache files, are regular
 * files or absent (a FIFO would block ldconfig, a device node would be opened as root). */
int check_ldconfig_inputs(struct ctx *c);
/* Run the pre-opened host ldconfig (exefd, opened O_RDONLY) sandboxed in the container root. */
int run_ldconfig(struct ctx *c, int exefd, const char *exe_path, char **dirs, size_t ndirs,
		 int timeout_ms);

#endif
