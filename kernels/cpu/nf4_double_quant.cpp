// CPU twin of kernels/cuda/nf4_double_quant.cu: offset, 8-bit dynamic quantization of absmax - offset
// in blocks of 256, and the inverse. The offset's summation order mirrors the GPU kernel exactly.
#include "qk/nf4_double_quant.h"

#include <array>

#include "qk/error.h"
#include "qk/nf4.h"

namespace qk::cpu {
namespace {

struct DynamicTables {
  std::array<float, 256> code{};
  std::array<float, 255> mid{};
  DynamicTables() {
    for (int i = 0; i < 256; ++i) code[i] = dynamic_code_signed(i);
    for (int k = 0; k < 255; ++k) mid[k] = nf4::dynamic_midpoint(code.data(), k);
  }
};

const DynamicTables& tables() {
  static const DynamicTables t;
  return t;
}

}  // namespace

void nf4_dynamic_code(float* code256) {
  QK_REQUIRE(code256 != nullptr, "null pointer");
  for (int i = 0; i < 256; ++i) code256[i] = tables().code[i];
}

float nf4_absmax_offset(const float* absmax, size_t nblocks) {
  QK_REQUIRE(nblocks > 0, "no absmax values");
  QK_REQUIRE(absmax != nullptr, "null pointer");
  double partial[kNf4OffsetLanes];
  for (int t = 0; t < kNf4OffsetLanes; ++t) {
    double s = 0.0;
    for (size_t i = static_cast<size_t>(t); i < nblocks; i += kNf4OffsetLanes) s += static_cast<double>(absmax[i]);
    partial[t] = s;
  }
  for (int half = kNf4OffsetLanes / 2; half > 0; half /= 2)
    for (int t = 0; t < half; ++t) partial[t] += partial[t + half];
  return static_cast<float>(partial[0] / static_cast<double>(nblocks));
}

void nf4_double_quantize_with_offset(const float* absmax, size_t nblocks, float offset, uint8_t* q,
                                     float* nested_absmax) {
  if (nblocks == 0) return;
  QK_REQUIRE(absmax != nullptr && q != nullptr && nested_absmax != nullptr, "null pointer");
  const auto& t = tables();
  const size_t bs = nf4::kNestedBlocksize;
  for (size_t b = 0, begin = 0; begin < nblocks; ++b, begin += bs) {
    const size_t end = begin + bs < nblocks ? begin + bs : nblocks;
    float m = 0.0f;
    for (size_t i = begin; i < end; ++i) m = nf4::max_abs(m, nf4::sub_rn(absmax[i], offset));
    nested_absmax[b] = m;
    const float inv = nf4::inv_absmax(m);
    for (size_t i = begin; i < end; ++i)
      q[i] = static_cast<uint8_t>(
          nf4::quantize_dynamic_scaled(nf4::mul_rn(nf4::sub_rn(absmax[i], offset), inv), t.mid.data()));
  }
}

float nf4_double_quantize(const float* absmax, size_t nblocks, uint8_t* q, float* nested_absmax) {
  const float offset = nf4_absmax_offset(absmax, nblocks);
  nf4_double_quantize_with_offset(absmax, nblocks, offset, q, nested_absmax);
  return offset;
}

void nf4_double_dequantize(const uint8_t* q, const float* nested_absmax, float offset, size_t nblocks,
                           float* absmax) {
  if (nblocks == 0) return;
  QK_REQUIRE(q != nullptr && nested_absmax != nullptr && absmax != nullptr, "null pointer");
  const auto& t = tables();
  for (size_t i = 0; i < nblocks; ++i)
    absmax[i] = nf4::double_dequantize_value(t.code[q[i]], nested_absmax[i / nf4::kNestedBlocksize], offset);
}

}  // namespace qk::cpu
