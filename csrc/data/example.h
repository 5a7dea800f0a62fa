// One tokenized training example and how it is made from rendered text segments.
//
// Label convention (used by every consumer of csrc/data): input_ids and labels have the same
// length, and labels[i] is the target for position i, i.e. already shifted: labels[i] =
// input_ids[i + 1] when token i + 1 carries loss, else -100. The last label of an example is
// always -100, so no target ever reaches into a neighbouring example of a packed row.
#pragma once
#include <cstdint>
#include <vector>

#include "csrc/text/chat_template.h"
#include "csrc/text/tokenizer.h"

namespace qtrain::data {

inline constexpr int32_t kIgnoreLabel = -100;

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;
  int64_t num_targets() const;
};

struct TokenizeResult {
  Example example;
  bool truncated = false;  // longer than max_len and cut to it
};

// Tokenizes the concatenated segments once (so the tokens are those of the whole text) and marks
// a token as carrying loss when any byte it covers lies in a `train` segment. Cuts to max_len
// tokens (max_len > 0).
TokenizeResult tokenize_segments(const std::vector<text::Segment>& segments, const text::Tokenizer& tok,
                                 int64_t max_len);

}  // namespace qtrain::data
