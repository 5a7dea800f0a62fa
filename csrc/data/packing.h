// Sample packing: several examples share one row of at most sequence_len tokens, so short
// examples do not waste the row on padding. Best-fit decreasing: examples in order of decreasing
// length (ties by index) go to the fullest row that still has room, else to a new row. Fully
// deterministic; the rows' order is shuffled per epoch later, by the batch iterator.
#pragma once
#include <cstdint>
#include <vector>

#include "csrc/data/example.h"

namespace qtrain::data {

struct PackedRow {
  std::vector<uint32_t> examples;  // indices into the example list, in row order
  int64_t tokens = 0;
};

// Every non-empty example appears in exactly one row. Throws Internal when an example is longer than
// sequence_len (the datasets truncate, so that is a bug).
std::vector<PackedRow> pack_examples(const std::vector<Example>& examples, int64_t sequence_len);

}  // namespace qtrain::data
