// Portability header for every .cu in kernels/cuda: the few CUDA constructs that plain C++ cannot
// parse go through it, so the same source compiles with nvcc for the GPU and with g++ under the
// SIMT emulator (QK_SIMT_EMULATION) for CI. Under nvcc each construct expands to the real thing at
// no cost (docs/simt.md has the ptxas and PTX evidence).
//
//   QK_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)   instead of kernel<<<...>>>(args...)
//                                   (a template kernel goes in parentheses: QK_LAUNCH((k<128, true>), ...))
//   QK_DYNAMIC_SHARED(T, name);                                    instead of extern __shared__ T name[]
//   QK_LAUNCH_BOUNDS(threads[, min_blocks])                        instead of __launch_bounds__(...)
//
// Inline PTX, warp-wide (every lane of the warp calls them together):
//   qk::mma_m16n8k16_bf16 / _f16   D = A B + C, A 16x16 row, B 16x8 col, f32 accumulate
//   qk::ldmatrix_x1/_x2/_x4 (and _trans)   8x8 b16 matrices from shared memory into fragments
// Per thread:
//   qk::cp_async_16 / cp_async_16_zfill, qk::cp_async_commit, qk::cp_async_wait<N>, qk::cp_async_wait_all
#pragma once

#include <cstdint>

#if defined(QK_SIMT_EMULATION)

#include "qk/simt_emu.h"

#else  // nvcc

#include <cuda_runtime.h>

#include <utility>

namespace qk {

#if defined(__CUDACC__)
template <typename... KArgs, typename... Args>
inline void simt_launch(const char* /*name*/, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t stream, Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}
#endif

}  // namespace qk

#define QK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::qk::simt_launch(#kernel, kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__)
#define QK_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char qk_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(qk_dynamic_smem_)
#define QK_LAUNCH_BOUNDS(...) __launch_bounds__(__VA_ARGS__)

#if defined(__CUDACC__)
namespace qk {

// Shared-state-space address of a generic pointer into shared memory, as ldmatrix/cp.async want it.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// D = A B + C for one m16n8k16 tile; fragment layouts as in the PTX ISA (docs/simt.md).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

// ldmatrix reads shared memory the compiler cannot see, hence volatile: it must stay after the
// barrier that published the tile.
__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

// 16 bytes global -> shared, bypassing L1. Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
// As cp_async_16, but writes 16 zero bytes (reading nothing) when !valid: the tail of a tile.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

}  // namespace qk
#endif  // __CUDACC__

#endif  // nvcc
