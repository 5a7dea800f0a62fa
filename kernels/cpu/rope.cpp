// CPU twin of kernels/cuda/rope.cu: the same fp32 angles, rotated in fp64. The bf16 and fp64 entry
// points share one template, so the finite-difference check covers what the kernel is compared with.
#include <cmath>

#include "qk/bf16_bits.h"
#include "qk/cpu_elem.h"
#include "qk/rope.h"

namespace qk::cpu {
namespace {

using elem::load;
using elem::store;

template <typename T>
void rotate(T* q, T* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads, const RopeFreqs& freqs,
            double sign) {
  const int d = freqs.head_dim, half = d / 2;
  QK_REQUIRE(d >= 2 && d % 2 == 0 && d <= kRopeMaxHeadDim, "bad head_dim in the frequency table");
  QK_REQUIRE(tokens >= 0 && heads >= 0 && kv_heads >= 0, "bad sizes");
  QK_REQUIRE(tokens == 0 || positions != nullptr, "null positions");
  QK_REQUIRE(tokens == 0 || heads == 0 || q != nullptr, "null q");
  QK_REQUIRE(tokens == 0 || kv_heads == 0 || k != nullptr, "null k");
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < half; ++j) {
      const double angle = rope_angle(positions[t], freqs.inv_freq[j]);
      const double c = std::cos(angle), s = sign * std::sin(angle);
      auto apply = [&](T* x, int count) {
        for (int h = 0; h < count; ++h) {
          T* row = x + (t * count + h) * d;
          const double a = load(row[j]), b = load(row[j + half]);
          store(row[j], a * c - b * s);
          store(row[j + half], b * c + a * s);
        }
      };
      apply(q, heads);
      apply(k, kv_heads);
    }
  }
}

}  // namespace

void rope_forward(uint16_t* q, uint16_t* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                  const RopeFreqs& freqs) {
  rotate(q, k, positions, tokens, heads, kv_heads, freqs, 1.0);
}
void rope_backward(uint16_t* dq, uint16_t* dk, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                   const RopeFreqs& freqs) {
  rotate(dq, dk, positions, tokens, heads, kv_heads, freqs, -1.0);
}
void rope_forward(double* q, double* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                  const RopeFreqs& freqs) {
  rotate(q, k, positions, tokens, heads, kv_heads, freqs, 1.0);
}
void rope_backward(double* dq, double* dk, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                   const RopeFreqs& freqs) {
  rotate(dq, dk, positions, tokens, heads, kv_heads, freqs, -1.0);
}

}  // namespace qk::cpu
