// CPU twin of kernels/cuda/nf4_dequantize.cu: one multiply per element, one rounding to the output.
#include "qk/nf4_dequantize.h"

#include <vector>

#include "qk/error.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"

namespace qk::cpu {
namespace {

template <typename Store>
void dequantize(const uint8_t* packed, const float* absmax, size_t n, int blocksize, Store store) {
  const int shift = nf4::log2_blocksize(blocksize);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t b = packed[i / 2];
    const unsigned q = (i % 2 == 0) ? nf4::high_nibble(b) : nf4::low_nibble(b);
    store(i, nf4::dequantize_value(q, absmax[i >> shift]));
  }
}

void check(const uint8_t* packed, const void* absmax, size_t n, int blocksize, const void* y) {
  QK_REQUIRE(nf4::valid_blocksize(blocksize), "NF4 blocksize must be a power of two in 32..4096");
  QK_REQUIRE(n == 0 || (packed != nullptr && absmax != nullptr && y != nullptr), "null pointer");
}

// The double-quantized absmax expanded to fp32 first: the reference keeps the two steps apart.
std::vector<float> expand(const Nf4Nested& a, size_t n, int blocksize) {
  QK_REQUIRE(nf4::valid_blocksize(blocksize), "NF4 blocksize must be a power of two in 32..4096");
  const size_t nb = nf4::num_blocks(n, static_cast<size_t>(blocksize));
  std::vector<float> absmax(nb);
  nf4_double_dequantize(a.q, a.nested_absmax, a.offset, nb, absmax.data());
  return absmax;
}

}  // namespace

void nf4_dequantize_f32(const uint8_t* packed, const float* absmax, size_t n, int blocksize, float* y) {
  check(packed, absmax, n, blocksize, y);
  dequantize(packed, absmax, n, blocksize, [y](size_t i, float v) { y[i] = v; });
}

void nf4_dequantize_bf16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, uint16_t* y) {
  check(packed, absmax, n, blocksize, y);
  dequantize(packed, absmax, n, blocksize, [y](size_t i, float v) { y[i] = f32_to_bf16_rn(v); });
}

void nf4_dequantize_f16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, uint16_t* y) {
  check(packed, absmax, n, blocksize, y);
  dequantize(packed, absmax, n, blocksize, [y](size_t i, float v) { y[i] = nf4::f32_to_f16_bits_rn(v); });
}

void nf4_dequantize_f32(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, float* y) {
  const auto a = expand(absmax, n, blocksize);
  nf4_dequantize_f32(packed, a.data(), n, blocksize, y);
}

void nf4_dequantize_bf16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, uint16_t* y) {
  const auto a = expand(absmax, n, blocksize);
  nf4_dequantize_bf16(packed, a.data(), n, blocksize, y);
}

void nf4_dequantize_f16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, uint16_t* y) {
  const auto a = expand(absmax, n, blocksize);
  nf4_dequantize_f16(packed, a.data(), n, blocksize, y);
}

}  // namespace qk::cpu
