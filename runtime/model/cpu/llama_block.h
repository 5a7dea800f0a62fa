// One Llama decoder layer on the CPU in fp32, forward and hand-written backward:
//   h1 = rmsnorm(x) -> q, k, v (LoRA linears) -> RoPE -> causal segment-masked attention -> o_proj
//   x2 = x + attn;  h2 = rmsnorm(x2) -> gate, up -> SwiGLU -> down;  out = x2 + mlp
// The forward keeps every activation the backward needs (tiny models: no recomputation).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "runtime/model/base_weights.h"
#include "runtime/model/cpu/full_grads.h"
#include "runtime/model/cpu/lora_linear.h"

namespace qtrain::model::cpu {

struct BlockInputs {
  int64_t rows = 0;
  int64_t seq = 0;
  const int32_t* position_ids = nullptr;  // [rows * seq]
  const int32_t* segment_ids = nullptr;   // [rows * seq]
  const float* inv_freq = nullptr;        // [head_dim / 2]
};

struct BlockActivations {
  std::vector<float> x;             // layer input [n, hidden]
  std::vector<float> rstd1, h1;     // input norm
  std::vector<float> q, k, v;       // q and k after RoPE
  std::vector<float> probs;         // [rows, heads, seq, seq]
  std::vector<float> attn;          // attention output, o_proj's input
  std::vector<float> x2;            // after the attention residual
  std::vector<float> rstd2, h2;     // post-attention norm
  std::vector<float> g, u, act;     // MLP
  std::array<std::vector<float>, 7> xa;  // per Proj: drop(X) A^T
};

using BlockLora = std::array<LoraRun, 7>;        // per Proj
using BlockGrads = std::array<LoraAdapter*, 7>;  // per Proj; null where no adapter

// x [n, hidden] in, out [n, hidden] written (may not alias x).
void llama_block_forward(const io::ModelConfig& c, const LayerWeights& w, const BlockLora& lora,
                         const BlockInputs& in, const float* x, float* out, BlockActivations& acts);
// dout [n, hidden] in, dx [n, hidden] written; LoRA gradients accumulate, and so do the layer's
// base-weight gradients when `full` is given (full fine-tuning).
void llama_block_backward(const io::ModelConfig& c, const LayerWeights& w, const BlockLora& lora,
                          const BlockGrads& grads, const BlockInputs& in, const BlockActivations& acts,
                          const float* dout, float* dx, LayerGrads* full = nullptr);

}  // namespace qtrain::model::cpu
