// The LoRA linear's CPU side: the fp64 backward against finite differences of the fp64 forward (grouped,
// with bias and dropout: the mask comes from the seed, so forward and backward see the same one); the
// dropout mask itself; the bf16 twin (the reference the CUDA op is held to) against the fp64 reference;
// B = 0 giving exactly the base GEMM (bf16 and NF4 base); the merged weight W + s B A giving the same Y;
// and dA / dB accumulating.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"
#include "qk/lora_linear.h"
#include "qk/matmul.h"
#include "qk/nf4.h"
#include "qk/nf4_gemm.h"

namespace {

std::vector<double> wave(size_t n, double a, double b, double scale) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(a * static_cast<double>(i) + b);
  return v;
}

// Values rounded to bf16, as doubles and as bits: the twin and the fp64 reference see the same inputs.
std::vector<double> bf16_exact(std::vector<double> v) {
  for (auto& x : v) x = qk::bf16_to_f32(qk::f32_to_bf16_rn(static_cast<float>(x)));
  return v;
}
std::vector<uint16_t> bits(const std::vector<double>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = qk::f32_to_bf16_rn(static_cast<float>(v[i]));
  return out;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}
template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 2) out[i] = qk::bf16_to_f32(v[i]);
    else out[i] = static_cast<double>(v[i]);
  }
  return out;
}

// A grouped layer (q-like 4 + k-like 3 columns, r 2 and 3) with bias, in fp64 and as bf16 bits.
struct Layer {
  int t = 3, in = 5;
  std::vector<int> outs{4, 3}, rs{2, 3};
  int out = 7, rt = 5;
  std::vector<double> x, w, bias, a, dy;
  std::vector<std::vector<double>> b;
  float dropout = 0.3f;
  uint64_t seed = 1234;

  Layer() {
    x = bf16_exact(wave(static_cast<size_t>(t) * in, 0.71, 0.3, 1.0));
    w = bf16_exact(wave(static_cast<size_t>(out) * in, 0.37, 1.1, 0.5));
    bias = bf16_exact(wave(out, 1.3, 0.2, 0.3));
    a = bf16_exact(wave(static_cast<size_t>(rt) * in, 0.53, 0.7, 0.4));
    dy = bf16_exact(wave(static_cast<size_t>(t) * out, 0.91, 0.4, 1.0));
    for (size_t g = 0; g < outs.size(); ++g)
      b.push_back(bf16_exact(wave(static_cast<size_t>(outs[g]) * rs[g], 0.29 + 0.1 * g, 0.9, 0.6)));
  }
  qk::cpu::LoraLinearF64 f64() const {
    qk::cpu::LoraLinearF64 l;
    l.in = in;
    l.w = w.data();
    l.bias = bias.data();
    l.a = a.data();
    l.num_groups = static_cast<int>(outs.size());
    for (int g = 0; g < l.num_groups; ++g) l.groups[g] = {b[g].data(), outs[g], rs[g], qk::lora_scale(8.0f, rs[g], g == 1)};
    l.dropout = dropout;
    l.seed = seed;
    return l;
  }
};

// Runs the fp64 backward with dA / dB starting at zero.
struct Fp64Grads {
  std::vector<double> dx, da;
  std::vector<std::vector<double>> db;
};
Fp64Grads fp64_backward(const Layer& L, const std::vector<double>& dy) {
  const auto l = L.f64();
  std::vector<double> y(static_cast<size_t>(L.t) * L.out), xa(static_cast<size_t>(L.t) * L.rt);
  qk::cpu::lora_linear_forward(l, L.x.data(), L.t, y.data(), xa.data());
  Fp64Grads g{std::vector<double>(L.x.size(), -9.0), std::vector<double>(L.a.size(), 0.0), {}};
  qk::cpu::LoraGradsF64 grads;
  grads.da = g.da.data();
  for (size_t i = 0; i < L.b.size(); ++i) {
    g.db.emplace_back(L.b[i].size(), 0.0);
    grads.db[i] = g.db[i].data();
  }
  qk::cpu::lora_linear_backward(l, L.x.data(), xa.data(), dy.data(), L.t, g.dx.data(), grads);
  return g;
}

TEST(LoraLinearGrad, BackwardMatchesFiniteDifferences) {
  for (float p : {0.0f, 0.3f}) {
    Layer L;
    L.dropout = p;
    const auto c = wave(static_cast<size_t>(L.t) * L.out, 0.61, 0.8, 1.0);  // loss = sum(c * Y), so dY = c
    auto loss = [&](const Layer& m) {
      std::vector<double> y(static_cast<size_t>(m.t) * m.out), xa(static_cast<size_t>(m.t) * m.rt);
      qk::cpu::lora_linear_forward(m.f64(), m.x.data(), m.t, y.data(), xa.data());
      return std::inner_product(y.begin(), y.end(), c.begin(), 0.0);
    };
    const auto g = fp64_backward(L, c);
    // Y is linear in each of x, A and B alone (the mask depends on the seed, not the values), so the
    // central difference is exact up to rounding.
    const double h = 1e-3;
    auto fd = [&](auto element) {
      Layer plus = L, minus = L;
      element(plus) += h;
      element(minus) -= h;
      return (loss(plus) - loss(minus)) / (2 * h);
    };
    for (size_t i = 0; i < L.x.size(); ++i)
      EXPECT_NEAR(g.dx[i], fd([i](Layer& m) -> double& { return m.x[i]; }), 1e-9) << "dx " << i << " p " << p;
    for (size_t i = 0; i < L.a.size(); ++i)
      EXPECT_NEAR(g.da[i], fd([i](Layer& m) -> double& { return m.a[i]; }), 1e-9) << "da " << i << " p " << p;
    for (size_t gr = 0; gr < L.b.size(); ++gr)
      for (size_t i = 0; i < L.b[gr].size(); ++i)
        EXPECT_NEAR(g.db[gr][i], fd([gr, i](Layer& m) -> double& { return m.b[gr][i]; }), 1e-9)
            << "db" << gr << " " << i << " p " << p;
  }
}

TEST(LoraLinearGrad, DropoutMaskIsDeterministicAndHasRateP) {
  const uint64_t key = qk::lora_dropout_key(42), other = qk::lora_dropout_key(43);
  const uint32_t th = qk::lora_dropout_threshold(0.1f);
  const int n = 200000;
  int kept = 0, differ = 0;
  for (int i = 0; i < n; ++i) {
    const bool k = qk::lora_dropout_keep(key, i, th);
    EXPECT_EQ(k, qk::lora_dropout_keep(key, i, th));  // backward regenerates the forward's mask
    kept += k;
    differ += k != qk::lora_dropout_keep(other, i, th);
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.9, 0.005);
  EXPECT_GT(differ, n / 10);  // another seed, another mask (~18% of elements differ)
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(qk::lora_dropout_keep(key, i, qk::lora_dropout_threshold(0.0f)));
  EXPECT_FLOAT_EQ(qk::lora_dropout_inv_keep(0.1f), 1.0f / 0.9f);

  // The LoRA branch sees exactly the masked, scaled input: XA = Xd A^T with Xd from the same mask.
  Layer L;
  const auto l = L.f64();
  std::vector<double> y(static_cast<size_t>(L.t) * L.out), xa(static_cast<size_t>(L.t) * L.rt);
  qk::cpu::lora_linear_forward(l, L.x.data(), L.t, y.data(), xa.data());
  const uint64_t lk = qk::lora_dropout_key(L.seed);
  const uint32_t lth = qk::lora_dropout_threshold(L.dropout);
  int dropped = 0;
  for (int i = 0; i < L.t; ++i)
    for (int j = 0; j < L.rt; ++j) {
      double acc = 0;
      for (int k = 0; k < L.in; ++k) {
        const size_t e = static_cast<size_t>(i) * L.in + k;
        const bool keep = qk::lora_dropout_keep(lk, e, lth);
        dropped += j == 0 && !keep;
        acc += (keep ? L.x[e] / (1.0 - 0.3) : 0.0) * L.a[static_cast<size_t>(j) * L.in + k];
      }
      EXPECT_NEAR(xa[static_cast<size_t>(i) * L.rt + j], acc, 1e-6);
    }
  EXPECT_GT(dropped, 0) << "the test layer should drop something at p = 0.3";
}

TEST(LoraLinearGrad, Bf16TwinAgreesWithFp64) {
  for (float p : {0.0f, 0.3f}) {
    Layer L;
    L.t = 9;
    L.in = 33;
    L.outs = {24, 8};
    L.rs = {8, 4};
    L.out = 32;
    L.rt = 12;
    L.dropout = p;
    L.x = bf16_exact(wave(static_cast<size_t>(L.t) * L.in, 0.71, 0.3, 1.0));
    L.w = bf16_exact(wave(static_cast<size_t>(L.out) * L.in, 0.37, 1.1, 0.2));
    L.bias = bf16_exact(wave(L.out, 1.3, 0.2, 0.3));
    L.a = bf16_exact(wave(static_cast<size_t>(L.rt) * L.in, 0.53, 0.7, 0.2));
    L.dy = bf16_exact(wave(static_cast<size_t>(L.t) * L.out, 0.91, 0.4, 1.0));
    L.b = {bf16_exact(wave(24 * 8, 0.29, 0.9, 0.3)), bf16_exact(wave(8 * 4, 0.39, 0.9, 0.3))};
    const auto l64 = L.f64();
    std::vector<double> y64(static_cast<size_t>(L.t) * L.out), xa64(static_cast<size_t>(L.t) * L.rt);
    qk::cpu::lora_linear_forward(l64, L.x.data(), L.t, y64.data(), xa64.data());
    const auto g64 = fp64_backward(L, L.dy);

    const auto x = bits(L.x), w = bits(L.w), bias = bits(L.bias), a = bits(L.a), dy = bits(L.dy);
    const auto b0 = bits(L.b[0]), b1 = bits(L.b[1]);
    qk::cpu::LoraLinear l;
    l.in = L.in;
    l.w = w.data();
    l.bias = bias.data();
    l.a = a.data();
    l.num_groups = 2;
    l.groups[0] = {b0.data(), 24, 8, l64.groups[0].scale};
    l.groups[1] = {b1.data(), 8, 4, l64.groups[1].scale};
    l.dropout = p;
    l.seed = L.seed;
    std::vector<uint16_t> y(y64.size()), xa(xa64.size()), dx(L.x.size());
    qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data());
    std::vector<float> da(L.a.size(), 0.0f), db0(b0.size(), 0.0f), db1(b1.size(), 0.0f);
    qk::LoraGrads grads;
    grads.da = da.data();
    grads.db = {db0.data(), db1.data()};
    qk::cpu::lora_linear_backward(l, x.data(), xa.data(), dy.data(), L.t, dx.data(), grads);
    const double tol = 8e-3;  // a few bf16 ulps: the twin rounds Y, XA, dXA and dX to bf16
    EXPECT_LT(rel_error(widen(y), y64), tol) << "Y p " << p;
    EXPECT_LT(rel_error(widen(xa), xa64), tol) << "XA p " << p;
    EXPECT_LT(rel_error(widen(dx), g64.dx), tol) << "dX p " << p;
    EXPECT_LT(rel_error(widen(da), g64.da), tol) << "dA p " << p;
    // dB = s dY^T XA sums over tokens with cancellation, so XA's bf16 rounding (it is saved in bf16) shows
    // more there: against the fp64 reference loosely, against the same sum over the twin's XA tightly.
    EXPECT_LT(rel_error(widen(db0), g64.db[0]), 3 * tol) << "dB0 p " << p;
    EXPECT_LT(rel_error(widen(db1), g64.db[1]), 3 * tol) << "dB1 p " << p;
    for (int g = 0, off = 0, roff = 0; g < 2; off += L.outs[g], roff += L.rs[g], ++g) {
      std::vector<double> want(static_cast<size_t>(L.outs[g]) * L.rs[g], 0.0);
      for (int o = 0; o < L.outs[g]; ++o)
        for (int k = 0; k < L.rs[g]; ++k)
          for (int i = 0; i < L.t; ++i)
            want[static_cast<size_t>(o) * L.rs[g] + k] += static_cast<double>(l.groups[g].scale) *
                                                           L.dy[static_cast<size_t>(i) * L.out + off + o] *
                                                           qk::bf16_to_f32(xa[static_cast<size_t>(i) * L.rt + roff + k]);
      EXPECT_LT(rel_error(widen(g == 0 ? db0 : db1), want), 1e-5) << "dB" << g << " over the twin's XA, p " << p;
    }
  }
}

// Random bf16 bits in [-scale, scale].
std::vector<uint16_t> noise(size_t n, uint32_t seed, float scale) {
  std::vector<uint16_t> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& b : v) {
    s = qk::lora_mix64(s + 1);
    b = qk::f32_to_bf16_rn(scale * (static_cast<float>(s >> 40) / 8388608.0f - 1.0f));
  }
  return v;
}

TEST(LoraLinearGrad, ZeroBGivesTheBaseGemmExactly) {
  const int t = 7, in = 64, out = 128, r = 8;
  const auto x = noise(static_cast<size_t>(t) * in, 1, 1.0f), w = noise(static_cast<size_t>(out) * in, 2, 0.1f),
             a = noise(static_cast<size_t>(r) * in, 3, 0.2f), dy = noise(static_cast<size_t>(t) * out, 4, 1.0f);
  const std::vector<uint16_t> b(static_cast<size_t>(out) * r, 0);  // PEFT's init: B = 0
  // An NF4 base too: random codes, positive absmax.
  std::vector<uint8_t> packed(qk::nf4::packed_bytes(static_cast<size_t>(out) * in));
  for (size_t i = 0; i < packed.size(); ++i) packed[i] = static_cast<uint8_t>(qk::lora_mix64(i) >> 7);
  std::vector<float> absmax(qk::nf4::num_blocks(static_cast<size_t>(out) * in, 64));
  for (size_t i = 0; i < absmax.size(); ++i) absmax[i] = 0.01f + 0.001f * static_cast<float>(i % 17);
  qk::Nf4GemmWeight nf4;
  nf4.packed = packed.data();
  nf4.absmax = absmax.data();
  nf4.out = out;
  nf4.in = in;

  for (bool use_nf4 : {false, true})
    for (float p : {0.0f, 0.1f}) {
      qk::cpu::LoraLinear l;
      l.in = in;
      if (use_nf4) l.nf4 = nf4;
      else l.w = w.data();
      l.a = a.data();
      l.groups[0] = {b.data(), out, r, qk::lora_scale(16.0f, r, false)};
      l.dropout = p;
      l.seed = 5;
      std::vector<uint16_t> y(static_cast<size_t>(t) * out), xa(static_cast<size_t>(t) * r), dx(x.size());
      std::vector<uint16_t> base_y(y.size()), base_dx(dx.size());
      qk::cpu::lora_linear_forward(l, x.data(), t, y.data(), xa.data());
      if (use_nf4) {
        qk::cpu::nf4_gemm_forward_bf16(nf4, x.data(), t, base_y.data());
        qk::cpu::nf4_gemm_backward_bf16(nf4, dy.data(), t, base_dx.data());
      } else {
        qk::cpu::matmul_bf16({false, true, t, out, in}, 1.0f, x.data(), w.data(), 0.0f, base_y.data());
        qk::cpu::matmul_bf16({false, false, t, in, out}, 1.0f, dy.data(), w.data(), 0.0f, base_dx.data());
      }
      EXPECT_EQ(y, base_y) << "nf4 " << use_nf4 << " p " << p;
      // Backward: dXA = 0, so dX is the base's and dA stays zero; dB = s dY^T XA is not zero.
      std::vector<float> da(a.size(), 0.0f), db(b.size(), 0.0f);
      qk::LoraGrads grads;
      grads.da = da.data();
      grads.db[0] = db.data();
      qk::cpu::lora_linear_backward(l, x.data(), xa.data(), dy.data(), t, dx.data(), grads);
      EXPECT_EQ(dx, base_dx) << "nf4 " << use_nf4 << " p " << p;
      EXPECT_EQ(da, std::vector<float>(da.size(), 0.0f));
      EXPECT_GT(std::inner_product(db.begin(), db.end(), db.begin(), 0.0f), 0.0f);
    }
}

TEST(LoraLinearGrad, MergedWeightGivesTheSameY) {
  // Grouped q/k/v-like layer, no dropout: Y = X (W + s B A)^T, the merge PEFT does, per group's rows.
  const int t = 5, in = 48, r_q = 8, r_kv = 4;
  const std::vector<int> outs{32, 8, 8}, rs{r_q, r_kv, r_kv};
  const int out = 48, rt = 16;
  const auto x = noise(static_cast<size_t>(t) * in, 11, 1.0f), w = noise(static_cast<size_t>(out) * in, 12, 0.1f),
             a = noise(static_cast<size_t>(rt) * in, 13, 0.2f), bias = noise(out, 14, 0.5f);
  std::vector<std::vector<uint16_t>> b;
  qk::cpu::LoraLinear l;
  l.in = in;
  l.w = w.data();
  l.bias = bias.data();
  l.a = a.data();
  l.num_groups = 3;
  for (int g = 0; g < 3; ++g) b.push_back(noise(static_cast<size_t>(outs[g]) * rs[g], 20 + g, 0.3f));
  for (int g = 0; g < 3; ++g) l.groups[g] = {b[g].data(), outs[g], rs[g], qk::lora_scale(16.0f, rs[g], g == 2)};
  std::vector<uint16_t> y(static_cast<size_t>(t) * out), xa(static_cast<size_t>(t) * rt);
  qk::cpu::lora_linear_forward(l, x.data(), t, y.data(), xa.data());

  std::vector<double> merged(static_cast<size_t>(out) * in);
  for (int g = 0, off = 0, roff = 0; g < 3; off += outs[g], roff += rs[g], ++g)
    for (int o = 0; o < outs[g]; ++o)
      for (int k = 0; k < in; ++k) {
        double acc = 0;
        for (int j = 0; j < rs[g]; ++j)
          acc += qk::bf16_to_f32(b[g][static_cast<size_t>(o) * rs[g] + j]) *
                 qk::bf16_to_f32(a[static_cast<size_t>(roff + j) * in + k]);
        const size_t e = static_cast<size_t>(off + o) * in + k;
        merged[e] = qk::bf16_to_f32(w[e]) + l.groups[g].scale * acc;
      }
  std::vector<double> want(y.size());
  for (int i = 0; i < t; ++i)
    for (int o = 0; o < out; ++o) {
      double acc = qk::bf16_to_f32(bias[o]);
      for (int k = 0; k < in; ++k)
        acc += qk::bf16_to_f32(x[static_cast<size_t>(i) * in + k]) * merged[static_cast<size_t>(o) * in + k];
      want[static_cast<size_t>(i) * out + o] = acc;
    }
  EXPECT_LT(rel_error(widen(y), want), 8e-3);
}

TEST(LoraLinearGrad, GradientsAccumulate) {
  Layer L;
  const auto x = bits(L.x), w = bits(L.w), a = bits(L.a), dy = bits(L.dy), b0 = bits(L.b[0]), b1 = bits(L.b[1]);
  qk::cpu::LoraLinear l;
  l.in = L.in;
  l.w = w.data();
  l.a = a.data();
  l.num_groups = 2;
  l.groups[0] = {b0.data(), 4, 2, 2.0f};
  l.groups[1] = {b1.data(), 3, 3, 1.5f};
  l.dropout = 0.3f;
  l.seed = 9;
  std::vector<uint16_t> y(static_cast<size_t>(L.t) * L.out), xa(static_cast<size_t>(L.t) * L.rt), dx(x.size());
  qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data());
  std::vector<float> da(a.size(), 0.0f), db0(b0.size(), 0.0f), db1(b1.size(), 0.0f);
  qk::LoraGrads grads;
  grads.da = da.data();
  grads.db = {db0.data(), db1.data()};
  qk::cpu::lora_linear_backward(l, x.data(), xa.data(), dy.data(), L.t, dx.data(), grads);
  const auto once_a = da, once_b0 = db0, once_b1 = db1;
  qk::cpu::lora_linear_backward(l, x.data(), xa.data(), dy.data(), L.t, dx.data(), grads);
  for (size_t i = 0; i < da.size(); ++i) EXPECT_NEAR(da[i], 2 * once_a[i], 1e-6 * (1 + std::abs(da[i])));
  for (size_t i = 0; i < db0.size(); ++i) EXPECT_NEAR(db0[i], 2 * once_b0[i], 1e-6 * (1 + std::abs(db0[i])));
  for (size_t i = 0; i < db1.size(); ++i) EXPECT_NEAR(db1[i], 2 * once_b1[i], 1e-6 * (1 + std::abs(db1[i])));
}

TEST(LoraLinearGrad, ScaleAndPreconditions) {
  EXPECT_FLOAT_EQ(qk::lora_scale(16.0f, 16, false), 1.0f);
  EXPECT_FLOAT_EQ(qk::lora_scale(16.0f, 16, true), 4.0f);
  EXPECT_FLOAT_EQ(qk::lora_scale(32.0f, 8, false), 4.0f);
  Layer L;
  const auto x = bits(L.x), w = bits(L.w), a = bits(L.a), b0 = bits(L.b[0]);
  qk::cpu::LoraLinear l;
  l.in = L.in;
  l.w = w.data();
  l.a = a.data();
  l.groups[0] = {b0.data(), 4, 2, 1.0f};
  std::vector<uint16_t> y(static_cast<size_t>(L.t) * 4), xa(static_cast<size_t>(L.t) * 2);
  EXPECT_NO_THROW(qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data()));
  l.dropout = 1.0f;
  EXPECT_THROW(qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data()), qk::Error);
  l.dropout = 0.0f;
  l.groups[0].r = -1;
  EXPECT_THROW(qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data()), qk::Error);
  l.groups[0].r = 2;
  l.w = nullptr;  // and no NF4 base either
  EXPECT_THROW(qk::cpu::lora_linear_forward(l, x.data(), L.t, y.data(), xa.data()), qk::Error);
}

// A group of rank 0 (a projection of a fused linear with no adapter) keeps its columns of Y, with no
// rows of A, no XA columns and no B: the same Y, dX and gradients as that group at rank 3 with scale 0.
// With every group at rank 0 the linear is its base alone (no A, XA, dA or B at all).
TEST(LoraLinearGrad, RankZeroGroupsAreTheBaseAlone) {
  Layer L;
  const auto x = bits(L.x), w = bits(L.w), a = bits(L.a), dy = bits(L.dy), b0 = bits(L.b[0]), b1 = bits(L.b[1]);
  for (float p : {0.0f, 0.3f}) {
    SCOPED_TRACE(p);
    qk::cpu::LoraLinear full;  // group 1 present but switched off
    full.in = L.in;
    full.w = w.data();
    full.a = a.data();
    full.num_groups = 2;
    full.groups[0] = {b0.data(), 4, 2, 2.0f};
    full.groups[1] = {b1.data(), 3, 3, 0.0f};
    full.dropout = p;
    full.seed = 9;
    qk::cpu::LoraLinear trim = full;  // group 1 at rank 0: A holds group 0's 2 rows only
    trim.groups[1] = {nullptr, 3, 0, 0.0f};
    std::vector<uint16_t> y1(static_cast<size_t>(L.t) * L.out), y2(y1.size()), xa1(static_cast<size_t>(L.t) * 5),
        xa2(static_cast<size_t>(L.t) * 2), dx1(x.size()), dx2(x.size());
    qk::cpu::lora_linear_forward(full, x.data(), L.t, y1.data(), xa1.data());
    qk::cpu::lora_linear_forward(trim, x.data(), L.t, y2.data(), xa2.data());
    for (size_t i = 0; i < y1.size(); ++i) EXPECT_NEAR(qk::bf16_to_f32(y1[i]), qk::bf16_to_f32(y2[i]), 1e-6) << i;
    std::vector<float> da1(a.size(), 0.0f), da2(static_cast<size_t>(2) * L.in, 0.0f), db0a(b0.size(), 0.0f),
        db0b(b0.size(), 0.0f), db1(b1.size(), 0.0f);
    qk::LoraGrads g1, g2;
    g1.da = da1.data();
    g1.db = {db0a.data(), db1.data()};
    g2.da = da2.data();
    g2.db = {db0b.data(), nullptr};
    qk::cpu::lora_linear_backward(full, x.data(), xa1.data(), dy.data(), L.t, dx1.data(), g1);
    qk::cpu::lora_linear_backward(trim, x.data(), xa2.data(), dy.data(), L.t, dx2.data(), g2);
    for (size_t i = 0; i < dx1.size(); ++i)
      EXPECT_NEAR(qk::bf16_to_f32(dx1[i]), qk::bf16_to_f32(dx2[i]), 1e-6) << i;
    for (size_t i = 0; i < da2.size(); ++i) EXPECT_NEAR(da1[i], da2[i], 1e-6 * (1 + std::abs(da1[i]))) << i;
    for (size_t i = 0; i < db0a.size(); ++i) EXPECT_NEAR(db0a[i], db0b[i], 1e-6 * (1 + std::abs(db0a[i]))) << i;

    qk::cpu::LoraLinear base = trim;  // no adapter anywhere: Y = X W^T, dX = dY W
    base.groups[0] = {nullptr, 4, 0, 0.0f};
    base.a = nullptr;
    std::vector<uint16_t> y3(y1.size()), dx3(x.size()), y_want(y1.size()), dx_want(x.size());
    qk::cpu::lora_linear_forward(base, x.data(), L.t, y3.data(), nullptr);
    qk::cpu::matmul_bf16({false, true, L.t, L.out, L.in}, 1.0f, x.data(), w.data(), 0.0f, y_want.data());
    EXPECT_EQ(y3, y_want);
    qk::cpu::lora_linear_backward(base, x.data(), nullptr, dy.data(), L.t, dx3.data(), qk::LoraGrads{});
    qk::cpu::matmul_bf16({false, false, L.t, L.in, L.out}, 1.0f, dy.data(), w.data(), 0.0f, dx_want.data());
    EXPECT_EQ(dx3, dx_want);
  }
}

}  // namespace
