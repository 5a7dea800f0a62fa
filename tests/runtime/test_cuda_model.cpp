// The CUDA model (runtime/model/cuda/) on the emulated device (or a GPU)
// against the golden files of transformers + peft (tests/data/model_golden/)
// and against the CPU fp32 model on the same inputs. Tolerances are those of
// bf16 activations (8 mantissa bits, two layers, fp32 accumulation):
//   loss 2e-2 relative, per-token log-probs 3e-2 normalized error (||a - b|| /
//   ||b||), every LoRA gradient 8e-2 normalized error (the worst measured is
//   reported in the output).
// Checkpointing and offload run the same kernels on the same inputs, so their
// gradients must equal the stored-activation run's bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/io/safetensors.h"
#include "runtime/device/device.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/model/cuda/llama_model.h"
#include "tests/common/golden_io.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;
using test::normalized_error;
using test::read_batch;
using test::read_tensor;

const fs::path kGolden = fs::path(QTRAIN_TEST_DATA_DIR) / "model_golden";

constexpr double kLossTol = 2e-2;
constexpr double kLogprobTol = 3e-2;
constexpr double kGradTol = 8e-2;

bool have_device() { return rt::query_device().available; }

struct Case {
  fs::path dir;
  std::string base;
  bool nf4 = false;
};

Case open_case(const std::string& name) {
  Case c;
  c.dir = kGolden / name;
  std::ifstream cf(c.dir / "case.json");
  const nlohmann::json meta = nlohmann::json::parse(cf);
  c.base = (c.dir / meta["base"].get<std::string>()).lexically_normal().string();
  c.nf4 = meta["nf4"].get<bool>();
  return c;
}

std::unique_ptr<CudaLlamaModel> cuda_model(const Case& c, CudaModelOptions opt = {}) {
  LoadOptions load;
  load.quantize_nf4 = c.nf4;
  opt.arena_bytes = size_t{64} << 20;
  auto m = CudaLlamaModel::load(c.base, load, opt);
  m->load_adapter((c.dir / "adapter").string());
  m->set_training(false);  // no dropout (the golden adapter has none anyway)
  return m;
}

class CudaModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaModelGolden, MatchesGoldenAndCpuModel) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case(GetParam());
  const Batch batch = read_batch(c.dir / "batch.safetensors");
  const io::SafetensorsFile expected = io::SafetensorsFile::open((c.dir / "expected.safetensors").string());

  auto model = cuda_model(c);
  model->zero_grad();
  const ForwardResult r = model->forward(batch);
  model->backward();

  LoadOptions load;
  load.quantize_nf4 = c.nf4;
  CpuLlamaModel cpu = CpuLlamaModel::load(c.base, load);
  cpu.load_adapter((c.dir / "adapter").string());
  cpu.set_training(false);
  cpu.zero_grad();
  const ForwardResult rc = cpu.forward(batch);
  cpu.backward();

  const double ref_loss = read_tensor<double>(expected, "loss")[0];
  const double loss_err = std::abs(r.loss - ref_loss) / std::abs(ref_loss);
  EXPECT_LE(loss_err, kLossTol) << r.loss << " vs " << ref_loss;
  EXPECT_LE(std::abs(r.loss - rc.loss) / std::abs(rc.loss), kLossTol);
  EXPECT_EQ(r.label_tokens, rc.label_tokens);

  const std::vector<float> ref_lp = read_tensor<float>(expected, "token_logprobs");
  ASSERT_EQ(r.token_logprobs.size(), ref_lp.size());
  const double lp_err = normalized_error(r.token_logprobs, ref_lp);
  EXPECT_LE(lp_err, kLogprobTol);
  EXPECT_LE(normalized_error(r.token_logprobs, rc.token_logprobs), kLogprobTol);
  for (size_t i = 0; i < ref_lp.size(); ++i) {
    if (batch.labels[i] == kIgnoreLabel) {
      EXPECT_EQ(r.token_logprobs[i], 0.0f) << i;
    }
  }
  ASSERT_EQ(r.sequences.size(), rc.sequences.size());
  for (size_t i = 0; i < r.sequences.size(); ++i) {
    EXPECT_EQ(r.sequences[i].tokens, rc.sequences[i].tokens);
    EXPECT_NEAR(r.sequences[i].logprob, rc.sequences[i].logprob, 3e-2 * std::abs(rc.sequences[i].logprob));
  }

  std::map<std::string, std::vector<float>> cpu_grads;
  for (const LoraTensorRef& t : cpu.lora_tensors()) cpu_grads[t.name].assign(t.grad.begin(), t.grad.end());
  double worst = 0.0, worst_cpu = 0.0;
  std::string worst_name;
  size_t checked = 0;
  for (const auto& [name, grad] : model->lora_grads_host()) {
    ASSERT_TRUE(expected.contains(name)) << name;
    const std::vector<float> ref = read_tensor<float>(expected, name);
    ASSERT_EQ(ref.size(), grad.size()) << name;
    const double err = normalized_error(grad, ref);
    const double err_cpu = normalized_error(grad, cpu_grads.at(name));
    EXPECT_LE(err, kGradTol) << name;
    EXPECT_LE(err_cpu, kGradTol) << name;
    if (err > worst) worst = err, worst_name = name;
    worst_cpu = std::max(worst_cpu, err_cpu);
    ++checked;
  }
  EXPECT_EQ(checked, 2u * 7u * static_cast<size_t>(model->config().num_hidden_layers));
  std::printf(
      "[ %s ] loss rel err %.3g, logprob err %.3g, worst grad err %.3g "
      "(%s), vs CPU %.3g\n",
      GetParam().c_str(), loss_err, lp_err, worst, worst_name.c_str(), worst_cpu);
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaModelGolden,
                         ::testing::Values("llama_mha", "llama3_gqa", "qwen2_bias", "mistral_swa", "llama3_gqa_nf4"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

std::map<std::string, std::vector<float>> step_grads(CudaLlamaModel& m, const Batch& b, double* loss) {
  m.zero_grad();
  *loss = m.forward(b).loss;
  m.backward();
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, g] : m.lora_grads_host()) out[name] = std::move(g);
  return out;
}

TEST(CudaModel, CheckpointingAndOffloadGiveTheSameGradientsBitForBit) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case("llama3_gqa");
  const Batch batch = read_batch(c.dir / "batch.safetensors");
  auto model = cuda_model(c);
  double loss_plain = 0, loss_ckpt = 0, loss_off = 0;
  const auto plain = step_grads(*model, batch, &loss_plain);
  model->set_checkpointing(true);
  const auto ckpt = step_grads(*model, batch, &loss_ckpt);
  model->set_checkpointing(true, true);
  const auto off = step_grads(*model, batch, &loss_off);
  EXPECT_EQ(loss_plain, loss_ckpt);
  EXPECT_EQ(loss_plain, loss_off);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (const auto& [name, g] : plain) {
    EXPECT_EQ(0, std::memcmp(g.data(), ckpt.at(name).data(), g.size() * 4)) << name;
    EXPECT_EQ(0, std::memcmp(g.data(), off.at(name).data(), g.size() * 4)) << name;
  }
}

// The Mistral case's sliding window (5) reaches the kernels: without it (sliding_window null in a
// copy of the config) the log-probabilities move far from the windowed golden ones, with it they
// sit within bf16 error of them.
TEST(CudaModel, SlidingWindowReachesTheKernels) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case("mistral_swa");
  Case full = c;
  full.base = (fs::path(::testing::TempDir()) / "qtrain_cuda_mistral_no_window").string();
  fs::remove_all(full.base);
  fs::create_directories(full.base);
  fs::copy_file(fs::path(c.base) / "model.safetensors", fs::path(full.base) / "model.safetensors");
  std::ifstream in(fs::path(c.base) / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["sliding_window"] = nullptr;
  std::ofstream(fs::path(full.base) / "config.json") << config.dump(2);

  const Batch batch = read_batch(c.dir / "batch.safetensors");
  const io::SafetensorsFile expected = io::SafetensorsFile::open((c.dir / "expected.safetensors").string());
  const std::vector<float> ref_lp = read_tensor<float>(expected, "token_logprobs");
  const ForwardResult with_window = cuda_model(c)->forward(batch);
  const ForwardResult without = cuda_model(full)->forward(batch);
  const double err_with = normalized_error(with_window.token_logprobs, ref_lp);
  const double err_without = normalized_error(without.token_logprobs, ref_lp);
  EXPECT_LE(err_with, kLogprobTol);
  EXPECT_GT(err_without, 3 * err_with);
  EXPECT_GT(std::abs(without.loss - with_window.loss) / with_window.loss, 1e-2);
  std::printf("[ mistral_swa ] logprob err with the window %.3g, without %.3g\n", err_with, err_without);
  fs::remove_all(full.base);
}

TEST(CudaModel, AdapterOffGivesTheBaseModelsLoss) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case("llama_mha");
  const Batch batch = read_batch(c.dir / "batch.safetensors");
  auto model = cuda_model(c);
  const double with_adapter = model->forward(batch).loss;
  model->set_adapter_enabled(false);
  const ForwardResult off = model->forward(batch);
  EXPECT_THROW(model->backward(), Error);

  CpuLlamaModel cpu = CpuLlamaModel::load(c.base);
  cpu.load_adapter((c.dir / "adapter").string());
  cpu.set_adapter_enabled(false);
  const ForwardResult base = cpu.evaluate(batch);
  EXPECT_LE(std::abs(off.loss - base.loss) / base.loss, kLossTol) << off.loss << " vs " << base.loss;
  EXPECT_GT(std::abs(with_adapter - off.loss),
            1e-3);  // the adapter matters in this case
  model->set_adapter_enabled(true);
  EXPECT_EQ(model->forward(batch).loss, with_adapter);
}

TEST(CudaModel, InitLoraMatchesTheCpuModelsInit) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case("llama_mha");
  auto model = cuda_model(c);
  LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  model->init_lora(lora, 1234);
  CpuLlamaModel cpu = CpuLlamaModel::load(c.base);
  cpu.init_lora(lora, 1234);
  const PeftAdapter ours = model->adapter();
  const PeftAdapter theirs = cpu.adapter();
  ASSERT_EQ(ours.tensors.size(), theirs.tensors.size());
  for (const auto& [name, t] : theirs.tensors) EXPECT_EQ(ours.tensors.at(name).values, t.values) << name;
  // B = 0: the adapter starts as the identity on the base model.
  const Batch batch = read_batch(c.dir / "batch.safetensors");
  const double loss = model->forward(batch).loss;
  model->set_adapter_enabled(false);
  EXPECT_EQ(model->forward(batch).loss, loss);
}

// An adapter on some projections only (q, v and down of the golden adapter): the CUDA model gives k
// no rank in the fused q|k|v linear and runs o and gate|up as their bases alone (no A, B, X A or
// workspace); loss and every gradient still match the CPU model's, and checkpointing still gives the
// same gradients bit for bit.
TEST(CudaModel, PartialTargetsMatchTheCpuModel) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const Case c = open_case("llama3_gqa");
  const Batch batch = read_batch(c.dir / "batch.safetensors");
  PeftAdapter partial = load_peft_adapter((c.dir / "adapter").string());
  partial.config.targets = {Proj::Q, Proj::V, Proj::Down};
  for (auto it = partial.tensors.begin(); it != partial.tensors.end();) {
    const bool keep = it->first.find("q_proj") != std::string::npos || it->first.find("v_proj") != std::string::npos ||
                      it->first.find("down_proj") != std::string::npos;
    it = keep ? std::next(it) : partial.tensors.erase(it);
  }
  auto model = cuda_model(c);
  const size_t all_kinds = model->arena().used();
  model->set_adapter(partial, "partial");
  EXPECT_LT(model->arena().used(), all_kinds);  // 3 of the 7 kinds' tensors only
  double loss = 0, loss_ckpt = 0;
  const auto grads = step_grads(*model, batch, &loss);
  model->set_checkpointing(true);
  const auto ckpt = step_grads(*model, batch, &loss_ckpt);
  EXPECT_EQ(loss, loss_ckpt);

  CpuLlamaModel cpu = CpuLlamaModel::load(c.base);
  cpu.set_adapter(partial, "partial");
  cpu.set_training(false);
  cpu.zero_grad();
  const ForwardResult rc = cpu.forward(batch);
  cpu.backward();
  EXPECT_LE(std::abs(loss - rc.loss) / std::abs(rc.loss), kLossTol);
  std::map<std::string, std::vector<float>> cpu_grads;
  for (const LoraTensorRef& t : cpu.lora_tensors()) cpu_grads[t.name].assign(t.grad.begin(), t.grad.end());
  ASSERT_EQ(grads.size(), cpu_grads.size());
  EXPECT_EQ(grads.size(), 2u * 3u * static_cast<size_t>(model->config().num_hidden_layers));
  for (const auto& [name, g] : grads) {
    EXPECT_LE(normalized_error(g, cpu_grads.at(name)), kGradTol) << name;
    EXPECT_EQ(0, std::memcmp(g.data(), ckpt.at(name).data(), g.size() * 4)) << name;
  }
}

}  // namespace
}  // namespace qtrain::model
