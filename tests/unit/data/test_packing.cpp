// Packing invariants (rows fit, every example exactly once, positions restart, no target crosses an
// example), padding, and the batch iterator's determinism and resumable position.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"
#include "csrc/data/batch.h"
#include "csrc/data/packing.h"

namespace qtrain::data {
namespace {

// Examples of odd lengths 2..37 with recognisable ids (example k's tokens are 1000 k + i) and a
// mask: the first third of each example is prompt.
std::vector<Example> make_examples(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<Example> v;
  for (size_t k = 0; k < n; ++k) {
    const size_t len = 2 + rng.below(36);
    Example e;
    for (size_t i = 0; i < len; ++i) e.input_ids.push_back(static_cast<int32_t>(1000 * k + i));
    e.labels.assign(len, kIgnoreLabel);
    for (size_t i = len / 3; i + 1 < len; ++i) e.labels[i] = e.input_ids[i + 1];
    v.push_back(e);
  }
  return v;
}

TEST(Packing, RowsFitAndHoldEveryExampleOnce) {
  const auto ex = make_examples(101, 1);
  const auto rows = pack_examples(ex, 64);
  std::multiset<uint32_t> seen;
  int64_t total = 0;
  for (const auto& r : rows) {
    int64_t n = 0;
    for (uint32_t i : r.examples) n += static_cast<int64_t>(ex[i].input_ids.size()), seen.insert(i);
    EXPECT_EQ(n, r.tokens);
    EXPECT_LE(n, 64);
    total += n;
  }
  EXPECT_EQ(seen.size(), ex.size());
  for (uint32_t i = 0; i < ex.size(); ++i) EXPECT_EQ(seen.count(i), 1u);
  // Best-fit decreasing wastes little: within one row of the lower bound.
  EXPECT_LE(static_cast<int64_t>(rows.size()), (total + 63) / 64 + 1);
  // Deterministic.
  const auto again = pack_examples(ex, 64);
  ASSERT_EQ(again.size(), rows.size());
  for (size_t r = 0; r < rows.size(); ++r) EXPECT_EQ(again[r].examples, rows[r].examples);
}

TEST(Packing, BatchInvariants) {
  const auto ex = make_examples(57, 2);
  BatchOptions opt;
  opt.sequence_len = 64;
  opt.micro_batch_size = 3;
  opt.packing = true;
  opt.pad_id = 7;
  opt.seed = 5;
  BatchIterator it(ex, opt);
  std::map<int32_t, int> token_count;
  int64_t targets = 0;
  for (int64_t b = 0; b < it.batches_per_epoch(); ++b) {
    const Batch batch = it.next();
    ASSERT_LE(batch.seq, 64);
    ASSERT_EQ(batch.input_ids.size(), static_cast<size_t>(batch.rows * batch.seq));
    for (int64_t r = 0; r < batch.rows; ++r) {
      const auto& seg = batch.segments[static_cast<size_t>(r)];
      ASSERT_EQ(seg.front(), 0);
      ASSERT_EQ(seg.back(), batch.lengths[static_cast<size_t>(r)]);
      int64_t row_targets = 0;
      for (size_t s = 0; s + 1 < seg.size(); ++s) {
        ASSERT_LT(seg[s], seg[s + 1]);
        const int32_t example = batch.input_ids[static_cast<size_t>(r * batch.seq + seg[s])] / 1000;
        for (int32_t t = seg[s]; t < seg[s + 1]; ++t) {
          const size_t at = static_cast<size_t>(r * batch.seq + t);
          EXPECT_EQ(batch.position_ids[at], t - seg[s]);  // positions restart per example
          EXPECT_EQ(batch.input_ids[at] / 1000, example);  // one example per segment
          ++token_count[batch.input_ids[at]];
          const int32_t label = batch.labels[at];
          if (label != kIgnoreLabel) {
            ++row_targets;
            ASSERT_LT(t + 1, seg[s + 1]) << "target crosses an example boundary";
            EXPECT_EQ(label, batch.input_ids[at + 1]);
          }
        }
      }
      for (int64_t t = batch.lengths[static_cast<size_t>(r)]; t < batch.seq; ++t) {
        const size_t at = static_cast<size_t>(r * batch.seq + t);
        EXPECT_EQ(batch.input_ids[at], 7);
        EXPECT_EQ(batch.labels[at], kIgnoreLabel);
      }
      EXPECT_EQ(row_targets, batch.targets[static_cast<size_t>(r)]);
      targets += row_targets;
    }
  }
  // Every token of every example appears exactly once per epoch.
  size_t tokens = 0;
  int64_t expected_targets = 0;
  for (const auto& e : ex) {
    tokens += e.input_ids.size();
    expected_targets += e.num_targets();
    for (int32_t id : e.input_ids) EXPECT_EQ(token_count[id], 1) << id;
  }
  EXPECT_EQ(token_count.size(), tokens);
  EXPECT_EQ(targets, expected_targets);
  EXPECT_EQ(it.position(), (BatchPosition{1, 0}));
}

TEST(Padding, RowsPaddedToLongestOrSequenceLen) {
  const auto ex = make_examples(5, 3);
  BatchOptions opt;
  opt.sequence_len = 64;
  opt.micro_batch_size = 5;
  opt.pad_id = 9;
  opt.shuffle = false;
  BatchIterator it(ex, opt);
  EXPECT_EQ(it.batches_per_epoch(), 1);
  const Batch b = it.next();
  size_t longest = 0;
  for (const auto& e : ex) longest = std::max(longest, e.input_ids.size());
  EXPECT_EQ(b.rows, 5);
  EXPECT_EQ(b.seq, static_cast<int64_t>(longest));
  for (size_t r = 0; r < ex.size(); ++r) {
    EXPECT_EQ(b.lengths[r], static_cast<int32_t>(ex[r].input_ids.size()));
    EXPECT_EQ(b.segments[r], (std::vector<int32_t>{0, b.lengths[r]}));
    for (int64_t t = 0; t < b.seq; ++t) {
      const size_t at = r * static_cast<size_t>(b.seq) + static_cast<size_t>(t);
      if (t < b.lengths[r]) {
        EXPECT_EQ(b.input_ids[at], ex[r].input_ids[static_cast<size_t>(t)]);
        EXPECT_EQ(b.position_ids[at], t);
      } else {
        EXPECT_EQ(b.input_ids[at], 9);
        EXPECT_EQ(b.labels[at], kIgnoreLabel);
      }
    }
  }
  opt.pad_to_sequence_len = true;
  EXPECT_EQ(BatchIterator(ex, opt).next().seq, 64);
}

TEST(BatchIterator, EpochShufflesAndResumes) {
  const auto ex = make_examples(23, 4);
  BatchOptions opt;
  opt.sequence_len = 64;
  opt.micro_batch_size = 4;
  opt.seed = 11;
  BatchIterator a(ex, opt);
  EXPECT_EQ(a.batches_per_epoch(), 6);  // the last batch has 3 rows
  std::vector<Batch> run;
  for (int i = 0; i < 15; ++i) run.push_back(a.next());
  EXPECT_EQ(run[5].rows, 3);
  EXPECT_NE(run[0].input_ids, run[6].input_ids);  // epoch 1 is in another order
  // Resume mid-epoch from a saved position: the same batches follow.
  BatchIterator b(ex, opt);
  b.seek({1, 2});
  for (int i = 8; i < 15; ++i) EXPECT_EQ(b.next().input_ids, run[static_cast<size_t>(i)].input_ids) << i;
  EXPECT_EQ(b.position(), a.position());
  EXPECT_THROW(b.seek({0, 6}), Error);
  // Another seed, another order.
  opt.seed = 12;
  EXPECT_NE(BatchIterator(ex, opt).next().input_ids, run[0].input_ids);
}

}  // namespace
}  // namespace qtrain::data
