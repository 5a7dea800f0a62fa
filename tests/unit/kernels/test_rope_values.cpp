// RoPE against known values: the rotate_half layout written out by hand, position 0 as the
// identity, and the llama3-scaled inverse frequencies of Llama-3.1-8B (head_dim 128, theta 500000,
// factor 8, low 1, high 4, original 8192), computed here independently and pinned to literals.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/rope.h"

namespace {

qk::RopeConfig llama31_8b() {
  qk::RopeConfig c;
  c.theta = 500000.0;
  c.llama3 = true;
  c.factor = 8.0;
  c.low_freq_factor = 1.0;
  c.high_freq_factor = 4.0;
  c.original_max_position = 8192.0;
  return c;
}

// HF's _compute_llama3_parameters, restated: smooth between the two wavelength limits.
double llama3_reference(int j, int d) {
  const double base = std::exp(-(2.0 * j / d) * std::log(500000.0));
  const double wavelen = 2.0 * std::numbers::pi / base;
  const double low_freq_wavelen = 8192.0 / 1.0, high_freq_wavelen = 8192.0 / 4.0;
  if (wavelen < high_freq_wavelen) return base;
  if (wavelen > low_freq_wavelen) return base / 8.0;
  const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
  return (1.0 - smooth) * base / 8.0 + smooth * base;
}

TEST(RopeValues, Llama31InverseFrequencies) {
  const auto cfg = llama31_8b();
  for (int j = 0; j < 64; ++j)
    EXPECT_NEAR(qk::rope_inv_freq(cfg, j, 128), llama3_reference(j, 128), 1e-12 * llama3_reference(j, 128)) << j;
  // Literals: j 0 and 24 are high frequencies (unchanged), 30 and 31 in the smoothed band, 40 and
  // 63 low frequencies (divided by 8).
  const struct {
    int j;
    double want;
  } pinned[] = {{0, 1.0},
                {24, 0.007292664737217109},
                {30, 0.0013718935677611381},
                {31, 0.0008567514129196321},
                {40, 3.428102195952591e-05},
                {63, 3.068925988914511e-07}};
  for (const auto& p : pinned) EXPECT_NEAR(qk::rope_inv_freq(cfg, p.j, 128), p.want, 1e-12 * p.want) << p.j;
  // The float table the kernels get.
  const auto f = qk::rope_freqs(cfg, 128);
  EXPECT_EQ(f.head_dim, 128);
  for (const auto& p : pinned) EXPECT_EQ(f.inv_freq[p.j], static_cast<float>(p.want)) << p.j;
}

TEST(RopeValues, PlainFrequencies) {
  const qk::RopeConfig plain;  // theta 10000, no scaling
  for (int j = 0; j < 40; ++j) EXPECT_NEAR(qk::rope_inv_freq(plain, j, 80), std::pow(10000.0, -j / 40.0), 1e-15);
}

TEST(RopeValues, RotateHalfByHand) {
  // One head of d = 4 at position 3: pairs (0, 2) and (1, 3) with inv_freq 1 and 1/100.
  const auto f = qk::rope_freqs(qk::RopeConfig{}, 4);
  ASSERT_EQ(f.inv_freq[0], 1.0f);
  ASSERT_EQ(f.inv_freq[1], 0.01f);
  std::vector<double> x = {1.0, 2.0, 3.0, 4.0};
  const int32_t pos = 3;
  qk::cpu::rope_forward(x.data(), nullptr, &pos, 1, 1, 0, f);
  const double a0 = 3.0, a1 = 3.0 * static_cast<double>(0.01f);
  EXPECT_NEAR(x[0], 1.0 * std::cos(a0) - 3.0 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[1], 2.0 * std::cos(a1) - 4.0 * std::sin(a1), 1e-12);
  EXPECT_NEAR(x[2], 3.0 * std::cos(a0) + 1.0 * std::sin(a0), 1e-12);
  EXPECT_NEAR(x[3], 4.0 * std::cos(a1) + 2.0 * std::sin(a1), 1e-12);
}

TEST(RopeValues, PositionZeroIsIdentity) {
  const auto f = qk::rope_freqs(llama31_8b(), 128);
  std::vector<uint16_t> q(2 * 128), k(128);
  for (size_t i = 0; i < q.size(); ++i) q[i] = qk::f32_to_bf16_rn(std::sin(0.1f * static_cast<float>(i)) + 0.01f);
  for (size_t i = 0; i < k.size(); ++i) k[i] = qk::f32_to_bf16_rn(std::cos(0.3f * static_cast<float>(i)) + 0.01f);
  const auto q0 = q, k0 = k;
  const int32_t pos = 0;
  qk::cpu::rope_forward(q.data(), k.data(), &pos, 1, 2, 1, f);
  EXPECT_EQ(q, q0);
  EXPECT_EQ(k, k0);
}

}  // namespace
