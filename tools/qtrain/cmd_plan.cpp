// `qtrain plan`: the memory plan of a run (runtime/memory/plan.h) as a table, then the largest micro
// batch and the largest sequence length that fit gpu_memory_limit. A plan over the limit prints the
// table and exits 3, as the trainer would before its first step. Flags follow axolotl's key names;
// or a run file (`qtrain plan run.yaml [--set k=v]`) gives every setting, as `qtrain train` reads it.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"
#include "runtime/memory/arena.h"
#include "runtime/memory/plan.h"
#include "runtime/train/run_plan.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_plan(CLI::App& root) {
  struct Args {
    std::string run_file;
    std::vector<std::string> overrides;
    std::string model, preset;
    std::string adapter = "qlora";
    int64_t lora_r = 8;
    std::vector<std::string> targets = {"all-linear"};
    int64_t micro_batch = 1, seq_len = 2048;
    bool checkpointing = false, offload = false;
    std::string optimizer = "paged_adamw_8bit";
    std::string limit = "24GiB";
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("plan", "Print the GPU memory plan of a training run and the largest batch / "
                                              "sequence length that fit");
  auto* run_file = app->add_option("run_file", a->run_file,
                                   "A run file (YAML, as for qtrain train): its model and settings, instead of flags");
  app->add_option("--set", a->overrides, "With a run file: override a key, --set key=value (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* model = app->add_option("--model", a->model, "Model folder (or its config.json)");
  auto* preset = app->add_option("--preset", a->preset, "Model shape without a folder: llama2-7b, llama3-8b or tiny");
  model->excludes(preset);
  preset->excludes(model);
  run_file->excludes(model);
  run_file->excludes(preset);
  app->add_option("--adapter", a->adapter, "qlora, lora or full")->capture_default_str();
  app->add_option("--lora-r", a->lora_r, "LoRA rank (lora_r)")->capture_default_str();
  app->add_option("--lora-target-modules", a->targets, "LoRA target modules, or all-linear")
      ->delimiter(',')
      ->capture_default_str();
  app->add_option("--micro-batch-size", a->micro_batch, "Sequences per micro batch")->capture_default_str();
  app->add_option("--sequence-len", a->seq_len, "Tokens per sequence")->capture_default_str();
  app->add_flag("--gradient-checkpointing,!--no-gradient-checkpointing", a->checkpointing,
                "Keep only each layer's input and recompute the layer in backward");
  app->add_flag("--offload", a->offload, "With checkpointing: keep the layer inputs in pinned host memory");
  app->add_option("--optimizer", a->optimizer, "adamw, adamw_8bit, paged_adamw_32bit or paged_adamw_8bit")
      ->capture_default_str();
  app->add_option("--gpu-memory-limit", a->limit, "Device memory cap, like 24GiB")->capture_default_str();

  return {app, [a]() {
            rt::PlanInput in;
            size_t limit = rt::parse_byte_size(a->limit, "gpu_memory_limit");
            std::string what;
            if (!a->run_file.empty()) {
              const config::RunConfig cfg = config::load_run_config(a->run_file, a->overrides);
              if (cfg.base_model.empty()) throw_bad_input(a->run_file, "base_model is not set", "key base_model");
              in = train::plan_input_for_run(cfg, io::load_model_config(cfg.base_model));
              if (cfg.gpu_memory_limit_bytes) limit = static_cast<size_t>(cfg.gpu_memory_limit_bytes);
              what = a->run_file + " (" + cfg.base_model + ")";
            } else {
              if (a->model.empty() && a->preset.empty())
                throw_bad_input("qtrain plan", "give a run file, --model <folder> or --preset llama2-7b|llama3-8b|tiny");
              in.model = a->model.empty() ? rt::model_preset(a->preset) : io::load_model_config(a->model);
              in.adapter = rt::parse_adapter(a->adapter, "--adapter");
              in.lora_r = a->lora_r;
              in.lora_target_modules = rt::parse_target_modules(a->targets, "--lora-target-modules");
              in.micro_batch_size = a->micro_batch;
              in.sequence_len = a->seq_len;
              in.gradient_checkpointing = a->checkpointing;
              in.offload = a->offload;
              in.optimizer = rt::parse_optimizer_name(a->optimizer, "--optimizer");
              what = a->model.empty() ? a->preset : a->model;
            }
            if (in.offload && !in.gradient_checkpointing)
              throw_bad_input("--offload", "offloading needs --gradient-checkpointing");

            const rt::MemoryPlan plan = rt::make_memory_plan(in);
            std::printf("%s, adapter %s, micro batch %lld x %lld tokens, gradient checkpointing %s%s\n\n",
                        what.c_str(), rt::adapter_name(in.adapter),
                        static_cast<long long>(in.micro_batch_size), static_cast<long long>(in.sequence_len),
                        in.gradient_checkpointing ? "on" : "off", in.offload ? " (offloaded)" : "");
            std::printf("%s\n", rt::format_plan(plan, limit).c_str());
            const int64_t batch = rt::largest_micro_batch(in, limit);
            const int64_t seq = rt::largest_sequence_len(in, limit);
            std::printf("largest micro batch at sequence_len %lld: %lld\n", static_cast<long long>(in.sequence_len),
                        static_cast<long long>(batch));
            std::printf("largest sequence_len at micro batch %lld: %lld\n", static_cast<long long>(in.micro_batch_size),
                        static_cast<long long>(seq));
            std::fflush(stdout);
            if (plan.peak > limit)
              throw_out_of_memory("the plan needs " + rt::format_bytes(plan.peak) + ", over gpu_memory_limit " +
                                  rt::format_bytes(limit));
            return 0;
          }};
}

}  // namespace qtrain::tools
