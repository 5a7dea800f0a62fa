// RMSNorm forward (plain and residual-fused) and backward; formulas in qk/rmsnorm.h.
// One block per row in the forward: a block-wide sum of squares, then a second pass over the row
// (still in L1) writes y. The backward gives each block a fixed, strided set of rows; every thread
// always handles the same columns, so its slice of the block's partial dw row lives in shared
// memory that no other thread touches. A second kernel sums the partial rows in a fixed order.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/bf16_pack.h"
#include "qk/block_reduce.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/rmsnorm.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kMaxWarps = kMaxThreads / 32;

// x, r and h are not __restrict__: h may alias x or r.
template <int N, bool Has_residual>
__global__ void QK_LAUNCH_BOUNDS(kMaxThreads)
    rmsnorm_forward_kernel(const __nv_bfloat16* x, const __nv_bfloat16* r, const __nv_bfloat16* __restrict__ w,
                           __nv_bfloat16* h, __nv_bfloat16* __restrict__ y, float* __restrict__ rstd, int64_t cols,
                           float eps) {
  __shared__ float scratch[kMaxWarps];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  const int64_t step = static_cast<int64_t>(blockDim.x) * N;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x * N; c < cols; c += step) {
    float v[N];
    pack::load<N>(x + base + c, v);
    if constexpr (Has_residual) {
      float rv[N];
      pack::load<N>(r + base + c, rv);
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] = pack::round_bf16(v[i] + rv[i]);  // the norm sees h as stored
      pack::store<N>(h + base + c, v);
    }
#pragma unroll
    for (int i = 0; i < N; ++i) ss += v[i] * v[i];
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(cols) + eps);
  if (rstd != nullptr && threadIdx.x == 0) rstd[blockIdx.x] = inv;
  // Each thread reads back only the h elements it wrote itself, so no barrier is needed.
  const __nv_bfloat16* src = Has_residual ? h : x;
  for (int64_t c = threadIdx.x * N; c < cols; c += step) {
    float v[N], wv[N];
    pack::load<N>(src + base + c, v);
    pack::load<N>(w + c, wv);
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = v[i] * inv * wv[i];
    pack::store<N>(y + base + c, v);
  }
}

// dy, dres and dx are not __restrict__: dx may alias dy or dres (each element is read and then
// written by the same thread).
template <int N, bool Has_dw>
__global__ void QK_LAUNCH_BOUNDS(kMaxThreads)
    rmsnorm_backward_kernel(const __nv_bfloat16* dy, const __nv_bfloat16* __restrict__ x,
                            const __nv_bfloat16* __restrict__ w, const float* __restrict__ rstd,
                            const __nv_bfloat16* dres, __nv_bfloat16* dx, float* __restrict__ partials, int64_t rows,
                            int64_t cols) {
  __shared__ float scratch[kMaxWarps];
  QK_DYNAMIC_SHARED(float, dw_row);  // Has_dw: cols floats
  (void)dw_row;
  const int64_t step = static_cast<int64_t>(blockDim.x) * N;
  if constexpr (Has_dw)
    for (int64_t c = threadIdx.x * N; c < cols; c += step)
#pragma unroll
      for (int i = 0; i < N; ++i) dw_row[c + i] = 0.0f;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    const float inv = rstd[row];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x * N; c < cols; c += step) {
      float g[N], xv[N], wv[N];
      pack::load<N>(dy + base + c, g);
      pack::load<N>(x + base + c, xv);
      pack::load<N>(w + c, wv);
#pragma unroll
      for (int i = 0; i < N; ++i) dot += g[i] * wv[i] * xv[i];
    }
    dot = block_sum(dot, scratch);
    const float coef = inv * inv * dot / static_cast<float>(cols);
    for (int64_t c = threadIdx.x * N; c < cols; c += step) {
      float g[N], xv[N], wv[N], d[N];
      pack::load<N>(dy + base + c, g);
      pack::load<N>(x + base + c, xv);
      pack::load<N>(w + c, wv);
#pragma unroll
      for (int i = 0; i < N; ++i) d[i] = inv * (g[i] * wv[i] - xv[i] * coef);
      if (dres != nullptr) {
        float rv[N];
        pack::load<N>(dres + base + c, rv);
#pragma unroll
        for (int i = 0; i < N; ++i) d[i] += rv[i];
      }
      pack::store<N>(dx + base + c, d);
      if constexpr (Has_dw)
#pragma unroll
        for (int i = 0; i < N; ++i) dw_row[c + i] += g[i] * (xv[i] * inv);
    }
  }

  if constexpr (Has_dw)
    for (int64_t c = threadIdx.x * N; c < cols; c += step)
#pragma unroll
      for (int i = 0; i < N; ++i) partials[blockIdx.x * cols + c + i] = dw_row[c + i];
}

constexpr int kReduceCols = 32;
constexpr int kReduceWarps = 8;

// dw[c] += sum over p of partials[p, c]: warp k sums partials k, k + 8, ..., then warp 0 adds the
// eight sums in order. Fixed order throughout, so the result is repeatable.
__global__ void QK_LAUNCH_BOUNDS(kReduceCols* kReduceWarps)
    dw_reduce_kernel(const float* __restrict__ partials, int64_t count, float* __restrict__ dw, int64_t cols) {
  __shared__ float sums[kReduceWarps][kReduceCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kReduceCols + lane;
  float acc = 0.0f;
  if (c < cols)
    for (int64_t p = warp; p < count; p += kReduceWarps) acc += partials[p * cols + c];
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && c < cols) {
    float total = 0.0f;
    for (int k = 0; k < kReduceWarps; ++k) total += sums[k][lane];
    dw[c] += total;
  }
}

// The widest access that divides the row and suits every pointer (null ones do not count).
template <typename... P>
int vector_width(int64_t cols, const P*... p) {
  for (int n : {8, 4, 2})
    if (cols % n == 0 && pack::aligned_to(2 * n, p...)) return n;
  return 1;
}

unsigned threads_for(int64_t cols, int n) {
  const int64_t warps = (cols / n + 31) / 32;
  return static_cast<unsigned>(warps >= kMaxWarps ? kMaxThreads : warps * 32);
}

void check_forward(const void* x, const void* w, const void* y, int64_t rows, int64_t cols, float eps) {
  QK_REQUIRE(rows >= 0 && cols > 0, "bad sizes");
  QK_REQUIRE(rows < (int64_t{1} << 31), "too many rows for one grid");
  QK_REQUIRE(eps >= 0.0f, "negative eps");
  QK_REQUIRE(rows == 0 || (x != nullptr && w != nullptr && y != nullptr), "null pointer");
}

template <bool Has_residual>
void launch_forward(const __nv_bfloat16* x, const __nv_bfloat16* r, const __nv_bfloat16* w, __nv_bfloat16* h,
                    __nv_bfloat16* y, float* rstd, int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  const int n = vector_width(cols, x, r, w, h, y);
  const dim3 grid(static_cast<unsigned>(rows)), block(threads_for(cols, n));
  pack::with_width(n, [&](auto v) {
    QK_LAUNCH((rmsnorm_forward_kernel<decltype(v)::value, Has_residual>), grid, block, 0, stream, x, r, w, h, y, rstd,
              cols, eps);
  });
  QK_CHECK_LAUNCH();
}

template <bool Has_dw>
void launch_backward(const __nv_bfloat16* dy, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                     const __nv_bfloat16* dres, __nv_bfloat16* dx, float* partials, int64_t rows, int64_t cols,
                     cudaStream_t stream) {
  const int n = vector_width(cols, dy, x, w, dres, dx);
  const dim3 grid(static_cast<unsigned>(rmsnorm_backward_partials(rows))), block(threads_for(cols, n));
  const size_t smem = Has_dw ? static_cast<size_t>(cols) * sizeof(float) : 0;
  pack::with_width(n, [&](auto v) {
    QK_LAUNCH((rmsnorm_backward_kernel<decltype(v)::value, Has_dw>), grid, block, smem, stream, dy, x, w, rstd, dres,
              dx, partials, rows, cols);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm_forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, float* rstd, int64_t rows,
                     int64_t cols, float eps, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check_forward(x, w, y, rows, cols, eps);
  if (rows == 0) return;
  launch_forward<false>(x, nullptr, w, nullptr, y, rstd, rows, cols, eps, stream);
}

void residual_rmsnorm_forward(const __nv_bfloat16* x, const __nv_bfloat16* r, const __nv_bfloat16* w,
                              __nv_bfloat16* h, __nv_bfloat16* y, float* rstd, int64_t rows, int64_t cols,
                              float eps, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check_forward(x, w, y, rows, cols, eps);
  if (rows == 0) return;
  QK_REQUIRE(r != nullptr && h != nullptr, "null pointer");
  QK_REQUIRE(y != h && y != x && y != r, "y must not alias an input");
  launch_forward<true>(x, r, w, h, y, rstd, rows, cols, eps, stream);
}

void rmsnorm_backward(const __nv_bfloat16* dy, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                      const __nv_bfloat16* dres, __nv_bfloat16* dx, float* dw, float* workspace, int64_t rows,
                      int64_t cols, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(rows >= 0 && cols > 0, "bad sizes");
  QK_REQUIRE(dw == nullptr || cols <= kRmsNormMaxCols, "cols beyond the shared-memory partial row of dw");
  if (rows == 0) return;
  QK_REQUIRE(dy != nullptr && x != nullptr && w != nullptr && rstd != nullptr && dx != nullptr, "null pointer");
  if (dw == nullptr) {
    launch_backward<false>(dy, x, w, rstd, dres, dx, nullptr, rows, cols, stream);
    return;
  }
  QK_REQUIRE(workspace != nullptr, "dw needs rmsnorm_backward_workspace(rows, cols) floats of workspace");
  launch_backward<true>(dy, x, w, rstd, dres, dx, workspace, rows, cols, stream);
  const int64_t count = rmsnorm_backward_partials(rows);
  QK_LAUNCH(dw_reduce_kernel, dim3(static_cast<unsigned>((cols + kReduceCols - 1) / kReduceCols)),
            dim3(kReduceCols * kReduceWarps), 0, stream, static_cast<const float*>(workspace), count, dw, cols);
  QK_CHECK_LAUNCH();
}

}  // namespace qk
