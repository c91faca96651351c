/* libFuzzer harness for the helper's cgroup parsers: /proc/<pid>/mountinfo (read_mounts,
 * has_option; csrc/cgroup_find.c), /proc/<pid>/cgroup (cgroup_line; cgroup_find.c) and cgroup
 * v1's devices.list (parse_devices_list; csrc/cgroup_v1.c). They are static, so the files
 * are included by name. The first input byte picks the parser. */
#include "cgroup_find.c"
#include "cgroup_v1.c"

#include <stdint.h>
#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned char which = data[0] % 4;
	char *text = malloc(size);

	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if (which == 0) {
		struct v1_entry out[64];
		int all;
		size_t n = parse_devices_list(text, out, 64, &all);
		if (n > 64)
			abort();
	} else if (which == 1 || which == 2) {
		char out[4096];
		(void)cgroup_line(text, which == 1 ? 1 : 2, out, sizeof(out));
	} else {
		/* read_mounts reads a file: hand it the input through a memfd */
		int fd = memfd_create("mountinfo", MFD_CLOEXEC);
		char path[64];
		struct cg_mounts m;

		if (fd >= 0 && write(fd, data + 1, size - 1) == (ssize_t)(size - 1)) {
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			clear_error();
			if (read_mounts(AT_FDCWD, path, &m) == 0)
				mounts_free(&m);
		}
		if (fd >= 0)
			close(fd);
	}
	free(text);
	return 0;
}
