// Seeded, portable random numbers for everything qtrain generates itself (tiny models, corpora,
// test data). The standard library's distributions differ between implementations, so the bits
// come from xoshiro256** seeded through splitmix64 and every distribution is written out here: the
// same seed gives the same numbers on every platform.
#pragma once
#include <cstdint>
#include <string_view>

namespace qtrain {

// One splitmix64 step: advances `state` and returns the next output.
uint64_t splitmix64(uint64_t& state) noexcept;

// FNV-1a over the bytes of `s`; used to derive independent streams from names.
uint64_t fnv1a64(std::string_view s) noexcept;

class Rng {
 public:
  explicit Rng(uint64_t seed) noexcept;
  // A generator whose stream depends on both the seed and a name (e.g. a tensor name), so that
  // what one stream produces does not depend on the order in which the streams are used.
  static Rng for_stream(uint64_t seed, std::string_view name) noexcept;

  uint64_t next_u64() noexcept;
  // Uniform in [0, 1) with 53 random bits.
  double uniform() noexcept;
  // Uniform integer in [0, n), without modulo bias; n must be > 0.
  uint64_t below(uint64_t n) noexcept;
  // Standard normal by the Box-Muller transform (both values of a pair are used). It relies on
  // libm's log/sin/cos; a last-bit difference between libms would almost never survive rounding
  // to bf16, which is how generated weights are stored.
  double normal() noexcept;
  double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace qtrain
