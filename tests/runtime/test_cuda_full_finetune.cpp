// Full fine-tuning in the CUDA model (runtime/model/cuda/full_weights.h) on the emulated device (or a
// GPU) against the golden files of transformers (tests/data/full_ft_golden/: every parameter's
// gradient by HF name). Tolerances are those of bf16 activations, as in test_cuda_model.cpp:
//   loss 2e-2 relative, per-token log-probs 3e-2 normalized error, every weight's gradient 8e-2
//   normalized error (||a - b|| / ||b||; the worst is printed).
// Checkpointing and offload run the same kernels on the same inputs (and the weight gradients are
// reduced in a fixed order), so their gradients must equal the stored-activation run's bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "csrc/core/error.h"
#include "csrc/io/safetensors.h"
#include "qk/cast.h"
#include "runtime/device/device.h"
#include "runtime/model/cuda/cuda_util.h"
#include "runtime/model/cuda/llama_model.h"
#include "runtime/optim/optimizer.h"
#include "tests/common/golden_io.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;
using test::normalized_error;
using test::read_batch;
using test::read_tensor;

const fs::path kGolden = fs::path(QTRAIN_TEST_DATA_DIR) / "full_ft_golden";

constexpr double kLossTol = 2e-2;
constexpr double kLogprobTol = 3e-2;
constexpr double kGradTol = 8e-2;

bool have_device() { return rt::query_device().available; }

std::unique_ptr<CudaLlamaModel> full_model(const std::string& name, CudaModelOptions opt = {}) {
  opt.arena_bytes = size_t{64} << 20;
  auto m = CudaLlamaModel::load((kGolden / name).string(), {}, opt);
  m->set_full_finetune(true);
  return m;
}

std::map<std::string, std::vector<float>> step_grads(CudaLlamaModel& m, const Batch& b, double* loss) {
  m.zero_grad();
  *loss = m.forward(b).loss;
  m.backward();
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, g] : m.grads_host()) out[name] = std::move(g);
  return out;
}

class CudaFullFinetuneGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFullFinetuneGolden, MatchesGolden) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const fs::path dir = kGolden / GetParam();
  const Batch batch = read_batch(dir / "batch.safetensors");
  const io::SafetensorsFile expected = io::SafetensorsFile::open((dir / "expected.safetensors").string());
  const io::SafetensorsFile grads = io::SafetensorsFile::open((dir / "grads.safetensors").string());

  auto model = full_model(GetParam());
  double loss = 0.0;
  model->zero_grad();
  const ForwardResult r = model->forward(batch);
  model->backward();
  loss = r.loss;

  const double ref_loss = read_tensor<double>(expected, "loss")[0];
  const double loss_err = std::abs(loss - ref_loss) / std::abs(ref_loss);
  EXPECT_LE(loss_err, kLossTol) << loss << " vs " << ref_loss;
  const std::vector<float> ref_lp = read_tensor<float>(expected, "token_logprobs");
  ASSERT_EQ(r.token_logprobs.size(), ref_lp.size());
  const double lp_err = normalized_error(r.token_logprobs, ref_lp);
  EXPECT_LE(lp_err, kLogprobTol);

  // Every parameter once, by its HF name and shape, in the HF layout's order.
  const std::vector<cuda::DeviceLoraTensor> tensors = model->full_tensors();
  std::set<std::string> names;
  for (const cuda::DeviceLoraTensor& t : tensors) {
    ASSERT_TRUE(grads.contains(t.name)) << t.name;
    EXPECT_EQ(grads.info(t.name).shape, t.shape) << t.name;
    names.insert(t.name);
  }
  EXPECT_EQ(names.size(), tensors.size());
  EXPECT_EQ(names.size(), grads.tensors().size());
  EXPECT_EQ(tensors.front().name, "model.embed_tokens.weight");

  double worst = 0.0;
  std::string worst_name;
  for (const auto& [name, g] : model->grads_host()) {
    const std::vector<float> ref = read_tensor<float>(grads, name);
    ASSERT_EQ(ref.size(), g.size()) << name;
    const double err = normalized_error(g, ref);
    EXPECT_LE(err, kGradTol) << name;
    if (err > worst) worst = err, worst_name = name;
  }
  std::printf("[ %s ] loss rel err %.3g, logprob err %.3g, worst grad err %.3g (%s), %zu tensors\n",
              GetParam().c_str(), loss_err, lp_err, worst, worst_name.c_str(), tensors.size());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaFullFinetuneGolden, ::testing::Values("llama3_untied", "qwen2_tied"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

Batch batch_row(const Batch& b, int64_t r) {
  Batch out;
  out.rows = 1;
  out.seq = b.seq;
  auto slice = [&](const std::vector<int32_t>& v) {
    return std::vector<int32_t>(v.begin() + r * b.seq, v.begin() + (r + 1) * b.seq);
  };
  out.input_ids = slice(b.input_ids);
  out.position_ids = slice(b.position_ids);
  out.segment_ids = slice(b.segment_ids);
  out.labels = slice(b.labels);
  return out;
}

// Gradient accumulation: the golden batch's two rows as two micro-batches, each seeded with the
// whole group's target count, sum to the gradient of the group's mean loss.
TEST(CudaFullFinetune, AccumulatedMicroBatchesGiveTheGroupsGradient) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const fs::path dir = kGolden / "qwen2_tied";
  const Batch batch = read_batch(dir / "batch.safetensors");
  const io::SafetensorsFile grads = io::SafetensorsFile::open((dir / "grads.safetensors").string());
  int64_t count = 0;
  for (int32_t lab : batch.labels) count += lab != kIgnoreLabel;
  auto model = full_model("qwen2_tied");
  model->zero_grad();
  model->set_grad_denominator(count);
  for (int64_t r = 0; r < batch.rows; ++r) {
    (void)model->forward(batch_row(batch, r));
    model->backward();
  }
  double worst = 0.0;
  for (const auto& [name, g] : model->grads_host()) {
    const double err = normalized_error(g, read_tensor<float>(grads, name));
    EXPECT_LE(err, kGradTol) << name;
    worst = std::max(worst, err);
  }
  std::printf("[ qwen2_tied ] two accumulated micro-batches: worst grad err %.3g\n", worst);
}

TEST(CudaFullFinetune, CheckpointingAndOffloadGiveTheSameGradientsBitForBit) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Batch batch = read_batch(kGolden / "qwen2_tied" / "batch.safetensors");
  auto model = full_model("qwen2_tied");
  double loss_plain = 0, loss_ckpt = 0, loss_off = 0;
  const auto plain = step_grads(*model, batch, &loss_plain);
  model->set_checkpointing(true);
  const auto ckpt = step_grads(*model, batch, &loss_ckpt);
  model->set_checkpointing(true, true);
  const auto off = step_grads(*model, batch, &loss_off);
  EXPECT_EQ(loss_plain, loss_ckpt);
  EXPECT_EQ(loss_plain, loss_off);
  ASSERT_EQ(plain.size(), ckpt.size());
  ASSERT_EQ(plain.size(), off.size());
  for (const auto& [name, g] : plain) {
    EXPECT_EQ(0, std::memcmp(g.data(), ckpt.at(name).data(), g.size() * 4)) << name;
    EXPECT_EQ(0, std::memcmp(g.data(), off.at(name).data(), g.size() * 4)) << name;
  }
}

// bf16 weights the kernels read == cast(master), slot by slot (gaps included: zero in both).
void expect_bf16_matches_masters(const CudaLlamaModel& m) {
  const cuda::FullWeights& f = *m.full_weights();
  for (const cuda::FullWeights::Slot& s : f.slots) {
    std::vector<float> master(s.numel);
    std::vector<uint16_t> w16(s.numel), cast(s.numel);
    cuda::copy_to_host(master.data(), f.masters + s.offset, s.numel * 4, m.stream());
    cuda::copy_to_host(w16.data(), s.w16, s.numel * 2, m.stream());
    qk::cpu::cast_f32_to_bf16(master.data(), cast.data(), s.numel);
    EXPECT_EQ(w16, cast) << "slot at " << s.offset;
  }
}

TEST(CudaFullFinetune, AdamWStepsLowerTheLossAndRefreshKeepsBf16EqualToMasters) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Batch batch = read_batch(kGolden / "llama3_untied" / "batch.safetensors");
  auto model = full_model("llama3_untied");
  expect_bf16_matches_masters(*model);
  std::vector<rt::TrainableTensor> tensors;
  for (const cuda::DeviceLoraTensor& t : model->trainable_tensors())
    tensors.push_back({t.name, t.value, t.grad, static_cast<int64_t>(t.numel)});
  rt::OptimizerConfig oc;
  oc.weight_decay = 0.01f;
  rt::Optimizer opt(oc, tensors, model->stream());
  const std::vector<cuda::HostTensor> before = model->full_weights_host();
  std::vector<double> losses;
  for (int step = 0; step < 3; ++step) {
    model->zero_grad();
    losses.push_back(model->forward(batch).loss);
    model->backward();
    opt.step(2e-3f);
    model->refresh_bf16();
  }
  losses.push_back(model->forward(batch).loss);
  for (size_t i = 1; i < losses.size(); ++i) EXPECT_LT(losses[i], losses[i - 1]) << "step " << i;
  std::printf("[ llama3_untied ] AdamW loss %.4f -> %.4f over %zu steps\n", losses.front(), losses.back(),
              losses.size() - 1);
  expect_bf16_matches_masters(*model);
  // Every tensor moved (each has a nonzero gradient).
  const std::vector<cuda::HostTensor> after = model->full_weights_host();
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_NE(before[i].values, after[i].values) << before[i].name;
}

TEST(CudaFullFinetune, ForwardAloneLeavesGradientsAndWeightsRoundTripToAnHfFolder) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const fs::path dir = kGolden / "qwen2_tied";
  const Batch batch = read_batch(dir / "batch.safetensors");
  auto model = full_model("qwen2_tied");
  (void)model->forward(batch);
  for (const auto& [name, g] : model->grads_host())
    for (float v : g) ASSERT_EQ(v, 0.0f) << name;

  // The masters start as the checkpoint's fp32 values, and save_weights writes them back.
  const io::SafetensorsFile src = io::SafetensorsFile::open((dir / "model.safetensors").string());
  const std::vector<cuda::HostTensor> host = model->full_weights_host();
  for (const cuda::HostTensor& t : host) EXPECT_EQ(t.values, read_tensor<float>(src, t.name)) << t.name;
  const fs::path out = fs::temp_directory_path() / "qtrain_cuda_full_ft_save";
  fs::remove_all(out);
  model->save_weights(out.string());
  const BaseWeights saved = load_base_weights(out.string());
  EXPECT_TRUE(saved.config.tie_word_embeddings);
  const io::SafetensorsFile back = io::SafetensorsFile::open((out / "model.safetensors").string());
  EXPECT_EQ(back.tensors().size(), host.size());
  for (const cuda::HostTensor& t : host) EXPECT_EQ(t.values, read_tensor<float>(back, t.name)) << t.name;
  fs::remove_all(out);
}

TEST(CudaFullFinetune, LoraAndFullAreExclusiveAndNf4IsRefused) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const std::string dir = (kGolden / "llama3_untied").string();
  CudaModelOptions opt;
  opt.arena_bytes = size_t{64} << 20;
  LoraConfig lora;
  lora.r = 2;
  {
    auto m = CudaLlamaModel::load(dir, {}, opt);
    m->set_full_finetune(true);
    EXPECT_THROW(m->init_lora(lora, 1), Error);
    m->set_full_finetune(false);
    EXPECT_TRUE(m->full_tensors().empty());
    m->init_lora(lora, 1);
    EXPECT_THROW(m->set_full_finetune(true), Error);
    EXPECT_FALSE(m->full_finetune());
  }
  {
    LoadOptions load;
    load.quantize_nf4 = true;
    auto m = CudaLlamaModel::load(dir, load, opt);
    EXPECT_THROW(m->set_full_finetune(true), Error);
    EXPECT_FALSE(m->full_finetune());
  }
}

}  // namespace
}  // namespace qtrain::model
