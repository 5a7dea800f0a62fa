// Op cases: multi-tensor 8-bit AdamW, CUDA (one launch for all tensors) vs the CPU twin, over several
// steps on a mix of quantized (>= 4096 elements, full and partial last blocks) and 32-bit tensors, an
// empty one among them, with a few non-finite gradients. Both sides round every operation the same
// way, so parameters, codes and absmax must agree bit for bit.
#include <limits>
#include <memory>
#include <vector>

#include "harness.h"
#include "qk/adamw8bit.h"

namespace qtrain::test {
namespace {

struct AdamW8bitCase {
  std::vector<int64_t> sizes;
  float weight_decay;
  float grad_scale;
  bool non_finite;  // plant NaN / inf gradients
};

struct HostState {
  std::vector<float> p, g, m, v, a1, a2;
  std::vector<uint8_t> q1, q2;
};

// harness.h's identical() prints elements as floats; codes are bytes.
::testing::AssertionResult same_codes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure() << "code " << i << " differs: " << int{got[i]} << " vs " << int{want[i]};
  return ::testing::AssertionSuccess();
}

class AdamW8bit : public ::testing::TestWithParam<AdamW8bitCase> {};

TEST_P(AdamW8bit, FourStepsMatchTheTwinBitForBit) {
  QTRAIN_REQUIRE_DEVICE();
  const AdamW8bitCase c = GetParam();
  const int count = static_cast<int>(c.sizes.size());
  std::vector<HostState> h(static_cast<size_t>(count));
  struct Dev {
    std::unique_ptr<DeviceBuffer<float>> p, g, m, v, a1, a2;
    std::unique_ptr<DeviceBuffer<uint8_t>> q1, q2;
  };
  std::vector<Dev> d(static_cast<size_t>(count));
  std::vector<qk::AdamW8bitTensor> host(static_cast<size_t>(count)), dev(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const int64_t n = c.sizes[static_cast<size_t>(i)];
    const size_t un = static_cast<size_t>(n);
    HostState& s = h[static_cast<size_t>(i)];
    Dev& e = d[static_cast<size_t>(i)];
    s.p = random_f32(un, 100 + i);
    e.p = std::make_unique<DeviceBuffer<float>>(s.p);
    e.g = std::make_unique<DeviceBuffer<float>>(un);
    qk::AdamW8bitTensor& ht = host[static_cast<size_t>(i)];
    qk::AdamW8bitTensor& dt = dev[static_cast<size_t>(i)];
    ht = {s.p.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, n, 0};
    dt = {e.p->get(), e.g->get(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, n, 0};
    if (qk::adamw8bit_is_quantized(n)) {
      const size_t nb = static_cast<size_t>(qk::adamw8bit_blocks(n));
      s.q1.assign(un, 0);
      s.q2.assign(un, 0);
      s.a1.assign(nb, 0.0f);
      s.a2.assign(nb, 0.0f);
      e.q1 = std::make_unique<DeviceBuffer<uint8_t>>(s.q1);
      e.q2 = std::make_unique<DeviceBuffer<uint8_t>>(s.q2);
      e.a1 = std::make_unique<DeviceBuffer<float>>(s.a1);
      e.a2 = std::make_unique<DeviceBuffer<float>>(s.a2);
      ht.q1 = s.q1.data(), ht.q2 = s.q2.data(), ht.absmax1 = s.a1.data(), ht.absmax2 = s.a2.data();
      dt.q1 = e.q1->get(), dt.q2 = e.q2->get(), dt.absmax1 = e.a1->get(), dt.absmax2 = e.a2->get();
    } else {
      s.m = random_f32(un, 200 + i, 0.1f);
      s.v = random_f32(un, 300 + i, 0.01f);
      for (auto& x : s.v) x = std::abs(x);
      e.m = std::make_unique<DeviceBuffer<float>>(s.m);
      e.v = std::make_unique<DeviceBuffer<float>>(s.v);
      ht.m = s.m.data(), ht.v = s.v.data();
      dt.m = e.m->get(), dt.v = e.v->get();
    }
  }
  qk::adamw8bit_plan_chunks(host.data(), count);
  const int64_t chunks = qk::adamw8bit_plan_chunks(dev.data(), count);
  DeviceBuffer<qk::AdamW8bitTensor> table(dev);

  qk::AdamWParams params;
  params.lr = 2e-3f;
  params.weight_decay = c.weight_decay;
  params.grad_scale = c.grad_scale;
  for (int64_t step = 1; step <= 4; ++step) {
    params.step = step;
    for (int i = 0; i < count; ++i) {
      HostState& s = h[static_cast<size_t>(i)];
      // Per-block scales spread the absmax over decades; a step with smaller gradients than the
      // last exercises the decay of the old state through its codes.
      s.g = random_f32(static_cast<size_t>(c.sizes[static_cast<size_t>(i)]), 1000 * step + i,
                       step == 3 ? 0.01f : 1.0f);
      for (size_t k = 0; k < s.g.size(); ++k) s.g[k] *= static_cast<float>(1 + (k / 256) % 7) * 0.3f;
      if (c.non_finite && s.g.size() > 600) {
        s.g[17] = std::numeric_limits<float>::quiet_NaN();
        s.g[300 + static_cast<size_t>(step)] = std::numeric_limits<float>::infinity();
        s.g[599] = -std::numeric_limits<float>::infinity();
      }
      host[static_cast<size_t>(i)].grad = s.g.data();
      d[static_cast<size_t>(i)].g->upload(s.g);
    }
    qk::cpu::adamw8bit_update(host.data(), count, params);
    qk::adamw8bit_update(table.get(), count, chunks, params, nullptr);
  }
  for (int i = 0; i < count; ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i) + " of " + std::to_string(c.sizes[static_cast<size_t>(i)]));
    const HostState& s = h[static_cast<size_t>(i)];
    const Dev& e = d[static_cast<size_t>(i)];
    if (s.p.empty()) continue;
    EXPECT_TRUE(identical(e.p->download(), s.p));
    if (e.q1) {
      EXPECT_TRUE(same_codes(e.q1->download(), s.q1));
      EXPECT_TRUE(same_codes(e.q2->download(), s.q2));
      EXPECT_TRUE(identical(e.a1->download(), s.a1));
      EXPECT_TRUE(identical(e.a2->download(), s.a2));
    } else {
      EXPECT_TRUE(identical(e.m->download(), s.m));
      EXPECT_TRUE(identical(e.v->download(), s.v));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Ops, AdamW8bit,
    ::testing::Values(AdamW8bitCase{{4096}, 0.0f, 1.0f, false},
                      AdamW8bitCase{{7, 4097, 0, 4095, 13, 5 * 256 + 11}, 0.01f, 1.0f, false},
                      AdamW8bitCase{{4096 + 255, 128, 8192}, 0.1f, 0.25f, true}),
    [](const auto& p) {
      std::string s = "n";
      for (int64_t n : p.param.sizes) s += "_" + std::to_string(n);
      return s + "_wd" + std::to_string(static_cast<int>(p.param.weight_decay * 100)) + "_gs" +
             std::to_string(static_cast<int>(p.param.grad_scale * 100)) + (p.param.non_finite ? "_nonfinite" : "");
    });

}  // namespace
}  // namespace qtrain::test
