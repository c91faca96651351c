// The kernel of cuda_check.c in CUDA C++, for `nvcc -ptx kernel.cu`: run.sh builds it when
// nvcc is on the machine, and cuda_check --ptx runs it next to the built-in PTX.
extern "C" __global__ void nvhook_scale_add(const unsigned int *in, unsigned int *out,
                                            unsigned int n)
{
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = in[i] * 3u + i;
}
