// NF4 helpers (qk/nf4.h) and the CPU twins of the three NF4 ops: code tables, the midpoint rule,
// packing, odd counts, partial and all-zero blocks, blocksizes, the dynamic code, round-trip error
// bounds derived from the code spacing, and the storage cost of a Llama-2-7B-shaped model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace {

namespace nf4 = qk::nf4;

struct Quantized {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

Quantized quantize(const std::vector<float>& x, int blocksize) {
  Quantized q{std::vector<uint8_t>(nf4::packed_bytes(x.size()), 0xAB),
              std::vector<float>(nf4::num_blocks(x.size(), blocksize), -1.0f)};
  qk::cpu::nf4_quantize_f32(x.data(), x.size(), blocksize, q.packed.data(), q.absmax.data());
  return q;
}

std::vector<float> dequantize(const Quantized& q, size_t n, int blocksize) {
  std::vector<float> y(n, NAN);
  qk::cpu::nf4_dequantize_f32(q.packed.data(), q.absmax.data(), n, blocksize, y.data());
  return y;
}

unsigned nibble(const std::vector<uint8_t>& packed, size_t i) {
  return i % 2 == 0 ? nf4::high_nibble(packed[i / 2]) : nf4::low_nibble(packed[i / 2]);
}

// The largest gap between neighbouring NF4 codes (between -1 and the next code).
double max_nf4_gap() {
  double g = 0;
  for (unsigned k = 0; k < 15; ++k) g = std::max(g, double(nf4::code_value(k + 1)) - nf4::code_value(k));
  return g;
}

TEST(Nf4Codes, TableIsSortedSymmetricEnds) {
  EXPECT_EQ(nf4::code_value(0), -1.0f);
  EXPECT_EQ(nf4::code_value(7), 0.0f);
  EXPECT_EQ(nf4::code_value(15), 1.0f);
  EXPECT_EQ(nf4::code_value(1), -0.6961928009986877f);
  EXPECT_EQ(nf4::code_value(8), 0.07958029955625534f);
  EXPECT_EQ(nf4::code_value(14), 0.7229568362236023f);
  for (unsigned k = 0; k < 15; ++k) EXPECT_LT(nf4::code_value(k), nf4::code_value(k + 1));
  EXPECT_EQ(nf4::kZeroCode, 7u);
}

TEST(Nf4Codes, MidpointsAreBitsandbytesConstants) {
  // The constants of bitsandbytes' CUDA NF4 quantizer, as written there (float literals).
  EXPECT_EQ(nf4::midpoint(0), -0.8480964004993439f);
  EXPECT_EQ(nf4::midpoint(1), -0.6106329262256622f);
  EXPECT_EQ(nf4::midpoint(2), -0.4599952697753906f);
  EXPECT_EQ(nf4::midpoint(3), -0.33967943489551544f);
  EXPECT_EQ(nf4::midpoint(4), -0.23460740596055984f);
  EXPECT_EQ(nf4::midpoint(5), -0.13791173323988914f);
  EXPECT_EQ(nf4::midpoint(6), -0.045525018125772476f);
  EXPECT_EQ(nf4::midpoint(8), 0.1202552504837513f);
  EXPECT_EQ(nf4::midpoint(9), 0.2035212516784668f);
  EXPECT_EQ(nf4::midpoint(10), 0.2920137718319893f);
  for (unsigned k = 0; k < 15; ++k) {
    EXPECT_GT(nf4::midpoint(k), nf4::code_value(k));
    EXPECT_LT(nf4::midpoint(k), nf4::code_value(k + 1));
  }
}

TEST(Nf4Codes, NearestCodeTiesGoLow) {
  for (unsigned k = 0; k < 16; ++k) EXPECT_EQ(nf4::quantize_scaled(nf4::code_value(k)), k);
  for (unsigned k = 0; k < 15; ++k) {
    const float m = nf4::midpoint(k);
    EXPECT_EQ(nf4::quantize_scaled(m), k) << "exactly on midpoint " << k;
    EXPECT_EQ(nf4::quantize_scaled(std::nextafter(m, 2.0f)), k + 1);
    EXPECT_EQ(nf4::quantize_scaled(std::nextafter(m, -2.0f)), k);
  }
  EXPECT_EQ(nf4::quantize_scaled(-0.0f), 7u);
  EXPECT_EQ(nf4::quantize_scaled(5.0f), 15u);
  EXPECT_EQ(nf4::quantize_scaled(-5.0f), 0u);
}

TEST(Nf4Codes, ScalingIsTimesReciprocal) {
  // x * (1/absmax) and x / absmax differ in the last bit for some inputs; the op uses the former.
  const float a = 3.0f, inv = nf4::inv_absmax(a);
  EXPECT_EQ(inv, 1.0f / 3.0f);
  EXPECT_EQ(nf4::inv_absmax(0.0f), 0.0f);
  for (float x : {0.1f, 0.7f, -2.2f, 2.9f}) EXPECT_EQ(nf4::quantize_value(x, inv), nf4::quantize_scaled(x * inv));
}

TEST(Nf4Quantize, PackingOrderFirstElementHigh) {
  const auto q = quantize({1.0f, -1.0f, 0.0f, 0.5626170039176941f}, 64);
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[0], 0xF0);
  EXPECT_EQ(q.packed[1], 0x7D);
  EXPECT_EQ(q.absmax[0], 1.0f);
  EXPECT_EQ(nf4::pack(0xA, 0x3), 0xA3);
}

TEST(Nf4Quantize, OddCountPadsLowNibbleWithZeroCode) {
  for (size_t n : {1u, 3u, 5u, 7u, 13u, 129u}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * (0.25f + 0.01f * float(i));
    const auto q = quantize(x, 64);
    ASSERT_EQ(q.packed.size(), (n + 1) / 2);
    EXPECT_EQ(nf4::low_nibble(q.packed.back()), 7u) << n;
    const auto y = dequantize(q, n, 64);
    for (float v : y) EXPECT_FALSE(std::isnan(v));
  }
}

TEST(Nf4Quantize, PartialLastBlockUsesItsOwnElements) {
  std::vector<float> x(64 + 10, 100.0f);
  for (size_t i = 64; i < x.size(); ++i) x[i] = -0.5f + 0.01f * float(i - 64);
  const auto q = quantize(x, 64);
  ASSERT_EQ(q.absmax.size(), 2u);
  EXPECT_EQ(q.absmax[0], 100.0f);
  EXPECT_EQ(q.absmax[1], 0.5f);
  EXPECT_EQ(nibble(q.packed, 64), 0u);  // -0.5 is the block's -absmax
}

TEST(Nf4Quantize, ZeroBlockGetsZeroCode) {
  std::vector<float> x(3 * 64 + 5, 0.0f);
  for (size_t i = 0; i < 64; ++i) x[i] = 0.01f * float(i + 1);
  x[3 * 64 + 1] = 0.0f;  // partial last block: all zero too
  const auto q = quantize(x, 64);
  EXPECT_EQ(q.absmax[1], 0.0f);
  EXPECT_EQ(q.absmax[3], 0.0f);
  for (size_t i = 64; i < x.size(); ++i) EXPECT_EQ(nibble(q.packed, i), 7u) << i;
  const auto y = dequantize(q, x.size(), 64);
  for (size_t i = 64; i < x.size(); ++i) EXPECT_EQ(qk::f32_bits(y[i]), 0u) << "+0.0 at " << i;
}

TEST(Nf4Quantize, EveryPowerOfTwoBlocksizeAndNoOther) {
  const std::vector<float> x(300, 0.5f);
  std::vector<uint8_t> p(150);
  std::vector<float> a(300);
  std::vector<float> y(300);
  for (int bs = 32; bs <= 4096; bs *= 2) {
    EXPECT_TRUE(nf4::valid_blocksize(bs));
    EXPECT_NO_THROW(qk::cpu::nf4_quantize_f32(x.data(), x.size(), bs, p.data(), a.data())) << bs;
    EXPECT_NO_THROW(qk::cpu::nf4_dequantize_f32(p.data(), a.data(), x.size(), bs, y.data())) << bs;
  }
  for (int bs : {0, -64, 1, 16, 48, 63, 65, 96, 100, 8192, 1 << 20}) {
    EXPECT_FALSE(nf4::valid_blocksize(bs)) << bs;
    EXPECT_THROW(qk::cpu::nf4_quantize_f32(x.data(), x.size(), bs, p.data(), a.data()), qk::Error) << bs;
    EXPECT_THROW(qk::cpu::nf4_dequantize_f32(p.data(), a.data(), x.size(), bs, y.data()), qk::Error) << bs;
  }
}

TEST(Nf4Quantize, InputTypesAgree) {
  std::mt19937 gen(7);
  std::normal_distribution<float> d(0.0f, 0.02f);
  const size_t n = 1000 + 3;
  std::vector<uint16_t> xb(n), xh(n);
  std::vector<float> xf_b(n), xf_h(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = d(gen);
    xb[i] = qk::f32_to_bf16_rn(v);
    xh[i] = nf4::f32_to_f16_bits_rn(v);
    xf_b[i] = qk::bf16_to_f32(xb[i]);
    xf_h[i] = nf4::f16_bits_to_f32(xh[i]);
  }
  for (int bs : {32, 64, 256}) {
    std::vector<uint8_t> p(nf4::packed_bytes(n));
    std::vector<float> a(nf4::num_blocks(n, bs));
    qk::cpu::nf4_quantize_bf16(xb.data(), n, bs, p.data(), a.data());
    const auto want_b = quantize(xf_b, bs);
    EXPECT_EQ(p, want_b.packed);
    EXPECT_EQ(a, want_b.absmax);
    qk::cpu::nf4_quantize_f16(xh.data(), n, bs, p.data(), a.data());
    const auto want_h = quantize(xf_h, bs);
    EXPECT_EQ(p, want_h.packed);
    EXPECT_EQ(a, want_h.absmax);
  }
}

TEST(Nf4Half, ConversionRoundsToNearestEven) {
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(1.0f), 0x3c00);
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(-2.0f), 0xc000);
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(65504.0f), 0x7bff);
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(65520.0f), 0x7c00);
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(1.0f + 1.0f / 2048), 0x3c00);                // tie, even below
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(1.0f + 3.0f / 2048), 0x3c02);                // tie, even above
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(5.9604644775390625e-8f), 0x0001);            // 2^-24
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(2.98023223876953125e-8f), 0x0000);           // 2^-25: tie to 0
  EXPECT_EQ(nf4::f32_to_f16_bits_rn(std::ldexp(1.5f, -24)), 0x0002);             // tie to even 2
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half round-trips
    ASSERT_EQ(nf4::f32_to_f16_bits_rn(nf4::f16_bits_to_f32(uint16_t(h))), h);
    ASSERT_EQ(nf4::f32_to_f16_bits_rn(nf4::f16_bits_to_f32(uint16_t(h | 0x8000))), h | 0x8000);
  }
}

// Dequantization is exact up to one rounding: y = code * absmax.
TEST(Nf4Dequantize, OutputTypesRoundTheF32Result) {
  std::mt19937 gen(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  const size_t n = 777;
  std::vector<float> x(n);
  for (auto& v : x) v = d(gen);
  const auto q = quantize(x, 64);
  const auto y = dequantize(q, n, 64);
  std::vector<uint16_t> yb(n), yh(n);
  qk::cpu::nf4_dequantize_bf16(q.packed.data(), q.absmax.data(), n, 64, yb.data());
  qk::cpu::nf4_dequantize_f16(q.packed.data(), q.absmax.data(), n, 64, yh.data());
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(y[i], nf4::code_value(nibble(q.packed, i)) * q.absmax[i / 64]);
    EXPECT_EQ(yb[i], qk::f32_to_bf16_rn(y[i]));
    EXPECT_EQ(yh[i], nf4::f32_to_f16_bits_rn(y[i]));
  }
}

// ---- Round-trip error, relative to each block's absmax ---------------------------------------------
// Bounds from the code spacing: every scaled value lies in [-1, 1] and goes to its nearest code, so
// |error| <= absmax * gap_max / 2 (+ the fp32 rounding of x * (1/absmax) and of code * absmax). For the
// mean: a value uniformly placed inside a gap of width g is off by g/4 on average, so the mean error
// is at most gap_max / 4; the measured means are far lower since most mass sits where codes are dense.
struct ErrStats {
  double mean = 0, max = 0;
};

ErrStats round_trip(const std::vector<float>& x, int bs) {
  const auto q = quantize(x, bs);
  const auto y = dequantize(q, x.size(), bs);
  ErrStats s;
  for (size_t i = 0; i < x.size(); ++i) {
    const double a = q.absmax[i / bs];
    const double e = a > 0 ? std::abs(double(y[i]) - x[i]) / a : std::abs(double(y[i]) - x[i]);
    s.mean += e;
    s.max = std::max(s.max, e);
  }
  s.mean /= double(x.size());
  return s;
}

TEST(Nf4RoundTrip, ErrorBoundsPerBlocksize) {
  const double gap = max_nf4_gap();  // 0.3038 (between -1 and -0.696)
  const double max_bound = gap / 2 + 1e-6, mean_bound = gap / 4;
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::student_t_distribution<float> heavy(2.0f);
  const size_t n = (1 << 16) + 37;
  std::vector<float> xn(n), xh(n);
  for (auto& v : xn) v = normal(gen);
  for (auto& v : xh) v = 0.01f * heavy(gen);
  for (int bs = 32; bs <= 4096; bs *= 2) {
    const auto sn = round_trip(xn, bs), sh = round_trip(xh, bs);
    EXPECT_LE(sn.max, max_bound) << bs;
    EXPECT_LE(sh.max, max_bound) << bs;
    EXPECT_LE(sn.mean, mean_bound) << bs;
    EXPECT_LE(sh.mean, mean_bound) << bs;
    // Normal data: the codes are normal quantiles, so the mean error stays near the inner gaps' g/4
    // (about 0.09/4) and grows slowly with the blocksize as absmax grows relative to sigma.
    EXPECT_LE(sn.mean, 0.03) << bs;
    RecordProperty("bs" + std::to_string(bs) + "_normal_mean", std::to_string(sn.mean));
    RecordProperty("bs" + std::to_string(bs) + "_heavy_mean", std::to_string(sh.mean));
  }
}

// ---- Double quantization -----------------------------------------------------------------------------
TEST(Nf4Dynamic, CodeConstruction) {
  std::vector<float> c(256);
  qk::cpu::nf4_dynamic_code(c.data());
  EXPECT_EQ(c[0], -0.99296875f);
  EXPECT_EQ(c[127], 0.0f);
  EXPECT_EQ(c[255], 1.0f);
  EXPECT_EQ(c[254], 0.99296875f);
  EXPECT_NEAR(c[128], 5.5e-7, 1e-12);  // 1e-6 * (0.1 + 1) / 2
  for (int i = 0; i < 255; ++i) EXPECT_LT(c[i], c[i + 1]) << i;
  for (int p = 0; p < 127; ++p) EXPECT_EQ(c[126 - p], -c[128 + p]) << p;
  // Decade i holds 2^i values in [10^(i-7), 10^(i-6)).
  for (int p = 0; p < 127; ++p) {
    const int i = int(std::floor(std::log2(p + 1)));
    EXPECT_GE(c[128 + p], std::pow(10.0, i - 7)) << p;
    EXPECT_LT(c[128 + p], std::pow(10.0, i - 6)) << p;
  }
  for (int i = 0; i < 256; ++i) EXPECT_EQ(qk::dynamic_code_signed(i), c[i]);
}

TEST(Nf4Dynamic, NearestCodeTiesGoLow) {
  std::vector<float> c(256), mid(255);
  qk::cpu::nf4_dynamic_code(c.data());
  for (int k = 0; k < 255; ++k) mid[k] = nf4::dynamic_midpoint(c.data(), k);
  for (int k = 0; k < 256; ++k) EXPECT_EQ(nf4::quantize_dynamic_scaled(c[k], mid.data()), unsigned(k));
  for (int k = 0; k < 255; ++k) {
    EXPECT_EQ(nf4::quantize_dynamic_scaled(mid[k], mid.data()), unsigned(k));
    EXPECT_EQ(nf4::quantize_dynamic_scaled(std::nextafter(mid[k], 2.0f), mid.data()), unsigned(k + 1));
  }
  EXPECT_EQ(nf4::quantize_dynamic_scaled(-1.0f, mid.data()), 0u);
  EXPECT_EQ(nf4::quantize_dynamic_scaled(0.0f, mid.data()), 127u);
}

TEST(Nf4DoubleQuant, OffsetIsTheMean) {
  std::vector<float> a(1000);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.25f + 0.001f * float(i % 17);
  double s = 0;
  for (float v : a) s += v;
  EXPECT_EQ(qk::cpu::nf4_absmax_offset(a.data(), a.size()), float(s / a.size()));
  EXPECT_THROW(qk::cpu::nf4_absmax_offset(a.data(), 0), qk::Error);
}

TEST(Nf4DoubleQuant, RoundTripWithinHalfTheCodeSpacing) {
  std::mt19937 gen(5);
  std::gamma_distribution<float> d(4.0f, 0.01f);
  for (size_t nb : {1u, 7u, 256u, 300u, 4096u + 5}) {
    std::vector<float> a(nb);
    for (auto& v : a) v = d(gen);
    std::vector<uint8_t> q(nb);
    std::vector<float> nested(nf4::num_blocks(nb, 256)), back(nb);
    const float offset = qk::cpu::nf4_double_quantize(a.data(), nb, q.data(), nested.data());
    qk::cpu::nf4_double_dequantize(q.data(), nested.data(), offset, nb, back.data());
    // Largest gap of the dynamic code: 0.9/64 in the top decade (and 1.0 - 0.99296875 at the end).
    const double half_gap = 0.9 / 64 / 2;
    for (size_t i = 0; i < nb; ++i) {
      const double bound = nested[i / 256] * (half_gap + 1e-6) + 2e-7 * std::abs(a[i]);
      EXPECT_LE(std::abs(double(back[i]) - a[i]), bound) << nb << " " << i;
    }
    if (nb == 1) {  // all values equal the mean: code 0.0, exact reconstruction
      EXPECT_EQ(q[0], 127);
      EXPECT_EQ(nested[0], 0.0f);
      EXPECT_EQ(back[0], a[0]);
    }
  }
}

TEST(Nf4DoubleQuant, DequantizeWithNestedMatchesExpandedAbsmax) {
  std::mt19937 gen(9);
  std::normal_distribution<float> d(0.0f, 1.0f);
  const size_t n = 64 * 300 + 11;
  std::vector<float> x(n);
  for (auto& v : x) v = d(gen);
  const auto q = quantize(x, 64);
  const size_t nb = q.absmax.size();
  std::vector<uint8_t> qa(nb);
  std::vector<float> nested(nf4::num_blocks(nb, 256)), expanded(nb);
  const float offset = qk::cpu::nf4_double_quantize(q.absmax.data(), nb, qa.data(), nested.data());
  qk::cpu::nf4_double_dequantize(qa.data(), nested.data(), offset, nb, expanded.data());
  std::vector<float> y1(n), y2(n);
  qk::cpu::nf4_dequantize_f32(q.packed.data(), qk::Nf4Nested{qa.data(), nested.data(), offset}, n, 64, y1.data());
  qk::cpu::nf4_dequantize_f32(q.packed.data(), expanded.data(), n, 64, y2.data());
  EXPECT_EQ(y1, y2);
}

// Storage of Llama-2-7B's linear weights (32 layers of q, k, v, o [4096, 4096], gate and up
// [11008, 4096], down [4096, 11008]) in NF4, blocksize 64: 4 bits + 8 bits per 64 (8-bit absmax)
// + 32 bits per 64 * 256 (nested absmax) + 32 bits per tensor (offset) ~ 4.127; 4.5 without.
TEST(Nf4Storage, BitsPerParameterLlama2_7B) {
  const std::vector<std::pair<size_t, size_t>> shapes = {{4096, 4096}, {4096, 4096}, {4096, 4096}, {4096, 4096},
                                                         {11008, 4096}, {11008, 4096}, {4096, 11008}};
  double params = 0, bits_dq = 0, bits_plain = 0;
  for (int layer = 0; layer < 32; ++layer)
    for (const auto& [o, i] : shapes) {
      const size_t n = o * i, nb = nf4::num_blocks(n, 64);
      params += double(n);
      bits_dq += 8.0 * nf4::packed_bytes(n) + 8.0 * nb + 32.0 * nf4::num_blocks(nb, 256) + 32.0;
      bits_plain += 8.0 * nf4::packed_bytes(n) + 32.0 * nb;
    }
  const double bpp = bits_dq / params;
  RecordProperty("bits_per_param_dq", std::to_string(bpp));
  EXPECT_NEAR(bpp, 4.127, 0.001);
  EXPECT_NEAR(bits_plain / params, 4.5, 1e-6);
  EXPECT_NEAR(params, 6.476e9, 0.001e9);
}

}  // namespace

namespace {
// The literal midpoints are within half an ulp of the exact midpoints of the fp32 codes.
TEST(Nf4Codes, MidpointsAreTheExactMidpointsToHalfAnUlp) {
  for (unsigned k = 0; k < 15; ++k) {
    const double exact = (double(qk::nf4::code_value(k)) + qk::nf4::code_value(k + 1)) / 2;
    const float m = qk::nf4::midpoint(k);
    const double ulp = double(std::nextafter(std::abs(m), 2.0f)) - std::abs(m);
    EXPECT_LE(std::abs(double(m) - exact), ulp / 2) << k;
  }
}
}  // namespace
