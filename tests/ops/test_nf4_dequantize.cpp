// Op cases: NF4 dequantization (plain and double-quantized absmax), CUDA source vs the CPU twin,
// bitwise for f32, bf16 and f16 outputs, on the vector path and on the unaligned scalar path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tuple>

#include "harness.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace qtrain::test {
namespace {

enum class OutT { f32, bf16, f16 };
const char* name(OutT t) { return t == OutT::f32 ? "f32" : (t == OutT::bf16 ? "bf16" : "f16"); }

using Param = std::tuple<size_t, size_t, int, OutT, bool>;  // rows, cols, blocksize, output, nested

class Nf4Dequantize : public ::testing::TestWithParam<Param> {};

template <typename Host, typename Dev, typename CpuFn, typename GpuFn>
void run_case(size_t n, size_t out_offset, CpuFn cpu, GpuFn gpu) {
  std::vector<Host> want(n);
  cpu(want.data());
  DeviceBuffer<Host> dy(n + out_offset);
  dy.poison();
  gpu(reinterpret_cast<Dev*>(dy.get() + out_offset));
  auto got = dy.download();
  got.erase(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(out_offset));
  EXPECT_TRUE(identical(got, want));
}

TEST_P(Nf4Dequantize, MatchesCpuBitwise) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols, bs, out, nested] = GetParam();
  const size_t n = rows * cols, nb = qk::nf4::num_blocks(n, bs), nbytes = qk::nf4::packed_bytes(n);
  // Random nibbles everywhere (including the odd count's padding nibble) and random positive absmax.
  Rng rng(31 + n + bs);
  std::vector<uint8_t> packed(nbytes);
  for (auto& b : packed) b = static_cast<uint8_t>(rng.next());
  auto absmax = random_f32(nb, 5 + nb, 2.0f);
  for (auto& v : absmax) v = std::abs(v);
  std::vector<uint8_t> q(nb);
  std::vector<float> nest(qk::nf4::num_blocks(nb, 256));
  const float offset = qk::cpu::nf4_double_quantize(absmax.data(), nb, q.data(), nest.data());
  const qk::Nf4Nested hn{q.data(), nest.data(), offset};

  DeviceBuffer<uint8_t> dp(packed), dq(q);
  DeviceBuffer<float> da(absmax), dn(nest);
  const qk::Nf4Nested dnst{dq.get(), dn.get(), offset};
  // out_offset 1 makes the output pointer misaligned: the scalar path.
  for (size_t out_offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE(out_offset ? "scalar path" : "vector path");
    if (out == OutT::f32) {
      run_case<float, float>(
          n, out_offset,
          [&](float* y) {
            if (nested) qk::cpu::nf4_dequantize_f32(packed.data(), hn, n, bs, y);
            else qk::cpu::nf4_dequantize_f32(packed.data(), absmax.data(), n, bs, y);
          },
          [&](float* y) {
            if (nested) qk::nf4_dequantize_f32(dp.get(), dnst, n, bs, y, nullptr);
            else qk::nf4_dequantize_f32(dp.get(), da.get(), n, bs, y, nullptr);
          });
    } else if (out == OutT::bf16) {
      run_case<uint16_t, __nv_bfloat16>(
          n, out_offset,
          [&](uint16_t* y) {
            if (nested) qk::cpu::nf4_dequantize_bf16(packed.data(), hn, n, bs, y);
            else qk::cpu::nf4_dequantize_bf16(packed.data(), absmax.data(), n, bs, y);
          },
          [&](__nv_bfloat16* y) {
            if (nested) qk::nf4_dequantize_bf16(dp.get(), dnst, n, bs, y, nullptr);
            else qk::nf4_dequantize_bf16(dp.get(), da.get(), n, bs, y, nullptr);
          });
    } else {
      run_case<uint16_t, __half>(
          n, out_offset,
          [&](uint16_t* y) {
            if (nested) qk::cpu::nf4_dequantize_f16(packed.data(), hn, n, bs, y);
            else qk::cpu::nf4_dequantize_f16(packed.data(), absmax.data(), n, bs, y);
          },
          [&](__half* y) {
            if (nested) qk::nf4_dequantize_f16(dp.get(), dnst, n, bs, y, nullptr);
            else qk::nf4_dequantize_f16(dp.get(), da.get(), n, bs, y, nullptr);
          });
    }
  }
}

// Quantize on the device, dequantize on the device: the round trip stays within the NF4 error bound.
TEST(Nf4RoundTripOnDevice, Bf16Weights) {
  QTRAIN_REQUIRE_DEVICE();
  const size_t n = 96 * 1024 + 5;
  const auto x = random_bf16(n, 77, 0.05f);
  const size_t nb = qk::nf4::num_blocks(n, 64);
  DeviceBuffer<uint16_t> dx(x), dy(n);
  DeviceBuffer<uint8_t> dp(qk::nf4::packed_bytes(n));
  DeviceBuffer<float> da(nb);
  dy.poison();
  qk::nf4_quantize_bf16(dx.as<__nv_bfloat16>(), n, 64, dp.get(), da.get(), nullptr);
  qk::nf4_dequantize_bf16(dp.get(), da.get(), n, 64, dy.as<__nv_bfloat16>(), nullptr);
  const auto y = dy.download();
  const auto a = da.download();
  for (size_t i = 0; i < n; ++i) {
    const float err = std::abs(qk::bf16_to_f32(y[i]) - qk::bf16_to_f32(x[i]));
    ASSERT_LE(err, 0.152f * a[i / 64] * (1 + 1.0f / 128)) << i;  // half the largest code gap, + bf16
  }
}

std::vector<Param> cases() {
  std::vector<Param> v;
  const std::vector<std::pair<size_t, size_t>> shapes = {{5, 7}, {13, 11}, {1, 129}, {64, 64}, {3, 4096 + 5}};
  for (const auto& [r, c] : shapes)
    for (int bs : {32, 64, 256, 4096})
      for (OutT o : {OutT::f32, OutT::bf16, OutT::f16})
        for (bool nested : {false, true}) v.emplace_back(r, c, bs, o, nested);
  for (int bs : {128, 512, 1024, 2048}) v.emplace_back(64, 64, bs, OutT::bf16, true);
  v.emplace_back(128, 4096 + 7, 64, OutT::bf16, true);
  v.emplace_back(128, 4096, 64, OutT::f32, false);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, Nf4Dequantize, ::testing::ValuesIn(cases()), [](const auto& p) {
  return std::to_string(std::get<0>(p.param)) + "x" + std::to_string(std::get<1>(p.param)) + "_bs" +
         std::to_string(std::get<2>(p.param)) + "_" + name(std::get<3>(p.param)) +
         (std::get<4>(p.param) ? "_dq" : "");
});

TEST(Nf4DequantizeErrors, BadBlocksizeIsAnError) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<uint8_t> p(50);
  DeviceBuffer<float> a(100), y(100);
  for (int bs : {0, 16, 48, 100, 8192})
    EXPECT_THROW(qk::nf4_dequantize_f32(p.get(), a.get(), 100, bs, y.get(), nullptr), qk::Error) << bs;
  EXPECT_THROW(qk::nf4_dequantize_f32(p.get(), static_cast<const float*>(nullptr), 100, 64, y.get(), nullptr),
               qk::Error);
}

}  // namespace
}  // namespace qtrain::test
