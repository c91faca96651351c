/* Reading /proc and cgroup files (procfile.c). Depends on nothing. */
#ifndef NVHOOK_PROCFILE_H
#define NVHOOK_PROCFILE_H

#include <stddef.h>

/* A whole file (these report no size: read until EOF), NUL-terminated; NULL with errno. */
char *read_all_at(int dir_fd, const char *name, size_t *len_out);
/* mountinfo escapes space, tab, newline and backslash as \ooo: undo that in place. */
void unescape_octal(char *s);

#endif
