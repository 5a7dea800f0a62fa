// The Llama-family LoRA model on the GPU (bf16 activations, fp32 accumulation
// and LoRA masters), with CpuLlamaModel's interface where it makes sense so the
// two can be compared on the same inputs: load, init_lora / load_adapter,
// forward(batch) -> loss, token log-probs and per-sequence sums, backward() ->
// fp32 LoRA gradients, set_adapter_enabled, lora_tensors (device pointers
// here). Full fine-tuning (set_full_finetune) trains every weight instead.
//
// Memory: everything comes from one DeviceArena (options.arena_bytes, the run's
// gpu_memory_limit): base weights and the adapter once, then each step's
// activations and workspaces above a mark that the next forward releases; no
// cudaMalloc inside a step. Activation checkpointing keeps only each layer's
// input and recomputes the layer in backward (the same kernels on the same
// inputs: gradients equal the stored-activation run's bit for bit); with
// offload the kept inputs go to pinned host memory, copied on a side stream
// that overlaps compute.
#pragma once
#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device/stream.h"
#include "runtime/memory/arena.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/batch.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/model/cuda/device_lora.h"
#include "runtime/model/cuda/device_weights.h"
#include "runtime/model/cuda/full_weights.h"
#include "runtime/model/lora_config.h"
#include "runtime/model/peft_adapter.h"

namespace qtrain::model {

struct CudaModelOptions {
  size_t arena_bytes = size_t{1} << 30;  // the cap on all device memory of the model
  bool nf4 = false;                      // NF4 (double-quantized) base weights instead of bf16
  bool checkpointing = false;            // keep layer inputs only, recompute in backward
  bool offload = false;                  // with checkpointing: kept inputs in pinned host memory
  int64_t lm_head_chunk_tokens = 1024;
  int device = 0;
};

class CudaLlamaModel {
 public:
  CudaLlamaModel(BaseWeights base, const CudaModelOptions& opt = {});
  ~CudaLlamaModel();
  CudaLlamaModel(const CudaLlamaModel&) = delete;
  CudaLlamaModel& operator=(const CudaLlamaModel&) = delete;
  // A bitsandbytes folder, or LoadOptions::quantize_nf4, gives an NF4 base
  // (quantized on the device from the checkpoint's floating weights).
  static std::unique_ptr<CudaLlamaModel> load(const std::string& dir, const LoadOptions& load = {},
                                              CudaModelOptions opt = {});

  const io::ModelConfig& config() const { return base_.config; }
  const CudaModelOptions& options() const { return opt_; }
  rt::DeviceArena& arena() { return *arena_; }
  cudaStream_t stream() const { return stream_.get(); }

  void init_lora(const LoraConfig& lora, uint64_t seed);
  void load_adapter(const std::string& dir);
  void set_adapter(const PeftAdapter& adapter, const std::string& where);
  PeftAdapter adapter() const;
  bool has_adapter() const { return lora_ != nullptr; }

  void set_adapter_enabled(bool on) { adapter_enabled_ = on; }
  bool adapter_enabled() const { return adapter_enabled_; }
  void set_training(bool on) { training_ = on; }
  void set_dropout_seed(uint64_t seed) { dropout_seed_ = seed; }
  // The backward of the next forward() seeds d(-log p) = 1 / n on each target token: n = 0 (the
  // default) is the batch's own target count (the gradient of its mean loss); gradient
  // accumulation passes the target count of the whole group, so that the summed gradients are
  // the gradient of the group's mean loss.
  void set_grad_denominator(int64_t n) { grad_denominator_ = n; }
  // Switchable between steps.
  void set_checkpointing(bool on, bool offload = false);

  ForwardResult forward(const Batch& batch);
  // Gradient of the mean loss of the last forward(), added into the LoRA
  // gradients.
  void backward();
  void zero_grad();

  // The trainable tensors (device fp32 masters and gradients),
  // CpuLlamaModel::lora_tensors' order.
  std::vector<cuda::DeviceLoraTensor> lora_tensors() const;
  // After an optimizer step on the fp32 masters: the bf16 copies the kernels
  // read.
  void refresh_lora_bf16();
  // Host copies of every trainable tensor's gradient, by name.
  std::vector<std::pair<std::string, std::vector<float>>> lora_grads_host() const;

  // Full fine-tuning instead of LoRA (CpuLlamaModel's interface): every weight trainable, with fp32
  // masters (from the loaded fp32 values) and zero fp32 gradients beside the bf16 weights the kernels
  // read (full_weights.h); backward() then adds the gradient of every weight. On when already on is
  // a no-op; off frees masters and gradients (the bf16 weights keep their values). BadInput with an
  // adapter set (LoRA and full fine-tuning are exclusive) or on an NF4 base.
  void set_full_finetune(bool on);
  bool full_finetune() const { return full_ != nullptr; }
  const cuda::FullWeights* full_weights() const { return full_.get(); }
  // The trainable tensors by HF name ("model.layers.0.self_attn.q_proj.weight"), in the HF layout
  // order (csrc/io/llama_layout.h): device fp32 masters and gradients, views into one buffer each.
  std::vector<cuda::DeviceLoraTensor> full_tensors() const;
  // After an optimizer step on the masters: bf16 weights = cast(masters).
  void refresh_full_bf16();
  // Every weight (the fp32 masters) on the host by HF name, in the HF layout order.
  std::vector<cuda::HostTensor> full_weights_host() const;
  // The masters as an HF model folder: config.json (torch_dtype "float32") and model.safetensors
  // (f32), each written to a temporary name and renamed; tokenizer files are the caller's.
  void save_weights(const std::string& dir) const;

  // Whichever mode is on: LoRA's tensors or every weight; the bf16 refresh; host gradients.
  std::vector<cuda::DeviceLoraTensor> trainable_tensors() const;
  void refresh_bf16();
  std::vector<std::pair<std::string, std::vector<float>>> grads_host() const;

 private:
  struct Step;
  void release_step();

  BaseWeights base_;
  CudaModelOptions opt_;
  rt::Stream stream_, copy_stream_;
  rt::Blas blas_;
  std::unique_ptr<rt::DeviceArena> arena_;
  cuda::DeviceWeights weights_;
  std::unique_ptr<cuda::DeviceLora> lora_;
  std::unique_ptr<cuda::FullWeights> full_;
  void* one_ = nullptr;      // device bf16 1.0
  size_t weights_mark_ = 0;  // arena end of the base weights
  size_t step_mark_ = 0;     // arena end of weights + adapter (or full fine-tuning's masters)
  bool adapter_enabled_ = true;
  bool training_ = true;
  uint64_t dropout_seed_ = 0;
  int64_t grad_denominator_ = 0;
  std::unique_ptr<Step> step_;
  void* pinned_ = nullptr;  // offloaded layer inputs
  size_t pinned_bytes_ = 0;
  cudaEvent_t events_[4] = {};
};

}  // namespace qtrain::model
#endif
