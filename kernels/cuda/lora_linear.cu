// The fused LoRA linear (qk/lora_linear.h): the base GEMM (cuBLAS on a bf16 W, qk/nf4_gemm.h on NF4),
// the LoRA GEMMs through cuBLAS with leading dimensions (so each group works on its column slice of the
// concatenated Y / XA / dY in place, and Y += s XA_g B_g^T is the epilogue of the LoRA GEMM, beta = 1),
// and three small memory-bound kernels: the bias add, the dropout of the LoRA input, and the masked add
// of the LoRA term of dX. The dropout mask is regenerated from the seed in backward, never stored.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "qk/bf16_pack.h"
#include "qk/cuda_check.h"
#include "qk/lora_linear.h"
#include "qk/matmul.h"
#include "qk/nf4_gemm.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // 1-D kernels stride over the rest

// xd[e] = kept ? bf16(x[e] / (1 - p)) : 0 over n contiguous elements (e is the mask's element index).
template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    dropout_forward_kernel(const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ xd, int64_t n,
                           uint64_t key, uint32_t threshold, float inv_keep) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * N;
  for (int64_t e = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N; e < n; e += stride) {
    float v[N];
    pack::load<N>(x + e, v);
#pragma unroll
    for (int k = 0; k < N; ++k)
      v[k] = lora_dropout_keep(key, static_cast<uint64_t>(e + k), threshold) ? v[k] * inv_keep : 0.0f;
    pack::store<N>(xd + e, v);
  }
}

// dx[e] = bf16(dx[e] + p[e] / (1 - p)) where kept: the LoRA term of dX through the forward's mask.
template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    dropout_backward_add_kernel(__nv_bfloat16* __restrict__ dx, const __nv_bfloat16* __restrict__ p, int64_t n,
                                uint64_t key, uint32_t threshold, float inv_keep) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * N;
  for (int64_t e = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N; e < n; e += stride) {
    float d[N], q[N];
    pack::load<N>(dx + e, d);
    pack::load<N>(p + e, q);
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (lora_dropout_keep(key, static_cast<uint64_t>(e + k), threshold)) d[k] = __fadd_rn(d[k], q[k] * inv_keep);
    pack::store<N>(dx + e, d);
  }
}

// y[i, c] = bf16(y[i, c] + bias[c]); blocks tile the columns in x and stride over rows in y.
template <int N>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    bias_add_kernel(__nv_bfloat16* __restrict__ y, const __nv_bfloat16* __restrict__ bias, int64_t rows,
                    int64_t cols) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (c >= cols) return;
  float b[N];
  pack::load<N>(bias + c, b);
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) {
    float v[N];
    pack::load<N>(y + i * cols + c, v);
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] += b[k];
    pack::store<N>(y + i * cols + c, v);
  }
}

// The widest access dividing `count` that suits every pointer.
template <typename... P>
int vector_width(int64_t count, const P*... p) {
  for (int n : {8, 4, 2})
    if (count % n == 0 && pack::aligned_to(2 * n, p...)) return n;
  return 1;
}

dim3 grid_1d(int64_t n, int width) {
  const int64_t blocks = (n / width + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks)));
}

// Row-major C[m, n] (row stride ldc) = alpha op(A) op(B) + beta C with bf16 A (row stride lda) and B
// (ldb), fp32 accumulation, C in bf16 or fp32: qk/matmul.h with explicit row strides.
void gemm(cublasHandle_t h, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const __nv_bfloat16* a,
          int lda, const __nv_bfloat16* b, int ldb, float beta, __nv_bfloat16* c, int ldc, cudaStream_t stream) {
  matmul_bf16(h, GemmShape{trans_a, trans_b, m, n, k, lda, ldb, ldc}, alpha, a, b, beta, c, stream);
}
void gemm(cublasHandle_t h, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const __nv_bfloat16* a,
          int lda, const __nv_bfloat16* b, int ldb, float beta, float* c, int ldc, cudaStream_t stream) {
  matmul_bf16_f32(h, GemmShape{trans_a, trans_b, m, n, k, lda, ldb, ldc}, alpha, a, b, beta, c, stream);
}

void check(const LoraLinearContext& ctx, const LoraLinear& l, int t) {
  check_lora_linear(l, t);
  QK_REQUIRE(ctx.cublas != nullptr, "null cuBLAS handle");
}

Nf4GemmContext nf4_context(const LoraLinearContext& ctx) {
  Nf4GemmContext c = ctx.nf4;
  if (c.cublas == nullptr) c.cublas = ctx.cublas;
  return c;
}

// The workspace's two regions: dXA [T, r_total] first, then Xd [T, in] (256-byte aligned).
struct Workspace {
  __nv_bfloat16* dxa = nullptr;
  __nv_bfloat16* xd = nullptr;
};

Workspace carve(const LoraLinearContext& ctx, const LoraLinear& l, int t) {
  QK_REQUIRE(ctx.workspace_bytes >= lora_linear_workspace_bytes(t, l.in, l.r_total(), l.dropout),
             "workspace below lora_linear_workspace_bytes");
  QK_REQUIRE(ctx.workspace != nullptr && pack::aligned_to(256, static_cast<const char*>(ctx.workspace)),
             "workspace null or not 256-byte aligned");
  Workspace w;
  w.dxa = static_cast<__nv_bfloat16*>(ctx.workspace);
  const size_t dxa_bytes = (size_t{2} * static_cast<size_t>(t) * static_cast<size_t>(l.r_total()) + 255) / 256 * 256;
  if (l.dropout > 0.0f) w.xd = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(ctx.workspace) + dxa_bytes);
  return w;
}

void dropout_forward(const LoraLinear& l, const __nv_bfloat16* x, __nv_bfloat16* xd, int t, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(t) * l.in;
  const int width = vector_width(n, x, xd);
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const float inv_keep = lora_dropout_inv_keep(l.dropout);
  pack::with_width(width, [&](auto w) {
    QK_LAUNCH(dropout_forward_kernel<decltype(w)::value>, grid_1d(n, width), dim3(kThreads), 0, stream, x, xd, n, key,
              threshold, inv_keep);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace

void lora_linear_forward(const LoraLinearContext& ctx, const LoraLinear& l, const __nv_bfloat16* x, int t,
                         __nv_bfloat16* y, __nv_bfloat16* xa, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check(ctx, l, t);
  if (t == 0) return;
  QK_REQUIRE(x != nullptr && y != nullptr && (xa != nullptr || l.r_total() == 0), "null pointer");
  const int in = l.in, out = l.out_total(), rt = l.r_total();
  const Workspace ws = l.dropout > 0.0f && rt > 0 ? carve(ctx, l, t) : Workspace{};

  if (l.w != nullptr) gemm(ctx.cublas, false, true, t, out, in, 1.0f, x, in, l.w, in, 0.0f, y, out, stream);
  else nf4_gemm_forward_bf16(nf4_context(ctx), l.nf4, x, t, y, stream);

  if (l.bias != nullptr) {
    const int width = vector_width(out, y, l.bias);
    const dim3 grid(static_cast<unsigned>((out / width + kThreads - 1) / kThreads),
                    static_cast<unsigned>(std::min<int64_t>(t, kMaxGridY)));
    pack::with_width(width, [&](auto w) {
      QK_LAUNCH(bias_add_kernel<decltype(w)::value>, grid, dim3(kThreads), 0, stream, y, l.bias, int64_t{t},
                int64_t{out});
    });
    QK_CHECK_LAUNCH();
  }

  if (rt == 0) return;  // no group has an adapter: the base alone
  const __nv_bfloat16* xin = x;
  if (l.dropout > 0.0f) {
    dropout_forward(l, x, ws.xd, t, stream);
    xin = ws.xd;
  }
  // XA for every group at once over the concatenated A.
  gemm(ctx.cublas, false, true, t, rt, in, 1.0f, xin, in, l.a, in, 0.0f, xa, rt, stream);
  // Y_g += s_g XA_g B_g^T, added to the bf16 Y by the GEMM itself.
  for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
    const auto& gr = l.groups[g];
    if (gr.r == 0) continue;
    gemm(ctx.cublas, false, true, t, gr.out, gr.r, gr.scale, xa + roff, rt, gr.b, gr.r, 1.0f, y + off,
         out, stream);
  }
}

void lora_linear_backward(const LoraLinearContext& ctx, const LoraLinear& l, const __nv_bfloat16* x,
                          const __nv_bfloat16* xa, const __nv_bfloat16* dy, int t, __nv_bfloat16* dx,
                          const LoraGrads& grads, cudaStream_t stream) {
  QK_NVTX_FUNC();
  check(ctx, l, t);
  if (t == 0) return;
  const int in = l.in, out = l.out_total(), rt = l.r_total();
  QK_REQUIRE(x != nullptr && dy != nullptr && dx != nullptr, "null pointer");
  QK_REQUIRE(rt == 0 || (xa != nullptr && grads.da != nullptr), "null pointer");
  for (int g = 0; g < l.num_groups; ++g) QK_REQUIRE(l.groups[g].r == 0 || grads.db[g] != nullptr, "null dB");
  cublasHandle_t h = ctx.cublas;

  if (l.w != nullptr) gemm(h, false, false, t, in, out, 1.0f, dy, out, l.w, in, 0.0f, dx, in, stream);
  else nf4_gemm_backward_bf16(nf4_context(ctx), l.nf4, dy, t, dx, stream);
  if (rt == 0) return;  // no group has an adapter: the base alone
  const Workspace ws = carve(ctx, l, t);

  for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
    const auto& gr = l.groups[g];
    if (gr.r == 0) continue;
    // dXA_g = s_g dY_g B_g into its columns of dXA.
    gemm(h, false, false, t, gr.r, gr.out, gr.scale, dy + off, out, gr.b, gr.r, 0.0f, ws.dxa + roff, rt,
         stream);
    // dB_g += s_g dY_g^T XA_g.
    gemm(h, true, false, gr.out, gr.r, t, gr.scale, dy + off, out, xa + roff, rt, 1.0f, grads.db[g], gr.r,
         stream);
  }

  const __nv_bfloat16* xin = x;
  if (l.dropout > 0.0f) {
    dropout_forward(l, x, ws.xd, t, stream);
    xin = ws.xd;
  }
  // dA += dXA^T Xd over the concatenated A.
  gemm(h, true, false, rt, in, t, 1.0f, ws.dxa, rt, xin, in, 1.0f, grads.da, in, stream);

  if (l.dropout == 0.0f) {
    gemm(h, false, false, t, in, rt, 1.0f, ws.dxa, rt, l.a, in, 1.0f, dx, in, stream);
    return;
  }
  // With dropout the LoRA term goes through the mask: P = dXA A into the (now free) Xd region, then the add.
  __nv_bfloat16* p = ws.xd;
  gemm(h, false, false, t, in, rt, 1.0f, ws.dxa, rt, l.a, in, 0.0f, p, in, stream);
  const int64_t n = static_cast<int64_t>(t) * in;
  const int width = vector_width(n, dx, p);
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const float inv_keep = lora_dropout_inv_keep(l.dropout);
  pack::with_width(width, [&](auto w) {
    QK_LAUNCH(dropout_backward_add_kernel<decltype(w)::value>, grid_1d(n, width), dim3(kThreads), 0, stream, dx, p, n,
              key, threshold, inv_keep);
  });
  QK_CHECK_LAUNCH();
}

}  // namespace qk
