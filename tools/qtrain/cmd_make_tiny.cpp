// `qtrain make-tiny <dir>`: a random-initialized tiny model folder for tests and the demo.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "csrc/io/llama_layout.h"
#include "csrc/io/tiny_model.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_make_tiny(CLI::App& root) {
  struct Args {
    std::string dir;
    std::string arch = "llama";
    io::TinyModelOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app =
      root.add_subcommand("make-tiny", "Write a random-initialized tiny Llama-family model folder (HF format)");
  app->add_option("dir", a->dir, "Output folder (created when missing)")->required();
  app->add_option("--seed", a->opt.seed, "Seed of the weights (the tokenizer is the same for every seed)")
      ->capture_default_str();
  app->add_option("--hidden", a->opt.hidden, "hidden_size")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--layers", a->opt.layers, "num_hidden_layers")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--heads", a->opt.heads, "num_attention_heads")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--kv-heads", a->opt.kv_heads, "num_key_value_heads")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--intermediate", a->opt.intermediate, "intermediate_size")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--vocab", a->opt.vocab,
                  "vocab_size (at least 384); the tokenizer gets as many pieces as its corpus supports, up to it")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-positions", a->opt.max_position_embeddings, "max_position_embeddings")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--arch", a->arch, "Architecture: llama, or qwen2 (q/k/v bias)")
      ->capture_default_str()->check(CLI::IsMember({"llama", "qwen2"}));
  app->add_flag("--tie-embeddings", a->opt.tie_embeddings, "Share embed_tokens with the LM head (no lm_head.weight)");
  app->add_option("--shards", a->opt.shards, "Number of safetensors shards (> 1 writes an index)")
      ->capture_default_str()->check(CLI::Range(1, 99));

  return {app, [a]() {
            a->opt.arch = a->arch == "qwen2" ? io::Architecture::Qwen2 : io::Architecture::Llama;
            io::write_tiny_model(a->dir, a->opt);
            const auto config = io::tiny_model_config(a->opt);
            std::printf("wrote %s: %s, %lld layers, hidden %lld, vocab %lld, %lld parameters, seed %llu\n",
                        a->dir.c_str(), io::architecture_name(config.architecture),
                        static_cast<long long>(config.num_hidden_layers), static_cast<long long>(config.hidden_size),
                        static_cast<long long>(config.vocab_size),
                        static_cast<long long>(io::llama_parameter_count(config)),
                        static_cast<unsigned long long>(a->opt.seed));
            return 0;
          }};
}

}  // namespace qtrain::tools
