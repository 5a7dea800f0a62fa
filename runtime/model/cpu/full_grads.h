// Gradients of the base weights for full fine-tuning on the CPU (every weight trainable, fp32): the
// buffers, shaped like BaseWeights, and the weight-gradient pieces the backward adds into them. The
// input-gradient side of each op is unchanged (lora_linear_backward, rmsnorm_backward,
// lm_logprobs_backward); these functions only add dW terms, accumulating until zeroed.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/model/base_weights.h"

namespace qtrain::model::cpu {

struct LinearGrads {
  std::vector<float> weight;  // [out, in]
  std::vector<float> bias;    // [out] or empty, as the layer's bias
};

struct LayerGrads {
  std::vector<float> input_norm;
  std::vector<float> post_norm;
  LinearGrads proj[kNumProj];  // indexed by Proj
  LinearGrads& operator[](Proj p) { return proj[static_cast<int>(p)]; }
};

struct FullGrads {
  std::vector<float> embed;       // with tied embeddings also the LM head's gradient
  std::vector<LayerGrads> layers;
  std::vector<float> final_norm;
  std::vector<float> lm_head;     // empty when tied
  // Where the LM head's gradient goes: lm_head, or embed when tied.
  float* head(bool tied) { return tied ? embed.data() : lm_head.data(); }
};

// Zero gradients shaped like `w`.
FullGrads make_full_grads(const BaseWeights& w);
void zero_full_grads(FullGrads& g);

// dW += dY^T X and db += column sums of dY (when the layer has a bias); x [n, in], dy [n, out].
void linear_weight_grad(const LinearWeight& w, const float* x, const float* dy, int64_t n, LinearGrads& g);
// RMSNorm y = w * (x * rstd): dw_j += sum_i dy_ij * (x_ij * rstd_i), summed in double.
void rmsnorm_weight_grad(const float* x, const float* rstd, const float* dy, int64_t n, int64_t hidden, float* dw);
// The embedding lookup: row ids[t] of dembed += dx[t] (dx [n, hidden]).
void embedding_grad(const int32_t* ids, const float* dx, int64_t n, int64_t hidden, float* dembed);

// One trainable tensor of the base model by its HF name, with its value and gradient.
struct BaseTensorRef {
  std::string name;
  std::vector<int64_t> shape;
  std::span<float> value;
  std::span<float> grad;
};

// Every tensor of the HF checkpoint layout in its order (embedding; per layer input_layernorm, q/k/v/o
// weight and bias, post_attention_layernorm, gate/up/down; model.norm; lm_head when untied).
// Throws Internal when a buffer does not match the layout.
std::vector<BaseTensorRef> base_tensor_refs(BaseWeights& w, FullGrads& g);

// The same tensors read-only, without gradients (for writing a checkpoint).
struct BaseTensorView {
  std::string name;
  std::vector<int64_t> shape;
  std::span<const float> value;
};
std::vector<BaseTensorView> base_tensor_views(const BaseWeights& w);

}  // namespace qtrain::model::cpu
