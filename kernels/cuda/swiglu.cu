// SwiGLU forward and backward, elementwise over rows with leading dimensions (qk/swiglu.h). Each
// thread handles N consecutive columns of one row with one access per tensor; blocks tile the
// columns in x and stride over the rows in y.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/bf16_pack.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/simt.h"
#include "qk/swiglu.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// No __restrict__ on gate/up/out: out may alias gate or up.
template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    swiglu_forward_kernel(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* out, int64_t rows,
                          int64_t cols, int64_t ld_in, int64_t ld_out) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (c >= cols) return;
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) {
    float g[N], u[N], o[N];
    pack::load<N>(gate + i * ld_in + c, g);
    pack::load<N>(up + i * ld_in + c, u);
#pragma unroll
    for (int k = 0; k < N; ++k) o[k] = swiglu_value(g[k], u[k]);
    pack::store<N>(out + i * ld_out + c, o);
  }
}

template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    swiglu_backward_kernel(const __nv_bfloat16* __restrict__ dout, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                           __nv_bfloat16* dgate, __nv_bfloat16* dup, int64_t rows, int64_t cols, int64_t ld_in,
                           int64_t ld_dout, int64_t ld_grad) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (c >= cols) return;
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) {
    float g[N], u[N], d[N], dg[N], du[N];
    pack::load<N>(gate + i * ld_in + c, g);
    pack::load<N>(up + i * ld_in + c, u);
    pack::load<N>(dout + i * ld_dout + c, d);
#pragma unroll
    for (int k = 0; k < N; ++k) swiglu_grad(g[k], u[k], d[k], dg[k], du[k]);
    pack::store<N>(dgate + i * ld_grad + c, dg);
    pack::store<N>(dup + i * ld_grad + c, du);
  }
}

void check(int64_t rows, int64_t cols, int64_t ld_a, int64_t ld_b, int64_t ld_c) {
  QK_REQUIRE(rows >= 0 && cols > 0, "bad sizes");
  QK_REQUIRE(ld_a >= cols && ld_b >= cols && ld_c >= cols, "leading dimension below cols");
}

// The widest access that divides the columns and every leading dimension and suits every pointer.
template <typename... P>
int vector_width(int64_t cols, int64_t ld_a, int64_t ld_b, int64_t ld_c, const P*... p) {
  for (int n : {8, 4, 2})
    if (cols % n == 0 && ld_a % n == 0 && ld_b % n == 0 && ld_c % n == 0 && pack::aligned_to(2 * n, p...)) return n;
  return 1;
}

dim3 grid_for(int64_t rows, int64_t cols, int n) {
  const int64_t x = (cols / n + kThreads - 1) / kThreads;
  QK_REQUIRE(x < (int64_t{1} << 31), "too many columns for one grid");
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
}

}  // namespace

void swiglu_forward(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* out, int64_t rows,
                    int64_t cols, int64_t ld_in, int64_t ld_out, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check(rows, cols, ld_in, ld_out, cols);
  if (rows == 0) return;
  QK_REQUIRE(gate != nullptr && up != nullptr && out != nullptr, "null pointer");
  QK_REQUIRE((out != gate && out != up) || ld_out == ld_in, "in place needs ld_out == ld_in");
  const int n = vector_width(cols, ld_in, ld_out, ld_in, gate, up, out);
  const dim3 grid = grid_for(rows, cols, n), block(kThreads);
  pack::with_width(n, [&](auto w) {
    QK_LAUNCH(swiglu_forward_kernel<decltype(w)::value>, grid, block, 0, stream, gate, up, out, rows, cols, ld_in,
              ld_out);
  });
  QK_CHECK_LAUNCH();
}

void swiglu_backward(const __nv_bfloat16* dout, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                     __nv_bfloat16* dgate, __nv_bfloat16* dup, int64_t rows, int64_t cols, int64_t ld_in,
                     int64_t ld_dout, int64_t ld_grad, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check(rows, cols, ld_in, ld_dout, ld_grad);
  if (rows == 0) return;
  QK_REQUIRE(dout != nullptr && gate != nullptr && up != nullptr && dgate != nullptr && dup != nullptr,
             "null pointer");
  QK_REQUIRE(dgate != dup, "dgate and dup must differ");
  const int n = vector_width(cols, ld_in, ld_dout, ld_grad, dout, gate, up, dgate, dup);
  const dim3 grid = grid_for(rows, cols, n), block(kThreads);
  pack::with_width(n, [&](auto w) {
    QK_LAUNCH(swiglu_backward_kernel<decltype(w)::value>, grid, block, 0, stream, dout, gate, up, dgate, dup, rows,
              cols, ld_in, ld_dout, ld_grad);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace qk
