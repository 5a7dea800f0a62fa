// Element types of host tensors and of the files we read. NF4 is packed: two elements per byte.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qtrain {

enum class DType : uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool, NF4 };

// Bits per element (4 for NF4).
int dtype_bits(DType t) noexcept;
// Bytes needed for n elements (NF4 rounds up to whole bytes).
size_t dtype_bytes(DType t, size_t n) noexcept;
// Lower-case name for messages and `qtrain inspect`: "f32", "bf16", "nf4", ...
const char* dtype_name(DType t) noexcept;
// safetensors spelling ("F32", "BF16", "U8", ...); NF4 has none and returns nullptr.
const char* dtype_safetensors_name(DType t) noexcept;
std::optional<DType> dtype_from_safetensors(std::string_view s) noexcept;

}  // namespace qtrain
