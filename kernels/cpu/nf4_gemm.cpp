// CPU twin of kernels/cuda/nf4_gemm.cu: the weight dequantized to bf16 exactly as the fused kernel does
// it in shared memory (qk::cpu::nf4_dequantize_bf16), then the OpenBLAS GEMM of qk::cpu::matmul_bf16.
#include "qk/nf4_gemm.h"

#include <vector>

#include "qk/error.h"
#include "qk/matmul.h"

namespace qk::cpu {
namespace {

std::vector<uint16_t> dequantized(const Nf4GemmWeight& w) {
  QK_REQUIRE(w.out > 0 && w.in > 0, "NF4 GEMM needs a non-empty weight");
  QK_REQUIRE(w.packed != nullptr, "null pointer");
  QK_REQUIRE(w.absmax != nullptr || (w.nested.q != nullptr && w.nested.nested_absmax != nullptr),
             "NF4 weight without absmax");
  const size_t n = static_cast<size_t>(w.out) * static_cast<size_t>(w.in);
  std::vector<uint16_t> wd(n);
  if (w.is_nested()) nf4_dequantize_bf16(w.packed, w.nested, n, w.blocksize, wd.data());
  else nf4_dequantize_bf16(w.packed, w.absmax, n, w.blocksize, wd.data());
  return wd;
}

// Forward: Y[t, out] = X Wd^T; backward: dX[t, in] = dY Wd.
GemmShape shape(const Nf4GemmWeight& w, int t, bool backward) {
  QK_REQUIRE(t >= 0, "negative token count");
  return backward ? GemmShape{false, false, t, w.in, w.out} : GemmShape{false, true, t, w.out, w.in};
}

}  // namespace

void nf4_gemm_forward_bf16(const Nf4GemmWeight& w, const uint16_t* x, int t, uint16_t* y) {
  const GemmShape s = shape(w, t, false);
  matmul_bf16(s, 1.0f, x, dequantized(w).data(), 0.0f, y);
}

void nf4_gemm_forward_f32(const Nf4GemmWeight& w, const uint16_t* x, int t, float* y) {
  const GemmShape s = shape(w, t, false);
  matmul_bf16_f32(s, 1.0f, x, dequantized(w).data(), 0.0f, y);
}

void nf4_gemm_backward_bf16(const Nf4GemmWeight& w, const uint16_t* dy, int t, uint16_t* dx) {
  const GemmShape s = shape(w, t, true);
  matmul_bf16(s, 1.0f, dy, dequantized(w).data(), 0.0f, dx);
}

void nf4_gemm_backward_f32(const Nf4GemmWeight& w, const uint16_t* dy, int t, float* dx) {
  const GemmShape s = shape(w, t, true);
  matmul_bf16_f32(s, 1.0f, dy, dequantized(w).data(), 0.0f, dx);
}

}  // namespace qk::cpu
