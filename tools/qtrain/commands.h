// Subcommand registration for the qtrain binary. Each subcommand lives in its own cmd_<name>.cpp
// and provides one add_<name> function: it declares its options on a new CLI11 subcommand and
// returns what to run when that subcommand was chosen. To add one, write the file and list its
// add_ function in main.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace qtrain::tools {

struct Command {
  CLI::App* app;             // the subcommand, to test whether it was parsed
  std::function<int()> run;  // returns the exit code; throws qtrain::Error on failure
};

Command add_make_tiny(CLI::App& root);
Command add_inspect(CLI::App& root);
Command add_quantize(CLI::App& root);
Command add_plan(CLI::App& root);
Command add_config(CLI::App& root);
Command add_train(CLI::App& root);
Command add_eval(CLI::App& root);
Command add_make_data(CLI::App& root);
Command add_bench(CLI::App& root);

}  // namespace qtrain::tools
