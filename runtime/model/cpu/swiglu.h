// SwiGLU on the CPU: a = silu(g) * u elementwise, with silu(g) = g * sigmoid(g).
#pragma once
#include <cstdint>

namespace qtrain::model::cpu {

void swiglu_forward(const float* g, const float* u, int64_t n, float* a);
// dg and du are written, not accumulated.
void swiglu_backward(const float* g, const float* u, const float* da, int64_t n, float* dg, float* du);

}  // namespace qtrain::model::cpu
