// NF4 base weights in host memory: quantizing a floating weight the way bitsandbytes does (through
// the qk::cpu twins, so the bytes match bitsandbytes), loading one from a bitsandbytes 4-bit
// checkpoint with every table and size checked, and dequantizing for the CPU backend and the tests.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "csrc/core/dtype.h"
#include "csrc/io/bnb4bit.h"

namespace qtrain::io {
class Checkpoint;
struct ModelConfig;
}  // namespace qtrain::io

namespace qtrain::model {

struct Nf4Weight {
  std::vector<int64_t> shape;  // [out, in]
  int blocksize = 64;
  DType source_dtype = DType::BF16;  // before quantization; bitsandbytes dequantizes back to it
  std::vector<uint8_t> packed;       // (numel + 1) / 2 bytes, first element in the high nibble
  bool double_quant = false;
  std::vector<float> absmax;         // plain: one per block
  std::vector<uint8_t> absmax_q;     // double quant: one 8-bit code per block
  std::vector<float> nested_absmax;  // double quant: one per 256 blocks
  float offset = 0.0f;               // double quant: mean of the original absmax

  size_t numel() const;
  size_t nblocks() const;
  // Bytes that scale with the weight: packed nibbles, absmax (or codes + nested absmax). The code
  // tables and the quant_state are shared constants and not counted.
  size_t storage_bytes() const;
  // The quant state bitsandbytes writes beside it.
  io::Bnb4bitQuantState quant_state() const;
};

// Quantizes a weight of `dtype` (f32, bf16 or f16) held in `bytes` (any alignment). With double_quant
// the absmax is double-quantized as bitsandbytes' compress_statistics does.
Nf4Weight quantize_nf4(DType dtype, std::span<const std::byte> bytes, const std::vector<int64_t>& shape,
                       int blocksize, bool double_quant);

// The per-block absmax that quantize_nf4 computes, without quantizing (cheap: one max per block).
std::vector<float> nf4_block_absmax(DType dtype, std::span<const std::byte> bytes, size_t numel, int blocksize);

// Checks the two code tables of a 4-bit weight: quant_map must be the NF4 table and nested_quant_map
// the signed dynamic code, bit for bit. BadInput names the file and tensor otherwise.
void check_nf4_tables(const io::Checkpoint& ckpt, const io::Bnb4bitTensors& t);

// Loads one bitsandbytes NF4 weight (P.weight and its companions), fully checked (see
// io::read_bnb4bit_tensors and check_nf4_tables), into host memory.
Nf4Weight load_nf4_weight(const io::Checkpoint& ckpt, const std::string& weight_name,
                          const std::vector<int64_t>& expected_shape);

// Every quantized linear weight of a 4-bit checkpoint, by tensor name. Layout problems (missing or
// mis-shaped tensors) are BadInput.
std::map<std::string, Nf4Weight> load_nf4_linear_weights(const io::ModelConfig& config, const io::Checkpoint& ckpt);

// The fp32 absmax per block (reconstructed from the codes when double-quantized).
std::vector<float> nf4_absmax_f32(const Nf4Weight& w);
std::vector<float> dequantize_nf4_f32(const Nf4Weight& w);
std::vector<uint16_t> dequantize_nf4_bf16(const Nf4Weight& w);

}  // namespace qtrain::model
