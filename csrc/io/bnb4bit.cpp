// bitsandbytes 4-bit tensor layout: quant_state JSON (write and parse) and the checked reader of one
// quantized weight. Every size is derived from the quant state and compared with what the file holds,
// so a truncated or mismatched tensor is reported by name instead of being read out of bounds later.
#include "csrc/io/bnb4bit.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"

namespace qtrain::io {
namespace {

using nlohmann::json;

std::string dquote(const std::string& s) { return "\"" + s + "\""; }

bool valid_blocksize(int64_t b) { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }

bool known_float_dtype(const std::string& d) { return d == "bfloat16" || d == "float16" || d == "float32"; }

// Python's json.dumps writes a tuple as a list with ", " between items.
std::string python_list(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0.0) return std::signbit(v) ? "-0.0" : "0.0";
  // Shortest round-trip digits, from to_chars in scientific form: "-d.ddde+XX".
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  const int exp10 = std::atoi(sci.c_str() + e_pos + 1);
  std::string digits;
  for (size_t i = 0; i < e_pos; ++i)
    if (sci[i] != '.') digits += sci[i];

  if (exp10 < -4 || exp10 >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int a = std::abs(exp10);
    out += std::string("e") + (exp10 < 0 ? "-" : "+") + (a < 10 ? "0" : "") + std::to_string(a);
    return out;
  }
  if (exp10 < 0) return sign + "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
  const size_t int_digits = static_cast<size_t>(exp10) + 1;
  if (digits.size() <= int_digits) return sign + digits + std::string(int_digits - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_digits) + "." + digits.substr(int_digits);
}

std::string bnb4bit_quant_state_json(const Bnb4bitQuantState& s) {
  // Written by hand rather than through nlohmann: the key order, separators and float spelling are
  // those of Python's json.dumps, so the bytes match a file bitsandbytes saves.
  std::string out = "{\"quant_type\": " + dquote(s.quant_type) + ", \"blocksize\": " + std::to_string(s.blocksize) +
                    ", \"dtype\": " + dquote(s.dtype) + ", \"shape\": " + python_list(s.shape);
  if (s.nested) {
    out += ", \"nested_blocksize\": " + std::to_string(s.nested_blocksize) + ", \"nested_dtype\": " +
           dquote(s.nested_dtype) + ", \"nested_offset\": " + python_float_repr(static_cast<double>(s.nested_offset));
  }
  return out + "}";
}

Bnb4bitQuantState parse_bnb4bit_quant_state(std::string_view text, const std::string& file, const std::string& tensor) {
  const std::string where = "tensor " + dquote(tensor);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw_bad_input(file, "quant_state is not valid JSON", where + ", byte " + std::to_string(e.byte));
  }
  if (!j.is_object()) throw_bad_input(file, "quant_state is not a JSON object", where);
  static const std::set<std::string> known = {"quant_type",       "blocksize",    "dtype",        "shape",
                                              "nested_blocksize", "nested_dtype", "nested_offset"};
  for (const auto& [k, v] : j.items())
    if (!known.count(k)) throw_bad_input(file, "unknown key " + dquote(k) + " in quant_state", where);
  auto need = [&](const char* key) -> const json& {
    if (!j.contains(key)) throw_bad_input(file, std::string("quant_state lacks \"") + key + "\"", where);
    return j.at(key);
  };
  auto need_string = [&](const char* key) {
    const json& v = need(key);
    if (!v.is_string()) throw_bad_input(file, std::string("quant_state \"") + key + "\" must be a string", where);
    return v.get<std::string>();
  };
  auto need_int = [&](const char* key) {
    const json& v = need(key);
    if (!v.is_number_integer()) throw_bad_input(file, std::string("quant_state \"") + key + "\" must be an integer", where);
    return v.get<int64_t>();
  };

  Bnb4bitQuantState s;
  s.quant_type = need_string("quant_type");
  if (s.quant_type == "fp4")
    throw_bad_input(file, "quant_type \"fp4\" is not supported: qtrain reads NF4 4-bit weights only", where);
  if (s.quant_type != "nf4") throw_bad_input(file, "unknown quant_type " + dquote(s.quant_type), where);
  s.blocksize = need_int("blocksize");
  if (!valid_blocksize(s.blocksize))
    throw_bad_input(file, "blocksize " + std::to_string(s.blocksize) + " is not a power of two in 32..4096", where);
  s.dtype = need_string("dtype");
  if (!known_float_dtype(s.dtype))
    throw_bad_input(file, "quant_state dtype " + dquote(s.dtype) + " is not bfloat16, float16 or float32", where);
  const json& shape = need("shape");
  if (!shape.is_array() || shape.size() != 2)
    throw_bad_input(file, "quant_state \"shape\" must be a list [out, in]", where);
  for (const json& d : shape) {
    if (!d.is_number_integer() || d.get<int64_t>() <= 0)
      throw_bad_input(file, "quant_state \"shape\" must hold positive integers", where);
    s.shape.push_back(d.get<int64_t>());
  }

  const int nested_keys = static_cast<int>(j.contains("nested_blocksize")) + static_cast<int>(j.contains("nested_dtype")) +
                          static_cast<int>(j.contains("nested_offset"));
  if (nested_keys != 0 && nested_keys != 3)
    throw_bad_input(file, "quant_state has only some of nested_blocksize, nested_dtype, nested_offset", where);
  s.nested = nested_keys == 3;
  if (s.nested) {
    s.nested_blocksize = need_int("nested_blocksize");
    if (s.nested_blocksize != kBnbNestedBlocksize)
      throw_bad_input(file, "nested_blocksize " + std::to_string(s.nested_blocksize) + ", expected 256", where);
    s.nested_dtype = need_string("nested_dtype");
    if (s.nested_dtype != "float32")
      throw_bad_input(file, "nested_dtype " + dquote(s.nested_dtype) + ", expected \"float32\"", where);
    const json& off = need("nested_offset");
    if (!off.is_number()) throw_bad_input(file, "quant_state \"nested_offset\" must be a number", where);
    const double d = off.get<double>();
    // bitsandbytes keeps the offset as a float32 tensor; the JSON holds that value.
    s.nested_offset = static_cast<float>(d);
    if (!std::isfinite(s.nested_offset)) throw_bad_input(file, "nested_offset is not a finite float32", where);
  }
  return s;
}

std::vector<std::string> bnb4bit_tensor_names(const std::string& weight_name, bool nested) {
  std::vector<std::string> out = {weight_name, weight_name + kBnbAbsmax, weight_name + kBnbQuantMap};
  if (nested) {
    out.push_back(weight_name + kBnbNestedAbsmax);
    out.push_back(weight_name + kBnbNestedQuantMap);
  }
  out.push_back(weight_name + kBnbQuantStateNf4);
  return out;
}

bool is_bnb4bit_weight(const Checkpoint& ckpt, const std::string& weight_name) {
  return ckpt.contains(weight_name + kBnbQuantStateNf4) || ckpt.contains(weight_name + kBnbQuantStateFp4);
}

Bnb4bitTensors read_bnb4bit_tensors(const Checkpoint& ckpt, const std::string& weight_name,
                                    const std::vector<int64_t>& expected_shape) {
  if (!ckpt.contains(weight_name)) throw_bad_input(ckpt.dir(), "tensor " + dquote(weight_name) + " is missing");
  Bnb4bitTensors t;
  t.weight_name = weight_name;
  t.file = ckpt.file_of(weight_name);

  if (ckpt.contains(weight_name + kBnbQuantStateFp4))
    throw_bad_input(ckpt.file_of(weight_name + kBnbQuantStateFp4),
                    "fp4 4-bit weights are not supported: qtrain reads NF4 only",
                    "tensor " + dquote(weight_name + kBnbQuantStateFp4));
  const std::string qs_name = weight_name + kBnbQuantStateNf4;
  if (!ckpt.contains(qs_name))
    throw_bad_input(t.file, "4-bit weight without its quant state: tensor " + dquote(qs_name) + " is missing",
                    "tensor " + dquote(weight_name));

  // A required companion tensor with its dtype and shape.
  auto companion = [&](const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                       const std::string& what) -> std::span<const std::byte> {
    if (!ckpt.contains(name))
      throw_bad_input(t.file, what + " is missing: no tensor " + dquote(name), "tensor " + dquote(weight_name));
    const TensorInfo& info = ckpt.info(name);
    const std::string& f = ckpt.file_of(name);
    if (info.dtype != dtype)
      throw_bad_input(f, what + " has dtype " + dtype_name(info.dtype) + ", expected " + dtype_name(dtype),
                      "tensor " + dquote(name));
    if (info.shape != shape)
      throw_bad_input(f, what + " has shape " + shape_string(info.shape) + ", expected " + shape_string(shape),
                      "tensor " + dquote(name));
    return ckpt.data(name);
  };

  const TensorInfo& qs_info = ckpt.info(qs_name);
  if (qs_info.dtype != DType::U8 || qs_info.shape.size() != 1)
    throw_bad_input(ckpt.file_of(qs_name), "quant_state must be a 1-D uint8 tensor of JSON text",
                    "tensor " + dquote(qs_name) + ": " + dtype_name(qs_info.dtype) + " " + shape_string(qs_info.shape));
  const auto qs_bytes = ckpt.data(qs_name);
  t.state = parse_bnb4bit_quant_state(
      std::string_view(reinterpret_cast<const char*>(qs_bytes.data()), qs_bytes.size()), ckpt.file_of(qs_name),
      qs_name);
  if (!expected_shape.empty() && t.state.shape != expected_shape)
    throw_bad_input(ckpt.file_of(qs_name),
                    "quant_state shape " + shape_string(t.state.shape) + " does not match the model's " +
                        shape_string(expected_shape),
                    "tensor " + dquote(qs_name));

  t.numel = static_cast<size_t>(t.state.shape[0]) * static_cast<size_t>(t.state.shape[1]);
  const size_t bs = static_cast<size_t>(t.state.blocksize);
  t.nblocks = (t.numel + bs - 1) / bs;
  const auto n_packed = static_cast<int64_t>((t.numel + 1) / 2);
  const auto n_blocks = static_cast<int64_t>(t.nblocks);

  const TensorInfo& w = ckpt.info(weight_name);
  if (w.dtype != DType::U8)
    throw_bad_input(t.file, std::string("packed 4-bit weight has dtype ") + dtype_name(w.dtype) + ", expected u8",
                    "tensor " + dquote(weight_name));
  if (w.shape != std::vector<int64_t>{n_packed, 1})
    throw_bad_input(t.file,
                    "packed 4-bit weight has shape " + shape_string(w.shape) + ", expected " +
                        shape_string({n_packed, 1}) + " for " + shape_string(t.state.shape),
                    "tensor " + dquote(weight_name));
  t.packed = ckpt.data(weight_name);

  t.absmax = companion(weight_name + kBnbAbsmax, t.state.nested ? DType::U8 : DType::F32, {n_blocks},
                       t.state.nested ? "double-quantized absmax" : "absmax");
  t.quant_map = companion(weight_name + kBnbQuantMap, DType::F32, {16}, "quant_map");
  if (t.state.nested) {
    const auto n_nested = static_cast<int64_t>((t.nblocks + kBnbNestedBlocksize - 1) / kBnbNestedBlocksize);
    t.nested_absmax = companion(weight_name + kBnbNestedAbsmax, DType::F32, {n_nested}, "nested_absmax");
    t.nested_quant_map = companion(weight_name + kBnbNestedQuantMap, DType::F32, {256}, "nested_quant_map");
  } else {
    for (const char* suffix : {kBnbNestedAbsmax, kBnbNestedQuantMap})
      if (ckpt.contains(weight_name + suffix))
        throw_bad_input(ckpt.file_of(weight_name + suffix),
                        "nested tensor present but the quant_state has no nested_* keys",
                        "tensor " + dquote(weight_name + suffix));
  }
  return t;
}

}  // namespace qtrain::io
