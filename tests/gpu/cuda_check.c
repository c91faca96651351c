/*
 * cuda_check: proves that the CUDA driver API works in a container, using nothing but libc.
 *
 * It dlopen()s libcuda.so.1 by SONAME through the normal loader (so it finds only what the
 * container's ld.so.cache offers), lists the devices, and on each one allocates memory,
 * copies data in, JIT-compiles a PTX kernel (this needs libnvidia-ptxjitcompiler, one of the
 * compute libraries), launches it and checks every element of the result on the host.
 * No header of the CUDA toolkit is needed: the few types and entry points are declared here
 * with the driver's ABI, so the program builds with plain gcc on any machine.
 *
 *   cuda_check [--list] [--ptx FILE]
 *     --list       list the devices only (no allocation, no kernel)
 *     --ptx FILE   also run the same kernel compiled from FILE (e.g. made by nvcc -ptx)
 *
 * Exit status: 0 all good; 2 libcuda.so.1 cannot be loaded; 3 it lacks an entry point;
 * 4 a CUDA call failed; 5 a wrong result; 6 usage or I/O error.
 * Every line starts with "cuda_check: " so a driver script can parse it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;
typedef struct {
	unsigned char bytes[16];
} CUuuid;

/* CUjit_option values of cuda.h (stable since CUDA 4). */
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

#define KERNEL_NAME "nvhook_scale_add"
#define ELEMENTS (1u << 20)
#define BLOCK 256u

/*
 * out[i] = in[i] * 3 + i over n unsigned ints. ISA 6.0 / sm_50 is the oldest target every
 * current driver still JIT-compiles; it is checked with CUDA 13.0's ptxas for sm_75, sm_90
 * and sm_100 (see tests/gpu/README.md).
 */
static const char builtin_ptx[] =
	".version 6.0\n"
	".target sm_50\n"
	".address_size 64\n"
	"\n"
	".visible .entry " KERNEL_NAME "(\n"
	"\t.param .u64 p_in,\n"
	"\t.param .u64 p_out,\n"
	"\t.param .u32 p_n\n"
	")\n"
	"{\n"
	"\t.reg .pred %p<2>;\n"
	"\t.reg .b32 %r<8>;\n"
	"\t.reg .b64 %rd<8>;\n"
	"\n"
	"\tld.param.u64 %rd1, [p_in];\n"
	"\tld.param.u64 %rd2, [p_out];\n"
	"\tld.param.u32 %r1, [p_n];\n"
	"\tmov.u32 %r2, %ctaid.x;\n"
	"\tmov.u32 %r3, %ntid.x;\n"
	"\tmov.u32 %r4, %tid.x;\n"
	"\tmad.lo.s32 %r5, %r2, %r3, %r4;\n"
	"\tsetp.ge.u32 %p1, %r5, %r1;\n"
	"\t@%p1 bra DONE;\n"
	"\tcvta.to.global.u64 %rd3, %rd1;\n"
	"\tcvta.to.global.u64 %rd4, %rd2;\n"
	"\tmul.wide.u32 %rd5, %r5, 4;\n"
	"\tadd.s64 %rd6, %rd3, %rd5;\n"
	"\tld.global.u32 %r6, [%rd6];\n"
	"\tmad.lo.s32 %r7, %r6, 3, %r5;\n"
	"\tadd.s64 %rd7, %rd4, %rd5;\n"
	"\tst.global.u32 [%rd7], %r7;\n"
	"DONE:\n"
	"\tret;\n"
	"}\n";

static CUresult (*cuInit)(unsigned int);
static CUresult (*cuDriverGetVersion)(int *);
static CUresult (*cuDeviceGetCount)(int *);
static CUresult (*cuDeviceGet)(CUdevice *, int);
static CUresult (*cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*cuDeviceGetUuid)(CUuuid *, CUdevice);
static CUresult (*cuDeviceGetPCIBusId)(char *, int, CUdevice);
static CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
static CUresult (*cuCtxSetCurrent)(CUcontext);
static CUresult (*cuCtxSynchronize)(void);
static CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned int, int *, void **);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuModuleUnload)(CUmodule);
static CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*cuMemFree)(CUdeviceptr);
static CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
				  unsigned int, unsigned int, unsigned int, unsigned int, CUstream,
				  void **, void **);
static CUresult (*cuGetErrorName)(CUresult, const char **);

static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("cuda_check: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	fflush(stdout);
}

/* The first of the names that the library exports (newer ABIs carry a _v2 suffix). */
static void *need(void *lib, const char *name, const char *fallback)
{
	void *p = dlsym(lib, name);

	if (p == NULL && fallback != NULL)
		p = dlsym(lib, fallback);
	if (p == NULL) {
		say("FAIL libcuda.so.1 lacks %s", name);
		exit(3);
	}
	return p;
}

static int failed(CUresult rc, const char *what, int device)
{
	const char *name = NULL;

	if (rc == 0)
		return 0;
	if (cuGetErrorName == NULL || cuGetErrorName(rc, &name) != 0 || name == NULL)
		name = "unknown error";
	say("FAIL device %d: %s returned %d (%s)", device, what, rc, name);
	return 1;
}

#define TRY(call, device)                                 \
	do {                                              \
		if (failed((call), #call, (device)))      \
			exit(4);                          \
	} while (0)

static void load(void)
{
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
	Dl_info info;

	if (lib == NULL) {
		say("FAIL cannot load libcuda.so.1: %s", dlerror());
		exit(2);
	}
	*(void **)&cuInit = need(lib, "cuInit", NULL);
	if (dladdr((void *)cuInit, &info) != 0 && info.dli_fname != NULL)
		say("libcuda.so.1 loaded from %s", info.dli_fname);
	*(void **)&cuGetErrorName = need(lib, "cuGetErrorName", NULL);
	*(void **)&cuDriverGetVersion = need(lib, "cuDriverGetVersion", NULL);
	*(void **)&cuDeviceGetCount = need(lib, "cuDeviceGetCount", NULL);
	*(void **)&cuDeviceGet = need(lib, "cuDeviceGet", NULL);
	*(void **)&cuDeviceGetName = need(lib, "cuDeviceGetName", NULL);
	*(void **)&cuDeviceGetUuid = need(lib, "cuDeviceGetUuid", NULL);
	*(void **)&cuDeviceGetPCIBusId = need(lib, "cuDeviceGetPCIBusId", NULL);
	*(void **)&cuDevicePrimaryCtxRetain = need(lib, "cuDevicePrimaryCtxRetain", NULL);
	*(void **)&cuDevicePrimaryCtxRelease =
		need(lib, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
	*(void **)&cuCtxSetCurrent = need(lib, "cuCtxSetCurrent", NULL);
	*(void **)&cuCtxSynchronize = need(lib, "cuCtxSynchronize", NULL);
	*(void **)&cuModuleLoadDataEx = need(lib, "cuModuleLoadDataEx", NULL);
	*(void **)&cuModuleGetFunction = need(lib, "cuModuleGetFunction", NULL);
	*(void **)&cuModuleUnload = need(lib, "cuModuleUnload", NULL);
	*(void **)&cuMemAlloc = need(lib, "cuMemAlloc_v2", NULL);
	*(void **)&cuMemFree = need(lib, "cuMemFree_v2", NULL);
	*(void **)&cuMemcpyHtoD = need(lib, "cuMemcpyHtoD_v2", NULL);
	*(void **)&cuMemcpyDtoH = need(lib, "cuMemcpyDtoH_v2", NULL);
	*(void **)&cuLaunchKernel = need(lib, "cuLaunchKernel", NULL);
}

static void format_uuid(const CUuuid *u, char *out, size_t size)
{
	const unsigned char *b = u->bytes;

	snprintf(out, size,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long size;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		say("FAIL cannot read %s", path);
		exit(6);
	}
	buf = malloc((size_t)size + 1);
	if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) {
		say("FAIL cannot read %s", path);
		exit(6);
	}
	buf[size] = '\0';
	fclose(f);
	return buf;
}

/* Load one PTX image, run the kernel over ELEMENTS values, check each one. */
static void run_kernel(int ordinal, const char *ptx, const char *label)
{
	CUmodule module;
	CUfunction fn;
	CUdeviceptr d_in, d_out;
	char log[8192] = "";
	int options[2] = { CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	void *values[2] = { log, (void *)(size_t)sizeof(log) };
	unsigned int n = ELEMENTS, i, bad = 0;
	size_t bytes = (size_t)n * sizeof(unsigned int);
	unsigned int *in = malloc(bytes), *out = malloc(bytes);
	void *params[3] = { &d_in, &d_out, &n };
	CUresult rc;

	if (in == NULL || out == NULL) {
		say("FAIL out of host memory");
		exit(6);
	}
	rc = cuModuleLoadDataEx(&module, ptx, 2, options, values);
	if (failed(rc, "cuModuleLoadDataEx", ordinal)) {
		if (log[0] != '\0')
			say("JIT log: %s", log);
		exit(4);
	}
	TRY(cuModuleGetFunction(&fn, module, KERNEL_NAME), ordinal);
	for (i = 0; i < n; i++)
		in[i] = i ^ 0x5a5a5a5au;
	memset(out, 0, bytes);
	TRY(cuMemAlloc(&d_in, bytes), ordinal);
	TRY(cuMemAlloc(&d_out, bytes), ordinal);
	TRY(cuMemcpyHtoD(d_in, in, bytes), ordinal);
	TRY(cuLaunchKernel(fn, (n + BLOCK - 1) / BLOCK, 1, 1, BLOCK, 1, 1, 0, NULL, params, NULL),
	    ordinal);
	TRY(cuCtxSynchronize(), ordinal);
	TRY(cuMemcpyDtoH(out, d_out, bytes), ordinal);
	for (i = 0; i < n; i++)
		bad += out[i] != in[i] * 3u + i;
	TRY(cuMemFree(d_in), ordinal);
	TRY(cuMemFree(d_out), ordinal);
	TRY(cuModuleUnload(module), ordinal);
	free(in);
	free(out);
	if (bad != 0) {
		say("FAIL device %d: kernel (%s) gave %u wrong values of %u", ordinal, label, bad, n);
		exit(5);
	}
	say("device %d: kernel (%s) OK, %u values checked", ordinal, label, n);
}

int main(int argc, char **argv)
{
	int list_only = 0, version = 0, count = 0, i;
	const char *ptx_file = NULL;
	char *extra_ptx = NULL;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--list") == 0) {
			list_only = 1;
		} else if (strcmp(argv[i], "--ptx") == 0 && i + 1 < argc) {
			ptx_file = argv[++i];
		} else {
			fprintf(stderr, "usage: cuda_check [--list] [--ptx FILE]\n");
			return 6;
		}
	}
	if (ptx_file != NULL)
		extra_ptx = read_file(ptx_file);
	load();
	TRY(cuInit(0), -1);
	TRY(cuDriverGetVersion(&version), -1);
	TRY(cuDeviceGetCount(&count), -1);
	say("driver API version %d.%d", version / 1000, (version % 1000) / 10);
	say("device count %d", count);
	for (i = 0; i < count; i++) {
		CUdevice dev;
		CUuuid uuid;
		char name[256], bus[64], text[64];

		TRY(cuDeviceGet(&dev, i), i);
		TRY(cuDeviceGetName(name, sizeof(name), dev), i);
		TRY(cuDeviceGetUuid(&uuid, dev), i);
		TRY(cuDeviceGetPCIBusId(bus, sizeof(bus), dev), i);
		format_uuid(&uuid, text, sizeof(text));
		say("device %d: %s uuid=%s pci=%s", i, name, text, bus);
	}
	if (count == 0) {
		say("FAIL no CUDA device");
		return 4;
	}
	if (!list_only) {
		for (i = 0; i < count; i++) {
			CUdevice dev;
			CUcontext ctx;

			TRY(cuDeviceGet(&dev, i), i);
			TRY(cuDevicePrimaryCtxRetain(&ctx, dev), i);
			TRY(cuCtxSetCurrent(ctx), i);
			run_kernel(i, builtin_ptx, "built-in PTX");
			if (extra_ptx != NULL)
				run_kernel(i, extra_ptx, ptx_file);
			TRY(cuCtxSetCurrent(NULL), i);
			TRY(cuDevicePrimaryCtxRelease(dev), i);
		}
	}
	free(extra_ptx);
	say("PASS");
	return 0;
}
