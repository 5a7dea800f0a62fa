// Op cases: causal flash attention (forward, backward, decode) against the CPU twin, and the
// flash-attention rule against an fp64 reference written here: the CUDA path's largest error must be
// at most twice that of a straightforward bf16 implementation (fp64 arithmetic with P, dS and every
// output rounded to bf16, as a bf16 framework would round between its ops). Emulated cases are small
// and odd (lengths 1, 7, 33, 129, packed rows with an empty example, GQA 1/4/8, every head_dim);
// lengths 1000 and 4096 run only on a GPU. Sliding-window cases: windows of 3, under a tile, not a
// multiple of the tile, exactly a tile, and longer than some examples of a packed row but not others.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "qk/attention.h"

namespace qtrain::test {
namespace {

double round_bf16(double x) { return qk::bf16_to_f32(qk::f32_to_bf16_rn(static_cast<float>(x))); }

std::vector<double> widen(const std::vector<uint16_t>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = qk::bf16_to_f32(x[i]);
  return y;
}

struct Grads {
  std::vector<double> o, dq, dk, dv;
};

// Plain softmax attention in fp64 with an explicit [T x T] P per (example, head); with `bf16`,
// P, O, dS and the gradients are rounded to bf16 where a bf16 framework would round them. A window
// W > 0 keeps key j of query i when i - W < j (keys before it have P = 0).
Grads reference(const std::vector<uint16_t>& q16, const std::vector<uint16_t>& k16, const std::vector<uint16_t>& v16,
                const std::vector<uint16_t>& do16, const std::vector<int32_t>& cu, int heads, int kv_heads, int d,
                bool bf16, int window = 0) {
  const auto q = widen(q16), k = widen(k16), v = widen(v16), dout = widen(do16);
  const int64_t qs = static_cast<int64_t>(heads) * d, ks = static_cast<int64_t>(kv_heads) * d;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto rnd = [&](double x) { return bf16 ? round_bf16(x) : x; };
  Grads g{std::vector<double>(q.size()), std::vector<double>(q.size()), std::vector<double>(k.size()),
          std::vector<double>(k.size())};
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int64_t s0 = cu[b], n = cu[b + 1] - cu[b];
    auto lo = [&](int64_t i) { return window > 0 ? std::max<int64_t>(0, i - window + 1) : 0; };
    for (int h = 0; h < heads; ++h) {
      const int kvh = h / (heads / kv_heads);
      std::vector<double> p(n * n, 0.0), ds(n * n, 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const double* qi = &q[(s0 + i) * qs + h * d];
        double mx = -INFINITY;
        for (int64_t j = lo(i); j <= i; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += qi[c] * k[(s0 + j) * ks + kvh * d + c];
          p[i * n + j] = dot * scale;
          mx = std::max(mx, p[i * n + j]);
        }
        double sum = 0;
        for (int64_t j = lo(i); j <= i; ++j) sum += (p[i * n + j] = std::exp(p[i * n + j] - mx));
        for (int64_t j = lo(i); j <= i; ++j) p[i * n + j] = rnd(p[i * n + j] / sum);
        double* oi = &g.o[(s0 + i) * qs + h * d];
        for (int64_t j = lo(i); j <= i; ++j)
          for (int c = 0; c < d; ++c) oi[c] += p[i * n + j] * v[(s0 + j) * ks + kvh * d + c];
        for (int c = 0; c < d; ++c) oi[c] = rnd(oi[c]);
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = (s0 + i) * qs + h * d;
        double delta = 0;
        for (int c = 0; c < d; ++c) delta += dout[row + c] * g.o[row + c];
        for (int64_t j = lo(i); j <= i; ++j) {
          double dp = 0;
          for (int c = 0; c < d; ++c) dp += dout[row + c] * v[(s0 + j) * ks + kvh * d + c];
          ds[i * n + j] = rnd(p[i * n + j] * (dp - delta));
        }
      }
      for (int64_t i = 0; i < n; ++i)  // row-wise loops: contiguous along head_dim, fast at T = 4096
        for (int64_t j = lo(i); j <= i; ++j) {
          const int64_t qrow = (s0 + i) * qs + h * d, krow = (s0 + j) * ks + kvh * d;
          const double dsij = ds[i * n + j], pij = p[i * n + j];
          for (int c = 0; c < d; ++c) {
            g.dq[qrow + c] += dsij * k[krow + c] * scale;
            g.dk[krow + c] += dsij * q[qrow + c] * scale;  // summed over the group's heads
            g.dv[krow + c] += pij * dout[qrow + c];
          }
        }
    }
  }
  if (bf16)
    for (auto* t : {&g.dq, &g.dk, &g.dv})
      for (auto& x : *t) x = round_bf16(x);
  return g;
}

double max_abs_err(const std::vector<uint16_t>& got, const std::vector<double>& ref) {
  double e = 0;
  for (size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(static_cast<double>(to_float(got[i])) - ref[i]));
  return e;
}

double max_abs_err(const std::vector<double>& got, const std::vector<double>& ref) {
  double e = 0;
  for (size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(got[i] - ref[i]));
  return e;
}

// The flash-attention rule: CUDA error at most twice the straightforward bf16 error (vs fp64).
::testing::AssertionResult within_twice(const char* what, const std::vector<uint16_t>& got,
                                        const std::vector<double>& base, const std::vector<double>& ref) {
  const double e = max_abs_err(got, ref), eb = max_abs_err(base, ref);
  if (std::isnan(e) || e > 2 * eb + 1e-6)
    return ::testing::AssertionFailure() << what << ": max error " << e << " > 2 x bf16 baseline " << eb;
  return ::testing::AssertionSuccess() << what << ": " << e << " vs baseline " << eb;
}

struct Case {
  std::string name;
  std::vector<int32_t> lens;
  int heads, kv_heads, d;
  int window = 0;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Problem {
  std::vector<int32_t> cu;
  qk::AttentionShape shape;
  std::vector<uint16_t> q, k, v, dout;
};

Problem make_problem(const std::vector<int32_t>& cu, int heads, int kv_heads, int d, uint64_t seed, int window = 0) {
  Problem p;
  p.cu = cu;
  p.shape.total_tokens = cu.back();
  p.shape.num_seqs = static_cast<int>(cu.size()) - 1;
  for (size_t b = 0; b + 1 < cu.size(); ++b) p.shape.max_seqlen = std::max(p.shape.max_seqlen, cu[b + 1] - cu[b]);
  p.shape.heads = heads;
  p.shape.kv_heads = kv_heads;
  p.shape.head_dim = d;
  p.shape.window = window;
  const size_t t = static_cast<size_t>(cu.back());
  p.q = random_bf16(t * heads * d, seed + 1, 1.5f);
  p.k = random_bf16(t * kv_heads * d, seed + 2, 1.5f);
  p.v = random_bf16(t * kv_heads * d, seed + 3);
  p.dout = random_bf16(t * heads * d, seed + 4);
  return p;
}

std::vector<int32_t> offsets(const std::vector<int32_t>& lens) {
  std::vector<int32_t> cu{0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  return cu;
}

struct DeviceRun {
  std::vector<uint16_t> o, dq, dk, dv;
  std::vector<float> lse;
};

DeviceRun run_device(const Problem& p, bool backward) {
  const auto& s = p.shape;
  DeviceBuffer<uint16_t> q(p.q), k(p.k), v(p.v), dout(p.dout), o(p.q.size()), dq(p.q.size()), dk(p.k.size()),
      dv(p.k.size());
  DeviceBuffer<int32_t> cu(p.cu);
  DeviceBuffer<float> lse(static_cast<size_t>(s.total_tokens) * s.heads), delta(lse.size());
  o.poison();
  lse.poison();
  qk::attention_forward(q.as<__nv_bfloat16>(), k.as<__nv_bfloat16>(), v.as<__nv_bfloat16>(), o.as<__nv_bfloat16>(),
                        lse.get(), cu.get(), s, nullptr);
  DeviceRun r;
  r.o = o.download();
  r.lse = lse.download();
  if (backward) {
    dq.poison();
    dk.poison();
    dv.poison();
    qk::attention_backward(q.as<__nv_bfloat16>(), k.as<__nv_bfloat16>(), v.as<__nv_bfloat16>(), o.as<__nv_bfloat16>(),
                           dout.as<__nv_bfloat16>(), lse.get(), dq.as<__nv_bfloat16>(), dk.as<__nv_bfloat16>(),
                           dv.as<__nv_bfloat16>(), delta.get(), cu.get(), s, nullptr);
    r.dq = dq.download();
    r.dk = dk.download();
    r.dv = dv.download();
  }
  return r;
}

class Attention : public ::testing::TestWithParam<Case> {};

TEST_P(Attention, ForwardBackwardMatchTwinAndReference) {
  QTRAIN_REQUIRE_DEVICE();
  const Case& c = GetParam();
  const Problem p = make_problem(offsets(c.lens), c.heads, c.kv_heads, c.d, 1000 + c.d + c.lens.size(), c.window);
  const auto& s = p.shape;
  const DeviceRun got = run_device(p, true);

  std::vector<uint16_t> o(p.q.size()), dq(p.q.size()), dk(p.k.size()), dv(p.k.size());
  std::vector<float> lse(got.lse.size());
  qk::cpu::attention_forward(p.q.data(), p.k.data(), p.v.data(), o.data(), lse.data(), p.cu.data(), s);
  EXPECT_TRUE(close(got.o, o, kTolBf16)) << "o";
  EXPECT_TRUE(close(got.lse, lse, 1e-5)) << "lse";
  // The twin's backward gets the kernel's O: delta = rowsum(dO * O) of the O that was actually produced.
  qk::cpu::attention_backward(p.q.data(), p.k.data(), p.v.data(), got.o.data(), p.dout.data(), lse.data(), dq.data(),
                              dk.data(), dv.data(), p.cu.data(), s);
  EXPECT_TRUE(close(got.dq, dq, 2 * kTolBf16)) << "dq";
  EXPECT_TRUE(close(got.dk, dk, 2 * kTolBf16)) << "dk";
  EXPECT_TRUE(close(got.dv, dv, 2 * kTolBf16)) << "dv";

  const Grads ref = reference(p.q, p.k, p.v, p.dout, p.cu, s.heads, s.kv_heads, s.head_dim, false, s.window);
  const Grads base = reference(p.q, p.k, p.v, p.dout, p.cu, s.heads, s.kv_heads, s.head_dim, true, s.window);
  EXPECT_TRUE(within_twice("o", got.o, base.o, ref.o));
  EXPECT_TRUE(within_twice("dq", got.dq, base.dq, ref.dq));
  EXPECT_TRUE(within_twice("dk", got.dk, base.dk, ref.dk));
  EXPECT_TRUE(within_twice("dv", got.dv, base.dv, ref.dv));
  std::printf("[ %s ] max error vs fp64 (bf16 baseline): o %.3g (%.3g), dq %.3g (%.3g), dk %.3g (%.3g), "
              "dv %.3g (%.3g)\n",
              c.name.c_str(), max_abs_err(got.o, ref.o), max_abs_err(base.o, ref.o), max_abs_err(got.dq, ref.dq),
              max_abs_err(base.dq, ref.dq), max_abs_err(got.dk, ref.dk), max_abs_err(base.dk, ref.dk),
              max_abs_err(got.dv, ref.dv), max_abs_err(base.dv, ref.dv));
}

class AttentionDeterminism : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionDeterminism, BackwardRepeatsBitForBit) {
  QTRAIN_REQUIRE_DEVICE();
  const Case& c = GetParam();
  const Problem p = make_problem(offsets(c.lens), c.heads, c.kv_heads, c.d, 7);
  const DeviceRun a = run_device(p, true), b = run_device(p, true);
  EXPECT_TRUE(identical(a.dq, b.dq));
  EXPECT_TRUE(identical(a.dk, b.dk));
  EXPECT_TRUE(identical(a.dv, b.dv));
}

std::vector<Case> cases() {
  std::vector<Case> c = {
      {"len1_d64", {1}, 1, 1, 64},
      {"len7_gqa4_d128", {7}, 4, 1, 128},
      {"len33_gqa8_d64", {33}, 8, 1, 64},
      {"len129_d128", {129}, 1, 1, 128},
      {"packed_gqa2_d64", {5, 0, 33, 1, 70}, 2, 1, 64},  // an empty example too
      {"packed_gqa2_d80", {33, 17}, 2, 1, 80},
      {"packed_d96", {13, 45}, 2, 2, 96},
      // sliding windows (Has_window kernels; a window of at least the longest example runs the plain path)
      {"win3_len20_d64", {20}, 2, 1, 64, 3},  // (window 1 makes dQ, dK pure rounding noise: dS = 0)
      {"win5_len150_gqa2_d64", {150}, 2, 1, 64, 5},          // under a tile: key tiles skipped, edges masked
      {"win70_packed_gqa2_d80", {5, 0, 150, 33}, 2, 1, 80, 70},  // not a tile multiple; > 5 and 33, < 150
      {"win64_len130_d128", {130}, 1, 1, 128, 64},            // exactly a tile
      {"win100_packed_gqa4_d96", {9, 129}, 4, 1, 96, 100},
  };
#if defined(QTRAIN_TEST_VARIANT_GPU)
  c.push_back({"len129_gqa4_d64", {129}, 4, 1, 64});
  c.push_back({"packed_gqa8_d128", {7, 66, 200}, 8, 1, 128});
  c.push_back({"len1000_gqa4_d128", {1000}, 4, 1, 128});
  c.push_back({"packed1000_d64", {1, 499, 500}, 2, 2, 64});
  c.push_back({"len4096_d128", {4096}, 1, 1, 128});
  c.push_back({"win4096_len4096_gqa4_d128", {4096}, 4, 1, 128, 4096});
  c.push_back({"win1000_packed_gqa4_d128", {3000, 17, 1079}, 4, 1, 128, 1000});
  c.push_back({"win33_len1000_d64", {1000}, 2, 2, 64, 33});
#endif
  return c;
}

INSTANTIATE_TEST_SUITE_P(Ops, Attention, ::testing::ValuesIn(cases()),
                         [](const auto& p) { return p.param.name; });

// The emulator runs blocks in order, so a race cannot show there: one emulated case proves the
// path runs; on a GPU every case is repeated.
std::vector<Case> determinism_cases() {
  std::vector<Case> all = cases();
#if defined(QTRAIN_TEST_VARIANT_EMU)
  std::vector<Case> one;
  for (const Case& c : all)
    if (c.name == "packed_gqa2_d80" || c.name == "win70_packed_gqa2_d80") one.push_back(c);
  return one;
#else
  return all;
#endif
}

INSTANTIATE_TEST_SUITE_P(Ops, AttentionDeterminism, ::testing::ValuesIn(determinism_cases()),
                         [](const auto& p) { return p.param.name; });

// A padded batch [B, S] expressed as 2B examples (attention_padded_cu_seqlens): the real tokens'
// outputs equal those of the same tokens packed without padding, bit for bit.
TEST(AttentionPadded, RealTokensMatchThePackedCall) {
  QTRAIN_REQUIRE_DEVICE();
  const std::vector<int32_t> lens = {5, 16, 11};
  const int32_t padded = 16;
  const int heads = 4, kv_heads = 2, d = 64;
  const Problem pad = make_problem(qk::attention_padded_cu_seqlens(lens, padded), heads, kv_heads, d, 31);
  Problem packed = make_problem(offsets(lens), heads, kv_heads, d, 31);
  for (auto [dst, src, w] : {std::tuple{&packed.q, &pad.q, heads * d}, std::tuple{&packed.k, &pad.k, kv_heads * d},
                             std::tuple{&packed.v, &pad.v, kv_heads * d}}) {
    int64_t row = 0;
    for (size_t b = 0; b < lens.size(); ++b)
      for (int32_t i = 0; i < lens[b]; ++i, ++row)
        std::copy_n(src->begin() + (static_cast<int64_t>(b) * padded + i) * w, w, dst->begin() + row * w);
  }
  const DeviceRun a = run_device(pad, false), b = run_device(packed, false);
  int64_t row = 0;
  for (size_t s = 0; s < lens.size(); ++s)
    for (int32_t i = 0; i < lens[s]; ++i, ++row)
      for (int c = 0; c < heads * d; ++c)
        ASSERT_EQ(a.o[(s * padded + i) * heads * d + c], b.o[row * heads * d + c]) << "row " << s << "," << i;
  for (uint16_t x : a.o) ASSERT_FALSE(std::isnan(to_float(x)));  // pads were written too
}

// Decode: n new queries per example against caches of length L; the result must equal the last n
// rows of the forward over the whole sequence (same tiles, same order: bit for bit), with and
// without a sliding window.
TEST(AttentionDecode, MatchesForwardOnTheFullSequence) {
  QTRAIN_REQUIRE_DEVICE();
#if defined(QTRAIN_TEST_VARIANT_GPU)
  const std::vector<int> dims = {64, 80, 96, 128};
#else
  const std::vector<int> dims = {128};
#endif
  std::vector<std::pair<int, int>> runs;  // (head_dim, window); window 6 runs the windowed kernels
  for (const int d : dims)
    for (const int window : {0, 6}) runs.emplace_back(d, window);
  for (const auto& [d, window] : runs) {
    SCOPED_TRACE("window " + std::to_string(window));
    const std::vector<int32_t> cache_lens = {1, 40, 70, 9}, new_lens = {1, 3, 5, 9};
    const int heads = 4, kv_heads = 1;
    const int64_t capacity = 80;
    const Problem full = make_problem(offsets(cache_lens), heads, kv_heads, d, 50 + d, window);
    const DeviceRun want = run_device(full, false);

    qk::AttentionDecodeShape s;
    s.num_seqs = static_cast<int>(cache_lens.size());
    s.cache_capacity = capacity;
    s.heads = heads;
    s.kv_heads = kv_heads;
    s.head_dim = d;
    s.window = window;
    const auto cu_q = offsets(new_lens);
    s.total_q = cu_q.back();
    s.max_seqlen_q = *std::max_element(new_lens.begin(), new_lens.end());
    s.max_seqlen_k = *std::max_element(cache_lens.begin(), cache_lens.end());
    const int qw = heads * d, kw = kv_heads * d;
    std::vector<uint16_t> q(s.total_q * qw), kc(s.num_seqs * capacity * kw, 0x7fc0), vc(kc.size(), 0x7fc0);
    std::vector<uint16_t> o_want(q.size());
    std::vector<float> lse_want(s.total_q * heads);
    for (int b = 0; b < s.num_seqs; ++b) {
      const int64_t start = full.cu[b], len = cache_lens[b], n = new_lens[b];
      std::copy_n(full.k.begin() + start * kw, len * kw, kc.begin() + b * capacity * kw);  // NaN past L: never read
      std::copy_n(full.v.begin() + start * kw, len * kw, vc.begin() + b * capacity * kw);
      std::copy_n(full.q.begin() + (start + len - n) * qw, n * qw, q.begin() + cu_q[b] * qw);
      std::copy_n(want.o.begin() + (start + len - n) * qw, n * qw, o_want.begin() + cu_q[b] * qw);
      for (int h = 0; h < heads; ++h)
        for (int64_t i = 0; i < n; ++i)
          lse_want[h * s.total_q + cu_q[b] + i] = want.lse[h * full.shape.total_tokens + start + len - n + i];
    }
    DeviceBuffer<uint16_t> dq(q), dkc(kc), dvc(vc), dout(q.size());
    DeviceBuffer<int32_t> dcu(cu_q), dlens(cache_lens);
    DeviceBuffer<float> dlse(lse_want.size());
    dout.poison();
    dlse.poison();
    qk::attention_decode_forward(dq.as<__nv_bfloat16>(), dkc.as<__nv_bfloat16>(), dvc.as<__nv_bfloat16>(),
                                 dout.as<__nv_bfloat16>(), dlse.get(), dcu.get(), dlens.get(), s, nullptr);
    const auto o = dout.download();
    EXPECT_TRUE(identical(o, o_want)) << "d" << d;
    EXPECT_TRUE(identical(dlse.download(), lse_want)) << "d" << d;

    std::vector<uint16_t> o_twin(q.size());
    std::vector<float> lse_twin(lse_want.size());
    qk::cpu::attention_decode_forward(q.data(), kc.data(), vc.data(), o_twin.data(), lse_twin.data(), cu_q.data(),
                                      cache_lens.data(), s);
    EXPECT_TRUE(close(o, o_twin, kTolBf16)) << "d" << d;
  }
}

// A window of at least the longest example masks nothing: the result is the causal one, bit for bit
// (it runs the plain kernels). A shorter one changes the output of the rows it cuts.
TEST(AttentionWindow, WindowOfTheLongestExampleIsCausal) {
  QTRAIN_REQUIRE_DEVICE();
  Problem p = make_problem(offsets({9, 70, 33}), 2, 1, 64, 41);
  const DeviceRun causal = run_device(p, true);
  for (const int window : {70, 71, 1 << 30}) {
    p.shape.window = window;
    const DeviceRun w = run_device(p, true);
    EXPECT_TRUE(identical(w.o, causal.o)) << window;
    EXPECT_TRUE(identical(w.dq, causal.dq)) << window;
    EXPECT_TRUE(identical(w.dk, causal.dk)) << window;
    EXPECT_TRUE(identical(w.dv, causal.dv)) << window;
  }
  p.shape.window = 69;  // cuts only the last row of the 70-token example
  const DeviceRun cut = run_device(p, false);
  const int64_t row_width = 2 * 64, last = 9 + 69;
  for (int64_t t = 0; t < p.shape.total_tokens; ++t) {
    const bool same = std::equal(cut.o.begin() + t * row_width, cut.o.begin() + (t + 1) * row_width,
                                 causal.o.begin() + t * row_width);
    EXPECT_EQ(same, t != last) << "token " << t;
  }
}

TEST(AttentionErrors, UnsupportedConfigurationsAreErrors) {
  QTRAIN_REQUIRE_DEVICE();
  const Problem p = make_problem(offsets({7}), 4, 1, 64, 3);
  DeviceBuffer<uint16_t> q(p.q), k(p.k), v(p.v), o(p.q.size());
  DeviceBuffer<int32_t> cu(p.cu);
  DeviceBuffer<float> lse(28);
  auto call = [&](qk::AttentionShape s) {
    qk::attention_forward(q.as<__nv_bfloat16>(), k.as<__nv_bfloat16>(), v.as<__nv_bfloat16>(), o.as<__nv_bfloat16>(),
                          lse.get(), cu.get(), s, nullptr);
  };
  auto s = p.shape;
  s.head_dim = 32;
  EXPECT_THROW(call(s), qk::Error);
  s = p.shape;
  s.kv_heads = 3;
  EXPECT_THROW(call(s), qk::Error);
  s = p.shape;
  s.num_seqs = 0;
  EXPECT_THROW(call(s), qk::Error);
  s = p.shape;
  s.window = -1;
  EXPECT_THROW(call(s), qk::Error);
  EXPECT_THROW(qk::attention_forward(q.as<__nv_bfloat16>() + 1, k.as<__nv_bfloat16>(), v.as<__nv_bfloat16>(),
                                     o.as<__nv_bfloat16>(), lse.get(), cu.get(), p.shape, nullptr),
               qk::Error);
}

}  // namespace
}  // namespace qtrain::test
