// Where `qtrain train` runs: the model and its optimizer behind one interface, so that the SFT loop
// (sft_trainer.cpp) is the same on the CPU (fp32 CpuLlamaModel + host AdamW) and on a GPU (bf16
// CudaLlamaModel + device AdamW, states paged when the optimizer name says so).
//
// A step: forward_backward() over the micro-batches of one optimizer step (gradients zeroed
// first, the group's mean loss over all its target tokens), grad_norm() (raw, blocks), then
// update() with the clip factor, or nothing when the norm is not finite.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "runtime/model/batch.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/train/accumulate.h"

namespace qtrain::train {

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;

  virtual const char* name() const = 0;          // "cpu" or "cuda"
  virtual std::string describe() const = 0;      // one line for the log: device, base precision, memory
  virtual const io::ModelConfig& config() const = 0;
  virtual const model::LoraConfig& lora_config() const = 0;

  virtual void init_lora(const model::LoraConfig& lora, uint64_t seed) = 0;
  virtual void load_adapter(const std::string& dir) = 0;
  // adapter: full: every weight trainable (fp32 on the CPU; bf16 with fp32 masters on a GPU).
  virtual void enable_full_finetune() = 0;
  virtual bool full_finetune() const = 0;
  // After the adapter is in place: the optimizer of cfg (optimizer, betas, eps, weight decay).
  virtual void make_optimizer(const config::RunConfig& cfg) = 0;
  virtual std::string optimizer_description() const = 0;
  virtual int64_t trainable_parameters() const = 0;
  virtual size_t trainable_tensors() const = 0;

  // Zeroes the gradients, then adds the gradient of the group's mean loss; advances micro_step.
  virtual GroupResult forward_backward(const std::vector<model::Batch>& group, uint64_t seed,
                                       int64_t& micro_step) = 0;
  // Global L2 norm of the raw gradients.
  virtual double grad_norm() = 0;
  // One optimizer update; grad_scale multiplies every gradient (the clip factor).
  virtual void update(double lr, double grad_scale) = 0;
  // Forward only, no dropout: the loss and log-probs of a held-out batch.
  virtual model::ForwardResult evaluate(const model::Batch& batch) = 0;

  // What the run produces: the PEFT adapter, or in full fine-tuning the weights as an HF model
  // folder (config.json + model.safetensors in fp32; tokenizer files are the caller's).
  virtual void save_trained(const std::string& dir, const std::string& base_model_name) = 0;
  virtual void save_optimizer(const std::string& path) = 0;
  virtual void load_optimizer(const std::string& path) = 0;
  // For the progress line: resident host memory (CPU) or the device arena's peak (GPU).
  virtual uint64_t memory_bytes() const = 0;
};

// "cpu" or "cuda" for cfg.device: auto picks cuda when qtrain was built with CUDA and a GPU is
// visible. device: cuda without either is BadInput naming the run file and the key.
std::string resolve_device(const config::RunConfig& cfg);

// The backend with the base model loaded as the run asks (qlora: NF4 base; lora: as stored), no
// adapter yet. On the GPU the device arena is capped at gpu_memory_limit (else the free memory);
// running out of it is an OutOfMemory error that carries the run's memory plan and what to lower.
// model_dir: the weights to load (a full fine-tuning checkpoint when resuming one), by default
// cfg.base_model.
std::unique_ptr<TrainBackend> make_train_backend(const config::RunConfig& cfg, std::FILE* log,
                                                 const std::string& model_dir = {});

}  // namespace qtrain::train
