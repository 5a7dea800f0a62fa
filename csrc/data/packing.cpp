// Best-fit-decreasing packing with a set of (room left, row) pairs: O(n log n).
#include "csrc/data/packing.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "csrc/core/error.h"

namespace qtrain::data {

std::vector<PackedRow> pack_examples(const std::vector<Example>& examples, int64_t sequence_len) {
  QTRAIN_CHECK_INTERNAL(sequence_len > 0, "sequence_len must be positive");
  std::vector<uint32_t> order(examples.size());
  std::iota(order.begin(), order.end(), 0u);
  auto len = [&](uint32_t i) { return static_cast<int64_t>(examples[i].input_ids.size()); };
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return len(a) > len(b); });
  std::vector<PackedRow> rows;
  std::set<std::pair<int64_t, size_t>> room;  // (tokens still free, row index)
  for (const uint32_t i : order) {
    const int64_t n = len(i);
    QTRAIN_CHECK_INTERNAL(n <= sequence_len, "example longer than sequence_len");
    if (n == 0) continue;
    auto it = room.lower_bound({n, 0});
    size_t r;
    if (it == room.end()) {
      r = rows.size();
      rows.emplace_back();
    } else {
      r = it->second;
      room.erase(it);
    }
    rows[r].examples.push_back(i);
    rows[r].tokens += n;
    if (rows[r].tokens < sequence_len) room.insert({sequence_len - rows[r].tokens, r});
  }
  return rows;
}

}  // namespace qtrain::data
