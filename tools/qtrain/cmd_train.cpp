// `qtrain train <run.yaml> [--set key=value]... [--resume]`: supervised fine-tuning (QLoRA, LoRA or
// full) on the GPU when there is one, else on the CPU (the run's `device` key), writing the adapter
// (or the model folder), metrics.jsonl, loss_curve.svg and checkpoints to output_dir.
// SIGINT / SIGTERM checkpoint at the next step boundary and exit with 130 / 143
// (128 + the signal number); --resume then continues exactly.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "runtime/train/sft_trainer.h"
#include "runtime/train/stop_signal.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_train(CLI::App& root) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    bool resume = false;
    int64_t stop_at_step = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("train", "Fine-tune (SFT: QLoRA, LoRA or full) as a run file says");
  app->add_option("run_file", a->file, "The YAML run file (axolotl key names)")->required();
  app->add_option("--set", a->overrides, "Override a key: --set key=value (value read as YAML; repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_flag("--resume", a->resume, "Continue from the newest checkpoint in output_dir");
  app->add_option("--stop-at-step", a->stop_at_step,
                  "Checkpoint and stop after this step, as an interruption would (for tests)")
      ->check(CLI::NonNegativeNumber);
  app->footer("Exit codes: 0 done, 2 bad input or config, 3 out of memory, 1 internal error, 130 / 143 stopped by\n"
              "SIGINT / SIGTERM after saving a checkpoint.\n\nRun file keys (name, type, default, help):\n" +
              config::render_run_config_help());

  return {app, [a]() {
            const config::RunConfig cfg = config::load_run_config(a->file, a->overrides);
            train::TrainOptions opt;
            opt.resume = a->resume;
            opt.stop_at_step = a->stop_at_step;
            train::install_stop_handlers();
            train::TrainResult r;
            try {
              r = train::run_sft(cfg, opt);
            } catch (...) {
              train::restore_default_handlers();
              throw;
            }
            train::restore_default_handlers();
            return r.stop_signal ? 128 + r.stop_signal : 0;
          }};
}

}  // namespace qtrain::tools
