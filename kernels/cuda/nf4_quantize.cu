// NF4 quantization on the GPU. A group of G = min(blocksize / 2, 256) threads owns one block: each
// thread loads its pairs once into registers (at most 8 pairs), the group reduces the absmax (warp
// shuffles, plus shared memory when the group spans warps), then every thread writes its bytes.
// Quantization runs once per weight at load time; the bandwidth-critical op is nf4_dequantize.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "qk/cuda_check.h"
#include "qk/nf4.h"
#include "qk/nf4_quantize.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPairsPerThread = nf4::kMaxBlocksize / 2 / kThreads;  // 8

__device__ __forceinline__ float load_f32(const float* x, size_t i) { return x[i]; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* x, size_t i) { return __bfloat162float(x[i]); }
__device__ __forceinline__ float load_f32(const __half* x, size_t i) { return __half2float(x[i]); }

template <typename T>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    quantize_kernel(const T* __restrict__ x, size_t n, int blocksize, int group, uint8_t* __restrict__ packed,
                    float* __restrict__ absmax) {
  __shared__ float warp_max[kThreads / 32];
  const int pairs = blocksize / 2 / group;  // per thread, 1..8
  const int g = static_cast<int>(threadIdx.x) / group;
  const int r = static_cast<int>(threadIdx.x) % group;
  const size_t block = static_cast<size_t>(blockIdx.x) * (kThreads / group) + g;
  const size_t begin = block * static_cast<size_t>(blocksize);

  float v[2 * kMaxPairsPerThread];
  float m = 0.0f;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerThread; ++p) {
    v[2 * p] = 0.0f;
    v[2 * p + 1] = 0.0f;
    if (p < pairs) {
      const size_t i = begin + 2 * static_cast<size_t>(r + p * group);
      if (i < n) v[2 * p] = load_f32(x, i);
      if (i + 1 < n) v[2 * p + 1] = load_f32(x, i + 1);
      m = nf4::max_abs(nf4::max_abs(m, v[2 * p]), v[2 * p + 1]);
    }
  }
  // Group max: lanes of one group are contiguous, so an xor butterfly within the group's width stays
  // inside the group; groups wider than a warp combine their warps through shared memory.
  const int width = group < 32 ? group : 32;
  for (int off = width / 2; off > 0; off /= 2) m = nf4::max_abs(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (group > 32) {
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
    __syncthreads();
    const int w0 = g * (group / 32);
    for (int w = 0; w < group / 32; ++w) m = nf4::max_abs(m, warp_max[w0 + w]);
  }
  if (begin >= n) return;
  if (r == 0) absmax[block] = m;
  const float inv = nf4::inv_absmax(m);
#pragma unroll
  for (int p = 0; p < kMaxPairsPerThread; ++p) {
    if (p < pairs) {
      const size_t i = begin + 2 * static_cast<size_t>(r + p * group);
      if (i < n) {
        const unsigned hi = nf4::quantize_value(v[2 * p], inv);
        const unsigned lo = i + 1 < n ? nf4::quantize_value(v[2 * p + 1], inv) : nf4::kZeroCode;
        packed[i / 2] = nf4::pack(hi, lo);
      }
    }
  }
}

template <typename T>
void launch(const T* x, size_t n, int blocksize, uint8_t* packed, float* absmax, cudaStream_t stream) {
  QK_REQUIRE(nf4::valid_blocksize(blocksize), "NF4 blocksize must be a power of two in 32..4096");
  if (n == 0) return;
  QK_REQUIRE(x != nullptr && packed != nullptr && absmax != nullptr, "null pointer");
  const int group = blocksize / 2 < kThreads ? blocksize / 2 : kThreads;
  const size_t blocks = nf4::num_blocks(n, static_cast<size_t>(blocksize));
  const size_t per_cta = static_cast<size_t>(kThreads / group);
  const size_t grid = (blocks + per_cta - 1) / per_cta;
  QK_REQUIRE(grid <= 0x7fffffffu, "tensor too large for one launch");
  QK_LAUNCH(quantize_kernel<T>, dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream, x, n, blocksize, group,
            packed, absmax);
  QK_CHECK_LAUNCH();
}

}  // namespace

void nf4_quantize_f32(const float* x, size_t n, int blocksize, uint8_t* packed, float* absmax, cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch(x, n, blocksize, packed, absmax, stream);
}

void nf4_quantize_bf16(const __nv_bfloat16* x, size_t n, int blocksize, uint8_t* packed, float* absmax,
                       cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch(x, n, blocksize, packed, absmax, stream);
}

void nf4_quantize_f16(const __half* x, size_t n, int blocksize, uint8_t* packed, float* absmax, cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch(x, n, blocksize, packed, absmax, stream);
}

}  // namespace qk
