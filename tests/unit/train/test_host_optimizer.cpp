// The CPU trainer's optimizer: a state saved after some steps and loaded into a fresh optimizer
// continues bit for bit like the original (32-bit and 8-bit states, small and quantized tensors),
// and a state file that does not fit is rejected.
#include <gtest/gtest.h>

#include <cstring>
#include <unistd.h>

#include <filesystem>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"
#include "runtime/train/host_optimizer.h"

namespace qtrain::train {
namespace {

struct Params {
  std::vector<std::vector<float>> value, grad;
  std::vector<model::LoraTensorRef> refs() {
    std::vector<model::LoraTensorRef> r;
    for (size_t i = 0; i < value.size(); ++i)
      r.push_back({"t" + std::to_string(i), {static_cast<int64_t>(value[i].size())}, value[i], grad[i]});
    return r;
  }
};

Params make_params(uint64_t seed) {
  Rng rng(seed);
  Params p;
  for (int64_t n : {13, 4096 + 300, 517}) {  // small, quantized with a partial block, small
    std::vector<float> v(static_cast<size_t>(n)), g(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>(rng.normal(0.0, 0.5));
    for (float& x : g) x = static_cast<float>(rng.normal(0.0, 0.1));
    p.value.push_back(v);
    p.grad.push_back(g);
  }
  return p;
}

void new_grads(Params& p, Rng& rng) {
  for (auto& g : p.grad)
    for (float& x : g) x = static_cast<float>(rng.normal(0.0, 0.1));
}

class HostOptimizerTest : public ::testing::TestWithParam<OptimizerKind> {};

TEST_P(HostOptimizerTest, SaveLoadContinuesBitwise) {
  const auto dir = std::filesystem::temp_directory_path() / ("qtrain_opt_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "optimizer.safetensors").string();
  const OptimizerHyper hyper{0.9, 0.999, 1e-8, 0.01};

  Params a = make_params(3);
  HostOptimizer opt_a(GetParam(), hyper, a.refs());
  Rng rng(11);
  for (int s = 0; s < 3; ++s) {
    new_grads(a, rng);
    opt_a.step(1e-2, 0.7);
  }
  opt_a.save(path);

  Params b = a;  // the adapter, as a checkpoint holds it
  HostOptimizer opt_b(GetParam(), hyper, b.refs());
  opt_b.load(path);
  EXPECT_EQ(opt_b.steps(), 3);
  for (int s = 0; s < 3; ++s) {
    new_grads(a, rng);
    b.grad = a.grad;
    opt_a.step(5e-3, 1.0);
    opt_b.step(5e-3, 1.0);
  }
  for (size_t i = 0; i < a.value.size(); ++i) {
    ASSERT_EQ(a.value[i].size(), b.value[i].size());
    EXPECT_EQ(0, std::memcmp(a.value[i].data(), b.value[i].data(), a.value[i].size() * sizeof(float))) << i;
  }
  // The parameters moved.
  const Params start = make_params(3);
  EXPECT_NE(a.value[1][7], start.value[1][7]);

  // Another optimizer kind, or other tensors, do not load.
  const OptimizerKind other = GetParam() == OptimizerKind::AdamW ? OptimizerKind::AdamW8bit : OptimizerKind::AdamW;
  Params c = make_params(3);
  HostOptimizer opt_c(other, hyper, c.refs());
  EXPECT_THROW(opt_c.load(path), Error);
  c.value.pop_back();
  c.grad.pop_back();
  HostOptimizer opt_d(GetParam(), hyper, c.refs());
  EXPECT_THROW(opt_d.load(path), Error);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Kinds, HostOptimizerTest, ::testing::Values(OptimizerKind::AdamW, OptimizerKind::AdamW8bit));

TEST(HostOptimizer, ParsesTheRunFileNames) {
  EXPECT_EQ(parse_optimizer_kind("adamw", "f"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_kind("paged_adamw_32bit", "f"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_kind("adamw_8bit", "f"), OptimizerKind::AdamW8bit);
  EXPECT_EQ(parse_optimizer_kind("paged_adamw_8bit", "f"), OptimizerKind::AdamW8bit);
  EXPECT_THROW(parse_optimizer_kind("sgd", "f"), Error);
}

}  // namespace
}  // namespace qtrain::train
