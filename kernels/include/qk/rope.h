// Rotary position embedding in the Hugging Face rotate_half layout, in place on q [T, heads, d]
// and k [T, kv_heads, d]: element j of a head pairs with element j + d/2, and with
// angle = position * inv_freq[j]
//   x'[j]       = x[j] cos - x[j + d/2] sin
//   x'[j + d/2] = x[j + d/2] cos + x[j] sin
// Positions come per token (int32) and restart at 0 for each example of a packed row. The backward
// is the same rotation by -angle (a rotation's transpose is its inverse).
// Inverse frequencies theta^(-2j/d), optionally with llama3 scaling (FORMATS.md), are computed on
// the host in double and passed to the kernel by value; angles are fp32 (position * inv_freq, as
// HF's fp32 matmul forms them) and cos/sin are fp32, with one rounding to bf16 at the end (HF
// rounds cos and sin to bf16 first: a rounding apart).
#pragma once
#include <cmath>
#include <cstdint>

#include "qk/error.h"
#include "qk/hd.h"

namespace qk {

struct RopeConfig {
  double theta = 10000.0;
  bool llama3 = false;  // rope_scaling.rope_type == "llama3"
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192.0;  // original_max_position_embeddings
};

// Inverse frequency of pair j (0 <= j < head_dim / 2), in double.
QK_HD double rope_inv_freq(const RopeConfig& c, int j, int head_dim) {
  const double inv_freq = pow(c.theta, -2.0 * j / head_dim);
  if (!c.llama3) return inv_freq;
  const double kTwoPi = 6.283185307179586476925286766559;
  const double wavelen = kTwoPi / inv_freq;
  if (wavelen > c.original_max_position / c.low_freq_factor) return inv_freq / c.factor;  // low frequencies
  if (wavelen < c.original_max_position / c.high_freq_factor) return inv_freq;            // high frequencies
  const double s = (c.original_max_position / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
  return (1.0 - s) * inv_freq / c.factor + s * inv_freq;
}

// The fp32 angle both the kernel and its twin rotate by.
QK_HD float rope_angle(int32_t position, float inv_freq) { return static_cast<float>(position) * inv_freq; }

constexpr int kRopeMaxHeadDim = 256;

// The table a launch takes by value (a kernel argument: no device buffer to manage).
struct RopeFreqs {
  int head_dim = 0;
  float inv_freq[kRopeMaxHeadDim / 2] = {};
};

inline RopeFreqs rope_freqs(const RopeConfig& c, int head_dim) {
  QK_REQUIRE(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= kRopeMaxHeadDim, "head_dim must be even, 2..256");
  QK_REQUIRE(c.theta > 1.0, "rope theta must exceed 1");
  QK_REQUIRE(!c.llama3 || (c.factor > 0 && c.low_freq_factor > 0 && c.high_freq_factor > c.low_freq_factor &&
                           c.original_max_position > 0),
             "bad llama3 rope scaling");
  RopeFreqs f;
  f.head_dim = head_dim;
  for (int j = 0; j < head_dim / 2; ++j) f.inv_freq[j] = static_cast<float>(rope_inv_freq(c, j, head_dim));
  return f;
}

}  // namespace qk

namespace qk::cpu {
// The references (fp64 rotation of the fp32 angle). k may be null when kv_heads == 0.
void rope_forward(uint16_t* q, uint16_t* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                  const RopeFreqs& freqs);
void rope_backward(uint16_t* dq, uint16_t* dk, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                   const RopeFreqs& freqs);
// fp64 versions, for the finite-difference check.
void rope_forward(double* q, double* k, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                  const RopeFreqs& freqs);
void rope_backward(double* dq, double* dk, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
                   const RopeFreqs& freqs);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// In place; head_dim is freqs.head_dim. k may be null when kv_heads == 0.
void rope_forward(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions, int64_t tokens, int heads,
                  int kv_heads, const RopeFreqs& freqs, cudaStream_t stream);
void rope_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, const int32_t* positions, int64_t tokens, int heads,
                   int kv_heads, const RopeFreqs& freqs, cudaStream_t stream);
}  // namespace qk
#endif
