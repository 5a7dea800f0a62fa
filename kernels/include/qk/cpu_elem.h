// Element access for CPU twins templated on their element type: the bf16 twin (uint16_t bits,
// rounded to nearest even on store) and the fp64 reference used by the finite-difference checks
// share one body. Host code only.
#pragma once
#include <cstdint>

#include "qk/bf16_bits.h"

namespace qk::cpu::elem {

inline double load(uint16_t v) { return bf16_to_f32(v); }
inline double load(float v) { return v; }
inline double load(double v) { return v; }
inline void store(uint16_t& dst, double v) { dst = f32_to_bf16_rn(static_cast<float>(v)); }
inline void store(float& dst, double v) { dst = static_cast<float>(v); }
inline void store(double& dst, double v) { dst = v; }

}  // namespace qk::cpu::elem
