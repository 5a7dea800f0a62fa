// Element type sizes and names.
#include "csrc/core/dtype.h"

namespace qtrain {

int dtype_bits(DType t) noexcept {
  switch (t) {
    case DType::F64: case DType::I64: return 64;
    case DType::F32: case DType::I32: return 32;
    case DType::F16: case DType::BF16: case DType::I16: return 16;
    case DType::I8: case DType::U8: case DType::Bool: return 8;
    case DType::NF4: return 4;
  }
  return 0;
}

size_t dtype_bytes(DType t, size_t n) noexcept { return (n * static_cast<size_t>(dtype_bits(t)) + 7) / 8; }

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::F64: return "f64";
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I64: return "i64";
    case DType::I32: return "i32";
    case DType::I16: return "i16";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
    case DType::NF4: return "nf4";
  }
  return "?";
}

const char* dtype_safetensors_name(DType t) noexcept {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
    case DType::NF4: return nullptr;
  }
  return nullptr;
}

std::optional<DType> dtype_from_safetensors(std::string_view s) noexcept {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::Bool}) {
    if (s == dtype_safetensors_name(t)) return t;
  }
  return std::nullopt;
}

}  // namespace qtrain
