// NF4 weights on the host: quantize (qk::cpu twins), load from bitsandbytes tensors, dequantize.
#include "runtime/model/nf4_weights.h"

#include <cstring>

#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace qtrain::model {
namespace {

std::string dquote(const std::string& s) { return "\"" + s + "\""; }

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    default: return "bfloat16";
  }
}

DType dtype_from_torch(const std::string& s) {
  if (s == "float32") return DType::F32;
  if (s == "float16") return DType::F16;
  return DType::BF16;
}

// Mapped tensor data carries no alignment promise (a u8 tensor of odd length shifts what follows),
// so typed reads go through an aligned copy.
template <typename T>
std::vector<T> copy_as(std::span<const std::byte> bytes) {
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

void require_float_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    throw_internal(std::string("NF4 quantization of a ") + dtype_name(dtype) + " tensor");
}

}  // namespace

size_t Nf4Weight::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

size_t Nf4Weight::nblocks() const { return qk::nf4::num_blocks(numel(), static_cast<size_t>(blocksize)); }

size_t Nf4Weight::storage_bytes() const {
  if (double_quant) return packed.size() + absmax_q.size() + nested_absmax.size() * sizeof(float);
  return packed.size() + absmax.size() * sizeof(float);
}

io::Bnb4bitQuantState Nf4Weight::quant_state() const {
  io::Bnb4bitQuantState s;
  s.quant_type = "nf4";
  s.blocksize = blocksize;
  s.dtype = torch_dtype_name(source_dtype);
  s.shape = shape;
  s.nested = double_quant;
  s.nested_offset = offset;
  return s;
}

std::vector<float> nf4_block_absmax(DType dtype, std::span<const std::byte> bytes, size_t numel, int blocksize) {
  require_float_dtype(dtype);
  QTRAIN_CHECK_INTERNAL(bytes.size() == numel * static_cast<size_t>(dtype_bits(dtype) / 8), "byte size");
  QTRAIN_CHECK_INTERNAL(qk::nf4::valid_blocksize(blocksize), "blocksize");
  const size_t bs = static_cast<size_t>(blocksize);
  std::vector<float> absmax(qk::nf4::num_blocks(numel, bs), 0.0f);
  auto load = [&](size_t i) {
    if (dtype == DType::F32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return dtype == DType::BF16 ? qk::bf16_to_f32(h) : qk::nf4::f16_bits_to_f32(h);
  };
  // The same running max as the quantizer (qk::nf4::max_abs), so the values agree bit for bit.
  for (size_t i = 0; i < numel; ++i) absmax[i / bs] = qk::nf4::max_abs(absmax[i / bs], load(i));
  return absmax;
}

Nf4Weight quantize_nf4(DType dtype, std::span<const std::byte> bytes, const std::vector<int64_t>& shape,
                       int blocksize, bool double_quant) {
  require_float_dtype(dtype);
  Nf4Weight w;
  w.shape = shape;
  w.blocksize = blocksize;
  w.source_dtype = dtype;
  w.double_quant = double_quant;
  const size_t n = w.numel();
  QTRAIN_CHECK_INTERNAL(bytes.size() == n * static_cast<size_t>(dtype_bits(dtype) / 8), "byte size");
  w.packed.resize(qk::nf4::packed_bytes(n));
  std::vector<float> absmax(w.nblocks());
  if (dtype == DType::F32) {
    const auto x = copy_as<float>(bytes);
    qk::cpu::nf4_quantize_f32(x.data(), n, blocksize, w.packed.data(), absmax.data());
  } else {
    const auto x = copy_as<uint16_t>(bytes);
    if (dtype == DType::BF16) qk::cpu::nf4_quantize_bf16(x.data(), n, blocksize, w.packed.data(), absmax.data());
    else qk::cpu::nf4_quantize_f16(x.data(), n, blocksize, w.packed.data(), absmax.data());
  }
  if (!double_quant) {
    w.absmax = std::move(absmax);
    return w;
  }
  w.absmax_q.resize(absmax.size());
  w.nested_absmax.resize(qk::nf4::num_blocks(absmax.size(), qk::nf4::kNestedBlocksize));
  w.offset = qk::cpu::nf4_double_quantize(absmax.data(), absmax.size(), w.absmax_q.data(), w.nested_absmax.data());
  return w;
}

void check_nf4_tables(const io::Checkpoint& ckpt, const io::Bnb4bitTensors& t) {
  const auto quant_map = copy_as<float>(t.quant_map);
  for (unsigned i = 0; i < 16; ++i)
    if (qk::f32_bits(quant_map[i]) != qk::f32_bits(qk::nf4::code_value(i)))
      throw_bad_input(ckpt.file_of(t.weight_name + io::kBnbQuantMap),
                      "quant_map is not the NF4 code table (value " + std::to_string(i) + " is " +
                          std::to_string(quant_map[i]) + ", expected " + std::to_string(qk::nf4::code_value(i)) + ")",
                      "tensor " + dquote(t.weight_name + io::kBnbQuantMap));
  if (!t.state.nested) return;
  const auto nested_map = copy_as<float>(t.nested_quant_map);
  float code[256];
  qk::cpu::nf4_dynamic_code(code);
  for (int i = 0; i < 256; ++i)
    if (qk::f32_bits(nested_map[static_cast<size_t>(i)]) != qk::f32_bits(code[i]))
      throw_bad_input(ckpt.file_of(t.weight_name + io::kBnbNestedQuantMap),
                      "nested_quant_map is not the signed 8-bit dynamic code (value " + std::to_string(i) + " is " +
                          std::to_string(nested_map[static_cast<size_t>(i)]) + ", expected " +
                          std::to_string(code[i]) + ")",
                      "tensor " + dquote(t.weight_name + io::kBnbNestedQuantMap));
}

Nf4Weight load_nf4_weight(const io::Checkpoint& ckpt, const std::string& weight_name,
                          const std::vector<int64_t>& expected_shape) {
  const io::Bnb4bitTensors t = io::read_bnb4bit_tensors(ckpt, weight_name, expected_shape);
  check_nf4_tables(ckpt, t);
  Nf4Weight w;
  w.shape = t.state.shape;
  w.blocksize = static_cast<int>(t.state.blocksize);
  w.source_dtype = dtype_from_torch(t.state.dtype);
  w.packed = copy_as<uint8_t>(t.packed);
  w.double_quant = t.state.nested;
  if (w.double_quant) {
    w.absmax_q = copy_as<uint8_t>(t.absmax);
    w.nested_absmax = copy_as<float>(t.nested_absmax);
    w.offset = t.state.nested_offset;
  } else {
    w.absmax = copy_as<float>(t.absmax);
  }
  return w;
}

std::map<std::string, Nf4Weight> load_nf4_linear_weights(const io::ModelConfig& config, const io::Checkpoint& ckpt) {
  std::map<std::string, Nf4Weight> out;
  for (const io::ExpectedTensor& e : io::llama_tensor_layout(config)) {
    if (e.role != io::TensorRole::Linear) continue;
    if (!ckpt.contains(e.name)) throw_bad_input(ckpt.dir(), "tensor " + dquote(e.name) + " is missing");
    // bitsandbytes may leave some linear layers unquantized (llm_int8_skip_modules); those stay
    // floating and are not part of this map.
    if (!io::is_bnb4bit_weight(ckpt, e.name) && ckpt.info(e.name).dtype != DType::U8) continue;
    out.emplace(e.name, load_nf4_weight(ckpt, e.name, e.shape));
  }
  return out;
}

std::vector<float> nf4_absmax_f32(const Nf4Weight& w) {
  if (!w.double_quant) return w.absmax;
  std::vector<float> absmax(w.absmax_q.size());
  qk::cpu::nf4_double_dequantize(w.absmax_q.data(), w.nested_absmax.data(), w.offset, absmax.size(), absmax.data());
  return absmax;
}

std::vector<float> dequantize_nf4_f32(const Nf4Weight& w) {
  std::vector<float> y(w.numel());
  if (w.double_quant) {
    const qk::Nf4Nested nested{w.absmax_q.data(), w.nested_absmax.data(), w.offset};
    qk::cpu::nf4_dequantize_f32(w.packed.data(), nested, y.size(), w.blocksize, y.data());
  } else {
    qk::cpu::nf4_dequantize_f32(w.packed.data(), w.absmax.data(), y.size(), w.blocksize, y.data());
  }
  return y;
}

std::vector<uint16_t> dequantize_nf4_bf16(const Nf4Weight& w) {
  std::vector<uint16_t> y(w.numel());
  if (w.double_quant) {
    const qk::Nf4Nested nested{w.absmax_q.data(), w.nested_absmax.data(), w.offset};
    qk::cpu::nf4_dequantize_bf16(w.packed.data(), nested, y.size(), w.blocksize, y.data());
  } else {
    qk::cpu::nf4_dequantize_bf16(w.packed.data(), w.absmax.data(), y.size(), w.blocksize, y.data());
  }
  return y;
}

}  // namespace qtrain::model
