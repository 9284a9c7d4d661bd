// nismooth's separable Gaussian pass on the GPU: scipy's arithmetic, voxel by voxel.
//
// NVRTC compiles this file at run time once per (input, output) type pair,
// with -DSRC_T=<C type> -DDST_T=<C type> -DNISMOOTH_KERNEL=<name> and
// --fmad=false: every multiply and add is rounded on its own, as on the CPU,
// so each voxel is bit-identical to the CPU backend and to scipy.
//
// The same file also compiles as host C++ (tests/cuda_kernels_on_host.rs
// defines __global__, blockIdx, ... and loops over the grid), so that the
// arithmetic, the boundary modes and the dtype conversions below are checked
// against the CPU backend in CI, where there is no GPU.
//
// One thread computes one output voxel of one pass. The block is 32 × 8
// threads over (x, y); z and the volumes of a 4-D image are the grid's third
// dimension, walked with a stride so that any number of slices fits.

#ifndef NISMOOTH_KERNEL_HELPERS
#define NISMOOTH_KERNEL_HELPERS

// Boundary modes, numbered as in src/filter/cuda/mod.rs (mode_code).
#define NISMOOTH_REFLECT 0
#define NISMOOTH_NEAREST 1
#define NISMOOTH_MIRROR 2
#define NISMOOTH_CONSTANT 3
#define NISMOOTH_WRAP 4

// i mod n, in [0, n), for negative i too.
__device__ __forceinline__ long long nismooth_emod(long long i, long long n) {
    long long m = i % n;
    return m < 0 ? m + n : m;
}

// The sample of a line of length n that padded position i copies (scipy's
// NI_ExtendLine, as src/filter/extend.rs); -1 means the constant cval.
__device__ __forceinline__ long long nismooth_source(long long i, long long n, int mode) {
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case NISMOOTH_NEAREST:
        return i < 0 ? 0 : n - 1;
    case NISMOOTH_WRAP:
        return nismooth_emod(i, n);
    case NISMOOTH_MIRROR: {
        if (n == 1) return 0;
        long long m = nismooth_emod(i, 2 * n - 2);
        return m >= n ? 2 * n - 2 - m : m;
    }
    case NISMOOTH_CONSTANT:
        return -1;
    default: { // reflect
        long long m = nismooth_emod(i, 2 * n);
        return m >= n ? 2 * n - 1 - m : m;
    }
    }
}

// The C casts of x86-64 (src/volume.rs, Sample::from_f64): cvttsd2si gives
// the "integer indefinite" value for NaN and out-of-range inputs, where a
// plain CUDA cast would saturate; narrower integers keep the low bits.
__device__ __forceinline__ int nismooth_cvtt32(double v) {
    return (v > -2147483649.0 && v < 2147483648.0) ? (int)v : (int)(-2147483647 - 1);
}
__device__ __forceinline__ long long nismooth_cvtt64(double v) {
    return (v >= -9223372036854775808.0 && v < 9223372036854775808.0)
               ? (long long)v
               : (long long)(-9223372036854775807LL - 1);
}

__device__ __forceinline__ void nismooth_store(unsigned char* p, double v) {
    *p = (unsigned char)(unsigned int)nismooth_cvtt32(v);
}
__device__ __forceinline__ void nismooth_store(signed char* p, double v) {
    *p = (signed char)(unsigned char)(unsigned int)nismooth_cvtt32(v);
}
__device__ __forceinline__ void nismooth_store(short* p, double v) {
    *p = (short)(unsigned short)(unsigned int)nismooth_cvtt32(v);
}
__device__ __forceinline__ void nismooth_store(unsigned short* p, double v) {
    *p = (unsigned short)(unsigned int)nismooth_cvtt32(v);
}
__device__ __forceinline__ void nismooth_store(int* p, double v) {
    *p = nismooth_cvtt32(v);
}
__device__ __forceinline__ void nismooth_store(unsigned int* p, double v) {
    *p = (unsigned int)(unsigned long long)nismooth_cvtt64(v);
}
__device__ __forceinline__ void nismooth_store(long long* p, double v) {
    *p = nismooth_cvtt64(v);
}
__device__ __forceinline__ void nismooth_store(unsigned long long* p, double v) {
    const double two63 = 9223372036854775808.0;
    if (!(v >= two63)) {  /* NaN: 2^63, as numpy's cast on x86-64 */
        *p = (unsigned long long)nismooth_cvtt64(v);
    } else {
        *p = ((unsigned long long)nismooth_cvtt64(v - two63)) ^ (1ULL << 63);
    }
}
__device__ __forceinline__ void nismooth_store(float* p, double v) {
    *p = (float)v;
}
__device__ __forceinline__ void nismooth_store(double* p, double v) {
    *p = v;
}

#endif // NISMOOTH_KERNEL_HELPERS

#ifndef NISMOOTH_KERNEL
#define NISMOOTH_KERNEL nismooth_pass
#endif

// One pass along `axis` of a (n0, n1, n2 · volumes) array. Output voxel i is
// w[0]·x[i] + Σ_{k=r..1} (x[i−k] + x[i+k])·w[k], summed in that order in
// double, then stored with the output type's C cast: scipy's correlate1d.
extern "C" __global__ void NISMOOTH_KERNEL(const SRC_T* __restrict__ src,
                                           DST_T* __restrict__ dst,
                                           long long n0,
                                           long long n1,
                                           long long n2,
                                           long long slabs,
                                           int axis,
                                           const double* __restrict__ w,
                                           int r,
                                           int mode,
                                           double cval) {
    long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long y = (long long)blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= n0 || y >= n1) return;
    for (long long s = blockIdx.z; s < slabs; s += gridDim.z) {
        long long idx = (s * n1 + y) * n0 + x;
        long long len, stride, pos;
        if (axis == 0) {
            len = n0; stride = 1; pos = x;
        } else if (axis == 1) {
            len = n1; stride = n0; pos = y;
        } else {
            len = n2; stride = n0 * n1; pos = s % n2;
        }
        const SRC_T* line = src + (idx - pos * stride);
        double acc = (double)src[idx] * w[0];
        if (pos >= r && pos + r < len) {
            // Interior: the whole window lies inside the line.
            for (int k = r; k >= 1; --k) {
                double lo = (double)line[(pos - k) * stride];
                double hi = (double)line[(pos + k) * stride];
                acc = acc + (lo + hi) * w[k];
            }
        } else {
            for (int k = r; k >= 1; --k) {
                long long a = nismooth_source(pos - k, len, mode);
                long long b = nismooth_source(pos + k, len, mode);
                double lo = a < 0 ? cval : (double)line[a * stride];
                double hi = b < 0 ? cval : (double)line[b * stride];
                acc = acc + (lo + hi) * w[k];
            }
        }
        nismooth_store(dst + idx, acc);
    }
}
