// Segments -> tokens -> shifted labels.
#include "csrc/data/example.h"

#include <algorithm>

#include "csrc/core/error.h"

namespace qtrain::data {

int64_t Example::num_targets() const {
  return std::count_if(labels.begin(), labels.end(), [](int32_t l) { return l != kIgnoreLabel; });
}

TokenizeResult tokenize_segments(const std::vector<text::Segment>& segments, const text::Tokenizer& tok,
                                 int64_t max_len) {
  QTRAIN_CHECK_INTERNAL(max_len > 0, "max_len must be positive");
  std::string full;
  std::vector<char> byte_train;
  for (const auto& s : segments) {
    full += s.text;
    byte_train.insert(byte_train.end(), s.text.size(), s.train ? 1 : 0);
  }
  const text::Encoding enc = tok.encode_with_offsets(full);
  const size_t n = enc.ids.size();
  std::vector<char> token_train(n, 0);
  for (size_t k = 0; k < n; ++k) {
    // A token that covers no byte belongs with the byte it starts at.
    const size_t b = std::min<size_t>(enc.begin[k], full.size());
    const size_t e = std::min<size_t>(std::max<size_t>(enc.end[k], enc.begin[k] + 1), full.size());
    for (size_t i = b; i < e && !token_train[k]; ++i) token_train[k] = byte_train[i];
  }
  TokenizeResult r;
  const size_t len = std::min<size_t>(n, static_cast<size_t>(max_len));
  r.truncated = n > len;
  r.example.input_ids.assign(enc.ids.begin(), enc.ids.begin() + static_cast<std::ptrdiff_t>(len));
  r.example.labels.assign(len, kIgnoreLabel);
  for (size_t i = 0; i + 1 < len; ++i)
    if (token_train[i + 1]) r.example.labels[i] = r.example.input_ids[i + 1];
  return r;
}

}  // namespace qtrain::data
