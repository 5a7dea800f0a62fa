// RMSNorm forward and backward (see rmsnorm.h).
#include "runtime/model/cpu/rmsnorm.h"

#include <cmath>

namespace qtrain::model::cpu {

void rmsnorm_forward(const float* x, const float* w, int64_t n, int64_t hidden, double eps, float* y, float* rstd) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = x + i * hidden;
    double ss = 0.0;
    for (int64_t j = 0; j < hidden; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(hidden) + eps));
    rstd[i] = r;
    // HF normalizes first and scales by w after: the same two fp32 roundings.
    for (int64_t j = 0; j < hidden; ++j) y[i * hidden + j] = w[j] * (xr[j] * r);
  }
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t n, int64_t hidden,
                      float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = x + i * hidden;
    const float* dyr = dy + i * hidden;
    const double r = rstd[i];
    // y_j = w_j x_j r, r = (mean(x^2) + eps)^(-1/2), dr/dx_k = -r^3 x_k / hidden
    double dot = 0.0;
    for (int64_t j = 0; j < hidden; ++j) dot += static_cast<double>(dyr[j]) * w[j] * xr[j];
    const double c = dot * r * r * r / static_cast<double>(hidden);
    for (int64_t j = 0; j < hidden; ++j)
      dx[i * hidden + j] = static_cast<float>(static_cast<double>(dyr[j]) * w[j] * r - c * xr[j]);
  }
}

}  // namespace qtrain::model::cpu
