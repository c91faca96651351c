/* A small nvidia-smi for the fake driver: it loads libnvidia-ml.so.1 by SONAME through the
 * normal loader, exactly as the real tool does, so it proves that the container (or host)
 * can find the injected NVML. Supports -L and --query-gpu=... --format=csv[,noheader]. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *dev_t_;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;

static int (*p_init)(void);
static int (*p_shutdown)(void);
static const char *(*p_error)(int);
static int (*p_driver_version)(char *, unsigned int);
static int (*p_cuda_version)(int *);
static int (*p_count)(unsigned int *);
static int (*p_handle)(unsigned int, dev_t_ *);
static int (*p_uuid)(dev_t_, char *, unsigned int);
static int (*p_name)(dev_t_, char *, unsigned int);
static int (*p_pci)(dev_t_, pci_t *);
static int (*p_cc)(dev_t_, int *, int *);
static int (*p_mig_mode)(dev_t_, unsigned int *, unsigned int *);
static int (*p_max_mig)(dev_t_, unsigned int *);
static int (*p_mig_handle)(dev_t_, unsigned int, dev_t_ *);

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (p == NULL) {
        fprintf(stderr, "nvidia-smi: libnvidia-ml.so.1 lacks %s\n", name);
        exit(12);
    }
    return p;
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        printf("nvidia-smi: %s failed: %s\n", what, p_error(rc));
        exit(rc == 9 ? 9 : 15);
    }
}

static void load(void)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    int rc;

    if (lib == NULL) {
        printf("nvidia-smi: cannot load the NVIDIA Management Library: %s\n", dlerror());
        exit(12);
    }
    *(void **)&p_init = sym(lib, "nvmlInit_v2");
    *(void **)&p_shutdown = sym(lib, "nvmlShutdown");
    *(void **)&p_error = sym(lib, "nvmlErrorString");
    *(void **)&p_driver_version = sym(lib, "nvmlSystemGetDriverVersion");
    *(void **)&p_cuda_version = sym(lib, "nvmlSystemGetCudaDriverVersion");
    *(void **)&p_count = sym(lib, "nvmlDeviceGetCount_v2");
    *(void **)&p_handle = sym(lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&p_uuid = sym(lib, "nvmlDeviceGetUUID");
    *(void **)&p_name = sym(lib, "nvmlDeviceGetName");
    *(void **)&p_pci = sym(lib, "nvmlDeviceGetPciInfo_v3");
    *(void **)&p_cc = sym(lib, "nvmlDeviceGetCudaComputeCapability");
    *(void **)&p_mig_mode = sym(lib, "nvmlDeviceGetMigMode");
    *(void **)&p_max_mig = sym(lib, "nvmlDeviceGetMaxMigDeviceCount");
    *(void **)&p_mig_handle = sym(lib, "nvmlDeviceGetMigDeviceHandleByIndex");
    rc = p_init();
    if (rc != 0) {
        printf("nvidia-smi: cannot talk to the NVIDIA driver: %s\n", p_error(rc));
        exit(9);
    }
}

static void list_gpus(void)
{
    unsigned int count, i, slots, m, cur, pend;
    char name[96], uuid[96];
    dev_t_ dev, mig;

    check(p_count(&count), "nvmlDeviceGetCount_v2");
    for (i = 0; i < count; i++) {
        check(p_handle(i, &dev), "nvmlDeviceGetHandleByIndex_v2");
        check(p_name(dev, name, sizeof(name)), "nvmlDeviceGetName");
        check(p_uuid(dev, uuid, sizeof(uuid)), "nvmlDeviceGetUUID");
        printf("GPU %u: %s (UUID: %s)\n", i, name, uuid);
        if (p_mig_mode(dev, &cur, &pend) != 0 || cur != 1)
            continue;
        check(p_max_mig(dev, &slots), "nvmlDeviceGetMaxMigDeviceCount");
        for (m = 0; m < slots; m++) {
            const char *profile;
            if (p_mig_handle(dev, m, &mig) != 0)
                continue;
            check(p_name(mig, name, sizeof(name)), "nvmlDeviceGetName");
            check(p_uuid(mig, uuid, sizeof(uuid)), "nvmlDeviceGetUUID");
            profile = strstr(name, "MIG ");
            profile = profile ? profile + 4 : name;
            printf("  MIG %-12sDevice %2u: (UUID: %s)\n", profile, m, uuid);
        }
    }
}

static int query(const char *fields, int header)
{
    static const char *known[] = { "index", "uuid", "pci.bus_id", "name", "driver_version",
                                   "compute_cap", "mig.mode.current", NULL };
    char *list = strdup(fields), *save = NULL, *f;
    const char *names[16];
    unsigned int n = 0, count, i, k;

    for (f = strtok_r(list, ",", &save); f != NULL; f = strtok_r(NULL, ",", &save)) {
        int ok = 0;
        for (k = 0; known[k] != NULL; k++)
            ok |= strcmp(f, known[k]) == 0;
        if (!ok || n == 16) {
            printf("Field \"%s\" is not a valid field to query.\n", f);
            return 2;
        }
        names[n++] = f;
    }
    if (header) {
        for (k = 0; k < n; k++)
            printf("%s%s", k ? ", " : "", names[k]);
        printf("\n");
    }
    check(p_count(&count), "nvmlDeviceGetCount_v2");
    for (i = 0; i < count; i++) {
        dev_t_ dev;
        check(p_handle(i, &dev), "nvmlDeviceGetHandleByIndex_v2");
        for (k = 0; k < n; k++) {
            char buf[96];
            pci_t pci;
            int ma, mi;
            unsigned int cur, pend;
            printf("%s", k ? ", " : "");
            if (strcmp(names[k], "index") == 0) {
                printf("%u", i);
            } else if (strcmp(names[k], "uuid") == 0) {
                check(p_uuid(dev, buf, sizeof(buf)), "nvmlDeviceGetUUID");
                printf("%s", buf);
            } else if (strcmp(names[k], "name") == 0) {
                check(p_name(dev, buf, sizeof(buf)), "nvmlDeviceGetName");
                printf("%s", buf);
            } else if (strcmp(names[k], "pci.bus_id") == 0) {
                check(p_pci(dev, &pci), "nvmlDeviceGetPciInfo_v3");
                printf("%s", pci.busId);
            } else if (strcmp(names[k], "driver_version") == 0) {
                check(p_driver_version(buf, sizeof(buf)), "nvmlSystemGetDriverVersion");
                printf("%s", buf);
            } else if (strcmp(names[k], "compute_cap") == 0) {
                check(p_cc(dev, &ma, &mi), "nvmlDeviceGetCudaComputeCapability");
                printf("%d.%d", ma, mi);
            } else {
                printf("%s", p_mig_mode(dev, &cur, &pend) != 0 ? "[N/A]"
                                                               : cur ? "Enabled" : "Disabled");
            }
        }
        printf("\n");
    }
    free(list);
    return 0;
}

static void summary(void)
{
    char version[96];
    int cuda;

    check(p_driver_version(version, sizeof(version)), "nvmlSystemGetDriverVersion");
    check(p_cuda_version(&cuda), "nvmlSystemGetCudaDriverVersion");
    printf("NVIDIA-SMI %s    Driver Version: %s    CUDA Version: %d.%d\n", version, version,
           cuda / 1000, (cuda % 1000) / 10);
    list_gpus();
}

int main(int argc, char **argv)
{
    const char *fields = NULL, *format = NULL;
    int list = 0, i, rc = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-L") == 0 || strcmp(argv[i], "--list-gpus") == 0)
            list = 1;
        else if (strncmp(argv[i], "--query-gpu=", 12) == 0)
            fields = argv[i] + 12;
        else if (strncmp(argv[i], "--format=", 9) == 0)
            format = argv[i] + 9;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: nvidia-smi [-L] [--query-gpu=FIELDS --format=csv[,noheader]]\n");
            return 0;
        } else {
            fprintf(stderr, "nvidia-smi: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (fields != NULL && (format == NULL || strncmp(format, "csv", 3) != 0)) {
        fprintf(stderr, "nvidia-smi: --query-gpu needs --format=csv\n");
        return 2;
    }
    load();
    if (fields != NULL)
        rc = query(fields, format == NULL || strstr(format, "noheader") == NULL);
    else if (list)
        list_gpus();
    else
        summary();
    p_shutdown();
    return rc;
}
