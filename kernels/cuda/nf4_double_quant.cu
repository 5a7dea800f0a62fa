// Double quantization of the NF4 absmax on the GPU: one CTA sums the absmax in double in the fixed
// order of the CPU twin (256 strided partial sums, then a halving tree) for a bit-identical offset;
// then one CTA per 256 values quantizes absmax - offset to the 8-bit dynamic code, whose table and
// midpoints each CTA builds in shared memory from the shared QK_HD definition.
#include <cstdint>

#include "qk/cuda_check.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = nf4::kNestedBlocksize;  // one thread per value of a nested block
static_assert(kNf4OffsetLanes == kThreads, "the offset's summation order is tied to the CTA size");

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    offset_kernel(const float* __restrict__ absmax, size_t nblocks, float* __restrict__ offset) {
  __shared__ double partial[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  double s = 0.0;
  for (size_t i = static_cast<size_t>(t); i < nblocks; i += kThreads) s += static_cast<double>(absmax[i]);
  partial[t] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  if (t == 0) *offset = static_cast<float>(partial[0] / static_cast<double>(nblocks));
}

__device__ __forceinline__ void build_dynamic_tables(float* code, float* mid) {
  const int t = static_cast<int>(threadIdx.x);
  code[t] = dynamic_code_signed(t);
  __syncthreads();
  if (t < 255) mid[t] = nf4::dynamic_midpoint(code, t);
  __syncthreads();
}

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    double_quantize_kernel(const float* __restrict__ absmax, size_t nblocks, const float* __restrict__ offset_ptr,
                           uint8_t* __restrict__ q, float* __restrict__ nested_absmax) {
  __shared__ float code[256];
  __shared__ float mid[256];
  __shared__ float warp_max[kThreads / 32];
  build_dynamic_tables(code, mid);
  const float offset = *offset_ptr;
  const size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  const float v = i < nblocks ? nf4::sub_rn(absmax[i], offset) : 0.0f;
  float m = nf4::abs_bits(v);
  for (int off = 16; off > 0; off /= 2) m = nf4::max_abs(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  for (int w = 0; w < kThreads / 32; ++w) m = nf4::max_abs(m, warp_max[w]);
  if (threadIdx.x == 0) nested_absmax[blockIdx.x] = m;
  if (i < nblocks) q[i] = static_cast<uint8_t>(nf4::quantize_dynamic_scaled(nf4::mul_rn(v, nf4::inv_absmax(m)), mid));
}

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    double_dequantize_kernel(const uint8_t* __restrict__ q, const float* __restrict__ nested_absmax, float offset,
                             size_t nblocks, float* __restrict__ absmax) {
  __shared__ float code[256];
  __shared__ float mid[256];
  build_dynamic_tables(code, mid);
  const size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < nblocks) absmax[i] = nf4::double_dequantize_value(code[q[i]], nested_absmax[blockIdx.x], offset);
}

unsigned grid_for(size_t nblocks) {
  const size_t g = (nblocks + kThreads - 1) / kThreads;
  QK_REQUIRE(g <= 0x7fffffffu, "too many absmax values for one launch");
  return static_cast<unsigned>(g);
}

}  // namespace

void nf4_double_quantize(const float* absmax, size_t nblocks, uint8_t* q, float* nested_absmax, float* offset,
                         cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(nblocks > 0, "no absmax values");
  QK_REQUIRE(absmax != nullptr && q != nullptr && nested_absmax != nullptr && offset != nullptr, "null pointer");
  QK_LAUNCH(offset_kernel, dim3(1), dim3(kThreads), 0, stream, absmax, nblocks, offset);
  QK_CHECK_LAUNCH();
  QK_LAUNCH(double_quantize_kernel, dim3(grid_for(nblocks)), dim3(kThreads), 0, stream, absmax, nblocks,
            static_cast<const float*>(offset), q, nested_absmax);
  QK_CHECK_LAUNCH();
}

void nf4_double_dequantize(const uint8_t* q, const float* nested_absmax, float offset, size_t nblocks, float* absmax,
                           cudaStream_t stream) {
  QK_NVTX_FUNC();
  if (nblocks == 0) return;
  QK_REQUIRE(q != nullptr && nested_absmax != nullptr && absmax != nullptr, "null pointer");
  QK_LAUNCH(double_dequantize_kernel, dim3(grid_for(nblocks)), dim3(kThreads), 0, stream, q, nested_absmax, offset,
            nblocks, absmax);
  QK_CHECK_LAUNCH();
}

}  // namespace qk
