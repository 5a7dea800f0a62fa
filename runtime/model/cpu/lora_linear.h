// A frozen linear layer with an optional LoRA adapter, on the CPU in fp32 (DESIGN.md, "Fused LoRA
// linear"): Y = X W^T + b + s (drop(X) A^T) B^T. The forward keeps XA = drop(X) A^T [n, r]; the
// caller keeps X. The dropout mask is a pure function of (seed, element index), so the backward
// regenerates it instead of storing it, as the CUDA path will. Gradients accumulate into dA and dB;
// the base weight gets none.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model/base_weights.h"

namespace qtrain::model::cpu {

struct LoraAdapter {
  int64_t r = 0;
  std::vector<float> A;   // [r, in]
  std::vector<float> B;   // [out, r]
  std::vector<float> dA;  // like A
  std::vector<float> dB;  // like B
};

struct LoraRun {
  const LoraAdapter* lora = nullptr;  // null: the base layer alone
  float scale = 1.0f;
  float dropout = 0.0f;
  uint64_t dropout_seed = 0;
};

// Whether element `index` of the LoRA input survives dropout with probability p of dropping.
bool dropout_keep(uint64_t seed, uint64_t index, float p);

// y [n, out] is written. xa [n, r] is written when run.lora is set.
void lora_linear_forward(const LinearWeight& w, const LoraRun& run, const float* x, int64_t n, float* y, float* xa);
// dx [n, in] is written; run.lora's dA and dB are accumulated (its A and B are read).
void lora_linear_backward(const LinearWeight& w, const LoraRun& run, LoraAdapter* grads, const float* x,
                          const float* xa, const float* dy, int64_t n, float* dx);

}  // namespace qtrain::model::cpu
