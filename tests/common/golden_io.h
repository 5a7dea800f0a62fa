// What the golden-file tests of the models share: reading a tensor of a safetensors file written
// by tests/reference/*.py (its dtype checked against T), the fixed batch those scripts write, and
// the normalized error ||a - b|| / ||b|| the tolerances are stated in.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "csrc/io/safetensors.h"
#include "runtime/model/batch.h"

namespace qtrain::test {

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else return DType::I32;
}

template <typename T>
std::vector<T> read_tensor(const io::SafetensorsFile& f, const std::string& name) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int32_t>);
  const io::TensorInfo& info = f.info(name);
  EXPECT_EQ(info.dtype, dtype_of<T>()) << name;
  std::vector<T> out(info.numel());
  std::memcpy(out.data(), f.data(name).data(), out.size() * sizeof(T));
  return out;
}

// batch.safetensors: int32 [rows, seq] input_ids, position_ids, segment_ids, labels.
inline model::Batch read_batch(const std::filesystem::path& path) {
  const io::SafetensorsFile f = io::SafetensorsFile::open(path.string());
  model::Batch b;
  b.rows = f.info("input_ids").shape[0];
  b.seq = f.info("input_ids").shape[1];
  b.input_ids = read_tensor<int32_t>(f, "input_ids");
  b.position_ids = read_tensor<int32_t>(f, "position_ids");
  b.segment_ids = read_tensor<int32_t>(f, "segment_ids");
  b.labels = read_tensor<int32_t>(f, "labels");
  return b;
}

// ||a - b|| / ||b||, in double.
inline double normalized_error(std::span<const float> a, std::span<const float> b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace qtrain::test
