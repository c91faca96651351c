/* A fake libnvidia-ml.so.1: the NVML calls nvhook makes (docs/contracts.md §1), with the
 * real ABI, answering from a GPU table compiled in from fake_nvml_table.h (generated per
 * fake driver by tests/fakedriver/build.py), so it answers the same inside a container.
 *
 * Failure injection reads a control file next to the library itself (found with dladdr),
 * never the environment: the hook scrubs its environment, a file survives that.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One row of the compiled-in table: a GPU (parent < 0) or a MIG device of GPU `parent`. */
struct fake_device {
    const char *uuid;
    const char *name;
    unsigned int minor;
    int brand;
    int cc_major, cc_minor;
    unsigned int domain, bus, dev;
    int mig_enabled;
    int parent;
    unsigned int mig_index, gpu_instance, compute_instance;
};

/* Defines FAKE_DRIVER_VERSION, FAKE_CUDA_VERSION, FAKE_GPU_COUNT, FAKE_DEVICE_COUNT,
 * FAKE_MAX_MIG_DEVICES, FAKE_PCI_DEVICE_ID, FAKE_PCI_SUBSYSTEM_ID, FAKE_CONTROL_NAME and
 * fake_devices[] (GPUs first, in PCI order, then MIG devices). */
#include "fake_nvml_table.h"

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_UNKNOWN = 999,
};

/* The real nvmlPciInfo_t of nvml.h (the _v3 query fills all of it). */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

/* The handle is an opaque pointer to one of these; MIG devices get their own entries, so
 * their handles differ from their parent's, as with the real library. */
typedef const struct fake_device *nvmlDevice_t;

static int init_count;

static int valid(nvmlDevice_t dev)
{
    return dev >= &fake_devices[0] && dev < &fake_devices[FAKE_DEVICE_COUNT];
}

static int is_gpu(nvmlDevice_t dev) { return valid(dev) && dev->parent < 0; }
static int is_mig(nvmlDevice_t dev) { return valid(dev) && dev->parent >= 0; }

/* Copies a string the way NVML does: the whole value or INSUFFICIENT_SIZE. */
static nvmlReturn_t put_string(char *buf, unsigned int length, const char *value)
{
    if (buf == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* Reads "<dir of this library>/fake_nvml.control": init_error=N, hang_ms=N. */
static void read_control(long *init_error, long *hang_ms)
{
    Dl_info info;
    char path[4096];
    char line[256];
    const char *slash;
    FILE *f;

    *init_error = -1;
    *hang_ms = 0;
    if (dladdr((void *)read_control, &info) == 0 || info.dli_fname == NULL)
        return;
    slash = strrchr(info.dli_fname, '/');
    if (slash == NULL)
        snprintf(path, sizeof(path), "%s", FAKE_CONTROL_NAME);
    else
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - info.dli_fname),
                 info.dli_fname, FAKE_CONTROL_NAME);
    f = fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        long value;
        if (sscanf(line, "init_error=%ld", &value) == 1)
            *init_error = value;
        else if (sscanf(line, "hang_ms=%ld", &value) == 1)
            *hang_ms = value;
    }
    fclose(f);
}

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    long init_error, hang_ms;

    read_control(&init_error, &hang_ms);
    if (hang_ms > 0) {
        struct timespec ts = { hang_ms / 1000, (hang_ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (init_error >= 0 && init_error != NVML_SUCCESS)
        return (nvmlReturn_t)init_error;
    __atomic_add_fetch(&init_count, 1, __ATOMIC_SEQ_CST);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    int expected = __atomic_load_n(&init_count, __ATOMIC_SEQ_CST);
    while (expected > 0) {
        if (__atomic_compare_exchange_n(&init_count, &expected, expected - 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return NVML_SUCCESS;
    }
    return NVML_ERROR_UNINITIALIZED;
}

#define REQUIRE_INIT()                                                  \
    do {                                                                \
        if (__atomic_load_n(&init_count, __ATOMIC_SEQ_CST) <= 0)        \
            return NVML_ERROR_UNINITIALIZED;                            \
    } while (0)

EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt request issued";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 17: return "Operating System Call Failed";
    case 18: return "Driver/library version mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    REQUIRE_INIT();
    return put_string(version, length, FAKE_DRIVER_VERSION);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    REQUIRE_INIT();
    if (cudaDriverVersion == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = FAKE_CUDA_VERSION;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    REQUIRE_INIT();
    if (deviceCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = FAKE_GPU_COUNT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    REQUIRE_INIT();
    if (device == NULL || index >= FAKE_GPU_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &fake_devices[index];   /* GPUs come first in the table, in PCI order */
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    REQUIRE_INIT();
    if (!valid(device) || minorNumber == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (is_mig(device))
        return NVML_ERROR_NOT_SUPPORTED;   /* a MIG device has no /dev/nvidiaN of its own */
    *minorNumber = device->minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    REQUIRE_INIT();
    if (!valid(device))
        return NVML_ERROR_INVALID_ARGUMENT;
    return put_string(uuid, length, device->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    nvmlDevice_t gpu;

    REQUIRE_INIT();
    if (!valid(device) || pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu = is_mig(device) ? &fake_devices[device->parent] : device;
    memset(pci, 0, sizeof(*pci));
    pci->domain = gpu->domain;
    pci->bus = gpu->bus;
    pci->device = gpu->dev;
    pci->pciDeviceId = FAKE_PCI_DEVICE_ID;
    pci->pciSubSystemId = FAKE_PCI_SUBSYSTEM_ID;
    /* NVML prints hex digits in upper case; /proc/driver/nvidia/gpus uses lower case. */
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:%02X.0",
             gpu->domain, gpu->bus, gpu->dev);
    snprintf(pci->busId, sizeof(pci->busId), "%08X:%02X:%02X.0",
             gpu->domain, gpu->bus, gpu->dev);
    return NVML_SUCCESS;
}

/* The unversioned (v1) query that NVIDIA's libnvidia-container calls: it fills only the
 * first, legacy part of the struct (bus id "%04X:%02X:%02X.0", domain, bus, device, ids). */
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    nvmlPciInfo_t full;
    nvmlReturn_t r;

    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    r = nvmlDeviceGetPciInfo_v3(device, &full);
    if (r == NVML_SUCCESS)
        memcpy(pci, &full, offsetof(nvmlPciInfo_t, busId));
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    REQUIRE_INIT();
    if (!valid(device))
        return NVML_ERROR_INVALID_ARGUMENT;
    return put_string(name, length, device->name);
}

EXPORT nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, int *type)
{
    REQUIRE_INIT();
    if (!valid(device) || type == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *type = device->brand;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major,
                                                       int *minor)
{
    REQUIRE_INIT();
    if (!valid(device) || major == NULL || minor == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = device->cc_major;
    *minor = device->cc_minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                         unsigned int *pendingMode)
{
    REQUIRE_INIT();
    if (!valid(device) || currentMode == NULL || pendingMode == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!is_gpu(device) || !device->mig_enabled)
        return NVML_ERROR_NOT_SUPPORTED;
    *currentMode = 1;   /* NVML_DEVICE_MIG_ENABLE */
    *pendingMode = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    REQUIRE_INIT();
    if (!valid(device) || count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (is_mig(device))
        return NVML_ERROR_NOT_SUPPORTED;
    *count = device->mig_enabled ? FAKE_MAX_MIG_DEVICES : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice)
{
    int parent, i;

    REQUIRE_INIT();
    if (!is_gpu(device) || migDevice == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!device->mig_enabled)
        return NVML_ERROR_NOT_SUPPORTED;
    if (index >= FAKE_MAX_MIG_DEVICES)
        return NVML_ERROR_INVALID_ARGUMENT;
    parent = (int)(device - &fake_devices[0]);
    for (i = FAKE_GPU_COUNT; i < FAKE_DEVICE_COUNT; i++) {
        if (fake_devices[i].parent == parent && fake_devices[i].mig_index == index) {
            *migDevice = &fake_devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;   /* an empty slot */
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    REQUIRE_INIT();
    if (!valid(device) || id == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!is_mig(device))
        return NVML_ERROR_NOT_SUPPORTED;
    *id = device->gpu_instance;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    REQUIRE_INIT();
    if (!valid(device) || id == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!is_mig(device))
        return NVML_ERROR_NOT_SUPPORTED;
    *id = device->compute_instance;
    return NVML_SUCCESS;
}

/* ---- what NVIDIA's nvidia-ctk (go-nvml) also calls for `cdi generate` ---- */

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMig)
{
    REQUIRE_INIT();
    if (!valid(device) || isMig == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *isMig = (unsigned int)is_mig(device);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig,
                                                                 nvmlDevice_t *device)
{
    REQUIRE_INIT();
    if (!is_mig(mig) || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &fake_devices[mig->parent];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    int i;

    REQUIRE_INIT();
    if (uuid == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < FAKE_DEVICE_COUNT; i++) {
        if (strcmp(fake_devices[i].uuid, uuid) == 0) {
            *device = &fake_devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    REQUIRE_INIT();
    if (!is_gpu(device) || index == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)(device - &fake_devices[0]);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    REQUIRE_INIT();
    if (!valid(device) || arch == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *arch = 9;   /* NVML_DEVICE_ARCH_HOPPER */
    return NVML_SUCCESS;
}
