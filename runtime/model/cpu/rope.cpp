// RoPE forward and backward (see rope.h).
#include "runtime/model/cpu/rope.h"

#include <cmath>

#include "csrc/core/error.h"
#include "qk/rope.h"

namespace qtrain::model::cpu {

std::vector<float> rope_inv_freqs(const io::ModelConfig& c, int64_t head_dim) {
  qk::RopeConfig rc;
  rc.theta = c.rope_theta;
  const std::string& type = c.rope_scaling.type;
  if (type == "llama3") {
    rc.llama3 = true;
    rc.factor = c.rope_scaling.factor;
    rc.low_freq_factor = c.rope_scaling.low_freq_factor;
    rc.high_freq_factor = c.rope_scaling.high_freq_factor;
    rc.original_max_position = static_cast<double>(c.rope_scaling.original_max_position_embeddings);
  } else if (type != "default" && !type.empty()) {
    throw_bad_input("config.json", "rope scaling type '" + type + "' is not supported (default or llama3)");
  }
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t j = 0; j < head_dim / 2; ++j)
    f[static_cast<size_t>(j)] = static_cast<float>(qk::rope_inv_freq(rc, static_cast<int>(j), static_cast<int>(head_dim)));
  return f;
}

namespace {
void rotate(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
            const float* inv_freq, float sign) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < half; ++j) {
      const float angle = qk::rope_angle(positions[t], inv_freq[j]);
      const float c = std::cos(angle);
      const float s = sign * std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * head_dim;
        const float a = v[j];
        const float b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
      }
    }
  }
}
}  // namespace

void rope_forward(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
                  const float* inv_freq) {
  rotate(x, positions, tokens, heads, head_dim, inv_freq, 1.0f);
}

void rope_backward(float* dx, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
                   const float* inv_freq) {
  rotate(dx, positions, tokens, heads, head_dim, inv_freq, -1.0f);
}

}  // namespace qtrain::model::cpu
