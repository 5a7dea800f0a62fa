// Greedy decoding: final hidden state of the last position times the LM head, argmax (the first
// index on ties, so the result is deterministic).
#include "runtime/train/generate.h"

#include "csrc/core/error.h"

namespace qtrain::train {

std::vector<int32_t> generate_greedy(const model::CpuLlamaModel& m, const std::vector<int32_t>& prompt,
                                     int64_t max_new_tokens, int32_t eos_id, int64_t max_positions) {
  if (prompt.empty()) throw_bad_input("generate", "empty prompt");
  const io::ModelConfig& c = m.config();
  const int64_t limit = max_positions > 0 ? max_positions : c.max_position_embeddings;
  const int64_t h = c.hidden_size, vocab = c.vocab_size;
  const std::vector<float>& head = m.base().head();
  std::vector<int32_t> seq = prompt, out;
  for (int64_t k = 0; k < max_new_tokens && static_cast<int64_t>(seq.size()) < limit; ++k) {
    model::Batch b;
    b.seq = static_cast<int64_t>(seq.size());
    const std::vector<int32_t> no_labels(seq.size(), model::kIgnoreLabel);
    model::append_row(b, seq, no_labels, 0);
    const std::vector<float> hidden = m.final_hidden(b);
    const float* last = hidden.data() + (static_cast<int64_t>(seq.size()) - 1) * h;
    int32_t best = 0;
    double best_logit = -1e300;
    for (int64_t v = 0; v < vocab; ++v) {
      const float* w = head.data() + v * h;
      double logit = 0.0;
      for (int64_t i = 0; i < h; ++i) logit += static_cast<double>(last[i]) * w[i];
      if (logit > best_logit) {
        best_logit = logit;
        best = static_cast<int32_t>(v);
      }
    }
    seq.push_back(best);
    out.push_back(best);
    if (best == eos_id) break;
  }
  return out;
}

std::string generate_text(const model::CpuLlamaModel& m, const text::Tokenizer& tok, const std::string& prompt,
                          int64_t max_new_tokens) {
  const std::vector<int32_t> ids = tok.encode(prompt, tok.add_bos_token(), false);
  std::vector<int32_t> out = generate_greedy(m, ids, max_new_tokens, tok.eos_id());
  // Ids the model knows but the tokenizer does not (the tiny model has spare embedding rows).
  std::erase_if(out, [&](int32_t id) { return id >= tok.vocab_size(); });
  return tok.decode(out, true);
}

}  // namespace qtrain::train
