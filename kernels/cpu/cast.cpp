// CPU twin of kernels/cuda/cast.cu.
#include "qk/cast.h"

#include "qk/bf16_bits.h"

namespace qk::cpu {

void cast_f32_to_bf16(const float* x, uint16_t* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = f32_to_bf16_rn(x[i]);
}

void cast_bf16_to_f32(const uint16_t* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}

}  // namespace qk::cpu
