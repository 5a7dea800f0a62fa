// The CPU backend of `qtrain train`: the fp32 CpuLlamaModel and the host AdamW (32- or 8-bit
// states) through the qk::cpu twins of the GPU kernels. Slow but exact: a resumed run reproduces
// an uninterrupted one bit for bit.
#pragma once
#include <memory>

#include "runtime/train/train_backend.h"

namespace qtrain::train {

// The model comes from model_dir (the run's base_model, or a full fine-tuning checkpoint).
std::unique_ptr<TrainBackend> make_cpu_backend(const config::RunConfig& cfg, const std::string& model_dir);

}  // namespace qtrain::train
