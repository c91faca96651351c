/* Capability trimming for the helper and its ldconfig child (raw capset: no libcap here). */
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps.h"

int limit_capabilities(unsigned long long keep, const char **failed)
{
	/* Ambient caps would survive exec; nobody needs them. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
		*failed = "clear the ambient capabilities";
		return -1;
	}
	/* The bounding set first: dropping from it needs CAP_SETPCAP, which capset may remove. */
	for (int cap = 0; cap < 64; cap++) {
		if (keep & (1ULL << cap))
			continue;
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
			break; /* past the kernel's last capability */
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			*failed = "drop a capability from the bounding set";
			return -1;
		}
	}
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) != 0) {
		*failed = "capget";
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		__u32 mask = (__u32)(keep >> (32 * i));
		data[i].permitted &= mask;
		data[i].effective = data[i].permitted;
		data[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &hdr, data) != 0) {
		*failed = "capset";
		return -1;
	}
	return 0;
}
