// CPU twin of kernels/cuda/adamw8bit.cu, and the chunk planning both share. Walks each quantized
// tensor one 256-block at a time in the kernel's order of decisions (moments, absmax, parameter,
// requantization), through the same element functions, so both give the same bits.
#include <array>

#include "qk/adamw8bit.h"
#include "qk/error.h"

namespace qk {

int64_t adamw8bit_plan_chunks(AdamW8bitTensor* tensors, int count) {
  QK_REQUIRE(count >= 0, "negative tensor count");
  int64_t chunks = 0;
  for (int i = 0; i < count; ++i) {
    AdamW8bitTensor& t = tensors[i];
    QK_REQUIRE(t.n >= 0, "negative tensor size");
    if (t.n > 0) {
      QK_REQUIRE(t.param != nullptr, "null parameter");  // the gradient may be bound later
      if (adamw8bit_is_quantized(t.n))
        QK_REQUIRE(t.q1 && t.q2 && t.absmax1 && t.absmax2 && !t.m && !t.v,
                   "a tensor of 4096 or more elements needs 8-bit states (q1, q2, absmax1, absmax2) only");
      else
        QK_REQUIRE(t.m && t.v && !t.q1 && !t.q2 && !t.absmax1 && !t.absmax2,
                   "a tensor under 4096 elements needs fp32 states (m, v) only");
    }
    t.chunk_begin = chunks;
    chunks += adamw8bit_blocks(t.n);
  }
  return chunks;
}

}  // namespace qk

namespace qk::cpu {

void adamw8bit_update(const AdamW8bitTensor* tensors, int count, const AdamWParams& params) {
  QK_REQUIRE(params.step >= 1, "AdamW step counts from 1");
  QK_REQUIRE(count >= 0, "negative tensor count");
  const AdamW8bitStepConsts c = adamw8bit_step_consts(params);
  std::array<float, 256> code1{}, code2{};
  for (int k = 0; k < 256; ++k) {
    code1[static_cast<size_t>(k)] = dynamic_code_signed(k);
    code2[static_cast<size_t>(k)] = dynamic_code_unsigned(k);
  }
  std::array<float, kAdamW8bitBlock> m{}, v{};
  for (int ti = 0; ti < count; ++ti) {
    const AdamW8bitTensor& t = tensors[ti];
    if (!adamw8bit_is_quantized(t.n)) {
      for (int64_t i = 0; i < t.n; ++i) adamw8bit_element32(c, t.param[i], t.grad[i], t.m[i], t.v[i]);
      continue;
    }
    for (int64_t b = 0; b < adamw8bit_blocks(t.n); ++b) {
      const int64_t base = b * kAdamW8bitBlock;
      float absmax1 = -3.402823466e38f, absmax2 = -3.402823466e38f;
      for (int j = 0; j < kAdamW8bitBlock; ++j) {
        const int64_t i = base + j;
        const bool valid = i < t.n;
        const float g = valid ? t.grad[i] : 0.0f;
        const unsigned q1 = valid ? t.q1[i] : 128u, q2 = valid ? t.q2[i] : 0u;
        adamw8bit_moments(c, g, mul_rn(code1[q1], t.absmax1[b]), mul_rn(code2[q2], t.absmax2[b]), m[j], v[j]);
        absmax1 = a8::fmax(absmax1, std::fabs(m[j]));
        absmax2 = a8::fmax(absmax2, std::fabs(v[j]));
      }
      t.absmax1[b] = absmax1;
      t.absmax2[b] = absmax2;
      for (int j = 0; j < kAdamW8bitBlock && base + j < t.n; ++j) {
        const int64_t i = base + j;
        t.param[i] = adamw8bit_param(c, t.param[i], t.grad[i], m[j], v[j]);
        t.q1[i] = adamw8bit_quantize_m(code1.data(), m[j], absmax1);
        t.q2[i] = adamw8bit_quantize_v(code2.data(), v[j], absmax2);
      }
    }
  }
}

}  // namespace qk::cpu
