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
  QK_REQUIRE(s.row_stride_a() >= (s.trans_a ? s.m : s.k) && s.row_stride_b() >= (s.trans_b ? s.k : s.n) &&
                 s.row_stride_c() >= s.n,
             "a row stride is smaller than the row");
}

// Elements a strided [rows, cols] matrix spans in memory.
size_t span(int rows, int cols, int ld) { return rows == 0 || cols == 0 ? 0 : static_cast<size_t>(rows - 1) * ld + cols; }

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
    for (int i = 0; i < s.m; ++i)
      for (int j = 0; j < s.n; ++j) {
        float& x = c[static_cast<size_t>(i) * s.row_stride_c() + j];
        x = beta == 0.0f ? 0.0f : beta * x;
      }
    return;
  }
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans, s.trans_b ? CblasTrans : CblasNoTrans, s.m, s.n,
              s.k, alpha, a, s.row_stride_a(), b, s.row_stride_b(), beta, c, s.row_stride_c());
}

void matmul_bf16_f32(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, float* c) {
  check(s);
  const auto fa = widen(a, span(s.trans_a ? s.k : s.m, s.trans_a ? s.m : s.k, s.row_stride_a()));
  const auto fb = widen(b, span(s.trans_b ? s.n : s.k, s.trans_b ? s.k : s.n, s.row_stride_b()));
  matmul_f32(s, alpha, fa.data(), fb.data(), beta, c);
}

void matmul_bf16(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, uint16_t* c) {
  check(s);
  const int ldc = s.row_stride_c();
  std::vector<float> fc(span(s.m, s.n, ldc), 0.0f);
  if (beta != 0.0f) fc = widen(c, fc.size());
  matmul_bf16_f32(s, alpha, a, b, beta, fc.data());
  for (int i = 0; i < s.m; ++i)  // only the m x n block: the gaps between rows belong to someone else
    for (int j = 0; j < s.n; ++j) c[static_cast<size_t>(i) * ldc + j] = f32_to_bf16_rn(fc[static_cast<size_t>(i) * ldc + j]);
}

}  // namespace qk::cpu
