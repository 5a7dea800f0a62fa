// CPU twin of kernels/cuda/nf4_quantize.cu: the reference NF4 quantizer, block by block.
#include "qk/nf4_quantize.h"

#include "qk/error.h"
#include "qk/nf4.h"

namespace qk::cpu {
namespace {

template <typename Load>
void quantize(Load load, size_t n, int blocksize, uint8_t* packed, float* absmax) {
  QK_REQUIRE(nf4::valid_blocksize(blocksize), "NF4 blocksize must be a power of two in 32..4096");
  if (n == 0) return;
  QK_REQUIRE(packed != nullptr && absmax != nullptr, "null pointer");
  const size_t bs = static_cast<size_t>(blocksize);
  for (size_t b = 0, begin = 0; begin < n; ++b, begin += bs) {
    const size_t end = begin + bs < n ? begin + bs : n;
    float m = 0.0f;
    for (size_t i = begin; i < end; ++i) m = nf4::max_abs(m, load(i));
    absmax[b] = m;
    const float inv = nf4::inv_absmax(m);
    // Blocks have even sizes, so a byte never straddles two blocks.
    for (size_t i = begin; i < end; i += 2) {
      const unsigned hi = nf4::quantize_value(load(i), inv);
      const unsigned lo = i + 1 < end ? nf4::quantize_value(load(i + 1), inv) : nf4::kZeroCode;
      packed[i / 2] = nf4::pack(hi, lo);
    }
  }
}

}  // namespace

void nf4_quantize_f32(const float* x, size_t n, int blocksize, uint8_t* packed, float* absmax) {
  QK_REQUIRE(x != nullptr || n == 0, "null pointer");
  quantize([x](size_t i) { return x[i]; }, n, blocksize, packed, absmax);
}

void nf4_quantize_bf16(const uint16_t* x, size_t n, int blocksize, uint8_t* packed, float* absmax) {
  QK_REQUIRE(x != nullptr || n == 0, "null pointer");
  quantize([x](size_t i) { return bf16_to_f32(x[i]); }, n, blocksize, packed, absmax);
}

void nf4_quantize_f16(const uint16_t* x, size_t n, int blocksize, uint8_t* packed, float* absmax) {
  QK_REQUIRE(x != nullptr || n == 0, "null pointer");
  quantize([x](size_t i) { return nf4::f16_bits_to_f32(x[i]); }, n, blocksize, packed, absmax);
}

}  // namespace qk::cpu
