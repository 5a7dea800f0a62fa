// `qtrain eval <run.yaml> [--adapter DIR] [--instruction TEXT]...`: the held-out loss of the base
// model, or of the base plus a saved PEFT adapter, on the run's validation split (the split
// `qtrain train` holds out with the same config), and greedy answers to alpaca-style instructions
// or raw prompts.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "csrc/data/formats.h"
#include "csrc/data/sft_dataset.h"
#include "runtime/train/generate.h"
#include "runtime/train/run_setup.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_eval(CLI::App& root) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    std::string adapter;
    std::vector<std::string> instructions, prompts;
    int64_t max_new_tokens = 24;
    bool no_loss = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("eval", "Held-out loss and greedy answers of the base model or an adapter");
  app->add_option("run_file", a->file, "The YAML run file (base_model, datasets, val_set_size, ...)")->required();
  app->add_option("--set", a->overrides, "Override a key: --set key=value (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--adapter", a->adapter, "A PEFT adapter folder (adapter_config.json + adapter_model.safetensors)");
  app->add_option("--instruction", a->instructions, "Answer this instruction (alpaca prompt; repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--prompt", a->prompts, "Continue this raw prompt (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate at most")->capture_default_str();
  app->add_flag("--no-loss", a->no_loss, "Skip the held-out loss (only generate)");

  return {app, [a]() {
            const config::RunConfig cfg = config::load_run_config(a->file, a->overrides);
            model::CpuLlamaModel m = train::load_model_for_run(cfg);
            if (!a->adapter.empty()) m.load_adapter(a->adapter);
            const text::Tokenizer tok = data::load_run_tokenizer(cfg);
            const std::string who = a->adapter.empty() ? "base model" : "adapter " + a->adapter;
            if (!a->no_loss) {
              const data::SftData d = data::build_sft_data(cfg, tok);
              if (d.val.empty()) throw_bad_input(cfg.source, "no held-out examples to evaluate", "key val_set_size");
              const train::EvalRecord r =
                  train::evaluate_examples(m, d.val, train::batch_options_for_run(cfg, tok.pad_id(), false), 0);
              std::printf("eval (%s): loss %.6f | perplexity %.4f | %lld target tokens in %zu examples\n", who.c_str(),
                          r.loss, r.perplexity, static_cast<long long>(r.tokens), d.val.size());
            }
            for (const std::string& ins : a->instructions) {
              const std::string out = train::generate_text(m, tok, data::alpaca_prompt(ins, ""), a->max_new_tokens);
              std::printf("Q: %s\nA (%s): %s\n", ins.c_str(), who.c_str(), out.c_str());
            }
            for (const std::string& p : a->prompts) {
              const std::string out = train::generate_text(m, tok, p, a->max_new_tokens);
              std::printf("%s|%s\n", p.c_str(), out.c_str());
            }
            return 0;
          }};
}

}  // namespace qtrain::tools
