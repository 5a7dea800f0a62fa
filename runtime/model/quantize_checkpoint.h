// `qtrain quantize`: a Hugging Face model folder -> a bitsandbytes NF4 pre-quantized folder that
// transformers + bitsandbytes load (and qtrain loads back). Linear weights of the blocks become NF4
// with bitsandbytes' tensor layout; everything else is copied byte for byte; shards keep their names
// and contents; the folder appears at once (temporary folder, then rename) or not at all.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qtrain::model {

struct QuantizeOptions {
  int blocksize = 64;
  bool double_quant = true;
};

struct QuantizeSummary {
  size_t quantized_tensors = 0;  // linear weights turned into NF4
  size_t kept_tensors = 0;       // tensors copied as they were
  int64_t quantized_params = 0;
  uint64_t quantized_storage_bytes = 0;  // packed + absmax (+ nested absmax) of the NF4 weights
  uint64_t input_bytes = 0;              // tensor data in the input
  uint64_t output_bytes = 0;             // tensor data in the output (the index's total_size)
  std::vector<std::string> files;        // safetensors files written, in order
  std::vector<std::string> copied_files; // tokenizer and other side files
  double bits_per_param() const {
    return quantized_params ? 8.0 * static_cast<double>(quantized_storage_bytes) / static_cast<double>(quantized_params)
                            : 0.0;
  }
};

// Throws BadInput for an invalid or already quantized input, an existing non-empty `out_dir`, or a
// blocksize that is not a power of two in 32..4096. On any failure nothing is left at `out_dir`.
QuantizeSummary quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                    const QuantizeOptions& options);

}  // namespace qtrain::model
