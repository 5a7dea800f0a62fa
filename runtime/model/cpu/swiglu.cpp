// SwiGLU forward and backward (see swiglu.h).
#include "runtime/model/cpu/swiglu.h"

#include <cmath>

namespace qtrain::model::cpu {

void swiglu_forward(const float* g, const float* u, int64_t n, float* a) {
  for (int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    a[i] = g[i] * sig * u[i];
  }
}

void swiglu_backward(const float* g, const float* u, const float* da, int64_t n, float* dg, float* du) {
  for (int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    const float silu = g[i] * sig;
    du[i] = da[i] * silu;
    dg[i] = da[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
  }
}

}  // namespace qtrain::model::cpu
