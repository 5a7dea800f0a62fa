// f32 <-> f16 with round-to-nearest-even, subnormals, infinities and NaN handled explicitly.
#include "csrc/core/half.h"

namespace qtrain {

uint16_t f32_to_f16_bits(float f) noexcept {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN, quiet
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Result is an f16 subnormal (or zero): value = m * 2^-24 with m < 1024.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
    const int exp = static_cast<int>(abs >> 23);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - exp;  // 14..24: bits of mant dropped to land on 2^-24 units
    const uint32_t kept = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = kept;
    if (rest > half || (rest == half && (kept & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
  uint32_t v = abs - (112u << 23);
  const uint32_t rest = v & 0x1fffu;
  v >>= 13;
  if (rest > 0x1000u || (rest == 0x1000u && (v & 1u))) ++v;  // a carry may reach inf, as it should
  return static_cast<uint16_t>(sign | v);
}

float f16_bits_to_f32(uint16_t h) noexcept {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalize.
    int e = -1;
    do { mant <<= 1; ++e; } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    return std::bit_cast<float>(sign | (static_cast<uint32_t>(112 - e) << 23) | (mant << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

}  // namespace qtrain
