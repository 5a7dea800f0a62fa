// Op cases: the fused LoRA linear (forward Y, XA; backward dX, dA, dB) against its CPU twin, on a bf16
// base with small odd sizes and an NF4 base (blocksize 64, fp32 and double-quantized absmax), r = 1, 8,
// 16, rsLoRA on and off, dropout 0 and 0.1, with and without bias, and the grouped form (q/k/v with
// GQA-like out sizes and per-group r, gate/up). Y, XA and dX are poisoned before the call; dA and dB
// start from random values and are compared by what the call added, then again after a second backward
// (gradient accumulation: twice the increment). The GPU variant adds Llama-sized layers.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "harness.h"
#include "qk/error.h"
#include "qk/lora_linear.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_gemm.h"

namespace qtrain::test {
namespace {

struct Case {
  int t, in;
  std::vector<int> outs, rs;  // one entry per group
  bool nf4, nested, rslora, bias;
  float dropout;
};

std::string name_of(const Case& c) {
  std::string s = "t" + std::to_string(c.t) + "_in" + std::to_string(c.in) + "_out";
  for (int o : c.outs) s += std::to_string(o) + "x";
  s += "r";
  for (int r : c.rs) s += std::to_string(r) + "x";
  s.pop_back();
  s += c.nf4 ? (c.nested ? "_nf4dq" : "_nf4") : "_bf16";
  if (c.rslora) s += "_rslora";
  if (c.bias) s += "_bias";
  if (c.dropout > 0.0f) s += "_drop";
  return s;
}
void PrintTo(const Case& c, std::ostream* os) { *os << name_of(c); }

// A random NF4 base [out, in] (every nibble value, realistic absmax), both absmax forms, host and device.
struct Nf4Base {
  std::vector<uint8_t> packed, q;
  std::vector<float> absmax, nest;
  float offset = 0.0f;
  DeviceBuffer<uint8_t> d_packed, d_q;
  DeviceBuffer<float> d_absmax, d_nest;
  int out, in;

  Nf4Base(int o, int i, uint64_t seed)
      : packed(qk::nf4::packed_bytes(static_cast<size_t>(o) * i)), q(blocks(o, i)),
        absmax(random_f32(blocks(o, i), seed + 1, 0.05f)), nest(qk::nf4::num_blocks(blocks(o, i), 256)),
        d_packed(packed.size()), d_q(q.size()), d_absmax(absmax.size()), d_nest(nest.size()), out(o), in(i) {
    Rng r(seed);
    for (auto& b : packed) b = static_cast<uint8_t>(r.next());
    for (auto& a : absmax) a = std::abs(a);
    offset = qk::cpu::nf4_double_quantize(absmax.data(), absmax.size(), q.data(), nest.data());
    d_packed.upload(packed);
    d_q.upload(q);
    d_absmax.upload(absmax);
    d_nest.upload(nest);
  }
  static size_t blocks(int o, int i) { return qk::nf4::num_blocks(static_cast<size_t>(o) * i, 64); }
  qk::Nf4GemmWeight view(bool device, bool nested) const {
    qk::Nf4GemmWeight w;
    w.packed = device ? d_packed.get() : packed.data();
    if (nested) w.nested = {device ? d_q.get() : q.data(), device ? d_nest.get() : nest.data(), offset};
    else w.absmax = device ? d_absmax.get() : absmax.data();
    w.out = out;
    w.in = in;
    return w;
  }
};

// Element-wise got - base, the increment an accumulating call added.
std::vector<float> minus(const std::vector<float>& got, const std::vector<float>& base) {
  std::vector<float> d(got.size());
  for (size_t i = 0; i < got.size(); ++i) d[i] = got[i] - base[i];
  return d;
}

class LoraLinear : public ::testing::TestWithParam<Case> {};

TEST_P(LoraLinear, ForwardAndBackwardMatchCpu) {
  QTRAIN_REQUIRE_DEVICE();
  const Case c = GetParam();
  const int ng = static_cast<int>(c.outs.size());
  const int out = std::accumulate(c.outs.begin(), c.outs.end(), 0);
  const int rt = std::accumulate(c.rs.begin(), c.rs.end(), 0);
  const size_t tn = static_cast<size_t>(c.t);
  const uint64_t seed = 17 + c.t * 131 + c.in * 7 + out;

  const auto x = random_bf16(tn * c.in, seed + 1);
  const auto dy = random_bf16(tn * out, seed + 2);
  const auto w = random_bf16(static_cast<size_t>(out) * c.in, seed + 3, 0.1f);
  const auto bias = random_bf16(out, seed + 4);
  const auto a = random_bf16(static_cast<size_t>(rt) * c.in, seed + 5, 0.2f);
  const auto da0 = random_f32(static_cast<size_t>(rt) * c.in, seed + 6, 0.5f);
  std::vector<std::vector<uint16_t>> b(ng);
  std::vector<std::vector<float>> db0(ng);
  for (int g = 0; g < ng; ++g) {
    b[g] = random_bf16(static_cast<size_t>(c.outs[g]) * c.rs[g], seed + 10 + g, 0.2f);
    db0[g] = random_f32(b[g].size(), seed + 20 + g, 0.5f);
  }
  std::unique_ptr<Nf4Base> nf4;
  if (c.nf4) nf4 = std::make_unique<Nf4Base>(out, c.in, seed + 7);

  // The CPU twin: forward, then backward twice (dA/dB accumulate).
  qk::cpu::LoraLinear hl;
  hl.in = c.in;
  if (c.nf4) hl.nf4 = nf4->view(false, c.nested);
  else hl.w = w.data();
  hl.bias = c.bias ? bias.data() : nullptr;
  hl.a = a.data();
  hl.num_groups = ng;
  for (int g = 0; g < ng; ++g) hl.groups[g] = {b[g].data(), c.outs[g], c.rs[g], qk::lora_scale(16.0f, c.rs[g], c.rslora)};
  hl.dropout = c.dropout;
  hl.seed = seed * 3 + 5;
  std::vector<uint16_t> want_y(tn * out), want_xa(tn * rt), want_dx(tn * c.in);
  qk::cpu::lora_linear_forward(hl, x.data(), c.t, want_y.data(), want_xa.data());
  auto want_da = da0;
  auto want_db = db0;
  qk::LoraGrads hg;
  hg.da = want_da.data();
  for (int g = 0; g < ng; ++g) hg.db[g] = want_db[g].data();
  qk::cpu::lora_linear_backward(hl, x.data(), want_xa.data(), dy.data(), c.t, want_dx.data(), hg);
  const auto want_da1 = want_da;
  const auto want_db1 = want_db;
  qk::cpu::lora_linear_backward(hl, x.data(), want_xa.data(), dy.data(), c.t, want_dx.data(), hg);

  // The device.
  DeviceBuffer<uint16_t> d_x(x), d_dy(dy), d_w(w), d_bias(bias), d_a(a), d_y(tn * out), d_xa(tn * rt),
      d_dx(tn * c.in);
  DeviceBuffer<float> d_da(da0);
  std::vector<std::unique_ptr<DeviceBuffer<uint16_t>>> d_b;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> d_db;
  qk::LoraLinear dl;
  dl.in = c.in;
  if (c.nf4) dl.nf4 = nf4->view(true, c.nested);
  else dl.w = d_w.as<__nv_bfloat16>();
  dl.bias = c.bias ? d_bias.as<__nv_bfloat16>() : nullptr;
  dl.a = d_a.as<__nv_bfloat16>();
  dl.num_groups = ng;
  qk::LoraGrads dg;
  dg.da = d_da.get();
  for (int g = 0; g < ng; ++g) {
    d_b.push_back(std::make_unique<DeviceBuffer<uint16_t>>(b[g]));
    d_db.push_back(std::make_unique<DeviceBuffer<float>>(db0[g]));
    dl.groups[g] = {d_b[g]->as<__nv_bfloat16>(), c.outs[g], c.rs[g], hl.groups[g].scale};
    dg.db[g] = d_db[g]->get();
  }
  dl.dropout = hl.dropout;
  dl.seed = hl.seed;

  qk::LoraLinearContext ctx;
  QK_CUBLAS_CHECK(cublasCreate(&ctx.cublas));
  DeviceBuffer<uint8_t> ws(qk::lora_linear_workspace_bytes(c.t, c.in, rt, c.dropout));
  DeviceBuffer<uint8_t> nf4_ws(c.nf4 ? qk::nf4_gemm_workspace_bytes(out, c.in) : 0);
  ctx.workspace = ws.get();
  ctx.workspace_bytes = ws.bytes();
  ctx.nf4.workspace = nf4_ws.get();
  ctx.nf4.workspace_bytes = nf4_ws.bytes();

  d_y.poison();
  d_xa.poison();
  d_dx.poison();
  qk::lora_linear_forward(ctx, dl, d_x.as<__nv_bfloat16>(), c.t, d_y.as<__nv_bfloat16>(), d_xa.as<__nv_bfloat16>(),
                          nullptr);
  EXPECT_TRUE(close(d_y.download(), want_y, kTolBf16)) << "Y";
  EXPECT_TRUE(close(d_xa.download(), want_xa, kTolBf16)) << "XA";

  // Backward from the twin's XA, so that each direction is compared on its own.
  d_xa.upload(want_xa);
  auto backward = [&] {
    qk::lora_linear_backward(ctx, dl, d_x.as<__nv_bfloat16>(), d_xa.as<__nv_bfloat16>(), d_dy.as<__nv_bfloat16>(),
                             c.t, d_dx.as<__nv_bfloat16>(), dg, nullptr);
  };
  backward();
  EXPECT_TRUE(close(d_dx.download(), want_dx, kTolBf16)) << "dX";
  const auto got_da1 = d_da.download();
  EXPECT_TRUE(close(minus(got_da1, da0), minus(want_da1, da0), kTolBf16)) << "dA";
  std::vector<std::vector<float>> got_db1(ng);
  for (int g = 0; g < ng; ++g) {
    got_db1[g] = d_db[g]->download();
    EXPECT_TRUE(close(minus(got_db1[g], db0[g]), minus(want_db1[g], db0[g]), kTolBf16)) << "dB group " << g;
  }

  d_dx.poison();
  backward();
  EXPECT_TRUE(close(d_dx.download(), want_dx, kTolBf16)) << "dX, second call";
  const auto got_da2 = d_da.download();
  EXPECT_TRUE(close(minus(got_da2, da0), minus(want_da, da0), kTolBf16)) << "dA accumulated twice";
  // The same inputs add the same increment again (same kernels, same order): twice the first.
  auto twice = minus(got_da1, da0);
  for (auto& v : twice) v *= 2.0f;
  EXPECT_TRUE(close(minus(got_da2, da0), twice, 1e-5)) << "dA: second call adds what the first did";
  for (int g = 0; g < ng; ++g)
    EXPECT_TRUE(close(minus(d_db[g]->download(), db0[g]), minus(want_db[g], db0[g]), kTolBf16))
        << "dB group " << g << " accumulated twice";
  cublasDestroy(ctx.cublas);
}

std::vector<Case> cases() {
  std::vector<Case> v;
  // bf16 base, odd sizes (no vector width above 1 for in = 13), single adapter.
  v.push_back({1, 40, {13}, {1}, false, false, false, false, 0.0f});
  v.push_back({7, 13, {40}, {8}, false, false, true, true, 0.1f});
  v.push_back({33, 40, {41}, {16}, false, false, false, false, 0.1f});
  v.push_back({33, 41, {24}, {8}, false, false, true, true, 0.0f});
  // Grouped q/k/v with GQA-like out sizes (q four times k and v) and Qwen2's bias; per-group r.
  v.push_back({7, 40, {48, 12, 12}, {8, 8, 8}, false, false, false, true, 0.1f});
  v.push_back({33, 24, {24, 8, 8}, {16, 1, 8}, false, false, true, false, 0.0f});
  // Grouped gate/up.
  v.push_back({7, 40, {56, 56}, {8, 8}, false, false, false, false, 0.1f});
  // Rank-0 groups (projections of a fused linear without an adapter): q and v only, k only on NF4,
  // and none at all (the base alone: no A, X A or dA).
  v.push_back({7, 40, {48, 12, 12}, {8, 0, 8}, false, false, false, true, 0.1f});
  v.push_back({33, 64, {128, 64, 64}, {0, 16, 0}, true, false, false, false, 0.0f});
  v.push_back({7, 40, {56, 56}, {0, 0}, false, false, false, true, 0.1f});
  // NF4 base (blocksize 64), both absmax forms.
  v.push_back({1, 64, {64}, {1}, true, false, false, false, 0.0f});
  v.push_back({7, 128, {192}, {8}, true, true, true, false, 0.1f});
  v.push_back({33, 256, {128}, {16}, true, false, false, true, 0.1f});
  v.push_back({33, 64, {256}, {16}, true, true, false, false, 0.0f});
  v.push_back({7, 128, {128, 64, 64}, {8, 8, 8}, true, true, false, true, 0.1f});
  v.push_back({33, 64, {128, 64, 64}, {16, 16, 16}, true, false, true, false, 0.0f});
#if defined(QTRAIN_TEST_VARIANT_GPU)
  // Llama-3-8B q/k/v (GQA 4096 + 1024 + 1024) and gate/up on NF4, and a bf16 o_proj at r = 64.
  v.push_back({512, 4096, {4096, 1024, 1024}, {16, 16, 16}, true, true, false, false, 0.1f});
  v.push_back({257, 4096, {14336, 14336}, {16, 16}, true, true, true, false, 0.05f});
  v.push_back({512, 4096, {4096}, {64}, false, false, false, true, 0.0f});
#endif
  return v;
}

INSTANTIATE_TEST_SUITE_P(Ops, LoraLinear, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return name_of(p.param); });

// Unsupported configurations are errors, not silent no-ops.
TEST(LoraLinearErrors, RejectsBadConfigurations) {
  QTRAIN_REQUIRE_DEVICE();
  const int t = 3, in = 16, out = 8, r = 2;
  DeviceBuffer<uint16_t> x(random_bf16(t * in, 1)), w(random_bf16(out * in, 2)), a(random_bf16(r * in, 3)),
      b(random_bf16(out * r, 4)), y(t * out), xa(t * r), dx(t * in);
  DeviceBuffer<float> da(r * in), db(out * r);
  DeviceBuffer<uint8_t> ws(256);  // too small for dropout's Xd
  qk::LoraLinearContext ctx;
  QK_CUBLAS_CHECK(cublasCreate(&ctx.cublas));
  ctx.workspace = ws.get();
  ctx.workspace_bytes = ws.bytes();
  qk::LoraLinear l;
  l.in = in;
  l.w = w.as<__nv_bfloat16>();
  l.a = a.as<__nv_bfloat16>();
  l.groups[0] = {b.as<__nv_bfloat16>(), out, r, 1.0f};
  auto fwd = [&] {
    qk::lora_linear_forward(ctx, l, x.as<__nv_bfloat16>(), t, y.as<__nv_bfloat16>(), xa.as<__nv_bfloat16>(), nullptr);
  };
  EXPECT_NO_THROW(fwd());
  l.dropout = 0.1f;
  EXPECT_THROW(fwd(), qk::Error) << "workspace too small for the dropped input";
  l.dropout = 1.0f;
  EXPECT_THROW(fwd(), qk::Error) << "p = 1";
  l.dropout = 0.0f;
  l.num_groups = 0;
  EXPECT_THROW(fwd(), qk::Error) << "no group";
  l.num_groups = 1;
  l.w = nullptr;
  EXPECT_THROW(fwd(), qk::Error) << "no base weight";
  cublasDestroy(ctx.cublas);
}

}  // namespace
}  // namespace qtrain::test
