// Full fine-tuning on the CPU model (every base weight trainable in fp32): loss, per-token
// log-probabilities and the gradient of every parameter against transformers
// (tests/reference/full_ft_golden.py) for a Llama-3 style model with an untied head and a Qwen2 with
// q/k/v bias and tied embeddings; central differences on single weights; a few SGD and AdamW steps
// lower the loss; save_weights round-trips; the mode's errors (with LoRA, on NF4).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/train/host_optimizer.h"
#include "tests/common/golden_io.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;
using test::normalized_error;
using test::read_batch;
using test::read_tensor;

const fs::path kGolden = fs::path(QTRAIN_TEST_DATA_DIR) / "full_ft_golden";

CpuLlamaModel load_full(const std::string& name) {
  CpuLlamaModel m = CpuLlamaModel::load((kGolden / name).string());
  m.set_full_finetune(true);
  return m;
}

// A fresh temporary folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    const int seed = ::testing::UnitTest::GetInstance()->random_seed();
    path = fs::temp_directory_path() / ("qtrain_full_ft_" + tag + "_" + std::to_string(seed));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

class FullFinetuneGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(FullFinetuneGolden, MatchesTransformers) {
  const fs::path dir = kGolden / GetParam();
  CpuLlamaModel model = load_full(GetParam());
  model.set_training(false);
  const Batch batch = read_batch(dir / "batch.safetensors");
  const io::SafetensorsFile expected = io::SafetensorsFile::open((dir / "expected.safetensors").string());
  const io::SafetensorsFile grads = io::SafetensorsFile::open((dir / "grads.safetensors").string());

  // Poison the gradients, then zero_grad must clear every one of them.
  for (LoraTensorRef& t : model.trainable_tensors()) std::fill(t.grad.begin(), t.grad.end(), 1e3f);
  model.zero_grad();
  const ForwardResult r = model.forward(batch);
  model.backward();

  const double ref_loss = read_tensor<double>(expected, "loss")[0];
  const double loss_err = std::abs(r.loss - ref_loss) / std::abs(ref_loss);
  EXPECT_LE(loss_err, 1e-5) << "loss " << r.loss << " vs " << ref_loss;
  const std::vector<float> ref_lp = read_tensor<float>(expected, "token_logprobs");
  ASSERT_EQ(r.token_logprobs.size(), ref_lp.size());
  const double lp_err = normalized_error(r.token_logprobs, ref_lp);
  EXPECT_LE(lp_err, 1e-4);

  double worst = 0.0;
  std::string worst_name;
  std::set<std::string> seen;
  for (const LoraTensorRef& t : model.trainable_tensors()) {
    ASSERT_TRUE(grads.contains(t.name)) << t.name;
    EXPECT_EQ(grads.info(t.name).shape, t.shape) << t.name;
    const std::vector<float> ref = read_tensor<float>(grads, t.name);
    ASSERT_EQ(ref.size(), t.grad.size()) << t.name;
    const double err = normalized_error(t.grad, ref);
    EXPECT_LE(err, 1e-4) << t.name;
    if (err > worst) {
      worst = err;
      worst_name = t.name;
    }
    seen.insert(t.name);
  }
  // Every parameter transformers has, and no other.
  EXPECT_EQ(seen.size(), grads.tensors().size());
  for (const io::TensorInfo& info : grads.tensors()) EXPECT_TRUE(seen.count(info.name)) << info.name;
  std::printf("[ %s ] loss rel err %.3g, logprob err %.3g, worst grad err %.3g (%s), %zu tensors\n",
              GetParam().c_str(), loss_err, lp_err, worst, worst_name.c_str(), seen.size());

  // Gradients accumulate across backward() calls until zero_grad().
  std::vector<std::vector<float>> once;
  for (const LoraTensorRef& t : model.trainable_tensors()) once.emplace_back(t.grad.begin(), t.grad.end());
  model.forward(batch);
  model.backward();
  size_t k = 0;
  for (const LoraTensorRef& t : model.trainable_tensors()) {
    for (size_t i = 0; i < t.grad.size(); ++i)
      ASSERT_NEAR(t.grad[i], 2.0f * once[k][i], 1e-6f + 1e-5f * std::abs(once[k][i])) << t.name;
    ++k;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, FullFinetuneGolden, ::testing::Values("llama3_untied", "qwen2_tied"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Central differences of the fp32 loss on single weights: every tensor's largest-gradient entry and
// one random entry. The loss is a mean of fp32 log-probabilities (about 5 in size), so each
// evaluation carries rounding noise of a few 1e-7; over a step of 2h = 2e-2 that is a few 1e-5 in
// the difference quotient, and the truncation error (third derivative times h^2 / 6) is of the
// same order at these weight scales (about 0.08, norms about 1). Hence the tolerance: 5e-5
// absolute plus 0.5% relative (the measured worst is near a sixth of it).
class FullFinetuneFd : public ::testing::TestWithParam<std::string> {};

TEST_P(FullFinetuneFd, GradientsMatchCentralDifferences) {
  CpuLlamaModel m = load_full(GetParam());
  const Batch b = read_batch(kGolden / GetParam() / "batch.safetensors");
  m.zero_grad();
  m.forward(b);
  m.backward();
  uint64_t pick = 12345;
  int checked = 0;
  double worst = 0.0;  // largest |g - fd| as a fraction of the tolerance
  std::string worst_name;
  for (LoraTensorRef& t : m.trainable_tensors()) {
    size_t big = 0;
    for (size_t i = 1; i < t.grad.size(); ++i)
      if (std::abs(t.grad[i]) > std::abs(t.grad[big])) big = i;
    pick = pick * 6364136223846793005ull + 1442695040888963407ull;
    const size_t other = static_cast<size_t>((pick >> 33) % t.grad.size());
    for (size_t i : {big, other}) {
      const float saved = t.value[i];
      const float h = 1e-2f;
      const float up = saved + h, down = saved - h;
      t.value[i] = up;
      const double lp = m.evaluate(b).loss;
      t.value[i] = down;
      const double lm = m.evaluate(b).loss;
      t.value[i] = saved;
      const double fd = (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
      const double g = t.grad[i];
      const double tol = 5e-3 * std::abs(fd) + 5e-5;
      EXPECT_NEAR(g, fd, tol) << t.name << "[" << i << "]";
      if (std::abs(g - fd) / tol > worst) {
        worst = std::abs(g - fd) / tol;
        worst_name = t.name + "[" + std::to_string(i) + "]";
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 40);
  std::printf("[ %s ] %d entries, worst |g - fd| at %.3g of the tolerance (%s)\n", GetParam().c_str(), checked,
              worst, worst_name.c_str());
}

INSTANTIATE_TEST_SUITE_P(Cases, FullFinetuneFd, ::testing::Values("llama3_untied", "qwen2_tied"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

double train_steps(CpuLlamaModel& m, const Batch& b, int steps, train::HostOptimizer* opt, float sgd_lr) {
  std::vector<LoraTensorRef> ts = m.trainable_tensors();
  double loss = 0.0;
  for (int s = 0; s < steps; ++s) {
    m.zero_grad();
    loss = m.forward(b).loss;
    m.backward();
    if (opt) {
      opt->step(1e-2, 1.0);
    } else {
      for (LoraTensorRef& t : ts)
        for (size_t i = 0; i < t.value.size(); ++i) t.value[i] -= sgd_lr * t.grad[i];
    }
  }
  return loss;
}

TEST(FullFinetune, SgdAndAdamWLowerTheLoss) {
  for (const char* name : {"llama3_untied", "qwen2_tied"}) {
    const Batch b = read_batch(kGolden / name / "batch.safetensors");
    {
      CpuLlamaModel m = load_full(name);
      const double first = m.evaluate(b).loss;
      train_steps(m, b, 5, nullptr, 0.5f);
      const double last = m.evaluate(b).loss;
      EXPECT_LT(last, first - 0.1) << name << " SGD: " << first << " -> " << last;
      std::printf("[ %s ] 5 SGD steps: loss %.4f -> %.4f\n", name, first, last);
    }
    {
      CpuLlamaModel m = load_full(name);
      train::HostOptimizer opt(train::OptimizerKind::AdamW, {}, m.trainable_tensors());
      const double first = m.evaluate(b).loss;
      train_steps(m, b, 5, &opt, 0.0f);
      const double last = m.evaluate(b).loss;
      EXPECT_LT(last, 0.5 * first) << name << " AdamW: " << first << " -> " << last;
      std::printf("[ %s ] 5 AdamW steps: loss %.4f -> %.4f\n", name, first, last);
    }
  }
}

TEST(FullFinetune, SaveWeightsRoundTrips) {
  for (const char* name : {"llama3_untied", "qwen2_tied"}) {
    const Batch b = read_batch(kGolden / name / "batch.safetensors");
    CpuLlamaModel m = load_full(name);
    train_steps(m, b, 2, nullptr, 0.5f);
    const ForwardResult before = m.evaluate(b);
    TempDir tmp(name);
    m.save_weights(tmp.path.string());

    const io::ModelConfig saved_config = io::load_model_config(tmp.path.string());
    EXPECT_EQ(saved_config.torch_dtype, "float32");
    io::ModelConfig expect = m.config();
    expect.torch_dtype = "float32";
    EXPECT_EQ(saved_config, expect);
    const io::SafetensorsFile f = io::SafetensorsFile::open((tmp.path / "model.safetensors").string());
    EXPECT_EQ(f.contains("lm_head.weight"), !m.config().tie_word_embeddings);

    CpuLlamaModel back = CpuLlamaModel::load(tmp.path.string());
    const ForwardResult after = back.evaluate(b);
    EXPECT_EQ(after.loss, before.loss) << name;
    EXPECT_EQ(after.token_logprobs, before.token_logprobs) << name;
    back.set_full_finetune(true);
    std::vector<LoraTensorRef> x = m.trainable_tensors(), y = back.trainable_tensors();
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(x[i].name, y[i].name);
      EXPECT_TRUE(std::equal(x[i].value.begin(), x[i].value.end(), y[i].value.begin())) << x[i].name;
    }
  }
}

TEST(FullFinetune, TensorsFollowTheCheckpointLayout) {
  CpuLlamaModel m = load_full("qwen2_tied");
  std::vector<LoraTensorRef> ts = m.trainable_tensors();
  // embedding; per layer 2 norms + 7 weights + 3 biases; final norm; tied: no lm_head
  ASSERT_EQ(ts.size(), 1u + 2u * 12u + 1u);
  EXPECT_EQ(ts.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(ts[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(ts.back().name, "model.norm.weight");
  for (const LoraTensorRef& t : ts) {
    EXPECT_EQ(t.value.size(), t.grad.size()) << t.name;
    EXPECT_TRUE(std::all_of(t.grad.begin(), t.grad.end(), [](float g) { return g == 0.0f; })) << t.name;
  }
  CpuLlamaModel u = load_full("llama3_untied");
  EXPECT_EQ(u.trainable_tensors().back().name, "lm_head.weight");
  // Off: back to the (empty) LoRA list.
  u.set_full_finetune(false);
  EXPECT_FALSE(u.full_finetune());
  EXPECT_TRUE(u.trainable_tensors().empty());
}

ErrorKind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no error";
  return ErrorKind::Internal;
}

TEST(FullFinetune, ExclusiveWithLoraAndRefusedOnNf4) {
  const std::string dir = (kGolden / "llama3_untied").string();
  {
    CpuLlamaModel m = CpuLlamaModel::load(dir);
    m.init_lora(LoraConfig{}, 1);
    EXPECT_EQ(kind_of([&] { m.set_full_finetune(true); }), ErrorKind::BadInput);
    EXPECT_FALSE(m.full_finetune());
  }
  {
    CpuLlamaModel m = load_full("llama3_untied");
    EXPECT_EQ(kind_of([&] { m.init_lora(LoraConfig{}, 1); }), ErrorKind::BadInput);
    EXPECT_FALSE(m.has_adapter());
  }
  {
    LoadOptions opt;
    opt.quantize_nf4 = true;
    CpuLlamaModel m = CpuLlamaModel::load(dir, opt);
    EXPECT_EQ(kind_of([&] { m.set_full_finetune(true); }), ErrorKind::BadInput);
    EXPECT_FALSE(m.full_finetune());
    TempDir tmp("nf4");
    EXPECT_EQ(kind_of([&] { m.save_weights(tmp.path.string()); }), ErrorKind::BadInput);
  }
  {
    // Neither LoRA nor full fine-tuning: backward has nothing to train.
    CpuLlamaModel m = CpuLlamaModel::load(dir);
    m.forward(read_batch(kGolden / "llama3_untied" / "batch.safetensors"));
    EXPECT_EQ(kind_of([&] { m.backward(); }), ErrorKind::Internal);
  }
}

}  // namespace
}  // namespace qtrain::model
