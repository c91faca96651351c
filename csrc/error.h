/* The helper's one error convention: the first failure, as one line "<step> <path>: <reason>".
 * Every file reports through set_error; main prints error_text() once. Depends on nothing. */
#ifndef NVHOOK_ERROR_H
#define NVHOOK_ERROR_H

/* Record the first failure; later calls are ignored (the first cause is the one that counts).
 * Control characters (paths, kernel or ldconfig text) become '?' here, and only here. */
void set_error(const char *step, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int has_error(void);
const char *error_text(void);
/* Forget the recorded failure (for test drivers that make several calls). */
void clear_error(void);

#endif
