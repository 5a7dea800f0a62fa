// The attention window a model runs with, from its config: Mistral's sliding_window (a query sees at
// most that many keys ending at itself, within its example), 0 for full causal attention. Qwen2
// windows only its layers from max_window_layers on, which qtrain does not model, so a Qwen2 config
// with use_sliding_window is refused rather than run with the wrong mask.
#pragma once
#include <cstdint>

#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"

namespace qtrain::model {

inline int64_t attention_window(const io::ModelConfig& c) {
  if (!c.sliding_window) return 0;
  if (c.architecture == io::Architecture::Qwen2)
    throw_bad_input("config.json", "use_sliding_window on Qwen2 (a window on some layers only) is not supported");
  return *c.sliding_window;
}

}  // namespace qtrain::model
