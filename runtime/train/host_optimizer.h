// The optimizer of the CPU trainer: AdamW with fp32 states, or bitsandbytes-style 8-bit blockwise
// states, over the model's LoRA tensors in host memory, through the qk::cpu twins of the GPU
// kernels. The paged_ names behave like their unpaged twins here: paging is a device-memory matter.
// Its whole state (step count and every moment, bit for bit) saves to and loads from one
// safetensors file, so a resumed run continues exactly.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/cpu/llama_model.h"

namespace qtrain::train {

enum class OptimizerKind { AdamW, AdamW8bit };

// adamw, paged_adamw_32bit -> AdamW; adamw_8bit, paged_adamw_8bit -> AdamW8bit (the run config has
// already mapped the aliases). Anything else: BadInput naming `source` and the key optimizer.
OptimizerKind parse_optimizer_kind(const std::string& name, const std::string& source);
const char* optimizer_kind_name(OptimizerKind kind);

struct OptimizerHyper {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class HostOptimizer {
 public:
  // `tensors` point into the model, which must outlive the optimizer and keep its buffers in place.
  HostOptimizer(OptimizerKind kind, const OptimizerHyper& hyper, std::vector<model::LoraTensorRef> tensors);

  // One update of every tensor from its gradient times grad_scale (clipping), at learning rate lr.
  void step(double lr, double grad_scale);
  int64_t steps() const { return steps_; }
  OptimizerKind kind() const { return kind_; }

  // Every state tensor plus the step count; written atomically.
  void save(const std::string& path) const;
  // The state saved by save() for the same tensors (names, shapes, kind); BadInput naming the file
  // otherwise.
  void load(const std::string& path);

 private:
  struct State {
    std::vector<float> m, v;             // fp32 states (AdamW, or a small tensor of AdamW8bit)
    std::vector<uint8_t> q1, q2;         // 8-bit codes
    std::vector<float> absmax1, absmax2; // one per 256-block
  };

  OptimizerKind kind_;
  OptimizerHyper hyper_;
  std::vector<model::LoraTensorRef> tensors_;
  std::vector<State> states_;
  int64_t steps_ = 0;
};

}  // namespace qtrain::train
