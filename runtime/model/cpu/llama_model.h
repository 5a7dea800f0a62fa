// The Llama-family model on the CPU in fp32 with LoRA adapters: the ground truth the CUDA model is
// tested against, and the trainer of tiny models for tests and the demo. A CUDA model will offer
// the same interface (load, adapters, forward -> ForwardResult, backward, LoRA tensors by PEFT name).
//
// Usage: load (base weights, optionally NF4), init_lora or load_adapter, then per micro-step
// forward(batch) and backward(); gradients accumulate until zero_grad(). evaluate() runs a forward
// that keeps nothing (e.g. the reference pass of DPO with the adapter switched off).
//
// Full fine-tuning (every base weight trainable, fp32; exclusive with LoRA, refused on an NF4 base):
//   CpuLlamaModel m = CpuLlamaModel::load(dir);   // no init_lora / load_adapter
//   m.set_full_finetune(true);                    // allocates a zero fp32 gradient per weight
//   std::vector<LoraTensorRef> ts = m.trainable_tensors();  // HF names; value and grad spans stay
//                                                 // valid while the model lives and the mode stays on
//   HostOptimizer opt(kind, hyper, ts);           // updates the values in place
//   per step: m.zero_grad(); per micro-batch m.forward(b); m.backward(); then opt.step(...)
//   m.save_weights(out_dir);                      // config.json + model.safetensors (fp32)
// With tied embeddings the one tensor model.embed_tokens.weight carries the embedding's and the LM
// head's gradients together.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/model/base_weights.h"
#include "runtime/model/batch.h"
#include "runtime/model/cpu/full_grads.h"
#include "runtime/model/cpu/llama_block.h"
#include "runtime/model/lora_config.h"
#include "runtime/model/peft_adapter.h"

namespace qtrain::model {

struct SequenceLogprob {
  int64_t row = 0;
  int32_t segment = 0;
  double logprob = 0.0;  // sum of log p over the segment's unmasked labels
  int64_t tokens = 0;    // its unmasked labels
};

struct ForwardResult {
  double loss = 0.0;  // mean of -log p over the batch's unmasked labels (0 when there are none)
  int64_t label_tokens = 0;
  std::vector<float> token_logprobs;       // [B, T], 0 where the label is -100
  std::vector<SequenceLogprob> sequences;  // batch_sequences(batch) order
};

// One trainable tensor: a LoRA tensor named by its PEFT key, or in full fine-tuning a base weight
// named by its HF key.
struct LoraTensorRef {
  std::string name;
  std::vector<int64_t> shape;
  std::span<float> value;
  std::span<float> grad;
};

class CpuLlamaModel {
 public:
  explicit CpuLlamaModel(BaseWeights base);
  static CpuLlamaModel load(const std::string& dir, const LoadOptions& opt = {});

  const io::ModelConfig& config() const { return base_.config; }
  const BaseWeights& base() const { return base_; }

  // PEFT's initialization: A ~ U(-1/sqrt(in), 1/sqrt(in)) from a stream per tensor name, B = 0.
  void init_lora(const LoraConfig& lora, uint64_t seed);
  // Replaces the adapter with a PEFT folder's; every targeted layer must have both tensors with the
  // right shapes, and no other tensor may be present (BadInput naming the file otherwise).
  void load_adapter(const std::string& dir);
  void set_adapter(const PeftAdapter& adapter, const std::string& where);
  PeftAdapter adapter(const std::string& base_model_name = {}) const;
  void save_adapter(const std::string& dir, const std::string& base_model_name = {}) const;
  bool has_adapter() const { return has_adapter_; }
  const LoraConfig& lora_config() const { return lora_; }

  // Off: the base model alone (DPO's reference). forward + backward needs it on.
  void set_adapter_enabled(bool on) { adapter_enabled_ = on; }
  bool adapter_enabled() const { return adapter_enabled_; }
  // Dropout on the LoRA input applies in forward() while training; evaluate() never drops.
  void set_training(bool on) { training_ = on; }
  // The masks of the next forward() derive from this seed (and the layer and module); backward()
  // regenerates the same masks.
  void set_dropout_seed(uint64_t seed) { dropout_seed_ = seed; }

  ForwardResult forward(const Batch& batch);
  ForwardResult evaluate(const Batch& batch) const;
  // Hidden states after the final norm, [B x T, hidden], without dropout: times base().head()^T they
  // are the logits (greedy generation reads the last position's).
  std::vector<float> final_hidden(const Batch& batch) const;
  // Gradient of the mean loss of the last forward(), added into the LoRA gradients.
  void backward();
  // Gradient of sum_t dlogp[t] * token_logprobs[t] ([B, T]; masked entries are ignored).
  void backward(std::span<const float> dlogp);
  void zero_grad();

  // Layer by layer, modules in block order, A before B.
  std::vector<LoraTensorRef> lora_tensors();

  // Full fine-tuning: backward() also accumulates the fp32 gradient of every base weight (linear
  // weights and biases, norms, embedding, LM head). Turning it on allocates zero gradients (it is a
  // no-op when already on); off frees them. BadInput when an adapter is set (LoRA and full
  // fine-tuning are exclusive) or when the base was loaded from or through NF4.
  void set_full_finetune(bool on);
  bool full_finetune() const { return full_; }
  // What the optimizer updates: in full fine-tuning every base tensor by its HF name in the
  // checkpoint layout's order (llama_tensor_layout: embedding, per layer input_layernorm, q/k/v/o,
  // q/k/v biases, post_attention_layernorm, gate/up/down, then model.norm, lm_head when untied);
  // otherwise lora_tensors().
  std::vector<LoraTensorRef> trainable_tensors();
  // The current base weights as an HF model folder: config.json (torch_dtype "float32") and
  // model.safetensors, every tensor f32 whatever the source dtype (the CPU model holds fp32 and a
  // narrower copy would drop small updates). Tokenizer files are the caller's. Each file is written
  // to a temporary name and renamed. BadInput on an NF4-derived base (its weights are not an HF
  // float checkpoint of the source).
  void save_weights(const std::string& dir) const;

 private:
  struct Activations {
    Batch batch;
    std::vector<cpu::BlockActivations> blocks;
    std::vector<float> x_final, rstd_final, h_final, lse;
    uint64_t dropout_seed = 0;
    bool dropout = false;
    bool valid = false;
  };

  ForwardResult run_forward(const Batch& batch, bool dropout, uint64_t dropout_seed, Activations* keep) const;
  cpu::BlockLora block_lora(int64_t layer, bool dropout, uint64_t dropout_seed) const;

  BaseWeights base_;
  std::vector<float> inv_freq_;
  LoraConfig lora_;
  bool has_adapter_ = false;
  bool adapter_enabled_ = true;
  bool training_ = true;
  uint64_t dropout_seed_ = 0;
  std::vector<std::array<cpu::LoraAdapter, kNumProj>> adapters_;  // r == 0: none
  bool full_ = false;
  cpu::FullGrads full_grads_;  // allocated while full_ is on
  Activations acts_;
};

}  // namespace qtrain::model
