// qtrain: entry point. Parses the command line, runs the chosen subcommand, and turns exceptions
// into the documented exit codes (0 ok, 1 internal, 2 bad input or config, 3 out of memory).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <vector>

#include "csrc/core/error.h"
#include "qk/error.h"
#include "tools/qtrain/commands.h"

#ifndef QTRAIN_VERSION
#define QTRAIN_VERSION "0.1.0"  // keep in step with project(VERSION) in the root CMakeLists.txt
#endif

namespace {

int fail(const char* message, int code) {
  std::fprintf(stderr, "qtrain: error: %s\n", message);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qtrain: QLoRA fine-tuning of Llama-family models on one GPU"};
  app.set_version_flag("--version", "qtrain " QTRAIN_VERSION);
  app.require_subcommand(1);

  const std::vector<qtrain::tools::Command> commands = {
      qtrain::tools::add_make_tiny(app),
      qtrain::tools::add_inspect(app),
      qtrain::tools::add_quantize(app),
      qtrain::tools::add_plan(app),
      qtrain::tools::add_config(app),
      qtrain::tools::add_train(app),
      qtrain::tools::add_eval(app),
      qtrain::tools::add_make_data(app),
      qtrain::tools::add_bench(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors are bad input; --help and --version come through here with code 0.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    return fail("no subcommand given", 2);
  } catch (const qtrain::Error& e) {
    return fail(e.what(), qtrain::exit_code(e.kind()));
  } catch (const qk::Error& e) {
    return fail(e.what(), e.kind() == qk::Error::Kind::OutOfMemory ? 3 : 1);
  } catch (const std::bad_alloc&) {
    return fail("out of host memory", 3);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
}
