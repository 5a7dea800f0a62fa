// Op cases: the chunked LM head + cross-entropy, CUDA (cuBLAS + fused kernel) vs the CPU twin:
// loss, log-probabilities, dhidden and the optional lm_head gradient, chunks that do and do not
// divide the token count.
#include <cuda_bf16.h>
#include <cublas_v2.h>

#include <tuple>

#include "harness.h"
#include "qk/cross_entropy.h"
#include "qk/lm_head_loss.h"

namespace qtrain::test {
namespace {

using Param = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // tokens, hidden, vocab, chunk

class LmHeadLoss : public ::testing::TestWithParam<Param> {};

TEST_P(LmHeadLoss, MatchesTheTwin) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [t, h, v, chunk] = GetParam();
  const qk::LmHeadShape s{t, h, v, chunk};
  const auto hidden = random_bf16(static_cast<size_t>(t * h), 1, 1.0f);
  const auto weight = random_bf16(static_cast<size_t>(v * h), 2, 0.3f);
  Rng r(3);
  std::vector<int32_t> labels(static_cast<size_t>(t));
  for (auto& y : labels) y = static_cast<int32_t>(r.next() % static_cast<uint64_t>(v));
  labels[0] = qk::kIgnoreIndex;
  const float dscale = 1.0f / static_cast<float>(t - 1);

  std::vector<float> loss(t), lp(t), dw(static_cast<size_t>(v * h), 0.0f);
  std::vector<uint16_t> dh(static_cast<size_t>(t * h));
  qk::cpu::lm_head_loss(s, hidden.data(), weight.data(), labels.data(), dscale, loss.data(), lp.data(), dh.data(),
                        dw.data());

  cublasHandle_t handle;
  QK_CUBLAS_CHECK(cublasCreate(&handle));
  DeviceBuffer<uint16_t> dhid(hidden), dwt(weight), ddh(dh.size());
  DeviceBuffer<int32_t> dlab(labels);
  DeviceBuffer<float> dloss(t), dlp(t), ddw(std::vector<float>(dw.size(), 0.0f));
  DeviceBuffer<uint8_t> ws(qk::lm_head_loss_workspace_bytes(s));
  dloss.poison();
  dlp.poison();
  ddh.poison();
  qk::lm_head_loss(handle, s, dhid.as<__nv_bfloat16>(), dwt.as<__nv_bfloat16>(), dlab.get(), dscale, dloss.get(),
                   dlp.get(), ddh.as<__nv_bfloat16>(), ddw.get(), ws.get(), nullptr);
  EXPECT_TRUE(close(dloss.download(), loss, 1e-3));
  EXPECT_TRUE(close(dlp.download(), lp, 1e-3));
  EXPECT_TRUE(close(ddh.download(), dh, 2e-2));
  EXPECT_TRUE(close(ddw.download(), dw, 2e-2));
  cublasDestroy(handle);
}

INSTANTIATE_TEST_SUITE_P(Ops, LmHeadLoss,
                         ::testing::Values(Param{7, 16, 37, 5}, Param{33, 64, 512, 16}, Param{16, 32, 128, 16},
                                           Param{5, 8, 1000, 1024}),
                         [](const auto& p) {
                           return "t" + std::to_string(std::get<0>(p.param)) + "_h" + std::to_string(std::get<1>(p.param)) +
                                  "_v" + std::to_string(std::get<2>(p.param)) + "_chunk" +
                                  std::to_string(std::get<3>(p.param));
                         });

}  // namespace
}  // namespace qtrain::test
