// Op cases: NF4 quantization and double quantization, CUDA source vs the CPU twin, bitwise (packed
// bytes, absmax, 8-bit codes, nested absmax and offset). Every shape, blocksize and input type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tuple>

#include "harness.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace qtrain::test {
namespace {

// Bytewise equality of packed nibbles or 8-bit codes (harness.h's identical() prints float values).
::testing::AssertionResult same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure() << "byte " << i << " differs: " << int(got[i]) << " vs " << int(want[i]);
  return ::testing::AssertionSuccess();
}

enum class In { f32, bf16, f16 };
const char* name(In t) { return t == In::f32 ? "f32" : (t == In::bf16 ? "bf16" : "f16"); }

using Param = std::tuple<size_t, size_t, int, In>;  // rows, cols, blocksize, input type

class Nf4Quantize : public ::testing::TestWithParam<Param> {};

TEST_P(Nf4Quantize, MatchesCpuBitwise) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols, bs, in] = GetParam();
  const size_t n = rows * cols, nb = qk::nf4::num_blocks(n, bs), nbytes = qk::nf4::packed_bytes(n);
  // Block scales spanning several decades, never zero.
  auto xf = random_f32(n, 100 + n + bs, 1.0f);
  for (size_t i = 0; i < n; ++i) xf[i] *= float(1 << ((i / bs) % 7)) * 0.01f;
  std::vector<uint16_t> x16(n);
  std::vector<uint8_t> want_p(nbytes);
  std::vector<float> want_a(nb);
  if (in == In::f32) {
    qk::cpu::nf4_quantize_f32(xf.data(), n, bs, want_p.data(), want_a.data());
  } else if (in == In::bf16) {
    for (size_t i = 0; i < n; ++i) x16[i] = qk::f32_to_bf16_rn(xf[i]);
    qk::cpu::nf4_quantize_bf16(x16.data(), n, bs, want_p.data(), want_a.data());
  } else {
    for (size_t i = 0; i < n; ++i) x16[i] = qk::nf4::f32_to_f16_bits_rn(xf[i]);
    qk::cpu::nf4_quantize_f16(x16.data(), n, bs, want_p.data(), want_a.data());
  }

  DeviceBuffer<uint8_t> dp(nbytes);
  DeviceBuffer<float> da(nb);
  dp.poison();
  da.poison();
  if (in == In::f32) {
    DeviceBuffer<float> dx(xf);
    qk::nf4_quantize_f32(dx.get(), n, bs, dp.get(), da.get(), nullptr);
  } else {
    DeviceBuffer<uint16_t> dx(x16);
    if (in == In::bf16) qk::nf4_quantize_bf16(dx.as<__nv_bfloat16>(), n, bs, dp.get(), da.get(), nullptr);
    else qk::nf4_quantize_f16(dx.as<__half>(), n, bs, dp.get(), da.get(), nullptr);
  }
  EXPECT_TRUE(same_bytes(dp.download(), want_p));
  EXPECT_TRUE(identical(da.download(), want_a));
}

std::vector<Param> cases() {
  std::vector<Param> v;
  const std::vector<std::pair<size_t, size_t>> shapes = {{5, 7}, {13, 11}, {1, 129}, {64, 64}, {3, 4096 + 5}};
  for (const auto& [r, c] : shapes)
    for (int bs : {32, 64, 128, 256, 512, 1024, 2048, 4096})
      for (In in : {In::f32, In::bf16, In::f16}) v.emplace_back(r, c, bs, in);
  v.emplace_back(128, 4096 + 7, 64, In::bf16);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, Nf4Quantize, ::testing::ValuesIn(cases()), [](const auto& p) {
  return std::to_string(std::get<0>(p.param)) + "x" + std::to_string(std::get<1>(p.param)) + "_bs" +
         std::to_string(std::get<2>(p.param)) + "_" + name(std::get<3>(p.param));
});

TEST(Nf4QuantizeErrors, BadBlocksizeIsAnError) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<float> x(100);
  DeviceBuffer<uint8_t> p(50);
  DeviceBuffer<float> a(100);
  for (int bs : {0, 16, 48, 100, 8192})
    EXPECT_THROW(qk::nf4_quantize_f32(x.get(), 100, bs, p.get(), a.get(), nullptr), qk::Error) << bs;
  EXPECT_THROW(qk::nf4_quantize_f32(nullptr, 100, 64, p.get(), a.get(), nullptr), qk::Error);
}

class Nf4DoubleQuant : public ::testing::TestWithParam<size_t> {};

TEST_P(Nf4DoubleQuant, MatchesCpuBitwise) {
  QTRAIN_REQUIRE_DEVICE();
  const size_t nb = GetParam(), nn = qk::nf4::num_blocks(nb, 256);
  auto absmax = random_f32(nb, 7 + nb, 0.5f);
  for (auto& v : absmax) v = std::abs(v);
  std::vector<uint8_t> want_q(nb);
  std::vector<float> want_nested(nn);
  const float want_offset = qk::cpu::nf4_double_quantize(absmax.data(), nb, want_q.data(), want_nested.data());
  std::vector<float> want_back(nb);
  qk::cpu::nf4_double_dequantize(want_q.data(), want_nested.data(), want_offset, nb, want_back.data());

  DeviceBuffer<float> da(absmax);
  DeviceBuffer<uint8_t> dq(nb);
  DeviceBuffer<float> dn(nn), doff(1), dback(nb);
  dq.poison();
  dn.poison();
  doff.poison();
  dback.poison();
  qk::nf4_double_quantize(da.get(), nb, dq.get(), dn.get(), doff.get(), nullptr);
  EXPECT_TRUE(identical(doff.download(), std::vector<float>{want_offset}));
  EXPECT_TRUE(same_bytes(dq.download(), want_q));
  EXPECT_TRUE(identical(dn.download(), want_nested));
  qk::nf4_double_dequantize(dq.get(), dn.get(), want_offset, nb, dback.get(), nullptr);
  EXPECT_TRUE(identical(dback.download(), want_back));
}

INSTANTIATE_TEST_SUITE_P(Ops, Nf4DoubleQuant, ::testing::Values(1, 5, 7, 13, 255, 256, 257, 1000, 65536 + 11),
                         [](const auto& p) { return "nb" + std::to_string(p.param); });

}  // namespace
}  // namespace qtrain::test
