// The op harness: each case runs a CUDA op (real GPU in the _gpu binary, the SIMT emulator in the
// _emu binary) and its CPU twin on the same random inputs, and compares them by normalized error
// with a tolerance set by the precision. Outputs are poisoned (NaN) before the call, so an element
// the kernel never wrote shows up as NaN, and any NaN fails the case.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/cuda_check.h"

namespace qtrain::test {

// Skips the test (GTEST_SKIP) when no device is present; the emulator always has one.
#define QTRAIN_REQUIRE_DEVICE()                                                  \
  do {                                                                           \
    int qtrain_count_ = 0;                                                       \
    if (cudaGetDeviceCount(&qtrain_count_) != cudaSuccess || qtrain_count_ == 0) { \
      (void)cudaGetLastError();                                                  \
      GTEST_SKIP() << "no CUDA device";                                          \
    }                                                                            \
  } while (0)

// Deterministic, never-zero random values in [-scale, -scale/64] U [scale/64, scale].
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) / static_cast<float>(1ull << 24); }  // [0, 1)
  float nonzero(float scale = 1.0f) {
    const float mag = scale * (1.0f / 64.0f + (63.0f / 64.0f) * uniform());
    return (next() & 1) ? mag : -mag;
  }

 private:
  uint64_t s_;
};

inline std::vector<float> random_f32(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.nonzero(scale);
  return v;
}

inline std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = qk::f32_to_bf16_rn(r.nonzero(scale));
  return v;
}

// A device buffer of n elements of T, freed on scope exit.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { QK_CUDA_CHECK(cudaMalloc(&p_, bytes() == 0 ? 1 : bytes())); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return static_cast<T*>(p_); }
  template <typename U>
  U* as() const { return static_cast<U*>(p_); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& host) {
    QK_CUDA_CHECK(cudaMemcpy(p_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    QK_CUDA_CHECK(cudaDeviceSynchronize());
    QK_CUDA_CHECK(cudaMemcpy(host.data(), p_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // All bytes 0xFF: NaN for f32, f16 and bf16.
  void poison() { QK_CUDA_CHECK(cudaMemset(p_, 0xFF, bytes())); }

 private:
  void* p_ = nullptr;
  size_t n_;
};

inline float to_float(float x) { return x; }
inline float to_float(uint16_t bf16_bits) { return qk::bf16_to_f32(bf16_bits); }  // uint16_t holds bf16
inline float to_float(uint8_t x) { return x; }
inline float to_float(int32_t x) { return static_cast<float>(x); }

// ||got - want|| / ||want||; fails on NaN (an unwritten, poisoned element) or a size mismatch.
template <typename T>
::testing::AssertionResult close(const std::vector<T>& got, const std::vector<T>& want, double tol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = to_float(got[i]), w = to_float(want[i]);
    if (std::isnan(g)) return ::testing::AssertionFailure() << "NaN (unwritten?) at element " << i;
    if (std::isnan(w)) return ::testing::AssertionFailure() << "reference NaN at element " << i;
    num += (g - w) * (g - w);
    den += w * w;
  }
  const double err = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (err > tol) return ::testing::AssertionFailure() << "normalized error " << err << " > " << tol;
  return ::testing::AssertionSuccess() << "normalized error " << err;
}

// Bitwise equality, for ops whose result is exactly defined (casts, quantization).
template <typename T>
::testing::AssertionResult identical(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << "element " << i << " differs: " << to_float(got[i]) << " vs "
                                           << to_float(want[i]);
  return ::testing::AssertionSuccess();
}

// Tolerances (normalized error) by output precision, for results whose rounding order differs.
constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 8e-3;  // a few bf16 ulps (2^-8 relative)

}  // namespace qtrain::test
