// f32 <-> bf16 casts. Memory-bound: a grid-stride loop, four elements per thread per iteration
// when the pointers allow 16-byte / 8-byte vector access, a scalar tail otherwise.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/cast.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;

__global__ void QK_LAUNCH_BOUNDS(kThreads) f32_to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                                                             size_t n, bool vec) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  size_t done = 0;
  if (vec) {
    const size_t n4 = n / 4;
    for (size_t j = i; j < n4; j += stride) {
      const float4 v = reinterpret_cast<const float4*>(x)[j];
      __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);
      __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
      reinterpret_cast<__nv_bfloat162*>(y)[2 * j] = lo;
      reinterpret_cast<__nv_bfloat162*>(y)[2 * j + 1] = hi;
    }
    done = n4 * 4;
  }
  for (size_t j = done + i; j < n; j += stride) y[j] = __float2bfloat16_rn(x[j]);
}

__global__ void QK_LAUNCH_BOUNDS(kThreads) bf16_to_f32_kernel(const __nv_bfloat16* __restrict__ x, float* __restrict__ y,
                                                             size_t n, bool vec) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  size_t done = 0;
  if (vec) {
    const size_t n4 = n / 4;
    for (size_t j = i; j < n4; j += stride) {
      const __nv_bfloat162 lo = reinterpret_cast<const __nv_bfloat162*>(x)[2 * j];
      const __nv_bfloat162 hi = reinterpret_cast<const __nv_bfloat162*>(x)[2 * j + 1];
      float4 v;
      v.x = __low2float(lo);
      v.y = __high2float(lo);
      v.z = __low2float(hi);
      v.w = __high2float(hi);
      reinterpret_cast<float4*>(y)[j] = v;
    }
    done = n4 * 4;
  }
  for (size_t j = done + i; j < n; j += stride) y[j] = __bfloat162float(x[j]);
}

unsigned grid_for(size_t n) {
  const size_t blocks = (n / 4 + kThreads - 1) / kThreads;
  // Enough blocks to fill any current GPU; the grid-stride loop covers the rest.
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks));
}

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

void cast_f32_to_bf16(const float* x, __nv_bfloat16* y, size_t n, cudaStream_t stream) {
  QK_NVTX_FUNC();
  if (n == 0) return;
  QK_REQUIRE(x != nullptr && y != nullptr, "null pointer");
  const bool vec = aligned(x, 16) && aligned(y, 8);
  QK_LAUNCH(f32_to_bf16_kernel, dim3(grid_for(n)), dim3(kThreads), 0, stream, x, y, n, vec);
  QK_CHECK_LAUNCH();
}

void cast_bf16_to_f32(const __nv_bfloat16* x, float* y, size_t n, cudaStream_t stream) {
  QK_NVTX_FUNC();
  if (n == 0) return;
  QK_REQUIRE(x != nullptr && y != nullptr, "null pointer");
  const bool vec = aligned(x, 8) && aligned(y, 16);
  QK_LAUNCH(bf16_to_f32_kernel, dim3(grid_for(n)), dim3(kThreads), 0, stream, x, y, n, vec);
  QK_CHECK_LAUNCH();
}

}  // namespace qk
