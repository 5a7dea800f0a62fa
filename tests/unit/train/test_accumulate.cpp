// Gradient accumulation: two micro-batches of one row give the gradient of one micro-batch of both
// rows (padding included) within fp32 tolerance, and the group loss is the token-weighted mean.
// Also the data -> model batch conversion and the learning-rate wiring of the run file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "csrc/config/run_config.h"
#include "csrc/core/rng.h"
#include "csrc/io/tiny_model.h"
#include "runtime/train/accumulate.h"
#include "runtime/train/batch_convert.h"
#include "runtime/train/run_setup.h"

namespace qtrain::train {
namespace {

namespace fs = std::filesystem;

data::Example example(Rng& rng, int64_t len, int64_t vocab) {
  data::Example e;
  for (int64_t i = 0; i < len; ++i) e.input_ids.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab))));
  for (int64_t i = 0; i < len; ++i)
    e.labels.push_back(i + 1 < len && i >= len / 3 ? e.input_ids[static_cast<size_t>(i + 1)] : data::kIgnoreLabel);
  return e;
}

std::vector<float> grads(model::CpuLlamaModel& m) {
  std::vector<float> g;
  for (const auto& t : m.lora_tensors()) g.insert(g.end(), t.grad.begin(), t.grad.end());
  return g;
}

TEST(Accumulate, TwoMicroBatchesOfOneEqualOneOfTwo) {
  const fs::path dir = fs::temp_directory_path() / ("qtrain_accum_" + std::to_string(::getpid()));
  io::TinyModelOptions o;
  o.seed = 5;
  io::write_tiny_model(dir.string(), o);
  model::CpuLlamaModel m = model::CpuLlamaModel::load(dir.string());
  model::LoraConfig lora;
  lora.r = 4;
  m.init_lora(lora, 9);
  {
    Rng rng(17);  // B = 0 at init would leave A without gradient
    for (auto& t : m.lora_tensors())
      for (float& x : t.value) x += static_cast<float>(rng.normal(0.0, 0.05));
  }
  Rng rng(3);
  const std::vector<data::Example> ex = {example(rng, 19, o.vocab), example(rng, 11, o.vocab)};
  data::BatchOptions bo;
  bo.sequence_len = 64;
  bo.shuffle = false;
  bo.micro_batch_size = 2;
  const model::Batch both = to_model_batch(data::BatchIterator(ex, bo).next());
  bo.micro_batch_size = 1;
  data::BatchIterator one(ex, bo);
  const std::vector<model::Batch> split = {to_model_batch(one.next()), to_model_batch(one.next())};
  ASSERT_EQ(both.rows, 2);
  ASSERT_EQ(split[1].seq, 11);

  int64_t micro = 0;
  m.zero_grad();
  const GroupResult a = forward_backward_group(m, {both}, 1, micro);
  const std::vector<float> ga = grads(m);
  m.zero_grad();
  const GroupResult b = forward_backward_group(m, split, 1, micro);
  const std::vector<float> gb = grads(m);
  EXPECT_EQ(micro, 3);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NEAR(a.loss, b.loss, 1e-5 * std::fabs(a.loss));
  // And the single-batch path of the model (mean over its targets) agrees too.
  m.zero_grad();
  const model::ForwardResult f = m.forward(both);
  m.backward();
  const std::vector<float> gc = grads(m);
  EXPECT_NEAR(f.loss, a.loss, 1e-6 * std::fabs(a.loss));

  ASSERT_EQ(ga.size(), gb.size());
  double diff = 0, ref = 0, diff_c = 0;
  for (size_t i = 0; i < ga.size(); ++i) {
    diff += (ga[i] - gb[i]) * static_cast<double>(ga[i] - gb[i]);
    diff_c += (ga[i] - gc[i]) * static_cast<double>(ga[i] - gc[i]);
    ref += ga[i] * static_cast<double>(ga[i]);
  }
  ASSERT_GT(ref, 0.0);
  EXPECT_LT(std::sqrt(diff / ref), 1e-5);
  EXPECT_LT(std::sqrt(diff_c / ref), 1e-6);
  fs::remove_all(dir);
}

TEST(Accumulate, BatchConversionSegments) {
  data::Batch b;
  b.rows = 2;
  b.seq = 5;
  b.input_ids = {1, 2, 3, 4, 5, 6, 7, 8, 0, 0};
  b.labels.assign(10, -100);
  b.position_ids = {0, 1, 0, 1, 2, 0, 1, 2, 0, 0};
  b.segments = {{0, 2, 5}, {0, 3}};
  b.lengths = {5, 3};
  const model::Batch m = to_model_batch(b);
  EXPECT_EQ(m.segment_ids, (std::vector<int32_t>{1, 1, 2, 2, 2, 1, 1, 1, 0, 0}));
  EXPECT_EQ(m.input_ids, b.input_ids);
  EXPECT_EQ(m.position_ids, b.position_ids);
}

TEST(Accumulate, LearningRateFollowsTheRunFile) {
  config::RunConfig cfg = config::parse_run_config(
      "base_model: x\ndatasets: [{path: d.jsonl, type: alpaca}]\nlearning_rate: 0.01\nlr_scheduler: cosine\nwarmup_steps: 4\nmax_steps: 20\n", "run.yaml");
  EXPECT_DOUBLE_EQ(step_learning_rate(cfg, 0, 20), 0.0);          // first update at 0 / 4
  EXPECT_DOUBLE_EQ(step_learning_rate(cfg, 2, 20), 0.01 * 0.5);   // warmup ramp
  EXPECT_DOUBLE_EQ(step_learning_rate(cfg, 4, 20), 0.01);         // peak
  EXPECT_NEAR(step_learning_rate(cfg, 12, 20), 0.005, 1e-12);      // half-way down the cosine
  cfg = config::parse_run_config("base_model: x\ndatasets: [{path: d.jsonl, type: alpaca}]\nlearning_rate: 0.01\nlr_scheduler: linear\nwarmup_ratio: 0.1\n"
                                 "max_steps: 20\n", "run.yaml");
  EXPECT_DOUBLE_EQ(step_learning_rate(cfg, 1, 20), 0.005);  // warmup of ceil(0.1 * 20) = 2
  EXPECT_NEAR(step_learning_rate(cfg, 11, 20), 0.005, 1e-12);
  cfg = config::parse_run_config("base_model: x\ndatasets: [{path: d.jsonl, type: alpaca}]\nlearning_rate: 0.01\nlr_scheduler: constant\nmax_steps: 5\n", "r");
  EXPECT_DOUBLE_EQ(step_learning_rate(cfg, 3, 5), 0.01);
}

}  // namespace
}  // namespace qtrain::train
