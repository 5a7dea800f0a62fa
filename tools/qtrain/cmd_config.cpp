// `qtrain config [run.yaml] [--set key=value ...]`: validates a run file and prints the resolved
// config (every key, defaults filled in) as YAML. --keys lists every key with its type, default
// and help; --data also tokenizes the datasets with the model's tokenizer and reports counts and
// batches per epoch; --write saves the resolved config to output_dir/run_config.yaml.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "csrc/data/batch.h"
#include "csrc/data/sft_dataset.h"
#include "csrc/text/tokenizer.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {
namespace {

void report_data(const config::RunConfig& cfg) {
  const text::Tokenizer tok = data::load_run_tokenizer(cfg);
  const data::SftData d = data::build_sft_data(cfg, tok);
  for (const auto& w : d.stats.warnings) std::fprintf(stderr, "qtrain: warning: %s\n", w.c_str());
  data::BatchOptions opt;
  opt.sequence_len = cfg.sequence_len;
  opt.micro_batch_size = cfg.micro_batch_size;
  opt.packing = cfg.sample_packing;
  opt.pad_to_sequence_len = cfg.pad_to_sequence_len;
  opt.pad_id = tok.pad_id();
  opt.seed = static_cast<uint64_t>(cfg.seed);
  const data::BatchIterator it(d.train, opt);
  const int64_t steps_per_epoch = (it.batches_per_epoch() + cfg.gradient_accumulation_steps - 1) /
                                  cfg.gradient_accumulation_steps;
  const int64_t total_steps = config::total_optimizer_steps(cfg, it.batches_per_epoch());
  config::check_total_steps(cfg, total_steps);
  std::printf("# data: %lld lines, %lld examples (%lld train, %lld val), %lld bad lines skipped, %lld truncated to %lld "
              "tokens, %lld without targets dropped\n",
              static_cast<long long>(d.stats.lines), static_cast<long long>(d.stats.examples),
              static_cast<long long>(d.train.size()), static_cast<long long>(d.val.size()),
              static_cast<long long>(d.stats.bad_lines), static_cast<long long>(d.stats.truncated),
              static_cast<long long>(cfg.sequence_len), static_cast<long long>(d.stats.no_targets));
  std::printf("# data: %lld tokens, %lld targets; %lld rows, %lld micro-batches, %lld optimizer steps per epoch; "
              "%lld steps in all, %lld warmup\n",
              static_cast<long long>(d.stats.tokens), static_cast<long long>(d.stats.targets),
              static_cast<long long>(it.rows_per_epoch()), static_cast<long long>(it.batches_per_epoch()),
              static_cast<long long>(steps_per_epoch), static_cast<long long>(total_steps),
              static_cast<long long>(config::resolved_warmup_steps(cfg, total_steps)));
}

}  // namespace

Command add_config(CLI::App& root) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    bool keys = false;
    bool data = false;
    bool write = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("config", "Validate a run file and print the resolved config as YAML");
  app->add_option("run_file", a->file, "The YAML run file (axolotl key names)");
  app->add_option("--set", a->overrides, "Override a key: --set key=value (value read as YAML; repeatable)")
      ->allow_extra_args(false)  // one value per --set, so a run file may follow it
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_flag("--keys", a->keys, "List every key with its type, default and help");
  app->add_flag("--data", a->data, "Also tokenize the datasets with the model's tokenizer and report counts");
  app->add_flag("--write", a->write, "Write the resolved config to <output_dir>/run_config.yaml");

  return {app, [a]() {
            if (a->keys) {
              std::fputs(config::render_run_config_help().c_str(), stdout);
              if (a->file.empty()) return 0;
            }
            if (a->file.empty()) throw_bad_input("qtrain config", "give a run file (or --keys)");
            const config::RunConfig cfg = config::load_run_config(a->file, a->overrides);
            std::fputs(config::to_yaml(cfg).c_str(), stdout);
            if (a->data) report_data(cfg);
            if (a->write) std::printf("# wrote %s\n", config::write_resolved_config(cfg, cfg.output_dir).c_str());
            return 0;
          }};
}

}  // namespace qtrain::tools
