// The optimizer on the emulated device (or a real GPU): exact resume through save/load for every
// kind, clipping against a host computation, paged placement, state-file checks and gradient
// accumulation bookkeeping.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <unistd.h>
#include <iterator>
#include <string>
#include <vector>

#include "csrc/core/error.h"
#include "qk/adamw.h"
#include "qk/cuda_check.h"
#include "runtime/device/device.h"
#include "runtime/optim/grad_accum.h"
#include "runtime/optim/optimizer.h"

namespace qtrain::rt {
namespace {

bool have_device() { return query_device(0).available; }

std::vector<float> values(size_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(s >> 40) / static_cast<float>(1ull << 24);
    x = scale * (2.0f * u - 1.0f);
    if (x == 0.0f) x = scale / 3;
  }
  return v;
}

// Parameters and gradients of one model on the device; gradients of step s are a fixed function of s.
class Model {
 public:
  explicit Model(const std::vector<int64_t>& sizes) : sizes_(sizes) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t n = static_cast<size_t>(sizes[i]);
      float *p = nullptr, *g = nullptr;
      QK_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)));
      QK_CUDA_CHECK(cudaMalloc(&g, std::max<size_t>(n, 1) * sizeof(float)));
      const auto init = values(n, 10 + i, 0.5f);
      QK_CUDA_CHECK(cudaMemcpy(p, init.data(), n * sizeof(float), cudaMemcpyHostToDevice));
      tensors_.push_back({"layer." + std::to_string(i) + ".lora_A.weight", p, g, sizes[i]});
    }
  }
  ~Model() {
    for (auto& t : tensors_) {
      (void)cudaFree(t.param);
      (void)cudaFree(t.grad);
    }
  }
  const std::vector<TrainableTensor>& tensors() const { return tensors_; }
  void set_grads(int step) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto g = grads(step, i);
      QK_CUDA_CHECK(cudaMemcpy(tensors_[i].grad, g.data(), g.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
  }
  std::vector<float> grads(int step, size_t i) const {
    // Block-varying scales, so 8-bit blocks get different absmax.
    auto g = values(static_cast<size_t>(sizes_[i]), 1000 * static_cast<uint64_t>(step) + i, 1.0f);
    for (size_t k = 0; k < g.size(); ++k) g[k] *= static_cast<float>(1 + (k / 256) % 5);
    return g;
  }
  std::vector<float> params(size_t i) const {
    std::vector<float> p(static_cast<size_t>(sizes_[i]));
    QK_CUDA_CHECK(cudaDeviceSynchronize());
    QK_CUDA_CHECK(cudaMemcpy(p.data(), tensors_[i].param, p.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return p;
  }

 private:
  std::vector<int64_t> sizes_;
  std::vector<TrainableTensor> tensors_;
};

const std::vector<int64_t> kSizes = {300, 5000, 4096 + 17, 0, 64};

OptimizerConfig config_for(OptimizerKind kind) {
  OptimizerConfig c;
  c.kind = kind;
  c.weight_decay = 0.01f;
  c.max_grad_norm = 1.0f;  // the random gradients' norm is far above: every step clips
  return c;
}

std::string temp_path(const std::string& stem) {
  return ::testing::TempDir() + "/qtrain_" + stem + "_" + std::to_string(::getpid()) + ".safetensors";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class OptimizerResume : public ::testing::TestWithParam<OptimizerKind> {};

TEST_P(OptimizerResume, SixStepsEqualThreeSaveLoadThree) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const OptimizerKind kind = GetParam();
  const float lr = 1e-2f;
  Model a(kSizes), b(kSizes);
  const std::string path_mid = temp_path(std::string("mid_") + optimizer_name(kind));
  const std::string path_a = temp_path(std::string("a_") + optimizer_name(kind));
  const std::string path_b = temp_path(std::string("b_") + optimizer_name(kind));

  Optimizer opt_a(config_for(kind), a.tensors());
  for (int s = 1; s <= 6; ++s) {
    a.set_grads(s);
    const StepInfo info = opt_a.step(lr, 0.5f);
    EXPECT_LT(info.clip_factor, 1.0f);
    EXPECT_EQ(info.step, s);
  }
  {
    Optimizer first(config_for(kind), b.tensors());
    for (int s = 1; s <= 3; ++s) {
      b.set_grads(s);
      first.step(lr, 0.5f);
    }
    first.save(path_mid);
  }
  Optimizer opt_b(config_for(kind), b.tensors());
  opt_b.load(path_mid);
  EXPECT_EQ(opt_b.step_count(), 3);
  for (int s = 4; s <= 6; ++s) {
    b.set_grads(s);
    opt_b.step(lr, 0.5f);
  }
  EXPECT_EQ(opt_b.step_count(), 6);
  for (size_t i = 0; i < kSizes.size(); ++i) {
    const auto pa = a.params(i), pb = b.params(i);
    ASSERT_EQ(pa.size(), pb.size());
    EXPECT_EQ(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)), 0) << "tensor " << i;
    if (!pa.empty()) {
      EXPECT_NE(pa[0], values(pa.size(), 10 + i, 0.5f)[0]) << "tensor " << i << " never moved";
    }
  }
  // The whole state agrees too: both files are byte for byte the same.
  opt_a.save(path_a);
  opt_b.save(path_b);
  EXPECT_EQ(slurp(path_a), slurp(path_b));
  EXPECT_EQ(opt_a.state_bytes(), optimizer_state_bytes(kind, kSizes));
  std::remove(path_mid.c_str());
  std::remove(path_a.c_str());
  std::remove(path_b.c_str());
}

INSTANTIATE_TEST_SUITE_P(Runtime, OptimizerResume,
                         ::testing::Values(OptimizerKind::AdamW, OptimizerKind::AdamW8bit,
                                           OptimizerKind::PagedAdamW32bit, OptimizerKind::PagedAdamW8bit),
                         [](const auto& p) { return std::string(optimizer_name(p.param)); });

TEST(Optimizer, ClipsByTheGlobalNormLikeTorch) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Model m(kSizes);
  OptimizerConfig c = config_for(OptimizerKind::AdamW);
  c.max_grad_norm = 0.3f;
  Optimizer opt(c, m.tensors());
  m.set_grads(1);
  const float grad_scale = 0.25f;
  double sq = 0;
  std::vector<std::vector<float>> p(kSizes.size()), g(kSizes.size()), mo(kSizes.size()), v(kSizes.size());
  for (size_t i = 0; i < kSizes.size(); ++i) {
    p[i] = m.params(i);
    g[i] = m.grads(1, i);
    mo[i].assign(g[i].size(), 0.0f);
    v[i].assign(g[i].size(), 0.0f);
    for (float x : g[i]) sq += static_cast<double>(x) * x;
  }
  const double norm = std::sqrt(sq) * grad_scale;
  const StepInfo info = opt.step(1e-3f, grad_scale);
  EXPECT_NEAR(info.grad_norm, norm, 1e-5 * norm);
  const double clip = std::min(1.0, 0.3 / (norm + 1e-6));
  EXPECT_NEAR(info.clip_factor, clip, 1e-6 * clip);

  std::vector<qk::AdamWTensor> host;
  for (size_t i = 0; i < kSizes.size(); ++i)
    host.push_back({p[i].data(), g[i].data(), mo[i].data(), v[i].data(), kSizes[i], 0});
  qk::adamw_plan_chunks(host.data(), static_cast<int>(host.size()));
  qk::AdamWParams params;
  params.lr = 1e-3f;
  params.weight_decay = c.weight_decay;
  params.grad_scale = grad_scale * info.clip_factor;
  params.step = 1;
  qk::cpu::adamw_update(host.data(), static_cast<int>(host.size()), params);
  for (size_t i = 0; i < kSizes.size(); ++i) {
    const auto got = m.params(i);
    for (size_t k = 0; k < got.size(); ++k) ASSERT_NEAR(got[k], p[i][k], 1e-6f) << "tensor " << i << " element " << k;
  }
}

TEST(Optimizer, PagedStatesLiveInManagedMemory) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Model m(kSizes);
  Optimizer paged(config_for(OptimizerKind::PagedAdamW8bit), m.tensors());
  Optimizer plain(config_for(OptimizerKind::AdamW8bit), m.tensors());
  EXPECT_NE(paged.describe().find("managed memory"), std::string::npos) << paged.describe();
  EXPECT_EQ(plain.describe().find("managed"), std::string::npos) << plain.describe();
  EXPECT_FALSE(plain.prefetches());
  // The emulated device reports concurrentManagedAccess; a real one usually does (not on Windows).
  int concurrent = 0;
  QK_CUDA_CHECK(cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, 0));
  EXPECT_EQ(paged.prefetches(), concurrent != 0);
  m.set_grads(1);
  paged.step(1e-3f);  // prefetch + update run
  EXPECT_EQ(paged.step_count(), 1);
}

TEST(Optimizer, LoadRejectsAnotherOptimizersState) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Model m(kSizes);
  const std::string path = temp_path("other");
  Optimizer eight(config_for(OptimizerKind::AdamW8bit), m.tensors());
  eight.save(path);
  Optimizer adamw(config_for(OptimizerKind::AdamW), m.tensors());
  try {
    adamw.load(path);
    FAIL() << "loaded an adamw_8bit state into adamw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("adamw_8bit"), std::string::npos) << e.what();
  }
  Model other({300, 5000});
  Optimizer fewer(config_for(OptimizerKind::AdamW8bit), other.tensors());
  EXPECT_THROW(fewer.load(path), Error);
  std::remove(path.c_str());
}

TEST(GradAccumulator, SumsDividedByMicroSteps) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Model m({5000, 7});
  GradAccumulator acc(m.tensors(), 2);
  m.set_grads(1);
  acc.zero(nullptr);
  QK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> g(5000, 1.0f);
  QK_CUDA_CHECK(cudaMemcpy(g.data(), m.tensors()[0].grad, g.size() * sizeof(float), cudaMemcpyDeviceToHost));
  for (float x : g) ASSERT_EQ(x, 0.0f);
  EXPECT_FALSE(acc.ready());
  acc.micro_step_done();
  EXPECT_EQ(acc.grad_scale(), 1.0f);
  acc.micro_step_done();
  EXPECT_TRUE(acc.ready());
  EXPECT_EQ(acc.grad_scale(), 0.5f);
  EXPECT_THROW(acc.micro_step_done(), Error);
  acc.zero(nullptr);
  EXPECT_EQ(acc.done(), 0);
}

}  // namespace
}  // namespace qtrain::rt
