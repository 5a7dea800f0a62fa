// Micro-batches for the trainer, and a deterministic, resumable iterator over epochs.
//
// A batch is B rows of T tokens, row-major. With packing a row holds several examples: position
// ids restart at 0 for each, and the row's segment offsets (cu_seqlens style: 0, end of the first
// example, ..., valid length) tell attention where each example ends, so no token attends across
// an example. Without packing a row is one example. Rows are padded to T with the pad id, label
// -100 and position 0; T is the longest row of the batch, or sequence_len with pad_to_sequence_len.
// Labels follow csrc/data/example.h: already shifted, -100 where there is no target.
#pragma once
#include <cstdint>
#include <vector>

#include "csrc/data/example.h"
#include "csrc/data/packing.h"

namespace qtrain::data {

struct Batch {
  int64_t rows = 0;  // B
  int64_t seq = 0;   // T
  std::vector<int32_t> input_ids;     // [B, T]
  std::vector<int32_t> labels;        // [B, T]
  std::vector<int32_t> position_ids;  // [B, T]
  std::vector<std::vector<int32_t>> segments;  // per row: 0 = o_0 < o_1 < ... < o_k = lengths[row]
  std::vector<int32_t> lengths;                // per row: valid (non-pad) tokens
  std::vector<int64_t> targets;                // per row: labels != -100
  int64_t total_targets = 0;
};

struct BatchOptions {
  int64_t sequence_len = 2048;
  int64_t micro_batch_size = 1;
  bool packing = false;
  bool pad_to_sequence_len = false;
  int32_t pad_id = 0;
  uint64_t seed = 0;
  bool shuffle = true;  // per-epoch shuffle of the rows; off for evaluation
};

// Where an iterator stands: the next batch is batch `index` of epoch `epoch`. Saved in checkpoints.
struct BatchPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const BatchPosition&) const = default;
};

// Builds one batch from rows, each a list of example indices.
Batch make_batch(const std::vector<Example>& examples, const std::vector<const std::vector<uint32_t>*>& rows,
                 const BatchOptions& opt);

class BatchIterator {
 public:
  // Keeps a reference to `examples`, which must outlive the iterator. Packs once when opt.packing.
  BatchIterator(const std::vector<Example>& examples, const BatchOptions& opt);

  // Rows per epoch (packed rows, or examples) and batches per epoch (the last may be smaller).
  int64_t rows_per_epoch() const { return static_cast<int64_t>(units_.size()); }
  int64_t batches_per_epoch() const;
  // The batch at the current position; then advances, into the next epoch after the last batch.
  Batch next();
  BatchPosition position() const { return pos_; }
  void seek(const BatchPosition& pos);

 private:
  const std::vector<uint32_t>& epoch_order();

  const std::vector<Example>& examples_;
  BatchOptions opt_;
  std::vector<std::vector<uint32_t>> units_;
  BatchPosition pos_;
  std::vector<uint32_t> order_;
  int64_t order_epoch_ = -1;
};

}  // namespace qtrain::data
