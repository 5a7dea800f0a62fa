// `qtrain train` on the GPU backend (runtime/train/cuda_backend.*), run on the emulated device in CI
// and on a GPU by tools/gpu-check, with a tiny model and a synthetic alpaca set:
//  - QLoRA SFT with gradient accumulation follows the CPU backend's run: every step's loss within
//    bf16 tolerance (3e-2 relative), and the eval loss falls on both;
//  - the adapter it saves, loaded into the CPU fp32 model, gives the GPU run's final eval loss
//    within bf16 tolerance;
//  - a run stopped after step 2 and resumed logs the same losses and grad norms as the uninterrupted
//    run (bit for bit: the device masters and optimizer states are saved exactly and every kernel is
//    deterministic);
//  - a gpu_memory_limit too small for the run is an OutOfMemory error whose message carries the
//    run's memory plan and what to lower (and no adapter is written);
//  - full fine-tuning (adapter: full) on the GPU follows the CPU's full fine-tuning, step by step,
//    and writes a model folder;
//  - device: auto does not pick the emulated device; device: cuda does.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "csrc/data/sft_dataset.h"
#include "csrc/data/synthetic.h"
#include "csrc/io/tiny_model.h"
#include "runtime/device/device.h"
#include "runtime/train/run_setup.h"
#include "runtime/train/sft_trainer.h"
#include "runtime/train/train_backend.h"

namespace qtrain::train {
namespace {

namespace fs = std::filesystem;

constexpr double kLossTol = 3e-2;

const fs::path& work_dir() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / ("qtrain_cuda_trainer_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    io::TinyModelOptions o;
    o.seed = 1;
    io::write_tiny_model((d / "model").string(), o);
    data::write_synthetic_alpaca((d / "data.jsonl").string(), 3, 48);
    return d;
  }();
  return dir;
}

config::RunConfig run_config(const std::string& device, const std::string& out, std::vector<std::string> extra = {}) {
  const fs::path& d = work_dir();
  const std::string yaml = "base_model: " + (d / "model").string() +
                           "\n"
                           "adapter: qlora\n"
                           "lora_r: 8\n"
                           "lora_alpha: 16\n"
                           "sequence_len: 128\n"
                           "micro_batch_size: 2\n"
                           "gradient_accumulation_steps: 2\n"
                           "max_steps: 4\n"
                           "learning_rate: 0.01\n"
                           "lr_scheduler: cosine\n"
                           "warmup_steps: 1\n"
                           "optimizer: paged_adamw_8bit\n"
                           "datasets:\n"
                           "  - path: " +
                           (d / "data.jsonl").string() +
                           "\n"
                           "    type: alpaca\n"
                           "val_set_size: 4\n"
                           "eval_steps: 4\n"
                           "save_steps: 2\n"
                           "seed: 7\n"
                           "gpu_memory_limit: 256MiB\n";
  extra.push_back("device=" + device);
  extra.push_back("output_dir=" + (d / out).string());
  return config::parse_run_config(yaml, "run.yaml", extra);
}

struct Step {
  double loss = 0.0, grad_norm = 0.0;
};

std::vector<Step> train_steps(const std::string& out) {
  std::ifstream in(work_dir() / out / "metrics.jsonl");
  std::vector<Step> steps;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("type", "") == "train") steps.push_back({j["loss"].get<double>(), j["grad_norm"].get<double>()});
  }
  return steps;
}

class CudaTrainer : public ::testing::Test {
 protected:
  void SetUp() override {
    const rt::DeviceInfo dev = rt::query_device(0);
    if (!dev.available) GTEST_SKIP() << "no device: " << dev.reason;
  }
};

// One test for the QLoRA run, its adapter and its resume: each run costs a minute or more on the
// emulated device, and CTest runs every test case in a process of its own.
TEST_F(CudaTrainer, QloraFollowsTheCpuSavesItsAdapterAndResumesExactly) {
  std::FILE* quiet = std::fopen("/dev/null", "w");
  TrainOptions opt;
  opt.log = quiet;
  const TrainResult cpu_run = run_sft(run_config("cpu", "cpu"), opt);
  const TrainResult gpu_run = run_sft(run_config("cuda", "gpu"), opt);
  opt.stop_at_step = 2;
  const TrainResult stopped = run_sft(run_config("cuda", "resumed"), opt);
  opt.stop_at_step = 0;
  opt.resume = true;
  const TrainResult resumed = run_sft(run_config("cuda", "resumed"), opt);
  std::fclose(quiet);

  {
    SCOPED_TRACE("the GPU run follows the CPU run");
    const std::vector<Step> cpu = train_steps("cpu"), gpu = train_steps("gpu");
    ASSERT_EQ(cpu.size(), 4u);
    ASSERT_EQ(gpu.size(), 4u);
    for (size_t i = 0; i < cpu.size(); ++i) {
      const double rel = std::fabs(gpu[i].loss - cpu[i].loss) / std::fabs(cpu[i].loss);
      std::printf("step %zu: loss cpu %.6f gpu %.6f (rel %.2e); grad norm cpu %.5f gpu %.5f\n", i + 1, cpu[i].loss,
                  gpu[i].loss, rel, cpu[i].grad_norm, gpu[i].grad_norm);
      EXPECT_LT(rel, kLossTol) << "step " << i + 1;
      EXPECT_LT(std::fabs(gpu[i].grad_norm - cpu[i].grad_norm), 0.1 * cpu[i].grad_norm + 1e-3) << "step " << i + 1;
    }
    ASSERT_TRUE(gpu_run.first_eval && gpu_run.last_eval && cpu_run.first_eval && cpu_run.last_eval);
    std::printf("eval loss cpu %.4f -> %.4f, gpu %.4f -> %.4f\n", cpu_run.first_eval->loss, cpu_run.last_eval->loss,
                gpu_run.first_eval->loss, gpu_run.last_eval->loss);
    EXPECT_LT(gpu_run.last_eval->loss, gpu_run.first_eval->loss);
    EXPECT_LT(std::fabs(gpu_run.last_eval->loss - cpu_run.last_eval->loss) / cpu_run.last_eval->loss, kLossTol);
  }
  {
    SCOPED_TRACE("the GPU run's adapter on the CPU model");
    const fs::path out = work_dir() / "gpu";
    for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "run_config.yaml", "loss_curve.svg"})
      EXPECT_TRUE(fs::exists(out / f)) << f;
    const config::RunConfig cfg = run_config("cpu", "gpu");
    model::CpuLlamaModel m = load_model_for_run(cfg);
    m.load_adapter(out.string());
    const text::Tokenizer tok = data::load_run_tokenizer(cfg);
    const data::SftData d = data::build_sft_data(cfg, tok);
    const EvalRecord e = evaluate_examples(m, d.val, batch_options_for_run(cfg, tok.pad_id(), false), 0);
    std::printf("GPU adapter on the CPU model: eval loss %.6f, the GPU run logged %.6f\n", e.loss,
                gpu_run.last_eval->loss);
    EXPECT_LT(std::fabs(e.loss - gpu_run.last_eval->loss) / e.loss, kLossTol);
  }
  {
    SCOPED_TRACE("stopped after step 2 and resumed");
    EXPECT_TRUE(stopped.stopped_early);
    EXPECT_EQ(resumed.resumed_from, 2);
    const std::vector<Step> a = train_steps("gpu"), b = train_steps("resumed");
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].loss, b[i].loss) << "step " << i + 1;
      EXPECT_EQ(a[i].grad_norm, b[i].grad_norm) << "step " << i + 1;
    }
  }
}

TEST_F(CudaTrainer, OverTheMemoryCapIsOutOfMemoryWithThePlan) {
  const config::RunConfig cfg = run_config("cuda", "oom", {"gpu_memory_limit=1MiB", "micro_batch_size=4"});
  std::FILE* quiet = std::fopen("/dev/null", "w");
  TrainOptions opt;
  opt.log = quiet;
  try {
    (void)run_sft(cfg, opt);
    std::fclose(quiet);
    FAIL() << "a 1 MiB cap should not hold the model";
  } catch (const Error& e) {
    std::fclose(quiet);
    const std::string what = e.what();
    std::printf("%s\n", what.c_str());
    EXPECT_EQ(e.kind(), ErrorKind::OutOfMemory);
    EXPECT_NE(what.find("device arena exhausted"), std::string::npos);
    EXPECT_NE(what.find("memory plan of run.yaml"), std::string::npos);
    EXPECT_NE(what.find("base weights"), std::string::npos);
    EXPECT_NE(what.find("gradient_checkpointing: true"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(work_dir() / "oom" / "adapter_model.safetensors"));
}

TEST_F(CudaTrainer, FullFineTuningFollowsTheCpuBackend) {
  const std::vector<std::string> full = {"adapter=full", "optimizer=adamw", "learning_rate=0.001", "max_steps=2",
                                         "save_steps=1000", "eval_steps=1000"};
  std::FILE* quiet = std::fopen("/dev/null", "w");
  TrainOptions opt;
  opt.log = quiet;
  (void)run_sft(run_config("cpu", "full_cpu", full), opt);
  (void)run_sft(run_config("cuda", "full_gpu", full), opt);
  std::fclose(quiet);
  const std::vector<Step> cpu = train_steps("full_cpu"), gpu = train_steps("full_gpu");
  ASSERT_EQ(cpu.size(), 2u);
  ASSERT_EQ(gpu.size(), 2u);
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double rel = std::fabs(gpu[i].loss - cpu[i].loss) / std::fabs(cpu[i].loss);
    std::printf("full, step %zu: loss cpu %.6f gpu %.6f (rel %.2e); grad norm cpu %.5f gpu %.5f\n", i + 1,
                cpu[i].loss, gpu[i].loss, rel, cpu[i].grad_norm, gpu[i].grad_norm);
    EXPECT_LT(rel, kLossTol) << "step " << i + 1;
    EXPECT_LT(std::fabs(gpu[i].grad_norm - cpu[i].grad_norm), 0.1 * cpu[i].grad_norm) << "step " << i + 1;
  }
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model"})
    EXPECT_TRUE(fs::exists(work_dir() / "full_gpu" / f)) << f;
}

TEST_F(CudaTrainer, DeviceChoice) {
  EXPECT_EQ(resolve_device(run_config("cuda", "x")), "cuda");
  EXPECT_EQ(resolve_device(run_config("cpu", "x")), "cpu");
  const rt::DeviceInfo dev = rt::query_device(0);
  EXPECT_EQ(resolve_device(run_config("auto", "x")), dev.emulated ? "cpu" : "cuda");
}

}  // namespace
}  // namespace qtrain::train
