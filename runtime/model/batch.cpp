// Checks and helpers for model::Batch (see batch.h).
#include "runtime/model/batch.h"

#include <string>

#include "csrc/core/error.h"

namespace qtrain::model {

namespace {
[[noreturn]] void bad(const std::string& what, const std::string& where = {}) {
  throw_bad_input("batch", what, where);
}
std::string at(int64_t r, int64_t t) { return "row " + std::to_string(r) + ", token " + std::to_string(t); }
}  // namespace

void validate_batch(const Batch& b, int64_t vocab_size) {
  if (b.rows <= 0 || b.seq <= 0) bad("rows and seq must be positive");
  const size_t n = static_cast<size_t>(b.rows * b.seq);
  if (b.input_ids.size() != n || b.position_ids.size() != n || b.segment_ids.size() != n || b.labels.size() != n)
    bad("input_ids, position_ids, segment_ids and labels must each hold rows x seq = " + std::to_string(n) +
        " values");
  for (int64_t r = 0; r < b.rows; ++r) {
    std::vector<bool> seen;
    int32_t prev = -1;
    for (int64_t t = 0; t < b.seq; ++t) {
      const size_t i = static_cast<size_t>(r * b.seq + t);
      if (b.input_ids[i] < 0 || b.input_ids[i] >= vocab_size)
        bad("input id " + std::to_string(b.input_ids[i]) + " outside the vocabulary", at(r, t));
      if (b.position_ids[i] < 0) bad("negative position id", at(r, t));
      const int32_t s = b.segment_ids[i];
      if (s < 0) bad("negative segment id", at(r, t));
      const int32_t l = b.labels[i];
      if (l != kIgnoreLabel && (l < 0 || l >= vocab_size))
        bad("label " + std::to_string(l) + " outside the vocabulary", at(r, t));
      if (s == 0 && l != kIgnoreLabel) bad("a padding token (segment 0) carries a label", at(r, t));
      if (s != prev && s != 0) {
        if (static_cast<size_t>(s) < seen.size() && seen[static_cast<size_t>(s)])
          bad("segment " + std::to_string(s) + " is not one contiguous run", at(r, t));
        if (seen.size() <= static_cast<size_t>(s)) seen.resize(static_cast<size_t>(s) + 1, false);
        seen[static_cast<size_t>(s)] = true;
      }
      prev = s;
    }
  }
}

std::vector<SequenceSpan> batch_sequences(const Batch& b) {
  std::vector<SequenceSpan> out;
  for (int64_t r = 0; r < b.rows; ++r) {
    for (int64_t t = 0; t < b.seq;) {
      const int32_t s = b.segment_ids[static_cast<size_t>(r * b.seq + t)];
      int64_t e = t + 1;
      while (e < b.seq && b.segment_ids[static_cast<size_t>(r * b.seq + e)] == s) ++e;
      if (s != 0) out.push_back({r, s, t, e});
      t = e;
    }
  }
  return out;
}

void append_row(Batch& b, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels, int32_t pad_id) {
  if (ids.size() != labels.size()) bad("an example's ids and labels differ in length");
  if (b.seq <= 0 || static_cast<int64_t>(ids.size()) > b.seq)
    bad("an example of " + std::to_string(ids.size()) + " tokens does not fit seq " + std::to_string(b.seq));
  for (int64_t t = 0; t < b.seq; ++t) {
    const bool real = t < static_cast<int64_t>(ids.size());
    b.input_ids.push_back(real ? ids[static_cast<size_t>(t)] : pad_id);
    b.position_ids.push_back(real ? static_cast<int32_t>(t) : 0);
    b.segment_ids.push_back(real ? 1 : 0);
    b.labels.push_back(real ? labels[static_cast<size_t>(t)] : kIgnoreLabel);
  }
  ++b.rows;
}

}  // namespace qtrain::model
