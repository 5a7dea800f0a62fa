// `qtrain bench`: training-step throughput, MFU, peak memory against the plan and each op's share of
// the step, for a preset model shape with random weights (runtime/bench/bench_run.h), so speed and
// memory can be checked without downloading a model. On a machine without a GPU (or with --cpu) it
// runs the tiny preset on the CPU model.
#include <cstdio>
#include <memory>
#include <string>

#include "runtime/bench/bench_run.h"
#include "runtime/memory/plan.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_bench(CLI::App& root) {
  struct Args {
    bench::BenchOptions opt;
    std::string optimizer = "paged_adamw_8bit";
    std::string arena;
    bool no_checkpointing = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("bench", "Time QLoRA training steps of a preset model with random weights: "
                                               "tokens/s, MFU, peak memory");
  app->add_option("--preset", a->opt.preset, "llama2-7b, llama3-8b or tiny")->required();
  app->add_option("--seq", a->opt.seq, "Tokens per sequence")->capture_default_str();
  app->add_option("--batch", a->opt.batch, "Sequences per step")->capture_default_str();
  app->add_option("--steps", a->opt.steps, "Timed steps")->capture_default_str();
  app->add_option("--warmup", a->opt.warmup, "Untimed steps first")->capture_default_str();
  app->add_option("--lora-r", a->opt.lora_r, "LoRA rank")->capture_default_str();
  app->add_flag("--no-checkpointing", a->no_checkpointing, "Keep every activation instead of recomputing layers");
  app->add_flag("--cpu", a->opt.cpu, "Run the CPU model (tiny preset only)");
  app->add_option("--optimizer", a->optimizer, "adamw, adamw_8bit, paged_adamw_32bit or paged_adamw_8bit")
      ->capture_default_str();
  app->add_option("--gpu-memory-limit", a->arena, "Arena size, like 24GiB (default: free memory less 2 GiB)");
  app->add_option("--peak-tflops", a->opt.peak_tflops, "Peak TFLOP/s for the MFU (default: the device's bf16 peak)");
  app->add_option("--op-shares", a->opt.op_share_steps,
                  "Extra steps after the timed ones, profiled for each range's share of the step (0: none)")
      ->capture_default_str();
  app->add_option("--seed", a->opt.seed, "Seed of the weights, adapter and batch")->capture_default_str();

  return {app, [a]() {
            bench::BenchOptions opt = a->opt;
            opt.checkpointing = !a->no_checkpointing;
            opt.optimizer = rt::parse_optimizer_name(a->optimizer, "--optimizer");
            if (!a->arena.empty()) opt.arena_bytes = rt::parse_byte_size(a->arena, "--gpu-memory-limit");
            const bench::BenchResult r = bench::run_bench(opt);
            std::fputs(bench::format_bench(opt, r).c_str(), stdout);
            std::fflush(stdout);
            return 0;
          }};
}

}  // namespace qtrain::tools
