// Seeded random base weights for a model config, without any file: benchmarks and tests that need a
// model of a real shape (llama2-7b, llama3-8b) but not its trained values. Linear weights and
// embeddings are uniform with standard deviation 0.02 (make-tiny's init scale, so activations stay
// in the same range as a trained model's), norm weights are 1. Every value depends only on the
// config and the seed, not on the number of threads.
#pragma once
#include <cstdint>

#include "csrc/io/hf_config.h"
#include "runtime/model/base_weights.h"

namespace qtrain::model {

// Throws BadInput when the config does not lay out (sizes < 1, heads not dividing hidden).
// `nf4_round_trip`: quantize every linear weight of the blocks to NF4 and back (marking them
// from_nf4), so the CPU model computes with the values a QLoRA base would hold.
BaseWeights random_base_weights(const io::ModelConfig& config, uint64_t seed, bool nf4_round_trip = false);

}  // namespace qtrain::model
