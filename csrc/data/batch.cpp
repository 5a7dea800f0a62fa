// Batch assembly and the epoch iterator. The order of an epoch depends only on (seed, epoch), so a
// resumed run sees exactly the batches it would have seen.
#include "csrc/data/batch.h"

#include <algorithm>
#include <string>

#include "csrc/core/error.h"
#include "csrc/data/sft_dataset.h"

namespace qtrain::data {

Batch make_batch(const std::vector<Example>& examples, const std::vector<const std::vector<uint32_t>*>& rows,
                 const BatchOptions& opt) {
  Batch b;
  b.rows = static_cast<int64_t>(rows.size());
  for (const auto* row : rows) {
    int64_t n = 0;
    for (const uint32_t i : *row) n += static_cast<int64_t>(examples[i].input_ids.size());
    QTRAIN_CHECK_INTERNAL(n <= opt.sequence_len, "row longer than sequence_len");
    b.seq = std::max(b.seq, n);
  }
  if (opt.pad_to_sequence_len) b.seq = opt.sequence_len;
  const size_t cells = static_cast<size_t>(b.rows * b.seq);
  b.input_ids.assign(cells, opt.pad_id);
  b.labels.assign(cells, kIgnoreLabel);
  b.position_ids.assign(cells, 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    const size_t base = static_cast<size_t>(r * b.seq);
    std::vector<int32_t> seg = {0};
    int64_t targets = 0;
    size_t at = 0;
    for (const uint32_t i : *rows[static_cast<size_t>(r)]) {
      const Example& e = examples[i];
      for (size_t k = 0; k < e.input_ids.size(); ++k, ++at) {
        b.input_ids[base + at] = e.input_ids[k];
        b.labels[base + at] = e.labels[k];
        b.position_ids[base + at] = static_cast<int32_t>(k);
        targets += e.labels[k] != kIgnoreLabel ? 1 : 0;
      }
      seg.push_back(static_cast<int32_t>(at));
    }
    b.segments.push_back(std::move(seg));
    b.lengths.push_back(static_cast<int32_t>(at));
    b.targets.push_back(targets);
    b.total_targets += targets;
  }
  return b;
}

BatchIterator::BatchIterator(const std::vector<Example>& examples, const BatchOptions& opt)
    : examples_(examples), opt_(opt) {
  QTRAIN_CHECK_INTERNAL(opt.micro_batch_size > 0 && opt.sequence_len > 0, "bad batch options");
  if (opt.packing) {
    for (auto& row : pack_examples(examples, opt.sequence_len)) units_.push_back(std::move(row.examples));
  } else {
    for (uint32_t i = 0; i < examples.size(); ++i) units_.push_back({i});
  }
}

int64_t BatchIterator::batches_per_epoch() const {
  return (rows_per_epoch() + opt_.micro_batch_size - 1) / opt_.micro_batch_size;
}

const std::vector<uint32_t>& BatchIterator::epoch_order() {
  if (order_epoch_ != pos_.epoch) {
    order_.resize(units_.size());
    for (uint32_t i = 0; i < order_.size(); ++i) order_[i] = i;
    if (opt_.shuffle) seeded_shuffle(order_, opt_.seed, "epoch " + std::to_string(pos_.epoch));
    order_epoch_ = pos_.epoch;
  }
  return order_;
}

Batch BatchIterator::next() {
  if (units_.empty()) throw_bad_input("dataset", "no examples to make batches from");
  const auto& order = epoch_order();
  const size_t first = static_cast<size_t>(pos_.index * opt_.micro_batch_size);
  const size_t last = std::min(order.size(), first + static_cast<size_t>(opt_.micro_batch_size));
  std::vector<const std::vector<uint32_t>*> rows;
  for (size_t k = first; k < last; ++k) rows.push_back(&units_[order[k]]);
  Batch b = make_batch(examples_, rows, opt_);
  if (++pos_.index >= batches_per_epoch()) pos_ = {pos_.epoch + 1, 0};
  return b;
}

void BatchIterator::seek(const BatchPosition& pos) {
  if (pos.epoch < 0 || pos.index < 0 || pos.index >= std::max<int64_t>(1, batches_per_epoch()))
    throw_bad_input("checkpoint", "data position (epoch " + std::to_string(pos.epoch) + ", batch " +
                                      std::to_string(pos.index) + ") does not fit this dataset of " +
                                      std::to_string(batches_per_epoch()) + " batches per epoch");
  pos_ = pos;
}

}  // namespace qtrain::data
