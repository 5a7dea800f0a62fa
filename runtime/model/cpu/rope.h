// RoPE on the CPU in fp32, HF rotate_half layout, in place on x [tokens, heads, head_dim]. The
// inverse frequencies come from qk::rope_inv_freq (shared with the CUDA kernels), the angle is the
// fp32 product position * inv_freq as HF forms it, cos and sin are fp32.
#pragma once
#include <cstdint>
#include <vector>

#include "csrc/io/hf_config.h"

namespace qtrain::model::cpu {

// fp32 inverse frequency per pair (head_dim / 2 values), with llama3 scaling when the config has it.
// Rope types other than default and llama3 are BadInput.
std::vector<float> rope_inv_freqs(const io::ModelConfig& c, int64_t head_dim);

void rope_forward(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
                  const float* inv_freq);
// The transpose of the rotation: the rotation by -angle.
void rope_backward(float* dx, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
                   const float* inv_freq);

}  // namespace qtrain::model::cpu
