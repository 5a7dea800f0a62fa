// A micro-batch as every model backend takes it: B rows of T tokens, token-major [B, T] int32
// arrays. Packed rows hold several examples, told apart by segment ids: a token attends only to
// earlier tokens of its own segment, so attention never crosses an example boundary, and segment 0
// marks padding (attended by nothing, and it must carry no label). Labels are the next-token targets
// already shifted into place (-100 where no loss is taken). A "sequence" (for DPO's summed
// log-probabilities) is one segment of one row.
#pragma once
#include <cstdint>
#include <vector>

namespace qtrain::model {

inline constexpr int32_t kIgnoreLabel = -100;

struct Batch {
  int64_t rows = 0;  // B
  int64_t seq = 0;   // T
  std::vector<int32_t> input_ids;     // [B, T]
  std::vector<int32_t> position_ids;  // [B, T], restarting at 0 for each example of a packed row
  std::vector<int32_t> segment_ids;   // [B, T], >= 1 for real tokens, 0 for padding
  std::vector<int32_t> labels;        // [B, T], kIgnoreLabel where masked

  int64_t tokens() const { return rows * seq; }
};

// One segment of one row and where its tokens are.
struct SequenceSpan {
  int64_t row = 0;
  int32_t segment = 0;
  int64_t begin = 0;  // token index within the row
  int64_t end = 0;
};

// Throws BadInput ("batch: ...") on wrong sizes, ids outside [0, vocab), negative positions,
// labels outside [0, vocab) other than -100, a labelled padding token, or a segment that is not
// one contiguous run of its row.
void validate_batch(const Batch& b, int64_t vocab_size);

// The segments of every row, in row order then by position; padding is not a sequence.
std::vector<SequenceSpan> batch_sequences(const Batch& b);

// One row of a batch from a single unpacked example: positions 0.., segment 1, right-padded with
// `pad_id` to `seq` (padding has segment 0 and label -100). Labels are given already shifted.
void append_row(Batch& b, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels, int32_t pad_id);

}  // namespace qtrain::model
