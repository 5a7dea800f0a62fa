// Offsets to per-token segment ids; ids, labels and positions are copied as they are.
#include "runtime/train/batch_convert.h"

#include "csrc/core/error.h"

namespace qtrain::train {

model::Batch to_model_batch(const data::Batch& b) {
  model::Batch m;
  m.rows = b.rows;
  m.seq = b.seq;
  m.input_ids = b.input_ids;
  m.position_ids = b.position_ids;
  m.labels = b.labels;
  m.segment_ids.assign(b.input_ids.size(), 0);
  QTRAIN_CHECK_INTERNAL(b.segments.size() == static_cast<size_t>(b.rows), "one segment list per row");
  for (int64_t r = 0; r < b.rows; ++r) {
    const auto& seg = b.segments[static_cast<size_t>(r)];
    for (size_t k = 0; k + 1 < seg.size(); ++k) {
      for (int32_t t = seg[k]; t < seg[k + 1]; ++t)
        m.segment_ids[static_cast<size_t>(r * b.seq + t)] = static_cast<int32_t>(k + 1);
    }
  }
  return m;
}

}  // namespace qtrain::train
