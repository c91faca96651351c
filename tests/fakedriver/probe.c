/* nvml-probe: proves that libnvidia-ml.so.1 is reachable by SONAME through the normal
 * loader (ld.so.cache, LD_LIBRARY_PATH) and answers. Links only libc; prints "count=N"
 * then "index uuid" per GPU; exits 1 with the dlerror or NVML error otherwise. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *device_t;

int main(int argc, char **argv)
{
    void *lib;
    int (*init)(void), (*shutdown)(void), (*count_fn)(unsigned int *);
    int (*handle_fn)(unsigned int, device_t *), (*uuid_fn)(device_t, char *, unsigned int);
    const char *(*error)(int);
    unsigned int count, i;
    int rc;

    /* nvml-probe --dlopen NAME: only load NAME by SONAME (e.g. libcuda.so.1) and say so. */
    if (argc == 3 && strcmp(argv[1], "--dlopen") == 0) {
        lib = dlopen(argv[2], RTLD_NOW);
        if (lib == NULL) {
            printf("dlopen %s: failed\n", argv[2]);
            return 1;
        }
        printf("dlopen %s: ok\n", argv[2]);
        return 0;
    }
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "nvml-probe: %s\n", dlerror());
        return 1;
    }
    *(void **)&init = dlsym(lib, "nvmlInit_v2");
    *(void **)&shutdown = dlsym(lib, "nvmlShutdown");
    *(void **)&count_fn = dlsym(lib, "nvmlDeviceGetCount_v2");
    *(void **)&handle_fn = dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&uuid_fn = dlsym(lib, "nvmlDeviceGetUUID");
    *(void **)&error = dlsym(lib, "nvmlErrorString");
    if (!init || !shutdown || !count_fn || !handle_fn || !uuid_fn || !error) {
        fprintf(stderr, "nvml-probe: libnvidia-ml.so.1 lacks an NVML symbol\n");
        return 1;
    }
    if ((rc = init()) != 0) {
        fprintf(stderr, "nvml-probe: nvmlInit_v2: %s (%d)\n", error(rc), rc);
        return 1;
    }
    if ((rc = count_fn(&count)) != 0) {
        fprintf(stderr, "nvml-probe: nvmlDeviceGetCount_v2: %s (%d)\n", error(rc), rc);
        return 1;
    }
    printf("count=%u\n", count);
    for (i = 0; i < count; i++) {
        device_t dev;
        char uuid[96];
        if ((rc = handle_fn(i, &dev)) != 0 || (rc = uuid_fn(dev, uuid, sizeof(uuid))) != 0) {
            fprintf(stderr, "nvml-probe: GPU %u: %s (%d)\n", i, error(rc), rc);
            return 1;
        }
        printf("%u %s\n", i, uuid);
    }
    shutdown();
    return 0;
}
