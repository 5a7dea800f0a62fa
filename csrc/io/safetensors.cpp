// safetensors reader, writer and sharded checkpoint folders. The reader trusts nothing in the file:
// every size and offset is checked (with overflow checks) before the data is exposed, so a corrupt
// or hostile file ends in a BadInput error instead of an out-of-bounds read.
#include "csrc/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "csrc/core/error.h"

namespace qtrain::io {
namespace {

using nlohmann::json;

// The reference implementation refuses headers above this size; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

// nlohmann's messages start with "[json.exception.parse_error.101] "; users need only the rest.
std::string parse_error_text(const std::exception& e) {
  const std::string s = e.what();
  const size_t close = s.find("] ");
  return s.rfind("[json.exception.", 0) == 0 && close != std::string::npos ? s.substr(close + 2) : s;
}

std::string errno_text() { return std::strerror(errno); }

// nlohmann keeps the last of two equal keys without a word, which would hide a tensor defined
// twice. This parse records the first repeated key (and the key of the object holding it).
struct DuplicateKey {
  std::string key;
  std::string parent;  // empty when the duplicate is at the top level
  bool found = false;
};

json parse_rejecting_duplicates(const std::string& text, const std::string& file, const std::string& what_is_it,
                                DuplicateKey& dup) {
  struct Level {
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Level> stack;
  auto cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: stack.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        Level& top = stack.back();
        if (!top.keys.insert(key).second && !dup.found) {
          dup.found = true;
          dup.key = key;
          dup.parent = stack.size() >= 2 ? stack[stack.size() - 2].last_key : std::string();
        }
        top.last_key = key;
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text, cb);
  } catch (const json::parse_error& e) {
    throw_bad_input(file, "invalid JSON in " + what_is_it, "byte " + std::to_string(e.byte) + ": " + parse_error_text(e));
  }
}

const char* json_type(const json& j) { return j.type_name(); }

uint64_t json_to_u64(const json& j, const std::string& file, const std::string& what, const std::string& where) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    if (j.get<int64_t>() < 0) throw_bad_input(file, "negative " + what, where);
    return static_cast<uint64_t>(j.get<int64_t>());
  }
  throw_bad_input(file, what + " must be a non-negative integer, got " + std::string(json_type(j)), where);
}

// One header entry, checked on its own (dtype, shape, offsets, sizes). Tiling is checked later.
TensorInfo parse_entry(const std::string& file, const std::string& name, const json& entry, uint64_t buffer_size) {
  const std::string where = "tensor " + in_quotes(name);
  if (!entry.is_object()) {
    throw_bad_input(file, "header entry must be an object, got " + std::string(json_type(entry)), where);
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) throw_bad_input(file, std::string("missing \"") + key + "\"", where);
  }
  TensorInfo t;
  t.name = name;

  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) throw_bad_input(file, "\"dtype\" must be a string, got " + std::string(json_type(dtype)), where);
  const auto parsed = dtype_from_safetensors(dtype.get<std::string>());
  if (!parsed) throw_bad_input(file, "unknown or unsupported dtype " + in_quotes(dtype.get<std::string>()), where);
  t.dtype = *parsed;

  const json& shape = entry.at("shape");
  if (!shape.is_array()) throw_bad_input(file, "\"shape\" must be an array, got " + std::string(json_type(shape)), where);
  uint64_t numel = 1;
  for (const json& d : shape) {
    const uint64_t dim = json_to_u64(d, file, "dimension in \"shape\"", where);
    if (dim > static_cast<uint64_t>(INT64_MAX)) throw_bad_input(file, "dimension too large", where);
    if (__builtin_mul_overflow(numel, dim, &numel)) throw_bad_input(file, "shape has too many elements", where);
    t.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_bits(t.dtype) / 8), &nbytes)) {
    throw_bad_input(file, "shape has too many bytes", where);
  }

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    throw_bad_input(file, "\"data_offsets\" must be an array [begin, end]", where);
  }
  t.begin = json_to_u64(offsets[0], file, "data offset", where);
  t.end = json_to_u64(offsets[1], file, "data offset", where);
  if (t.begin > t.end) {
    throw_bad_input(file, "data_offsets begin > end", where + ": [" + std::to_string(t.begin) + ", " +
                                                          std::to_string(t.end) + "]");
  }
  if (t.end > buffer_size) {
    throw_bad_input(file, "data_offsets end past the data buffer",
                    where + ": end " + std::to_string(t.end) + ", buffer " + std::to_string(buffer_size) + " bytes");
  }
  if (t.end - t.begin != nbytes) {
    throw_bad_input(file, "byte size does not match dtype and shape",
                    where + ": " + std::to_string(t.end - t.begin) + " bytes, expected " + std::to_string(nbytes));
  }
  return t;
}

std::map<std::string, std::string> parse_metadata(const std::string& file, const json& meta) {
  if (!meta.is_object()) {
    throw_bad_input(file, "__metadata__ must be an object of strings, got " + std::string(json_type(meta)));
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : meta.items()) {
    if (!v.is_string()) {
      throw_bad_input(file, "__metadata__ values must be strings",
                      "key " + in_quotes(k) + " is " + std::string(json_type(v)));
    }
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

// Sorted ranges must tile [0, buffer_size) exactly: no overlap, no gap, nothing left over.
void check_tiling(const std::string& file, const std::vector<TensorInfo>& sorted, uint64_t buffer_size) {
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : sorted) {
    if (t.begin < expected) {
      throw_bad_input(file, "overlapping data ranges",
                      "tensors " + in_quotes(prev->name) + " and " + in_quotes(t.name));
    }
    if (t.begin > expected) {
      throw_bad_input(file, "gap in the data buffer",
                      "bytes " + std::to_string(expected) + ".." + std::to_string(t.begin) + " before tensor " +
                          in_quotes(t.name));
    }
    expected = t.end;
    prev = &t;
  }
  if (expected != buffer_size) {
    throw_bad_input(file, "tensors do not cover the data buffer",
                    "ranges end at " + std::to_string(expected) + ", buffer has " + std::to_string(buffer_size) +
                        " bytes");
  }
}

// Closes the descriptor and removes the temporary file unless the write completed.
class TempFile {
 public:
  explicit TempFile(const std::string& target) : path_(target + ".tmp-XXXXXX") {
    fd_ = ::mkstemp(path_.data());
    if (fd_ < 0) throw_bad_input(target, "cannot create a temporary file: " + errno_text(), path_);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  void close_or_throw(const std::string& target) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw_bad_input(target, "cannot close the temporary file: " + errno_text(), path_);
  }
  void committed() { committed_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_all(const TempFile& tmp, const std::string& target, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(tmp.fd(), p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_bad_input(target, "write failed: " + errno_text(), tmp.path());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_bad_input(path, "cannot read: " + errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

size_t TensorInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

// ---- SafetensorsFile ------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_bad_input(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string err = errno_text();
    ::close(fd);
    throw_bad_input(path, "cannot stat: " + err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_bad_input(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw_bad_input(path, "file too short for a safetensors header", std::to_string(file_size) + " bytes");
  }
  void* m = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string map_err = m == MAP_FAILED ? errno_text() : std::string();
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) throw_bad_input(path, "cannot map: " + map_err);
  // From here on the destructor of `f` unmaps on every error path.
  f.map_ = static_cast<const std::byte*>(m);
  f.map_size_ = file_size;

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(f.map_[i]);
  if (header_len > kMaxHeaderBytes) {
    throw_bad_input(path, "header too large", std::to_string(header_len) + " bytes, limit " +
                                                  std::to_string(kMaxHeaderBytes));
  }
  if (header_len > file_size - 8) {
    throw_bad_input(path, "header length past the end of the file",
                    "header " + std::to_string(header_len) + " bytes, file " + std::to_string(file_size) + " bytes");
  }
  f.data_start_ = static_cast<size_t>(8 + header_len);
  const uint64_t buffer_size = file_size - 8 - header_len;

  const std::string header(reinterpret_cast<const char*>(f.map_ + 8), static_cast<size_t>(header_len));
  DuplicateKey dup;
  const json root = parse_rejecting_duplicates(header, path, "header", dup);
  if (!root.is_object()) throw_bad_input(path, "header is not a JSON object", std::string("got ") + json_type(root));
  if (dup.found) {
    if (dup.parent.empty()) throw_bad_input(path, "duplicate tensor name in header", in_quotes(dup.key));
    throw_bad_input(path, "duplicate key " + in_quotes(dup.key) + " in header", "entry " + in_quotes(dup.parent));
  }

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      f.metadata_ = parse_metadata(path, entry);
      continue;
    }
    f.tensors_.push_back(parse_entry(path, name, entry, buffer_size));
  }
  std::stable_sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  check_tiling(path, f.tensors_, buffer_size);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      metadata_(std::move(o.metadata_)),
      tensors_(std::move(o.tensors_)),
      index_(std::move(o.index_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      data_start_(std::exchange(o.data_start_, 0)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(const_cast<std::byte*>(map_), map_size_);
    path_ = std::move(o.path_);
    metadata_ = std::move(o.metadata_);
    tensors_ = std::move(o.tensors_);
    index_ = std::move(o.index_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    data_start_ = std::exchange(o.data_start_, 0);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), map_size_);
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw_bad_input(path_, "no tensor named " + in_quotes(name));
  return tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::data(const std::string& name) const {
  const TensorInfo& t = info(name);
  return {map_ + data_start_ + t.begin, t.nbytes()};
}

// ---- writer -------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Everything is checked before the temporary file exists, so bad input leaves no trace on disk.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const std::string where = "tensor " + in_quotes(t.name);
    if (t.name.empty() || t.name == "__metadata__") throw_bad_input(path, "invalid tensor name", where);
    if (!seen.insert(t.name).second) throw_bad_input(path, "duplicate tensor name", where);
    const char* dtype = dtype_safetensors_name(t.dtype);
    if (!dtype) throw_bad_input(path, std::string("dtype ") + dtype_name(t.dtype) + " has no safetensors name", where);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw_bad_input(path, "negative dimension", where);
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) throw_bad_input(path, "shape too large", where);
    }
    const uint64_t expected = numel * static_cast<uint64_t>(dtype_bits(t.dtype) / 8);
    if (t.bytes.size() != expected) {
      throw_bad_input(path, "byte size does not match dtype and shape",
                      where + ": " + std::to_string(t.bytes.size()) + " bytes, expected " + std::to_string(expected));
    }
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + expected}}};
    offset += expected;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  TempFile tmp(path);
  write_all(tmp, path, len, sizeof len);
  write_all(tmp, path, text.data(), text.size());
  for (const TensorToWrite& t : tensors) write_all(tmp, path, t.bytes.data(), t.bytes.size());
  // mkstemp creates 0600; a model file should be readable like any other output.
  if (::fchmod(tmp.fd(), 0644) != 0) throw_bad_input(path, "cannot set permissions: " + errno_text(), tmp.path());
  if (::fsync(tmp.fd()) != 0) throw_bad_input(path, "fsync failed: " + errno_text(), tmp.path());
  tmp.close_or_throw(path);
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) {
    throw_bad_input(path, "cannot rename the temporary file into place: " + errno_text(), tmp.path());
  }
  tmp.committed();
  // Make the rename itself durable; failure here loses nothing already written, so it is ignored.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

// ---- Checkpoint ---------------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  c.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw_bad_input(dir, "not a directory");
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";

  if (!fs::exists(index_path, ec)) {
    if (!fs::exists(single_path, ec)) {
      throw_bad_input(dir, "no model.safetensors or model.safetensors.index.json in this folder");
    }
    c.files_.push_back(SafetensorsFile::open(single_path.string()));
    for (const TensorInfo& t : c.files_[0].tensors()) c.where_.emplace(t.name, 0);
    return c;
  }

  const std::string ipath = index_path.string();
  DuplicateKey dup;
  const json index = parse_rejecting_duplicates(read_text_file(ipath), ipath, "index", dup);
  if (!index.is_object()) throw_bad_input(ipath, "index is not a JSON object");
  if (dup.found) {
    if (dup.parent == "weight_map") throw_bad_input(ipath, "tensor listed twice in weight_map", in_quotes(dup.key));
    throw_bad_input(ipath, "duplicate key " + in_quotes(dup.key),
                    dup.parent.empty() ? "top level" : "in " + in_quotes(dup.parent));
  }
  if (index.contains("metadata") && !index.at("metadata").is_object() && !index.at("metadata").is_null()) {
    throw_bad_input(ipath, "\"metadata\" must be an object");
  }
  if (!index.contains("weight_map")) throw_bad_input(ipath, "missing \"weight_map\"");
  const json& wm = index.at("weight_map");
  if (!wm.is_object()) throw_bad_input(ipath, "\"weight_map\" must be an object");

  std::map<std::string, std::string> tensor_to_shard;
  std::map<std::string, size_t> shard_index;  // sorted shard names -> position in files_
  for (const auto& [name, shard] : wm.items()) {
    if (!shard.is_string()) throw_bad_input(ipath, "shard name must be a string", "tensor " + in_quotes(name));
    const std::string s = shard.get<std::string>();
    // Shards live next to the index; anything else could point outside the checkpoint.
    if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..") {
      throw_bad_input(ipath, "invalid shard file name " + in_quotes(s), "tensor " + in_quotes(name));
    }
    tensor_to_shard.emplace(name, s);
    shard_index.emplace(s, 0);
  }
  if (shard_index.empty()) throw_bad_input(ipath, "\"weight_map\" lists no tensors");

  for (auto& [shard, pos] : shard_index) {
    const fs::path sp = fs::path(dir) / shard;
    if (!fs::exists(sp, ec)) {
      throw_bad_input(sp.string(), "shard listed in model.safetensors.index.json is missing");
    }
    pos = c.files_.size();
    c.files_.push_back(SafetensorsFile::open(sp.string()));
  }
  // Every tensor in a shard must be the one the index points to, and vice versa.
  for (const auto& [name, shard] : tensor_to_shard) {
    const SafetensorsFile& f = c.files_[shard_index.at(shard)];
    if (!f.contains(name)) {
      throw_bad_input(f.path(), "tensor listed in model.safetensors.index.json is absent from this shard",
                      "tensor " + in_quotes(name));
    }
    c.where_.emplace(name, shard_index.at(shard));
  }
  for (const auto& [shard, pos] : shard_index) {
    const SafetensorsFile& f = c.files_[pos];
    for (const TensorInfo& t : f.tensors()) {
      const auto it = tensor_to_shard.find(t.name);
      if (it == tensor_to_shard.end()) {
        throw_bad_input(f.path(), "tensor not listed in model.safetensors.index.json", "tensor " + in_quotes(t.name));
      }
      if (it->second != shard) {
        throw_bad_input(f.path(), "tensor present in two shards",
                        "tensor " + in_quotes(t.name) + " is also in " + it->second + ", where the index places it");
      }
    }
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, pos] : where_) out.push_back(name);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return where_.count(name) != 0; }

const TensorInfo& Checkpoint::info(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw_bad_input(dir_, "no tensor named " + in_quotes(name) + " in the checkpoint");
  return files_[it->second].info(name);
}

std::span<const std::byte> Checkpoint::data(const std::string& name) const {
  info(name);  // the error for an absent name names the folder, not a shard
  return files_[where_.at(name)].data(name);
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw_bad_input(dir_, "no tensor named " + in_quotes(name) + " in the checkpoint");
  return files_[it->second].path();
}

}  // namespace qtrain::io
