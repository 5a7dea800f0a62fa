// Op cases: the NF4 GEMM (forward Y = X W^T, backward dX = dY W) against its CPU twin (dequantize, then
// the OpenBLAS GEMM): the fused kernel and the dequantize + cuBLAS fallback, both absmax forms, bf16 and
// f32 outputs, odd token counts on both fused tiles (T <= 32 small, larger T the large tile) and weight
// shapes whose N is not a multiple of the CTA tile. Under the emulator the shapes stay small; the GPU
// variant adds the Llama-2-7B / Llama-3-8B layer shapes. Also: which path the dispatcher takes.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <ostream>
#include <utility>

#include "harness.h"
#include "qk/error.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_gemm.h"

namespace qtrain::test {
namespace {

// A random NF4 weight (every nibble value, positive absmax of a realistic size) on host and device.
struct Weight {
  int out, in;
  std::vector<uint8_t> packed, q;
  std::vector<float> absmax, nest;
  float offset = 0.0f;
  DeviceBuffer<uint8_t> d_packed, d_q;
  DeviceBuffer<float> d_absmax, d_nest;

  Weight(int o, int i, uint64_t seed)
      : out(o), in(i), packed(make_packed(o, i, seed)), q(blocks(o, i)), absmax(make_absmax(o, i, seed)),
        nest(qk::nf4::num_blocks(blocks(o, i), 256)), d_packed(packed), d_q(blocks(o, i)), d_absmax(absmax),
        d_nest(nest.size()) {
    offset = qk::cpu::nf4_double_quantize(absmax.data(), absmax.size(), q.data(), nest.data());
    d_q.upload(q);
    d_nest.upload(nest);
  }
  static size_t blocks(int o, int i) { return qk::nf4::num_blocks(static_cast<size_t>(o) * i, 64); }
  static std::vector<uint8_t> make_packed(int o, int i, uint64_t seed) {
    Rng r(seed);
    std::vector<uint8_t> p(qk::nf4::packed_bytes(static_cast<size_t>(o) * i));
    for (auto& b : p) b = static_cast<uint8_t>(r.next());
    return p;
  }
  static std::vector<float> make_absmax(int o, int i, uint64_t seed) {
    auto a = random_f32(blocks(o, i), seed + 1, 0.05f);
    for (auto& v : a) v = std::abs(v);
    return a;
  }
  qk::Nf4GemmWeight host(bool nested) const {
    qk::Nf4GemmWeight w;
    w.packed = packed.data();
    if (nested) w.nested = {q.data(), nest.data(), offset};
    else w.absmax = absmax.data();
    w.out = out;
    w.in = in;
    return w;
  }
  qk::Nf4GemmWeight device(bool nested) const {
    qk::Nf4GemmWeight w;
    w.packed = d_packed.get();
    if (nested) w.nested = {d_q.get(), d_nest.get(), offset};
    else w.absmax = d_absmax.get();
    w.out = out;
    w.in = in;
    return w;
  }
};

// cuBLAS handle and a workspace big enough for the fallback on the weight.
class Context {
 public:
  explicit Context(size_t workspace_bytes) : ws_(workspace_bytes) { QK_CUBLAS_CHECK(cublasCreate(&ctx_.cublas)); }
  ~Context() { cublasDestroy(ctx_.cublas); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  qk::Nf4GemmContext with(qk::Nf4GemmPath path) const {
    qk::Nf4GemmContext c = ctx_;
    c.workspace = ws_.get();
    c.workspace_bytes = ws_.bytes();
    c.path = path;
    return c;
  }

 private:
  qk::Nf4GemmContext ctx_;
  DeviceBuffer<uint8_t> ws_;
};

// Runs one direction and output type through `path` and compares with the CPU twin; returns the result.
template <typename OutT>
std::vector<OutT> run_and_check(const Weight& wt, bool nested, bool backward, int t, qk::Nf4GemmPath path,
                                const Context& ctx) {
  const int k = backward ? wt.out : wt.in, n = backward ? wt.in : wt.out;
  const auto a = random_bf16(static_cast<size_t>(t) * k, 1000 + t + k, 1.0f);
  std::vector<OutT> want(static_cast<size_t>(t) * n);
  const qk::Nf4GemmWeight hw = wt.host(nested), dw = wt.device(nested);
  DeviceBuffer<uint16_t> da(a);
  DeviceBuffer<OutT> dy(want.size());
  dy.poison();
  const auto* a_ptr = da.as<__nv_bfloat16>();
  qk::Nf4GemmPath ran;
  if constexpr (sizeof(OutT) == 4) {
    if (backward) {
      qk::cpu::nf4_gemm_backward_f32(hw, a.data(), t, want.data());
      ran = qk::nf4_gemm_backward_f32(ctx.with(path), dw, a_ptr, t, dy.get(), nullptr);
    } else {
      qk::cpu::nf4_gemm_forward_f32(hw, a.data(), t, want.data());
      ran = qk::nf4_gemm_forward_f32(ctx.with(path), dw, a_ptr, t, dy.get(), nullptr);
    }
  } else {
    auto* y_ptr = dy.template as<__nv_bfloat16>();
    if (backward) {
      qk::cpu::nf4_gemm_backward_bf16(hw, a.data(), t, want.data());
      ran = qk::nf4_gemm_backward_bf16(ctx.with(path), dw, a_ptr, t, y_ptr, nullptr);
    } else {
      qk::cpu::nf4_gemm_forward_bf16(hw, a.data(), t, want.data());
      ran = qk::nf4_gemm_forward_bf16(ctx.with(path), dw, a_ptr, t, y_ptr, nullptr);
    }
  }
  EXPECT_EQ(ran, path);
  const auto got = dy.download();
  EXPECT_TRUE(close(got, want, sizeof(OutT) == 4 ? kTolF32 : kTolBf16))
      << qk::nf4_gemm_path_name(path) << (sizeof(OutT) == 4 ? " f32" : " bf16");
  return got;
}

struct Case {
  int t, out, in;
  bool nested, backward, f32_out;
  bool operator==(const Case&) const = default;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << (c.backward ? "backward" : "forward") << " t=" << c.t << " W[" << c.out << ", " << c.in << "]"
      << (c.nested ? " double-quantized" : " fp32 absmax") << (c.f32_out ? " f32 out" : " bf16 out");
}

class Nf4Gemm : public ::testing::TestWithParam<Case> {};

TEST_P(Nf4Gemm, FusedAndFallbackMatchCpu) {
  QTRAIN_REQUIRE_DEVICE();
  const Case c = GetParam();
  const Weight wt(c.out, c.in, 7 + c.out + c.in);
  const Context ctx(qk::nf4_gemm_workspace_bytes(c.out, c.in));
  // The fallback sees the same inputs (same seeds): the same bf16 weight, only the summation order
  // differs, so the two paths agree to the output's rounding.
  if (c.f32_out) {
    const auto fused = run_and_check<float>(wt, c.nested, c.backward, c.t, qk::Nf4GemmPath::fused, ctx);
    const auto fallback = run_and_check<float>(wt, c.nested, c.backward, c.t, qk::Nf4GemmPath::dequant_cublas, ctx);
    EXPECT_TRUE(close(fused, fallback, kTolF32)) << "fused vs dequantize + cuBLAS";
  } else {
    const auto fused = run_and_check<uint16_t>(wt, c.nested, c.backward, c.t, qk::Nf4GemmPath::fused, ctx);
    const auto fallback =
        run_and_check<uint16_t>(wt, c.nested, c.backward, c.t, qk::Nf4GemmPath::dequant_cublas, ctx);
    EXPECT_TRUE(close(fused, fallback, kTolBf16)) << "fused vs dequantize + cuBLAS";
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&v](int t, int out, int in, bool backward) {
    // Alternate the absmax form and the output type so that each meets both tiles and directions.
    const int i = static_cast<int>(v.size());
    v.push_back({t, out, in, i % 2 == 1, backward, (i / 2) % 2 == 0});
  };
  // T = 1 and 7 take the small tile (32 x 64), T = 33 and 129 the large one (128 x 128); partial M
  // tiles on both. out or in = 192 leaves a partial 128-wide N tile; in = 256 runs more k steps than
  // the cp.async ring has stages, 64 fewer.
  for (int t : {1, 7})
    for (auto [o, i] : {std::pair{64, 64}, std::pair{192, 128}, std::pair{128, 256}, std::pair{256, 192}})
      for (bool backward : {false, true}) add(t, o, i, backward);
  for (int t : {33, 129})
    for (auto [o, i] : {std::pair{64, 64}, std::pair{192, 128}, std::pair{128, 192}})
      for (bool backward : {false, true}) add(t, o, i, backward);
  // The other absmax form for one case per tile and direction.
  for (const Case& c : {Case{33, 64, 64, false, false, true}, Case{33, 64, 64, true, false, true},
                        Case{7, 128, 256, false, true, false}, Case{7, 128, 256, true, true, false}})
    if (std::find(v.begin(), v.end(), c) == v.end()) v.push_back(c);
#if defined(QTRAIN_TEST_VARIANT_GPU)
  // Llama-2-7B and Llama-3-8B layers: [out, in] = q/o 4096x4096, gate/up 11008x4096 and 14336x4096,
  // down 4096x11008 and 4096x14336; double-quantized as QLoRA stores them, bf16 out as training runs.
  for (auto [o, i] : {std::pair{4096, 4096}, std::pair{11008, 4096}, std::pair{4096, 11008}, std::pair{14336, 4096},
                      std::pair{4096, 14336}})
    for (int t : {1, 7, 129, 512})
      for (bool backward : {false, true}) v.push_back({t, o, i, true, backward, false});
  v.push_back({512, 4096, 4096, false, false, true});
  v.push_back({512, 4096, 4096, false, true, true});
  v.push_back({129, 14336, 4096, true, true, true});
#endif
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, Nf4Gemm, ::testing::ValuesIn(cases()), [](const auto& p) {
  const Case& c = p.param;
  return std::string(c.backward ? "bwd" : "fwd") + "_t" + std::to_string(c.t) + "_" + std::to_string(c.out) + "x" +
         std::to_string(c.in) + (c.nested ? "_dq" : "") + (c.f32_out ? "_f32" : "_bf16");
});

// The automatic choice on a supported shape is the fused kernel: with no cuBLAS handle and no workspace
// the fallback could not run at all, so a correct result proves the fused kernel produced it.
TEST(Nf4GemmPath, AutomaticTakesTheFusedKernel) {
  QTRAIN_REQUIRE_DEVICE();
  const int t = 5, out = 64, in = 128;
  const Weight wt(out, in, 3);
  const auto x = random_bf16(static_cast<size_t>(t) * in, 4);
  std::vector<float> want(static_cast<size_t>(t) * out);
  qk::cpu::nf4_gemm_forward_f32(wt.host(true), x.data(), t, want.data());
  DeviceBuffer<uint16_t> dx(x);
  DeviceBuffer<float> dy(want.size());
  dy.poison();
  const qk::Nf4GemmContext bare;  // automatic, no handle, no workspace
  EXPECT_EQ(qk::nf4_gemm_forward_f32(bare, wt.device(true), dx.as<__nv_bfloat16>(), t, dy.get(), nullptr),
            qk::Nf4GemmPath::fused);
  EXPECT_TRUE(close(dy.download(), want, kTolF32));
}

// What the fused kernel does not take goes to dequantize + cuBLAS (blocksize, shape, alignment), and
// forcing the fused kernel there is an error, never a silent no-op.
TEST(Nf4GemmPath, UnsupportedGoesToTheFallback) {
  QTRAIN_REQUIRE_DEVICE();
  using qk::Nf4GemmDirection;
  using qk::Nf4GemmPath;
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::forward, 129, 4096, 4096, 64), Nf4GemmPath::fused);
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::backward, 1, 4096, 14336, 64), Nf4GemmPath::fused);
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::forward, 7, 4096, 4096, 128), Nf4GemmPath::dequant_cublas);
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::forward, 7, 96, 4096, 64), Nf4GemmPath::dequant_cublas);
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::backward, 7, 4096, 100, 64), Nf4GemmPath::dequant_cublas);
  qk::Nf4GemmTuning tuning;
  tuning.fused_max_tokens_forward = 16;
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::forward, 17, 4096, 4096, 64, tuning), Nf4GemmPath::dequant_cublas);
  EXPECT_EQ(qk::nf4_gemm_choose(Nf4GemmDirection::backward, 17, 4096, 4096, 64, tuning), Nf4GemmPath::fused);

  // A misaligned activation pointer: the automatic choice falls back, and gets the same numbers.
  const int t = 3, out = 64, in = 64;
  const Weight wt(out, in, 11);
  const Context ctx(qk::nf4_gemm_workspace_bytes(out, in));
  const auto x = random_bf16(static_cast<size_t>(t) * in + 1, 12);
  std::vector<float> want(static_cast<size_t>(t) * out);
  qk::cpu::nf4_gemm_forward_f32(wt.host(false), x.data() + 1, t, want.data());
  DeviceBuffer<uint16_t> dx(x);
  DeviceBuffer<float> dy(want.size());
  dy.poison();
  const auto* x1 = dx.as<__nv_bfloat16>() + 1;
  EXPECT_EQ(qk::nf4_gemm_forward_f32(ctx.with(Nf4GemmPath::automatic), wt.device(false), x1, t, dy.get(), nullptr),
            Nf4GemmPath::dequant_cublas);
  EXPECT_TRUE(close(dy.download(), want, kTolF32));
  EXPECT_THROW(qk::nf4_gemm_forward_f32(ctx.with(Nf4GemmPath::fused), wt.device(false), x1, t, dy.get(), nullptr),
               qk::Error);

  // Blocksize 128 (a valid NF4 blocksize): fallback; forcing the fused kernel is an error.
  qk::Nf4GemmWeight w128 = wt.device(false);
  w128.blocksize = 128;
  const auto* x0 = dx.as<__nv_bfloat16>();
  EXPECT_EQ(qk::nf4_gemm_forward_f32(ctx.with(Nf4GemmPath::automatic), w128, x0, t, dy.get(), nullptr),
            Nf4GemmPath::dequant_cublas);
  EXPECT_THROW(qk::nf4_gemm_forward_f32(ctx.with(Nf4GemmPath::fused), w128, x0, t, dy.get(), nullptr), qk::Error);

  // The fallback without its workspace is an error.
  qk::Nf4GemmContext no_ws = ctx.with(Nf4GemmPath::dequant_cublas);
  no_ws.workspace_bytes = qk::nf4_gemm_workspace_bytes(out, in) - 2;
  EXPECT_THROW(qk::nf4_gemm_forward_f32(no_ws, wt.device(false), x0, t, dy.get(), nullptr), qk::Error);
}

// The fallback on a shape the fused kernel rejects (in = 96: NF4 blocks straddle rows) still matches.
TEST(Nf4GemmPath, FallbackOnStraddlingBlocks) {
  QTRAIN_REQUIRE_DEVICE();
  const int out = 40, in = 96;
  const Weight wt(out, in, 21);
  const Context ctx(qk::nf4_gemm_workspace_bytes(out, in));
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    for (bool nested : {false, true}) {
      run_and_check<float>(wt, nested, backward, 5, qk::Nf4GemmPath::dequant_cublas, ctx);
      run_and_check<uint16_t>(wt, nested, backward, 5, qk::Nf4GemmPath::dequant_cublas, ctx);
    }
  }
}

}  // namespace
}  // namespace qtrain::test
