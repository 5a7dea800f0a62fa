// QK_HD marks logic shared by a CUDA kernel and its CPU twin: __host__ __device__ under nvcc,
// a plain inline function everywhere else (g++ builds of the CPU twins and the SIMT emulator).
#pragma once
#if defined(__CUDACC__)
#define QK_HD __host__ __device__ __forceinline__
#else
#define QK_HD inline
#endif
