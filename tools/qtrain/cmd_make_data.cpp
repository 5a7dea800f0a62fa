// `qtrain make-data <out.jsonl> [--count N] [--seed S]`: a small synthetic alpaca dataset (arithmetic,
// capitals, opposites, colours) for the tiny model, as the demo and the tests train on.
#include <cstdio>
#include <memory>
#include <string>

#include "csrc/data/synthetic.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_make_data(CLI::App& root) {
  struct Args {
    std::string path;
    size_t count = 512;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("make-data", "Write a synthetic alpaca JSONL dataset for the tiny model");
  app->add_option("path", a->path, "Output .jsonl file")->required();
  app->add_option("--count", a->count, "Examples")->capture_default_str()->check(CLI::Range(1, 10000000));
  app->add_option("--seed", a->seed, "Seed (same seed, same bytes)")->capture_default_str();
  return {app, [a]() {
            data::write_synthetic_alpaca(a->path, a->seed, a->count);
            std::printf("wrote %s: %zu alpaca examples, seed %llu\n", a->path.c_str(), a->count,
                        static_cast<unsigned long long>(a->seed));
            return 0;
          }};
}

}  // namespace qtrain::tools
