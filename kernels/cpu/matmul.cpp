// CPU twin of kernels/cuda/matmul.cu: OpenBLAS sgemm in row-major terms.
#include "qk/matmul.h"

#include <cblas.h>

#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"

namespace qk::cpu {
namespace {

void check(const GemmShape& s) {
  QK_REQUIRE(s.m >= 0 && s.n >= 0 && s.k >= 0, "negative GEMM dimension");
}

std::vector<float> widen(const uint16_t* x, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(x[i]);
  return out;
}

}  // namespace

void matmul_f32(const GemmShape& s, float alpha, const float* a, const float* b, float beta, float* c) {
  check(s);
  if (s.m == 0 || s.n == 0) return;
  if (s.k == 0) {  // sgemm with k = 0 still scales C; keep that contract explicit
    for (size_t i = 0; i < static_cast<size_t>(s.m) * s.n; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const int lda = s.trans_a ? s.m : s.k;
  const int ldb = s.trans_b ? s.k : s.n;
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans, s.trans_b ? CblasTrans : CblasNoTrans, s.m, s.n,
              s.k, alpha, a, lda, b, ldb, beta, c, s.n);
}

void matmul_bf16_f32(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, float* c) {
  check(s);
  const auto fa = widen(a, static_cast<size_t>(s.m) * s.k);
  const auto fb = widen(b, static_cast<size_t>(s.k) * s.n);
  matmul_f32(s, alpha, fa.data(), fb.data(), beta, c);
}

void matmul_bf16(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, uint16_t* c) {
  check(s);
  const size_t mn = static_cast<size_t>(s.m) * s.n;
  std::vector<float> fc(mn, 0.0f);
  if (beta != 0.0f) fc = widen(c, mn);
  matmul_bf16_f32(s, alpha, a, b, beta, fc.data());
  for (size_t i = 0; i < mn; ++i) c[i] = f32_to_bf16_rn(fc[i]);
}

}  // namespace qk::cpu
