// safetensors files (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON,
// then the data buffer. The reader maps the file and validates the whole header up front, so a
// malformed file is rejected with "file: what is wrong (where)" before any tensor is touched;
// tensor data is accessed lazily through the mapping. The writer is atomic: it writes a temporary
// file next to the target, fsyncs it and renames it into place.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "csrc/core/dtype.h"

namespace qtrain::io {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data buffer
  uint64_t end = 0;
  size_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(end - begin); }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws qtrain::Error (BadInput) on any malformed content.
  static SafetensorsFile open(const std::string& path);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensors in the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const;
  // Throws BadInput naming the file when absent.
  const TensorInfo& info(const std::string& name) const;
  // Raw bytes of one tensor, inside the mapping (valid while this object lives).
  std::span<const std::byte> data(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  const std::byte* map_ = nullptr;
  size_t map_size_ = 0;
  size_t data_start_ = 0;
};

// A tensor to be written: the bytes are copied into the file as they are (little-endian host).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes tensors in the given order (offsets follow that order), the header padded with spaces to a
// multiple of 8. Atomic: temp file + fsync + rename. Throws BadInput on inconsistent input (byte
// size that does not match dtype x shape, duplicate names).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A checkpoint folder: model.safetensors, or the shards listed by model.safetensors.index.json.
// Every shard is opened and validated up front; a missing shard or a tensor listed twice (in the
// index, or present in two shards) is a BadInput error naming the file.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  std::span<const std::byte> data(const std::string& name) const;
  // Which file a tensor lives in.
  const std::string& file_of(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

}  // namespace qtrain::io
