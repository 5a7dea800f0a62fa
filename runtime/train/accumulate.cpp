// Gradient accumulation over a group of micro-batches.
#include "runtime/train/accumulate.h"

#include <string>

#include "csrc/core/rng.h"

namespace qtrain::train {

uint64_t micro_dropout_seed(uint64_t seed, int64_t micro_step) {
  return Rng::for_stream(seed, "lora_dropout " + std::to_string(micro_step)).next_u64();
}

GroupResult forward_backward_group(model::CpuLlamaModel& m, const std::vector<model::Batch>& group, uint64_t seed,
                                   int64_t& micro_step) {
  GroupResult r;
  for (const model::Batch& b : group)
    for (int32_t l : b.labels) r.targets += l != model::kIgnoreLabel;
  double sum = 0.0;
  for (const model::Batch& b : group) {
    m.set_dropout_seed(micro_dropout_seed(seed, micro_step++));
    const model::ForwardResult f = m.forward(b);
    sum += f.loss * static_cast<double>(f.label_tokens);
    if (r.targets == 0 || f.label_tokens == 0) continue;
    const float w = -1.0f / static_cast<float>(r.targets);
    std::vector<float> dlogp(b.labels.size(), 0.0f);
    for (size_t i = 0; i < dlogp.size(); ++i) dlogp[i] = b.labels[i] == model::kIgnoreLabel ? 0.0f : w;
    m.backward(dlogp);
  }
  r.loss = r.targets ? sum / static_cast<double>(r.targets) : 0.0;
  return r;
}

}  // namespace qtrain::train
