// CPU twin of kernels/cuda/lora_linear.cu: the same GEMMs through qk::cpu's matmuls, rounded to bf16 at
// the points the GPU path rounds (qk/lora_linear.h, "Precision"), and the same dropout mask. The groups'
// column slices of Y, XA, dY and dXA are gathered into contiguous buffers for the unstrided matmuls.
// Also the fp64 reference (plain loops, no rounding) for the finite-difference check.
#include "qk/lora_linear.h"

#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"
#include "qk/matmul.h"
#include "qk/nf4_gemm.h"

namespace qk::cpu {
namespace {

// Columns [c0, c0 + n) of a row-major [rows, ld] matrix, contiguous.
template <typename T>
std::vector<T> gather(const T* src, int rows, int ld, int c0, int n) {
  std::vector<T> out(static_cast<size_t>(rows) * n);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < n; ++j) out[static_cast<size_t>(i) * n + j] = src[static_cast<size_t>(i) * ld + c0 + j];
  return out;
}

template <typename T>
void scatter(const std::vector<T>& src, T* dst, int rows, int ld, int c0, int n) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < n; ++j) dst[static_cast<size_t>(i) * ld + c0 + j] = src[static_cast<size_t>(i) * n + j];
}

// Xd = dropout(X) in bf16, exactly as the GPU's dropout kernel writes it.
std::vector<uint16_t> dropped(const LoraLinear& l, const uint16_t* x, int t) {
  const size_t n = static_cast<size_t>(t) * l.in;
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const float inv_keep = lora_dropout_inv_keep(l.dropout);
  std::vector<uint16_t> xd(n);
  for (size_t i = 0; i < n; ++i)
    xd[i] = lora_dropout_keep(key, i, threshold) ? f32_to_bf16_rn(bf16_to_f32(x[i]) * inv_keep) : uint16_t{0};
  return xd;
}

}  // namespace

void lora_linear_forward(const LoraLinear& l, const uint16_t* x, int t, uint16_t* y, uint16_t* xa) {
  check_lora_linear(l, t);
  if (t == 0) return;
  QK_REQUIRE(x != nullptr && y != nullptr && (xa != nullptr || l.r_total() == 0), "null pointer");
  const int out = l.out_total(), rt = l.r_total();
  if (l.w != nullptr) matmul_bf16({false, true, t, out, l.in}, 1.0f, x, l.w, 0.0f, y);
  else nf4_gemm_forward_bf16(l.nf4, x, t, y);
  if (l.bias != nullptr)
    for (int i = 0; i < t; ++i)
      for (int o = 0; o < out; ++o) {
        uint16_t& v = y[static_cast<size_t>(i) * out + o];
        v = f32_to_bf16_rn(bf16_to_f32(v) + bf16_to_f32(l.bias[o]));
      }
  if (rt == 0) return;  // no group has an adapter: the base alone
  std::vector<uint16_t> xd;
  if (l.dropout > 0.0f) xd = dropped(l, x, t);
  matmul_bf16({false, true, t, rt, l.in}, 1.0f, xd.empty() ? x : xd.data(), l.a, 0.0f, xa);
  for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
    const auto& gr = l.groups[g];
    if (gr.r == 0) continue;
    auto yg = gather(y, t, out, off, gr.out);
    const auto xag = gather(xa, t, rt, roff, gr.r);
    matmul_bf16({false, true, t, gr.out, gr.r}, gr.scale, xag.data(), gr.b, 1.0f, yg.data());
    scatter(yg, y, t, out, off, gr.out);
  }
}

void lora_linear_backward(const LoraLinear& l, const uint16_t* x, const uint16_t* xa, const uint16_t* dy, int t,
                          uint16_t* dx, const LoraGrads& grads) {
  check_lora_linear(l, t);
  if (t == 0) return;
  const int out = l.out_total(), rt = l.r_total();
  QK_REQUIRE(x != nullptr && dy != nullptr && dx != nullptr, "null pointer");
  QK_REQUIRE(rt == 0 || (xa != nullptr && grads.da != nullptr), "null pointer");
  for (int g = 0; g < l.num_groups; ++g) QK_REQUIRE(l.groups[g].r == 0 || grads.db[g] != nullptr, "null dB");
  if (l.w != nullptr) matmul_bf16({false, false, t, l.in, out}, 1.0f, dy, l.w, 0.0f, dx);
  else nf4_gemm_backward_bf16(l.nf4, dy, t, dx);
  if (rt == 0) return;  // no group has an adapter: the base alone
  std::vector<uint16_t> dxa(static_cast<size_t>(t) * rt);
  for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
    const auto& gr = l.groups[g];
    if (gr.r == 0) continue;
    const auto dyg = gather(dy, t, out, off, gr.out);
    std::vector<uint16_t> dxag(static_cast<size_t>(t) * gr.r);
    matmul_bf16({false, false, t, gr.r, gr.out}, gr.scale, dyg.data(), gr.b, 0.0f, dxag.data());
    scatter(dxag, dxa.data(), t, rt, roff, gr.r);
    const auto xag = gather(xa, t, rt, roff, gr.r);
    matmul_bf16_f32({true, false, gr.out, gr.r, t}, gr.scale, dyg.data(), xag.data(), 1.0f, grads.db[g]);
  }
  std::vector<uint16_t> xd;
  if (l.dropout > 0.0f) xd = dropped(l, x, t);
  matmul_bf16_f32({true, false, rt, l.in, t}, 1.0f, dxa.data(), xd.empty() ? x : xd.data(), 1.0f, grads.da);
  if (l.dropout == 0.0f) {
    matmul_bf16({false, false, t, l.in, rt}, 1.0f, dxa.data(), l.a, 1.0f, dx);
    return;
  }
  std::vector<uint16_t> p(static_cast<size_t>(t) * l.in);
  matmul_bf16({false, false, t, l.in, rt}, 1.0f, dxa.data(), l.a, 0.0f, p.data());
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const float inv_keep = lora_dropout_inv_keep(l.dropout);
  for (size_t i = 0; i < p.size(); ++i)
    if (lora_dropout_keep(key, i, threshold)) dx[i] = f32_to_bf16_rn(bf16_to_f32(dx[i]) + bf16_to_f32(p[i]) * inv_keep);
}

// fp64 reference ------------------------------------------------------------------------------------

namespace {

std::vector<double> dropped(const LoraLinearF64& l, const double* x, int t) {
  const size_t n = static_cast<size_t>(t) * l.in;
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(l.dropout));
  std::vector<double> xd(n);
  for (size_t i = 0; i < n; ++i) xd[i] = lora_dropout_keep(key, i, threshold) ? x[i] * inv_keep : 0.0;
  return xd;
}

}  // namespace

void lora_linear_forward(const LoraLinearF64& l, const double* x, int t, double* y, double* xa) {
  check_lora_linear(l, t, true);
  const int in = l.in, out = l.out_total(), rt = l.r_total();
  const auto xd = dropped(l, x, t);
  for (int i = 0; i < t; ++i) {
    for (int o = 0; o < out; ++o) {
      double acc = l.bias != nullptr ? l.bias[o] : 0.0;
      for (int k = 0; k < in; ++k) acc += x[static_cast<size_t>(i) * in + k] * l.w[static_cast<size_t>(o) * in + k];
      y[static_cast<size_t>(i) * out + o] = acc;
    }
    for (int j = 0; j < rt; ++j) {
      double acc = 0.0;
      for (int k = 0; k < in; ++k) acc += xd[static_cast<size_t>(i) * in + k] * l.a[static_cast<size_t>(j) * in + k];
      xa[static_cast<size_t>(i) * rt + j] = acc;
    }
    for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
      const auto& gr = l.groups[g];
      for (int o = 0; o < gr.out; ++o) {
        double acc = 0.0;
        for (int k = 0; k < gr.r; ++k) acc += xa[static_cast<size_t>(i) * rt + roff + k] * gr.b[static_cast<size_t>(o) * gr.r + k];
        y[static_cast<size_t>(i) * out + off + o] += static_cast<double>(gr.scale) * acc;
      }
    }
  }
}

void lora_linear_backward(const LoraLinearF64& l, const double* x, const double* xa, const double* dy, int t,
                          double* dx, const LoraGradsF64& grads) {
  check_lora_linear(l, t, true);
  const int in = l.in, out = l.out_total(), rt = l.r_total();
  const auto xd = dropped(l, x, t);
  const uint64_t key = lora_dropout_key(l.seed);
  const uint32_t threshold = lora_dropout_threshold(l.dropout);
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(l.dropout));
  std::vector<double> dxa(static_cast<size_t>(t) * rt, 0.0);
  for (int g = 0, off = 0, roff = 0; g < l.num_groups; off += l.groups[g].out, roff += l.groups[g].r, ++g) {
    const auto& gr = l.groups[g];
    const double s = gr.scale;
    for (int i = 0; i < t; ++i)
      for (int k = 0; k < gr.r; ++k) {
        double acc = 0.0;
        for (int o = 0; o < gr.out; ++o)
          acc += dy[static_cast<size_t>(i) * out + off + o] * gr.b[static_cast<size_t>(o) * gr.r + k];
        dxa[static_cast<size_t>(i) * rt + roff + k] = s * acc;
      }
    for (int o = 0; o < gr.out; ++o)
      for (int k = 0; k < gr.r; ++k) {
        double acc = 0.0;
        for (int i = 0; i < t; ++i)
          acc += dy[static_cast<size_t>(i) * out + off + o] * xa[static_cast<size_t>(i) * rt + roff + k];
        grads.db[g][static_cast<size_t>(o) * gr.r + k] += s * acc;
      }
  }
  for (int j = 0; j < rt; ++j)
    for (int k = 0; k < in; ++k) {
      double acc = 0.0;
      for (int i = 0; i < t; ++i) acc += dxa[static_cast<size_t>(i) * rt + j] * xd[static_cast<size_t>(i) * in + k];
      grads.da[static_cast<size_t>(j) * in + k] += acc;
    }
  for (int i = 0; i < t; ++i)
    for (int k = 0; k < in; ++k) {
      double base = 0.0, lora = 0.0;
      for (int o = 0; o < out; ++o) base += dy[static_cast<size_t>(i) * out + o] * l.w[static_cast<size_t>(o) * in + k];
      for (int j = 0; j < rt; ++j) lora += dxa[static_cast<size_t>(i) * rt + j] * l.a[static_cast<size_t>(j) * in + k];
      const size_t e = static_cast<size_t>(i) * in + k;
      dx[e] = base + (lora_dropout_keep(key, e, threshold) ? inv_keep * lora : 0.0);
    }
}

}  // namespace qk::cpu
