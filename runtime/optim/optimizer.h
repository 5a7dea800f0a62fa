// The optimizer of a run: AdamW over the trainable fp32 tensors (LoRA masters, or every weight in
// full fine-tuning), by the names axolotl uses:
//   adamw              fp32 m and v, torch's AdamW (qk/adamw.h);
//   adamw_8bit         bitsandbytes' 8-bit blockwise states (qk/adamw8bit.h);
//   paged_adamw_32bit  adamw's update with its states in managed memory;
//   paged_adamw_8bit   adamw_8bit's update with its states in managed memory.
// It owns the state buffers. Paged states are cudaMallocManaged and prefetched to the GPU before each
// update when the device reports concurrentManagedAccess, so the driver can evict them to host memory
// under pressure and the update still reads device-resident pages; without that attribute (Windows,
// some virtualized GPUs) it skips the prefetch and the driver migrates pages on first touch.
// A step: the global gradient norm (one small device-to-host copy), the clip factor
// min(1, max_grad_norm / (norm + 1e-6)) folded into grad_scale, then one fused launch over every
// tensor. The state saves to a safetensors file and loads back bit for bit, for exact resume.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

namespace qtrain::rt {

enum class OptimizerKind { AdamW, AdamW8bit, PagedAdamW32bit, PagedAdamW8bit };

// "adamw", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit" (axolotl's names; "adamw_torch" is
// accepted as adamw); anything else is a BadInput error naming the key `optimizer` and `file`.
OptimizerKind parse_optimizer_name(const std::string& name, const std::string& file = "config");
const char* optimizer_name(OptimizerKind kind);
bool optimizer_is_paged(OptimizerKind kind);
bool optimizer_is_8bit(OptimizerKind kind);

// Bytes of optimizer state for tensors of these sizes: 8 per element for 32-bit states; for 8-bit,
// tensors under 4096 elements keep 8 bytes per element and the rest 2 bytes plus 8 per 256-block.
size_t optimizer_state_bytes(OptimizerKind kind, const std::vector<int64_t>& sizes);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::AdamW;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float max_grad_norm = 0.0f;  // <= 0: no clipping
};

// One trainable tensor: device pointers to its fp32 master weights and gradient (the gradient
// buffer stays the same for the life of the optimizer), and the name checkpoints use.
struct TrainableTensor {
  std::string name;
  float* param = nullptr;
  float* grad = nullptr;
  int64_t n = 0;
};

struct StepInfo {
  float grad_norm = 0.0f;    // of grad * grad_scale, before clipping
  float clip_factor = 1.0f;  // 1 when not clipped
  int64_t step = 0;          // the step count after this update
};

#if QTRAIN_HAS_CUDA

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, std::vector<TrainableTensor> tensors, cudaStream_t stream = nullptr,
            int device = 0);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update with learning rate lr; grad_scale multiplies every gradient (1 / micro-steps for
  // accumulated gradients). Blocks once, for the gradient norm.
  StepInfo step(float lr, float grad_scale = 1.0f);
  // step() in two halves, for a trainer that checks the norm before updating (a non-finite norm
  // skips the step): the global L2 norm of the raw gradients (blocks once), then the update with
  // that norm deciding the clip factor.
  float grad_norm();
  StepInfo step_with_norm(float lr, float grad_scale, float raw_norm);

  int64_t step_count() const { return step_; }
  const OptimizerConfig& config() const { return config_; }
  size_t state_bytes() const { return state_bytes_; }
  // Whether paged states are prefetched before each update (false when not paged).
  bool prefetches() const { return prefetch_; }
  // One line for the log: kind, state size, where the states live.
  std::string describe() const;

  // The step count and every state buffer, to a safetensors file (atomic write), and back. load()
  // checks the optimizer kind, the tensor names and shapes; a mismatch is BadInput naming the file.
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  struct Impl;
  OptimizerConfig config_;
  std::vector<TrainableTensor> tensors_;
  cudaStream_t stream_;
  int device_;
  int64_t step_ = 0;
  size_t state_bytes_ = 0;
  bool prefetch_ = false;
  std::unique_ptr<Impl> impl_;
};

#endif

}  // namespace qtrain::rt
