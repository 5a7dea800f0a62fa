// NF4 dequantization on the GPU, on the training path of every linear layer, so it is built to run at
// memory bandwidth. Each lane loads one 16-byte chunk of packed nibbles (32 elements, always inside one
// block since blocksize is a multiple of 32), decodes it in registers and writes its 64 or 128 output
// bytes into a per-warp shared-memory stage; the warp then stores the stage as consecutive 16-byte
// slots (each store instruction covers 512 contiguous bytes). The stage is XOR-swizzled so that both
// the lane-major writes and the slot-major reads are free of bank conflicts. The last n % 32 elements,
// and buffers that are not 16-byte aligned, take a scalar path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "qk/cuda_check.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunkElems = 32;  // one 16-byte load of packed nibbles

template <typename T>
struct Out;
template <>
struct Out<float> {
  static __device__ __forceinline__ float one(float v) { return v; }
};
template <>
struct Out<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 one(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ uint32_t two(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
  }
};
template <>
struct Out<__half> {
  static __device__ __forceinline__ __half one(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ uint32_t two(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
  }
};

// The absmax of block blk, from fp32 or from the double-quantized form (code8 in shared memory).
template <bool Is_nested>
__device__ __forceinline__ float block_absmax(const float* absmax, const Nf4Nested& nested, const float* code8,
                                              size_t blk) {
  if constexpr (Is_nested)
    return nf4::double_dequantize_value(code8[nested.q[blk]], nested.nested_absmax[blk / nf4::kNestedBlocksize],
                                        nested.offset);
  else
    return absmax[blk];
}

// Physical 16-byte slot of lane t's k-th output slot (P slots per lane) within a warp's stage.
template <int P>
__device__ __forceinline__ int stage_slot(int t, int k) {
  return P * t + (k ^ ((t / (8 / P)) % P));
}

template <typename T, bool Is_nested>
__device__ __forceinline__ void scalar_range(const uint8_t* packed, const float* absmax, const Nf4Nested& nested,
                                             const float* code4, const float* code8, int shift, T* y, size_t begin,
                                             size_t end, size_t stride) {
  for (size_t i = begin; i < end; i += stride) {
    const uint8_t b = packed[i / 2];
    const unsigned q = (i % 2 == 0) ? nf4::high_nibble(b) : nf4::low_nibble(b);
    const float am = block_absmax<Is_nested>(absmax, nested, code8, i >> shift);
    y[i] = Out<T>::one(nf4::mul_rn(code4[q], am));
  }
}

template <typename T, bool Is_nested>
__device__ __forceinline__ void load_tables(float* code4, float* code8) {
  if (threadIdx.x < 16) code4[threadIdx.x] = nf4::code_value(threadIdx.x);
  if constexpr (Is_nested) code8[threadIdx.x] = dynamic_code_signed(static_cast<int>(threadIdx.x));
  __syncthreads();
}

template <typename T, bool Is_nested>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    dequantize_vec_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, Nf4Nested nested,
                          size_t n, int shift, T* __restrict__ y) {
  constexpr int P = 2 * static_cast<int>(sizeof(T));  // 16-byte output slots per lane
  __shared__ float code4[16];
  __shared__ float code8[Is_nested ? 256 : 1];
  __shared__ uint4 stage[kWarps * 32 * P];
  load_tables<T, Is_nested>(code4, code8);

  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  uint4* my_stage = stage + warp * 32 * P;
  const size_t nchunks = n / kChunkElems;
  const size_t warp_stride = static_cast<size_t>(gridDim.x) * kWarps * 32;
  uint4* yv = reinterpret_cast<uint4*>(y);
  for (size_t base = (static_cast<size_t>(blockIdx.x) * kWarps + warp) * 32; base < nchunks; base += warp_stride) {
    const size_t chunk = base + lane;
    if (chunk < nchunks) {
      const uint4 in = reinterpret_cast<const uint4*>(packed)[chunk];
      const float am = block_absmax<Is_nested>(absmax, nested, code8, (chunk * kChunkElems) >> shift);
      const uint32_t w[4] = {in.x, in.y, in.z, in.w};
      uint32_t out[4 * P];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const uint8_t b = static_cast<uint8_t>(w[j / 4] >> (8 * (j % 4)));
        const float v0 = nf4::mul_rn(code4[nf4::high_nibble(b)], am);
        const float v1 = nf4::mul_rn(code4[nf4::low_nibble(b)], am);
        if constexpr (sizeof(T) == 4) {
          out[2 * j] = f32_bits(v0);
          out[2 * j + 1] = f32_bits(v1);
        } else {
          out[j] = Out<T>::two(v0, v1);
        }
      }
#pragma unroll
      for (int k = 0; k < P; ++k)
        my_stage[stage_slot<P>(lane, k)] = make_uint4(out[4 * k], out[4 * k + 1], out[4 * k + 2], out[4 * k + 3]);
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int s = j * 32 + lane;  // slot s of the warp's contiguous output
      if (base + s / P < nchunks) yv[base * P + s] = my_stage[stage_slot<P>(s / P, s % P)];
    }
    __syncwarp();
  }
  if (blockIdx.x == 0)
    scalar_range<T, Is_nested>(packed, absmax, nested, code4, code8, shift, y, nchunks * kChunkElems + threadIdx.x, n,
                               kThreads);
}

template <typename T, bool Is_nested>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    dequantize_scalar_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, Nf4Nested nested,
                             size_t n, int shift, T* __restrict__ y) {
  __shared__ float code4[16];
  __shared__ float code8[Is_nested ? 256 : 1];
  load_tables<T, Is_nested>(code4, code8);
  scalar_range<T, Is_nested>(packed, absmax, nested, code4, code8, shift, y,
                             static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x, n,
                             static_cast<size_t>(gridDim.x) * kThreads);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, bool Is_nested>
void launch(const uint8_t* packed, const float* absmax, const Nf4Nested& nested, size_t n, int blocksize, T* y,
            cudaStream_t stream) {
  QK_REQUIRE(nf4::valid_blocksize(blocksize), "NF4 blocksize must be a power of two in 32..4096");
  if (n == 0) return;
  QK_REQUIRE(packed != nullptr && y != nullptr, "null pointer");
  if constexpr (Is_nested)
    QK_REQUIRE(nested.q != nullptr && nested.nested_absmax != nullptr, "null pointer");
  else
    QK_REQUIRE(absmax != nullptr, "null pointer");
  const int shift = nf4::log2_blocksize(blocksize);
  if (aligned16(packed) && aligned16(y)) {
    const size_t warps = (n / kChunkElems + 31) / 32;
    size_t grid = (warps + kWarps - 1) / kWarps;
    // Enough CTAs to fill any current GPU; the warp-stride loop covers the rest.
    grid = grid < 1 ? 1 : (grid > 4096 ? 4096 : grid);
    QK_LAUNCH((dequantize_vec_kernel<T, Is_nested>), dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream,
              packed, absmax, nested, n, shift, y);
  } else {
    size_t grid = (n + kThreads - 1) / kThreads;
    grid = grid > 4096 ? 4096 : grid;
    QK_LAUNCH((dequantize_scalar_kernel<T, Is_nested>), dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream,
              packed, absmax, nested, n, shift, y);
  }
  QK_CHECK_LAUNCH();
}

}  // namespace

void nf4_dequantize_f32(const uint8_t* packed, const float* absmax, size_t n, int blocksize, float* y,
                        cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<float, false>(packed, absmax, Nf4Nested{}, n, blocksize, y, stream);
}
void nf4_dequantize_bf16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, __nv_bfloat16* y,
                         cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<__nv_bfloat16, false>(packed, absmax, Nf4Nested{}, n, blocksize, y, stream);
}
void nf4_dequantize_f16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, __half* y,
                        cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<__half, false>(packed, absmax, Nf4Nested{}, n, blocksize, y, stream);
}
void nf4_dequantize_f32(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, float* y,
                        cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<float, true>(packed, nullptr, absmax, n, blocksize, y, stream);
}
void nf4_dequantize_bf16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, __nv_bfloat16* y,
                         cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<__nv_bfloat16, true>(packed, nullptr, absmax, n, blocksize, y, stream);
}
void nf4_dequantize_f16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, __half* y,
                        cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch<__half, true>(packed, nullptr, absmax, n, blocksize, y, stream);
}

}  // namespace qk
