// safetensors reader and writer: every kind of malformed file is rejected with a BadInput error
// naming the file, and what the writer writes reads back exactly. Malformed files are built here.
#include "csrc/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "io_test_util.h"

namespace qtrain::io {
namespace {

using testing::expect_bad_input;
using testing::raw_safetensors;
using testing::ScratchDir;
using testing::u64_le;
using testing::write_file;

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string to_string(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Writes `bytes` to a scratch file and expects opening it to fail with `fragment` in the message.
void expect_rejected(const std::string& bytes, const std::string& fragment) {
  ScratchDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_file(path, bytes);
  expect_bad_input([&] { SafetensorsFile::open(path); }, path, fragment);
}

// ---- malformed files ---------------------------------------------------------------------------

TEST(SafetensorsReader, RejectsFileShorterThan8Bytes) {
  expect_rejected("", "too short");
  expect_rejected("\x02\0\0\0", "too short");
}

TEST(SafetensorsReader, RejectsMissingFile) {
  ScratchDir dir;
  const std::string path = dir.file("absent.safetensors");
  expect_bad_input([&] { SafetensorsFile::open(path); }, path, "cannot open");
}

TEST(SafetensorsReader, RejectsHeaderLengthPastEndOfFile) {
  expect_rejected(u64_le(100) + "{}", "header length past the end");
}

TEST(SafetensorsReader, RejectsHeaderOver100MB) {
  expect_rejected(u64_le(100'000'001) + "{}", "header too large");
  expect_rejected(u64_le(~uint64_t{0}) + "{}", "header too large");
}

TEST(SafetensorsReader, RejectsInvalidJson) {
  expect_rejected(raw_safetensors("{\"a\": "), "invalid JSON");
  expect_rejected(raw_safetensors("{} trailing"), "invalid JSON");
  expect_rejected(raw_safetensors(""), "invalid JSON");
}

TEST(SafetensorsReader, RejectsHeaderThatIsNotAnObject) {
  expect_rejected(raw_safetensors("[1, 2]"), "not a JSON object");
  expect_rejected(raw_safetensors("\"text\""), "not a JSON object");
}

TEST(SafetensorsReader, RejectsUnknownDtype) {
  expect_rejected(raw_safetensors(R"({"w": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}})", "x"),
                  "unknown or unsupported dtype \"F7\"");
}

TEST(SafetensorsReader, RejectsShapeAndByteSizeThatDisagree) {
  // 2x3 F32 is 24 bytes, the range holds 20.
  expect_rejected(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
                                  std::string(20, '\0')),
                  "byte size does not match");
}

TEST(SafetensorsReader, RejectsOffsetsOutOfRange) {
  expect_rejected(raw_safetensors(R"({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})",
                                  std::string(4, '\0')),
                  "end past the data buffer");
  expect_rejected(raw_safetensors(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}})",
                                  std::string(4, '\0')),
                  "begin > end");
}

TEST(SafetensorsReader, RejectsOverlappingRanges) {
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                      "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                                  std::string(6, '\0')),
                  "overlapping");
  // A zero-sized tensor inside another tensor's range is an overlap too.
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                      "z": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]}})",
                                  std::string(4, '\0')),
                  "overlapping");
}

TEST(SafetensorsReader, RejectsGapsAndUncoveredBuffer) {
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                                      "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                                  std::string(6, '\0')),
                  "gap in the data buffer");
  expect_rejected(raw_safetensors(R"({"b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                                  std::string(4, '\0')),
                  "gap in the data buffer");
  // Trailing bytes after the last tensor: 8 + N + last end != file size.
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})",
                                  std::string(3, '\0')),
                  "do not cover the data buffer");
  expect_rejected(raw_safetensors("{}", "xyz"), "do not cover the data buffer");
}

TEST(SafetensorsReader, RejectsDuplicateTensorNames) {
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                                      "a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                                  std::string(4, '\0')),
                  "duplicate tensor name");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [2], "data_offsets": [0, 2]}})",
                                  std::string(2, '\0')),
                  "duplicate key \"dtype\"");
}

TEST(SafetensorsReader, RejectsMalformedEntries) {
  const std::string data(4, '\0');
  expect_rejected(raw_safetensors(R"({"a": [1, 2]})", data), "must be an object");
  expect_rejected(raw_safetensors(R"({"a": {"shape": [4], "data_offsets": [0, 4]}})", data), "missing \"dtype\"");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "data_offsets": [0, 4]}})", data), "missing \"shape\"");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4]}})", data), "missing \"data_offsets\"");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": 1, "shape": [4], "data_offsets": [0, 4]}})", data),
                  "\"dtype\" must be a string");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": 4, "data_offsets": [0, 4]}})", data),
                  "\"shape\" must be an array");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4.0], "data_offsets": [0, 4]}})", data),
                  "must be a non-negative integer");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [-4], "data_offsets": [0, 4]}})", data),
                  "negative dimension");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0]}})", data),
                  "\"data_offsets\" must be an array [begin, end]");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": ["0", 4]}})", data),
                  "data offset must be a non-negative integer");
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [-1, 4]}})", data),
                  "negative data offset");
  // Element count overflowing 64 bits must not wrap into a "valid" size.
  expect_rejected(raw_safetensors(R"({"a": {"dtype": "U8", "shape": [4294967296, 4294967296, 16],
                                          "data_offsets": [0, 4]}})",
                                  data),
                  "too many");
}

TEST(SafetensorsReader, MessageNamesTheTensor) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  write_file(path, raw_safetensors(R"({"layer.w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}})",
                                   std::string(4, '\0')));
  expect_bad_input([&] { SafetensorsFile::open(path); }, path, "(tensor \"layer.w\": 4 bytes, expected 6)");
}

TEST(SafetensorsReader, RejectsBadMetadata) {
  expect_rejected(raw_safetensors(R"({"__metadata__": {"format": 1}})"), "__metadata__ values must be strings");
  expect_rejected(raw_safetensors(R"({"__metadata__": ["pt"]})"), "__metadata__ must be an object");
  expect_rejected(raw_safetensors(R"({"__metadata__": {"a": {"b": "c"}}})"), "__metadata__ values must be strings");
}

// ---- valid files, handwritten --------------------------------------------------------------------

TEST(SafetensorsReader, ReadsHandwrittenFileInOffsetOrder) {
  ScratchDir dir;
  const std::string path = dir.file("ok.safetensors");
  // Entries out of offset order in the JSON, plus a zero-sized tensor and unpadded header.
  write_file(path, raw_safetensors(R"({"b": {"dtype": "I16", "shape": [2], "data_offsets": [2, 6]},
                                      "__metadata__": {"format": "pt"},
                                      "a": {"dtype": "U8", "shape": [2, 1], "data_offsets": [0, 2]},
                                      "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [6, 6]}})",
                                   "ABCDEF"));
  const SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[1].name, "b");
  EXPECT_EQ(f.tensors()[2].name, "z");
  EXPECT_EQ(to_string(f.data("a")), "AB");
  EXPECT_EQ(to_string(f.data("b")), "CDEF");
  EXPECT_EQ(f.data("z").size(), 0u);
  EXPECT_EQ(f.info("a").shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(f.info("b").dtype, DType::I16);
  EXPECT_EQ(f.info("z").numel(), 0u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_TRUE(f.contains("a"));
  EXPECT_FALSE(f.contains("c"));
  expect_bad_input([&] { (void)f.info("c"); }, path, "no tensor named \"c\"");
}

// ---- writer ------------------------------------------------------------------------------------

TEST(SafetensorsWriter, RoundTrip) {
  ScratchDir dir;
  const std::string path = dir.file("rt.safetensors");
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  const std::string bf16("\x01\x02\x03\x04", 4);
  const std::string u8("\xff\x00\x7f", 3);
  const std::vector<TensorToWrite> tensors = {
      {"model.w", DType::F32, {2, 3}, {reinterpret_cast<const std::byte*>(w.data()), w.size() * sizeof(float)}},
      {"model.b", DType::BF16, {2}, as_bytes(bf16)},
      {"odd", DType::U8, {3}, as_bytes(u8)},
      {"scalar_empty", DType::I64, {0}, {}},
  };
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "qtrain test"}});

  const SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = f.tensors()[i];  // offsets follow the order given to the writer
    EXPECT_EQ(t.name, tensors[i].name);
    EXPECT_EQ(t.dtype, tensors[i].dtype);
    EXPECT_EQ(t.shape, tensors[i].shape);
    const auto d = f.data(t.name);
    ASSERT_EQ(d.size(), tensors[i].bytes.size());
    if (!d.empty()) {
      EXPECT_EQ(std::memcmp(d.data(), tensors[i].bytes.data(), d.size()), 0) << t.name;
    }
  }
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "qtrain test"}}));

  // The header is padded with spaces so the data starts at a multiple of 8.
  const std::string raw = testing::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[static_cast<size_t>(i)]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + n + w.size() * 4 + 4 + 3);
  EXPECT_EQ(raw[8], '{');
  const size_t last = raw.find_last_not_of(' ', 8 + n - 1);
  EXPECT_EQ(raw[last], '}');
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::owner_read,
            std::filesystem::perms::owner_read);
}

TEST(SafetensorsWriter, EmptyTensorList) {
  ScratchDir dir;
  const std::string path = dir.file("empty.safetensors");
  write_safetensors(path, {});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(std::filesystem::file_size(path) % 8, 0u);
}

TEST(SafetensorsWriter, ZeroSizedTensorsOnly) {
  ScratchDir dir;
  const std::string path = dir.file("zeros.safetensors");
  write_safetensors(path, {{"a", DType::F32, {0}, {}}, {"b", DType::BF16, {3, 0, 2}, {}}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.info("b").shape, (std::vector<int64_t>{3, 0, 2}));
  EXPECT_EQ(f.data("b").size(), 0u);
}

TEST(SafetensorsWriter, MovedFileKeepsItsMapping) {
  ScratchDir dir;
  const std::string path = dir.file("m.safetensors");
  const std::string bytes = "12345678";
  write_safetensors(path, {{"x", DType::U8, {8}, as_bytes(bytes)}});
  SafetensorsFile a = SafetensorsFile::open(path);
  SafetensorsFile b = std::move(a);
  EXPECT_EQ(to_string(b.data("x")), bytes);
  std::vector<SafetensorsFile> v;
  v.push_back(std::move(b));
  v.push_back(SafetensorsFile::open(path));
  EXPECT_EQ(to_string(v[0].data("x")), bytes);
  v[1] = std::move(v[0]);
  EXPECT_EQ(to_string(v[1].data("x")), bytes);
}

bool has_temp_files(const ScratchDir& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir.str())) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  }
  return false;
}

TEST(SafetensorsWriter, FailedWriteLeavesNoFileAndKeepsTheOldOne) {
  ScratchDir dir;
  const std::string path = dir.file("out.safetensors");
  const std::string three = "abc";
  // Inconsistent byte size: nothing appears.
  expect_bad_input([&] { write_safetensors(path, {{"w", DType::F32, {1}, as_bytes(three)}}); }, path,
                   "byte size does not match");
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(has_temp_files(dir));

  // An existing file stays untouched by failed writes.
  write_safetensors(path, {{"w", DType::U8, {3}, as_bytes(three)}});
  const std::string before = testing::read_file(path);
  expect_bad_input([&] { write_safetensors(path, {{"w", DType::F16, {2}, as_bytes(three)}}); }, path,
                   "byte size does not match");
  expect_bad_input([&] { write_safetensors(path, {{"w", DType::U8, {3}, as_bytes(three)}, {"w", DType::U8, {3}, as_bytes(three)}}); },
                   path, "duplicate tensor name");
  expect_bad_input([&] { write_safetensors(path, {{"w", DType::NF4, {6}, as_bytes(three)}}); }, path,
                   "no safetensors name");
  expect_bad_input([&] { write_safetensors(path, {{"w", DType::U8, {-3}, as_bytes(three)}}); }, path,
                   "negative dimension");
  EXPECT_EQ(testing::read_file(path), before);
  EXPECT_FALSE(has_temp_files(dir));

  // A successful write replaces the file whole, through a temporary name.
  const std::string four = "wxyz";
  write_safetensors(path, {{"v", DType::U8, {4}, as_bytes(four)}});
  EXPECT_FALSE(has_temp_files(dir));
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("w"));
  EXPECT_EQ(to_string(f.data("v")), four);
}

TEST(SafetensorsWriter, UnwritableFolderIsBadInput) {
  ScratchDir dir;
  const std::string path = dir.file("no/such/folder/out.safetensors");
  expect_bad_input([&] { write_safetensors(path, {}); }, path, "cannot create a temporary file");
}

}  // namespace
}  // namespace qtrain::io
