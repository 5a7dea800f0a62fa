// `qtrain eval <run.yaml> [--adapter DIR] [--instruction TEXT]...`: the held-out loss of the base
// model, or of the base plus a saved PEFT adapter, on the run's validation split (the split
// `qtrain train` holds out with the same config), and greedy answers to alpaca-style instructions
// or raw prompts. `--dump-logprobs FILE` writes, for `--tokens` (or the first `--prompt`, encoded as
// generation encodes it), the ids used, log p(ids[t+1] | ids[..t]) and the last position's logits
// as JSON, for tests/reference/peft_adapter_check.py.
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

namespace {

// evaluate() gives log p of each shifted label; the last position's logits are final_hidden() times
// the head, as greedy decoding computes them.
void dump_logprobs(const model::CpuLlamaModel& m, const text::Tokenizer& tok, std::vector<int32_t> ids,
                   const std::vector<std::string>& prompts, const std::string& path) {
  if (ids.empty() && !prompts.empty()) ids = tok.encode(prompts.front(), tok.add_bos_token(), false);
  if (ids.size() < 2) throw_bad_input("--dump-logprobs", "needs --tokens or --prompt giving at least 2 tokens");
  const int64_t n = static_cast<int64_t>(ids.size()), h = m.config().hidden_size, vocab = m.config().vocab_size;
  model::Batch b;
  b.seq = n;
  std::vector<int32_t> labels(ids.begin() + 1, ids.end());
  labels.push_back(model::kIgnoreLabel);
  model::append_row(b, ids, labels, 0);
  const model::ForwardResult r = m.evaluate(b);
  const std::vector<float> hidden = m.final_hidden(b);
  const float* last = hidden.data() + (n - 1) * h;
  const std::vector<float>& head = m.base().head();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw_bad_input(path, "cannot open for writing");
  std::fprintf(f, "{\"tokens\": [");
  for (int64_t t = 0; t < n; ++t) std::fprintf(f, "%s%d", t ? ", " : "", ids[t]);
  std::fprintf(f, "],\n \"logprobs\": [");
  for (int64_t t = 0; t + 1 < n; ++t) std::fprintf(f, "%s%.9g", t ? ", " : "", r.token_logprobs[t]);
  std::fprintf(f, "],\n \"last_logits\": [");
  for (int64_t v = 0; v < vocab; ++v) {
    double logit = 0.0;
    for (int64_t i = 0; i < h; ++i) logit += static_cast<double>(last[i]) * head[v * h + i];
    std::fprintf(f, "%s%.9g", v ? ", " : "", logit);
  }
  std::fprintf(f, "]}\n");
  if (std::fclose(f) != 0) throw_bad_input(path, "write failed");
}

}  // namespace

Command add_eval(CLI::App& root) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    std::string adapter;
    std::vector<std::string> instructions, prompts;
    int64_t max_new_tokens = 24;
    bool no_loss = false;
    std::string dump_logprobs;
    std::vector<int32_t> tokens;
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
  app->add_option("--dump-logprobs", a->dump_logprobs,
                  "Write the per-token log-probabilities and last logits of --tokens (or the first --prompt) "
                  "as JSON to this file");
  app->add_option("--tokens", a->tokens, "Token ids for --dump-logprobs, comma separated")->delimiter(',');

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
            if (!a->dump_logprobs.empty()) dump_logprobs(m, tok, a->tokens, a->prompts, a->dump_logprobs);
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
