// Gradient accumulation over micro-steps: the backward passes add into the fp32 gradient buffers
// (so the buffers hold sums), and the optimizer divides by the number of micro-steps through its
// grad_scale instead of a pass over the gradients. This helper zeroes the buffers at the start of a
// step and counts micro-steps.
#pragma once
#include <vector>

#include "runtime/optim/optimizer.h"

namespace qtrain::rt {

class GradAccumulator {
 public:
  // micro_steps: gradient_accumulation_steps (>= 1).
  GradAccumulator(std::vector<TrainableTensor> tensors, int micro_steps);

  int micro_steps() const { return micro_steps_; }
  int done() const { return done_; }
  // True once every micro-step of the current optimizer step has been accumulated.
  bool ready() const { return done_ >= micro_steps_; }
  // The optimizer's grad_scale for the sums: 1 / (micro-steps accumulated).
  float grad_scale() const { return done_ > 0 ? 1.0f / static_cast<float>(done_) : 1.0f; }

  // After each micro-step's backward.
  void micro_step_done();
#if QTRAIN_HAS_CUDA
  // Zeroes every gradient buffer (asynchronously on `stream`) and restarts the count; call before
  // the first micro-step of each optimizer step.
  void zero(cudaStream_t stream);
#endif

 private:
  std::vector<TrainableTensor> tensors_;
  int micro_steps_;
  int done_ = 0;
};

}  // namespace qtrain::rt
