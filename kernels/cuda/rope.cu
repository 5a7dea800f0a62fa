// RoPE forward and backward (rotation by +angle / -angle), in place; layout and formulas in
// qk/rope.h. One block per token: its threads first compute cos/sin of the token's half-head-dim
// angles into shared memory (shared by every q and k head of the token), then rotate N-element
// slices of the (x[j], x[j + d/2]) halves of each head.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/bf16_pack.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/rope.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 128;

template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    rope_kernel(__nv_bfloat16* __restrict__ q, __nv_bfloat16* __restrict__ k, const int32_t* __restrict__ positions,
                int heads, int kv_heads, const RopeFreqs freqs, float sign) {
  __shared__ float cos_s[kRopeMaxHeadDim / 2];
  __shared__ float sin_s[kRopeMaxHeadDim / 2];
  const int64_t t = blockIdx.x;
  const int d = freqs.head_dim, half = d / 2;
  const int32_t pos = positions[t];
  for (int j = threadIdx.x; j < half; j += kThreads) {
    float s, c;
    sincosf(rope_angle(pos, freqs.inv_freq[j]), &s, &c);
    cos_s[j] = c;
    sin_s[j] = sign * s;
  }
  __syncthreads();
  const int per_head = half / N;
  const int items = (heads + kv_heads) * per_head;
  for (int item = threadIdx.x; item < items; item += kThreads) {
    const int h = item / per_head, j = (item % per_head) * N;
    __nv_bfloat16* row = h < heads ? q + (t * heads + h) * d : k + (t * kv_heads + (h - heads)) * d;
    float a[N], b[N], ra[N], rb[N];
    pack::load<N>(row + j, a);
    pack::load<N>(row + j + half, b);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float c = cos_s[j + i], s = sin_s[j + i];
      ra[i] = a[i] * c - b[i] * s;
      rb[i] = b[i] * c + a[i] * s;
    }
    pack::store<N>(row + j, ra);
    pack::store<N>(row + j + half, rb);
  }
}

void launch(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
            const RopeFreqs& freqs, float sign, cudaStream_t stream) {
  const int d = freqs.head_dim, half = d / 2;
  QK_REQUIRE(d >= 2 && d % 2 == 0 && d <= kRopeMaxHeadDim, "bad head_dim in the frequency table");
  QK_REQUIRE(tokens >= 0 && heads >= 0 && kv_heads >= 0, "bad sizes");
  QK_REQUIRE(tokens < (int64_t{1} << 31), "too many tokens for one grid");
  QK_REQUIRE(static_cast<int64_t>(heads + kv_heads) * half < (int64_t{1} << 31), "too many heads");
  if (tokens == 0 || heads + kv_heads == 0) return;
  QK_REQUIRE(positions != nullptr, "null positions");
  QK_REQUIRE(heads == 0 || q != nullptr, "null q");
  QK_REQUIRE(kv_heads == 0 || k != nullptr, "null k");
  int n = 1;
  for (int w : {8, 4, 2})
    if (half % w == 0 && pack::aligned_to(2 * w, q, k)) {
      n = w;
      break;
    }
  const dim3 grid(static_cast<unsigned>(tokens)), block(kThreads);
  pack::with_width(n, [&](auto w) {
    QK_LAUNCH(rope_kernel<decltype(w)::value>, grid, block, 0, stream, q, k, positions, heads, kv_heads, freqs, sign);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions, int64_t tokens, int heads,
                  int kv_heads, const RopeFreqs& freqs, cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch(q, k, positions, tokens, heads, kv_heads, freqs, 1.0f, stream);
}

void rope_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, const int32_t* positions, int64_t tokens, int heads,
                   int kv_heads, const RopeFreqs& freqs, cudaStream_t stream) {
  QK_NVTX_FUNC();
  launch(dq, dk, positions, tokens, heads, kv_heads, freqs, -1.0f, stream);
}

}  // namespace qk
