// bitsandbytes' 4-bit weights in a safetensors checkpoint (FORMATS.md, "bitsandbytes 4-bit tensors"):
// the names of the tensors that stand for one quantized linear weight, the quant_state JSON that
// bitsandbytes packs into a uint8 tensor, and a reader that checks every one of those tensors against
// each other and against the layout before any data is used. Pure format code: the NF4 arithmetic
// (and the check of the code tables' values) lives in runtime/model/nf4_weights.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qtrain::io {

class Checkpoint;

// Suffixes appended to the weight's own name ("P.weight").
inline constexpr const char* kBnbAbsmax = ".absmax";
inline constexpr const char* kBnbQuantMap = ".quant_map";
inline constexpr const char* kBnbNestedAbsmax = ".nested_absmax";
inline constexpr const char* kBnbNestedQuantMap = ".nested_quant_map";
inline constexpr const char* kBnbQuantStateNf4 = ".quant_state.bitsandbytes__nf4";
inline constexpr const char* kBnbQuantStateFp4 = ".quant_state.bitsandbytes__fp4";
inline constexpr int64_t kBnbNestedBlocksize = 256;  // bitsandbytes always double-quantizes in 256-blocks

// The non-tensor part of a bitsandbytes QuantState.
struct Bnb4bitQuantState {
  std::string quant_type = "nf4";
  int64_t blocksize = 64;
  std::string dtype = "bfloat16";  // the dtype of the weight before quantization (torch name)
  std::vector<int64_t> shape;      // [out, in]
  bool nested = false;             // the nested_* keys are present
  int64_t nested_blocksize = kBnbNestedBlocksize;
  std::string nested_dtype = "float32";
  float nested_offset = 0.0f;
  bool operator==(const Bnb4bitQuantState&) const = default;
};

// The JSON text bitsandbytes writes (Python's json.dumps of QuantState.as_dict's non-tensor items):
// keys in that order, ", " and ": " separators, the offset as Python's repr of the float32 value.
std::string bnb4bit_quant_state_json(const Bnb4bitQuantState& s);
// Parses and checks the JSON (types, known keys, nf4 only, blocksize a power of two in 32..4096, 2-D
// positive shape, nested keys all or none, a finite offset). `file` and `tensor` name the source in
// errors.
Bnb4bitQuantState parse_bnb4bit_quant_state(std::string_view text, const std::string& file,
                                            const std::string& tensor);

// Python's repr() of a double: the shortest text that reads back to the same value, in fixed
// notation for exponents -4..15 and scientific ("1e-05") outside.
std::string python_float_repr(double v);

// The names written for one weight, in the order qtrain writes them: weight, absmax, quant_map, then
// (nested) nested_absmax, nested_quant_map, then the quant_state.
std::vector<std::string> bnb4bit_tensor_names(const std::string& weight_name, bool nested);

// Whether the checkpoint holds `weight_name` in bitsandbytes' 4-bit form (a quant_state beside it).
bool is_bnb4bit_weight(const Checkpoint& ckpt, const std::string& weight_name);

// One 4-bit weight, checked: every span lies inside the checkpoint's mapping (no alignment promised,
// so float data must be copied out with memcpy) and has the size the quant state implies.
struct Bnb4bitTensors {
  std::string weight_name;
  std::string file;  // the file holding P.weight
  Bnb4bitQuantState state;
  size_t numel = 0;
  size_t nblocks = 0;
  std::span<const std::byte> packed;            // u8 [(numel + 1) / 2]
  std::span<const std::byte> absmax;            // f32 [nblocks], or u8 [nblocks] when nested
  std::span<const std::byte> quant_map;         // f32 [16]
  std::span<const std::byte> nested_absmax;     // f32 [ceil(nblocks / 256)], when nested
  std::span<const std::byte> nested_quant_map;  // f32 [256], when nested
};

// Reads and checks the tensors of `weight_name` (e.g. "model.layers.0.self_attn.q_proj.weight").
// `expected_shape` ([out, in] from the layout) must equal the quant state's shape; pass an empty
// vector to skip that check. Every failure is BadInput naming the file and the tensor.
Bnb4bitTensors read_bnb4bit_tensors(const Checkpoint& ckpt, const std::string& weight_name,
                                    const std::vector<int64_t>& expected_shape);

}  // namespace qtrain::io
