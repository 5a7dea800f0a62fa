// Gradient accumulation bookkeeping.
#include "runtime/optim/grad_accum.h"

#include "csrc/core/error.h"

#if QTRAIN_HAS_CUDA
#include "qk/cuda_check.h"
#endif

namespace qtrain::rt {

GradAccumulator::GradAccumulator(std::vector<TrainableTensor> tensors, int micro_steps)
    : tensors_(std::move(tensors)), micro_steps_(micro_steps) {
  if (micro_steps < 1)
    throw_bad_input("config", "gradient_accumulation_steps must be at least 1", std::to_string(micro_steps));
}

void GradAccumulator::micro_step_done() {
  QTRAIN_CHECK_INTERNAL(done_ < micro_steps_, "more micro-steps than gradient_accumulation_steps");
  ++done_;
}

#if QTRAIN_HAS_CUDA
void GradAccumulator::zero(cudaStream_t stream) {
  for (const auto& t : tensors_)
    if (t.n > 0) QK_CUDA_CHECK(cudaMemsetAsync(t.grad, 0, static_cast<size_t>(t.n) * sizeof(float), stream));
  done_ = 0;
}
#endif

}  // namespace qtrain::rt
