// Helpers shared by the io tests: a scratch folder per test, raw file builders, and a check that a
// call fails with a BadInput error whose message names the file and says what is wrong.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "csrc/core/error.h"

namespace qtrain::io::testing {

class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("qtrain-io-") + (info ? info->name() : "x") + "-" + std::to_string(::getpid()) +
                       "-" + std::to_string(counter++);
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from its parts, with no checks: header length, header text, data buffer.
inline std::string raw_safetensors(const std::string& header, const std::string& data = {}) {
  return u64_le(header.size()) + header + data;
}

// Runs `fn`, expecting qtrain::Error(BadInput) with "file: " at the start and `fragment` inside.
template <class Fn>
void expect_bad_input(Fn&& fn, const std::string& file, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "accepted; expected an error containing: " << fragment;
  } catch (const qtrain::Error& e) {
    EXPECT_EQ(e.kind(), qtrain::ErrorKind::BadInput) << e.what();
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(file + ": ", 0), 0u) << "message does not start with the file: " << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message lacks \"" << fragment << "\": " << msg;
  }
}

}  // namespace qtrain::io::testing
