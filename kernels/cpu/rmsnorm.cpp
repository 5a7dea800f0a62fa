// CPU twin of kernels/cuda/rmsnorm.cu: plain loops with fp64 statistics. The bf16 entry points and
// the fp64 ones (for the finite-difference check) share one template, so the check covers the code
// the CUDA kernels are compared against.
#include "qk/rmsnorm.h"

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/cpu_elem.h"
#include "qk/error.h"

namespace qk::cpu {
namespace {

using elem::load;
using elem::store;
void check_sizes(int64_t rows, int64_t cols) { QK_REQUIRE(rows >= 0 && cols > 0, "bad sizes"); }

// h (when r is given) receives x + r rounded to T, and the norm runs on that rounded value, as a
// bf16 model computes it.
template <typename T, typename S>
void forward(const T* x, const T* r, const T* w, T* h, T* y, S* rstd, int64_t rows, int64_t cols, double eps) {
  check_sizes(rows, cols);
  QK_REQUIRE(rows == 0 || (x != nullptr && w != nullptr && y != nullptr), "null pointer");
  QK_REQUIRE((r == nullptr) == (h == nullptr), "the residual form needs both r and h");
  std::vector<double> v(static_cast<size_t>(cols));
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t k = i * cols + c;
      double a = load(x[k]);
      if (r != nullptr) {
        store(h[k], a + load(r[k]));
        a = load(h[k]);
      }
      v[static_cast<size_t>(c)] = a;
      ss += a * a;
    }
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
    if (rstd != nullptr) store(rstd[i], inv);
    for (int64_t c = 0; c < cols; ++c) store(y[i * cols + c], v[static_cast<size_t>(c)] * inv * load(w[c]));
  }
}

template <typename T, typename S>
void backward(const T* dy, const T* x, const T* w, const S* rstd, const T* dres, T* dx, S* dw, int64_t rows,
              int64_t cols) {
  check_sizes(rows, cols);
  QK_REQUIRE(rows == 0 || (dy != nullptr && x != nullptr && w != nullptr && rstd != nullptr && dx != nullptr),
             "null pointer");
  std::vector<double> dw_sum(static_cast<size_t>(cols), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const double inv = rstd[i];
    double dot = 0;
    for (int64_t c = 0; c < cols; ++c) dot += load(dy[i * cols + c]) * load(w[c]) * load(x[i * cols + c]);
    const double coef = inv * inv * dot / static_cast<double>(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t k = i * cols + c;
      const double xv = load(x[k]), g = load(dy[k]);
      double d = inv * (g * load(w[c]) - xv * coef);
      if (dres != nullptr) d += load(dres[k]);
      store(dx[k], d);
      dw_sum[static_cast<size_t>(c)] += g * xv * inv;
    }
  }
  if (dw != nullptr)
    for (int64_t c = 0; c < cols; ++c) store(dw[c], load(dw[c]) + dw_sum[static_cast<size_t>(c)]);
}

}  // namespace

void rmsnorm_forward(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd, int64_t rows, int64_t cols,
                     float eps) {
  forward<uint16_t, float>(x, nullptr, w, nullptr, y, rstd, rows, cols, eps);
}

void residual_rmsnorm_forward(const uint16_t* x, const uint16_t* r, const uint16_t* w, uint16_t* h, uint16_t* y,
                              float* rstd, int64_t rows, int64_t cols, float eps) {
  QK_REQUIRE(rows == 0 || (r != nullptr && h != nullptr), "null pointer");
  forward<uint16_t, float>(x, r, w, h, y, rstd, rows, cols, eps);
}

void rmsnorm_backward(const uint16_t* dy, const uint16_t* x, const uint16_t* w, const float* rstd,
                      const uint16_t* dres, uint16_t* dx, float* dw, int64_t rows, int64_t cols) {
  backward(dy, x, w, rstd, dres, dx, dw, rows, cols);
}

void rmsnorm_forward(const double* x, const double* w, double* y, double* rstd, int64_t rows, int64_t cols,
                     double eps) {
  forward<double, double>(x, nullptr, w, nullptr, y, rstd, rows, cols, eps);
}

void rmsnorm_backward(const double* dy, const double* x, const double* w, const double* rstd, const double* dres,
                      double* dx, double* dw, int64_t rows, int64_t cols) {
  backward(dy, x, w, rstd, dres, dx, dw, rows, cols);
}

}  // namespace qk::cpu
