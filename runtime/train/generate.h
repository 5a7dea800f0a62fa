// Greedy decoding with the CPU model, for the demo and quick checks: each new token is the argmax
// of the logits at the last position. The whole sequence is recomputed for every token (no KV
// cache): fine for tiny models, quadratic for real ones.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "csrc/text/tokenizer.h"
#include "runtime/model/cpu/llama_model.h"

namespace qtrain::train {

// The new tokens (without the prompt), stopping after eos_id (included) or max_new_tokens, or
// when the sequence reaches max_positions (0: the model's max_position_embeddings).
std::vector<int32_t> generate_greedy(const model::CpuLlamaModel& m, const std::vector<int32_t>& prompt,
                                     int64_t max_new_tokens, int32_t eos_id, int64_t max_positions = 0);

// Prompt text -> decoded completion text (special tokens skipped). The prompt is encoded with BOS
// as the tokenizer adds it and no EOS, as training examples begin.
std::string generate_text(const model::CpuLlamaModel& m, const text::Tokenizer& tok, const std::string& prompt,
                          int64_t max_new_tokens);

}  // namespace qtrain::train
