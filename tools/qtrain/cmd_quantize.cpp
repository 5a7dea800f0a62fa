// `qtrain quantize <in> <out>`: a floating Hugging Face model folder -> a bitsandbytes NF4
// pre-quantized folder (runtime/model/quantize_checkpoint.h has the contract).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "runtime/model/quantize_checkpoint.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {

Command add_quantize(CLI::App& root) {
  struct Args {
    std::string in_dir;
    std::string out_dir;
    model::QuantizeOptions opt;
    bool no_double_quant = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand(
      "quantize", "Quantize the linear layers of a model folder to NF4, written as a bitsandbytes 4-bit checkpoint");
  app->add_option("in", a->in_dir, "Model folder (config.json, safetensors, tokenizer)")->required();
  app->add_option("out", a->out_dir, "Output folder (must not exist, or be empty)")->required();
  app->add_option("--blocksize", a->opt.blocksize, "NF4 blocksize (a power of two, 32..4096)")->capture_default_str();
  app->add_flag("--no-double-quant", a->no_double_quant, "Keep the absmax in fp32 (no double quantization)");

  return {app, [a]() {
            a->opt.double_quant = !a->no_double_quant;
            const auto start = std::chrono::steady_clock::now();
            const model::QuantizeSummary s = model::quantize_checkpoint(a->in_dir, a->out_dir, a->opt);
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::printf("wrote %s: %zu linear weights to NF4 (blocksize %d, double quant %s), %zu tensors kept\n",
                        a->out_dir.c_str(), s.quantized_tensors, a->opt.blocksize, a->opt.double_quant ? "yes" : "no",
                        s.kept_tensors);
            std::printf("bits/param     %.3f over %lld quantized parameters\n", s.bits_per_param(),
                        static_cast<long long>(s.quantized_params));
            std::printf("tensor bytes   %llu -> %llu in %zu file%s, %.1f s\n",
                        static_cast<unsigned long long>(s.input_bytes), static_cast<unsigned long long>(s.output_bytes),
                        s.files.size(), s.files.size() == 1 ? "" : "s", secs);
            return 0;
          }};
}

}  // namespace qtrain::tools
