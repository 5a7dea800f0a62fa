// The GPU backend of `qtrain train`: CudaLlamaModel (bf16 activations, NF4 or bf16 base, fp32 LoRA
// masters, one capped device arena) and the device optimizer (rt::Optimizer: fused AdamW, 8-bit
// states, paged states in managed memory). Gradient accumulation seeds each micro-batch's backward
// with 1 / (the group's target count), as the CPU backend does, so both compute the gradient of the
// same mean loss.
#pragma once
#include <cstdio>
#include <memory>

#include "runtime/train/train_backend.h"

namespace qtrain::train {

// Only in builds with CUDA (real or emulated); otherwise an Internal error.
// The model comes from model_dir (the run's base_model, or a full fine-tuning checkpoint).
std::unique_ptr<TrainBackend> make_cuda_backend(const config::RunConfig& cfg, std::FILE* log,
                                                const std::string& model_dir);

}  // namespace qtrain::train
