// RMSNorm on the CPU: y = x / sqrt(mean(x^2) + eps) * w over rows of `hidden`, fp32 values with the
// mean accumulated in double. Backward keeps no state but the per-row 1/rms.
#pragma once
#include <cstdint>

namespace qtrain::model::cpu {

// rstd [n] receives 1 / sqrt(mean(x^2) + eps) of each row.
void rmsnorm_forward(const float* x, const float* w, int64_t n, int64_t hidden, double eps, float* y, float* rstd);
// dx = d/dx of sum(dy * y); written, not accumulated.
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t n, int64_t hidden,
                      float* dx);

}  // namespace qtrain::model::cpu
