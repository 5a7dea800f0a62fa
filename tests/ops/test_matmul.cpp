// Op cases: cuBLAS GEMM (bf16 in, f32 accumulate) against the OpenBLAS twin, every transpose
// combination, odd and round shapes, alpha/beta, f32 and bf16 outputs.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <tuple>

#include "harness.h"
#include "qk/matmul.h"

namespace qtrain::test {
namespace {

struct GemmCase {
  int m, n, k;
  bool ta, tb;
  float alpha, beta;
};

std::string case_name(const GemmCase& c) {
  auto f = [](float v) { return std::to_string(static_cast<int>(v * 10)); };
  return "m" + std::to_string(c.m) + "_n" + std::to_string(c.n) + "_k" + std::to_string(c.k) + "_" +
         (c.ta ? "T" : "N") + (c.tb ? "T" : "N") + "_a" + f(c.alpha) + "_b" + f(c.beta);
}

class Matmul : public ::testing::TestWithParam<GemmCase> {
 protected:
  void SetUp() override {
    QTRAIN_REQUIRE_DEVICE();
    QK_CUBLAS_CHECK(cublasCreate(&handle_));
  }
  void TearDown() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }
  cublasHandle_t handle_ = nullptr;
};

TEST_P(Matmul, Bf16InF32Out) {
  const GemmCase c = GetParam();
  const qk::GemmShape s{c.ta, c.tb, c.m, c.n, c.k};
  const auto a = random_bf16(static_cast<size_t>(c.m) * c.k, 1);
  const auto b = random_bf16(static_cast<size_t>(c.k) * c.n, 2);
  const auto c0 = random_f32(static_cast<size_t>(c.m) * c.n, 3);
  auto want = c0;
  qk::cpu::matmul_bf16_f32(s, c.alpha, a.data(), b.data(), c.beta, want.data());

  DeviceBuffer<uint16_t> da(a), db(b);
  DeviceBuffer<float> dc(c0.size());
  if (c.beta != 0.0f) dc.upload(c0);
  else dc.poison();  // beta = 0 must not read C: NaN there must not leak into the result
  qk::matmul_bf16_f32(handle_, s, c.alpha, da.as<__nv_bfloat16>(), db.as<__nv_bfloat16>(), c.beta, dc.get(), nullptr);
  EXPECT_TRUE(close(dc.download(), want, kTolF32));
}

TEST_P(Matmul, Bf16InBf16Out) {
  const GemmCase c = GetParam();
  const qk::GemmShape s{c.ta, c.tb, c.m, c.n, c.k};
  const auto a = random_bf16(static_cast<size_t>(c.m) * c.k, 4);
  const auto b = random_bf16(static_cast<size_t>(c.k) * c.n, 5);
  const auto c0 = random_bf16(static_cast<size_t>(c.m) * c.n, 6);
  auto want = c0;
  qk::cpu::matmul_bf16(s, c.alpha, a.data(), b.data(), c.beta, want.data());

  DeviceBuffer<uint16_t> da(a), db(b), dc(c0.size());
  if (c.beta != 0.0f) dc.upload(c0);
  else dc.poison();
  qk::matmul_bf16(handle_, s, c.alpha, da.as<__nv_bfloat16>(), db.as<__nv_bfloat16>(), c.beta,
                  dc.as<__nv_bfloat16>(), nullptr);
  EXPECT_TRUE(close(dc.download(), want, kTolBf16));
}

// Column blocks of wider matrices (row strides larger than the rows): the product reads and writes
// only its block; the elements between rows keep their values.
TEST_P(Matmul, StridedBlocksLeaveTheGapsAlone) {
  const GemmCase c = GetParam();
  const int pad = 3;
  const int rows_a = c.ta ? c.k : c.m, cols_a = c.ta ? c.m : c.k;
  const int rows_b = c.tb ? c.n : c.k, cols_b = c.tb ? c.k : c.n;
  const qk::GemmShape s{c.ta, c.tb, c.m, c.n, c.k, cols_a + pad, cols_b + pad, c.n + pad};
  const auto a = random_bf16(static_cast<size_t>(rows_a) * s.lda, 7);
  const auto b = random_bf16(static_cast<size_t>(rows_b) * s.ldb, 8);
  const auto c0 = random_bf16(static_cast<size_t>(c.m) * s.ldc, 9);
  auto want = c0;
  qk::cpu::matmul_bf16(s, c.alpha, a.data(), b.data(), c.beta, want.data());
  for (int i = 0; i < c.m; ++i)
    for (int j = c.n; j < s.ldc; ++j) ASSERT_EQ(want[static_cast<size_t>(i) * s.ldc + j], c0[static_cast<size_t>(i) * s.ldc + j]);

  DeviceBuffer<uint16_t> da(a), db(b), dc(c0);
  qk::matmul_bf16(handle_, s, c.alpha, da.as<__nv_bfloat16>(), db.as<__nv_bfloat16>(), c.beta,
                  dc.as<__nv_bfloat16>(), nullptr);
  EXPECT_TRUE(close(dc.download(), want, kTolBf16));
}

std::vector<GemmCase> cases() {
  std::vector<GemmCase> v;
  for (auto [m, n, k] : {std::tuple{5, 7, 11}, std::tuple{13, 5, 7}, std::tuple{64, 48, 32}, std::tuple{1, 17, 128}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) v.push_back({m, n, k, ta, tb, 1.0f, 0.0f});
  }
  v.push_back({11, 13, 5, false, true, 0.5f, 1.0f});
  v.push_back({7, 5, 13, true, false, 2.0f, 0.5f});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, Matmul, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return case_name(p.param); });

}  // namespace
}  // namespace qtrain::test
