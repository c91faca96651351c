/* Capability trimming (caps.c): raw capset, no libcap. Depends on nothing. */
#ifndef NVHOOK_CAPS_H
#define NVHOOK_CAPS_H

/* Limit the bounding, permitted and effective sets to `keep` (a bit mask); clear the rest. */
int limit_capabilities(unsigned long long keep, const char **failed);

#endif
