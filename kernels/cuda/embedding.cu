// Embedding lookup and its deterministic gradient (the scheme is described in qk/embedding.h).
// Forward: one block per token copies the table row with the widest access the shape allows.
// Backward: block (g, s) owns column slice s of vocabulary row g; it walks the group's tokens in
// ascending order, sums their dout rows in fp32 registers and adds the sum to dtable once.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/bf16_pack.h"
#include "qk/cuda_check.h"
#include "qk/embedding.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 128;

template <int N>
struct Raw;
template <>
struct Raw<8> {
  using T = uint4;
  static __device__ __forceinline__ T nan() { return make_uint4(0x7fc07fc0u, 0x7fc07fc0u, 0x7fc07fc0u, 0x7fc07fc0u); }
};
template <>
struct Raw<4> {
  using T = uint2;
  static __device__ __forceinline__ T nan() { return make_uint2(0x7fc07fc0u, 0x7fc07fc0u); }
};
template <>
struct Raw<2> {
  using T = uint32_t;
  static __device__ __forceinline__ T nan() { return 0x7fc07fc0u; }
};
template <>
struct Raw<1> {
  using T = uint16_t;
  static __device__ __forceinline__ T nan() { return 0x7fc0u; }
};

template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    embedding_forward_kernel(const __nv_bfloat16* __restrict__ table, const int32_t* __restrict__ ids,
                             __nv_bfloat16* __restrict__ out, int64_t vocab, int64_t hidden) {
  using T = typename Raw<N>::T;
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool valid = id >= 0 && id < vocab;
  const T* src = reinterpret_cast<const T*>(table + (valid ? id : 0) * hidden);
  T* dst = reinterpret_cast<T*>(out + t * hidden);
  const int64_t chunks = hidden / N;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) dst[c] = valid ? src[c] : Raw<N>::nan();
}

template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    embedding_backward_kernel(const __nv_bfloat16* __restrict__ dout, const int32_t* __restrict__ plan,
                              int64_t tokens, int64_t groups, float* __restrict__ dtable, int64_t vocab,
                              int64_t hidden) {
  const int32_t* order = plan;
  const int32_t* offsets = plan + tokens;
  const int32_t* rows = offsets + groups + 1;
  const int64_t g = blockIdx.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * N;
  const int32_t row = rows[g];
  // A plan from embedding_grad_plan is always in range; the guards only keep a corrupt one from
  // writing outside the buffers.
  if (col >= hidden || row < 0 || row >= vocab) return;
  float acc[N];
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.0f;
  const int32_t end = offsets[g + 1];
  for (int32_t k = offsets[g]; k < end; ++k) {
    const int32_t t = order[k];
    if (t < 0 || t >= tokens) continue;
    float v[N];
    pack::load<N>(dout + t * hidden + col, v);
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += v[i];
  }
  float* dst = dtable + row * hidden + col;
  if constexpr (N >= 4) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      float4 d = *reinterpret_cast<float4*>(dst + i);
      d.x += acc[i], d.y += acc[i + 1], d.z += acc[i + 2], d.w += acc[i + 3];
      *reinterpret_cast<float4*>(dst + i) = d;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] += acc[i];
  }
}

// The widest access (in bf16 elements) that divides the row and suits every pointer.
int vector_width(int64_t hidden, const __nv_bfloat16* a, const __nv_bfloat16* b) {
  for (int n : {8, 4, 2})
    if (hidden % n == 0 && pack::aligned_to(2 * n, a, b)) return n;
  return 1;
}

}  // namespace

void embedding_forward(const __nv_bfloat16* table, const int32_t* ids, __nv_bfloat16* out, int64_t tokens,
                       int64_t vocab, int64_t hidden, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(tokens >= 0 && vocab > 0 && hidden > 0, "bad sizes");
  QK_REQUIRE(tokens < (int64_t{1} << 31), "too many tokens for one grid");
  if (tokens == 0) return;
  QK_REQUIRE(table != nullptr && ids != nullptr && out != nullptr, "null pointer");
  const dim3 grid(static_cast<unsigned>(tokens));
  pack::with_width(vector_width(hidden, table, out), [&](auto n) {
    QK_LAUNCH(embedding_forward_kernel<decltype(n)::value>, grid, dim3(kThreads), 0, stream, table, ids, out, vocab,
              hidden);
  });
  QK_CHECK_LAUNCH();
}

void embedding_backward(const __nv_bfloat16* dout, const int32_t* plan, int64_t tokens, int64_t groups,
                        float* dtable, int64_t vocab, int64_t hidden, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(tokens >= 0 && groups >= 0 && groups <= tokens && vocab > 0 && hidden > 0, "bad sizes");
  QK_REQUIRE(tokens < (int64_t{1} << 30), "too many tokens for int32 offsets");
  QK_REQUIRE((groups == 0) == (tokens == 0), "a plan with tokens has at least one group");
  if (tokens == 0) return;
  QK_REQUIRE(dout != nullptr && plan != nullptr && dtable != nullptr, "null pointer");
  int n = vector_width(hidden, dout, dout);
  // Vectors of 4 or more fp32 gradients go through float4, which needs 16-byte alignment.
  while (n >= 4 && !pack::aligned_to(16, dtable)) n /= 2;
  const int64_t slices = (hidden / n + kThreads - 1) / kThreads;
  QK_REQUIRE(slices <= 65535, "hidden size too large");
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(slices));
  pack::with_width(n, [&](auto w) {
    QK_LAUNCH(embedding_backward_kernel<decltype(w)::value>, grid, dim3(kThreads), 0, stream, dout, plan, tokens,
              groups, dtable, vocab, hidden);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace qk
