// The checkpoint quantizer. Memory is what drives the design: a 7B model must quantize in about 2 GB
// beyond the mapped input, so nothing is ever held for a whole shard, let alone the whole model.
//  - Each output shard is written tensor by tensor straight from the mapped input. Its header needs
//    every tensor's byte size, and the quant_state JSON holds the double-quant offset (the mean of the
//    weight's absmax), whose text length varies; so a first pass computes only the per-block absmax of
//    each linear weight (one max per block, no codes) and its offset, which fixes the header exactly.
//  - The second pass quantizes one linear weight at a time and writes its tensors before the next:
//    the peak is one weight's packed nibbles and absmax (Llama-3-8B's largest, 14336 x 4096, is 29 MB
//    packed + 3.7 MB absmax), plus an aligned copy of that weight when the mapping is misaligned.
//  - Mapped input pages are dropped (MADV_DONTNEED) once a tensor is written, and large copies go in
//    64 MiB pieces, so resident memory does not grow with the input either: a 1 GB embedding table
//    passes through 64 MiB at a time.
// Everything is written into a temporary folder beside the output and renamed at the end.
#include "runtime/model/quantize_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/io/bnb4bit.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "runtime/model/nf4_weights.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;

std::string dquote(const std::string& s) { return "\"" + s + "\""; }
std::string errno_text() { return std::strerror(errno); }

constexpr size_t kCopyChunk = size_t{64} << 20;

// Drops the mapped pages lying wholly inside [p, p + n); the kernel reads them again if touched.
void release_pages(const std::byte* p, size_t n) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

std::span<const std::byte> as_bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
template <typename T>
std::span<const std::byte> as_bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(T)};
}

// Removes the folder unless committed.
class TempDir {
 public:
  explicit TempDir(const fs::path& out) {
    std::string pattern = (out.parent_path() / ("." + out.filename().string() + ".qtrain-tmp-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw_bad_input(out.string(), "cannot create a temporary folder: " + errno_text(), pattern);
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (committed_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void committed() { committed_ = true; }

 private:
  fs::path path_;
  bool committed_ = false;
};

class OutFile {
 public:
  explicit OutFile(const fs::path& p) : path_(p.string()) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) throw_bad_input(path_, "cannot create: " + errno_text());
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(std::span<const std::byte> bytes) {
    const char* p = reinterpret_cast<const char*>(bytes.data());
    size_t n = bytes.size();
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        throw_bad_input(path_, "write failed: " + errno_text());
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void finish() {
    if (::fsync(fd_) != 0) throw_bad_input(path_, "fsync failed: " + errno_text());
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw_bad_input(path_, "close failed: " + errno_text());
  }

 private:
  std::string path_;
  int fd_ = -1;
};

void write_text_file(const fs::path& p, const std::string& text) {
  OutFile f(p);
  f.write(as_bytes_of(text));
  f.finish();
}

// Where the bytes of one output tensor come from.
enum class Source { Copy, Packed, Absmax, NestedAbsmax, Inline };

struct OutTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  Source source = Source::Copy;
  std::string input_name;  // Copy: the tensor copied; Packed/Absmax/NestedAbsmax: the linear weight
  std::string inline_bytes;
  float offset = 0.0f;  // Packed with double quant: the offset the header promised
};

struct ShardPlan {
  const io::SafetensorsFile* input = nullptr;
  std::string file_name;
  std::vector<OutTensor> tensors;
};

std::string float_table_bytes(const float* v, size_t n) {
  return std::string(reinterpret_cast<const char*>(v), n * sizeof(float));
}

// The tensors standing for one linear weight, in bitsandbytes' layout. Pass 1 of the design above:
// only the absmax (and from it the offset) is computed here.
void plan_linear(const io::SafetensorsFile& in, const io::TensorInfo& info, const QuantizeOptions& opt,
                 const std::string& nf4_table, const std::string& dynamic_table, std::vector<OutTensor>& out) {
  const size_t n = info.numel();
  const size_t nblocks = qk::nf4::num_blocks(n, static_cast<size_t>(opt.blocksize));
  const auto bytes = in.data(info.name);
  Nf4Weight shape_only;
  shape_only.shape = info.shape;
  shape_only.blocksize = opt.blocksize;
  shape_only.source_dtype = info.dtype;
  shape_only.double_quant = opt.double_quant;
  if (opt.double_quant) {
    const std::vector<float> absmax = nf4_block_absmax(info.dtype, bytes, n, opt.blocksize);
    shape_only.offset = qk::cpu::nf4_absmax_offset(absmax.data(), absmax.size());
    release_pages(bytes.data(), bytes.size());
  }
  const auto names = io::bnb4bit_tensor_names(info.name, opt.double_quant);
  const auto packed = static_cast<int64_t>(qk::nf4::packed_bytes(n));
  const auto nb = static_cast<int64_t>(nblocks);
  out.push_back({names[0], DType::U8, {packed, 1}, static_cast<uint64_t>(packed), Source::Packed, info.name, {},
                 shape_only.offset});
  if (opt.double_quant)
    out.push_back({names[1], DType::U8, {nb}, static_cast<uint64_t>(nb), Source::Absmax, info.name, {}, 0.0f});
  else
    out.push_back({names[1], DType::F32, {nb}, static_cast<uint64_t>(nb) * 4, Source::Absmax, info.name, {}, 0.0f});
  out.push_back({names[2], DType::F32, {16}, 64, Source::Inline, {}, nf4_table, 0.0f});
  if (opt.double_quant) {
    const auto nn = static_cast<int64_t>(qk::nf4::num_blocks(nblocks, qk::nf4::kNestedBlocksize));
    out.push_back({names[3], DType::F32, {nn}, static_cast<uint64_t>(nn) * 4, Source::NestedAbsmax, info.name, {},
                   0.0f});
    out.push_back({names[4], DType::F32, {256}, 1024, Source::Inline, {}, dynamic_table, 0.0f});
  }
  std::string state = io::bnb4bit_quant_state_json(shape_only.quant_state());
  const auto len = static_cast<int64_t>(state.size());
  out.push_back({names.back(), DType::U8, {len}, static_cast<uint64_t>(len), Source::Inline, {}, std::move(state),
                 0.0f});
}

std::string safetensors_header(const ShardPlan& plan) {
  // The same header write_safetensors produces (compact JSON, spaces to a multiple of 8).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!plan.input->metadata().empty()) header["__metadata__"] = plan.input->metadata();
  uint64_t offset = 0;
  for (const OutTensor& t : plan.tensors) {
    header[t.name] = {{"dtype", dtype_safetensors_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

// Pass 2: one shard, tensor by tensor.
void write_shard(const ShardPlan& plan, const fs::path& path, const QuantizeOptions& opt, QuantizeSummary& summary) {
  OutFile out(path);
  out.write(as_bytes_of(safetensors_header(plan)));
  Nf4Weight current;  // the linear weight whose tensors are being written
  for (const OutTensor& t : plan.tensors) {
    switch (t.source) {
      case Source::Copy: {
        const auto bytes = plan.input->data(t.input_name);
        for (size_t done = 0; done < bytes.size(); done += kCopyChunk) {
          const auto piece = bytes.subspan(done, std::min(kCopyChunk, bytes.size() - done));
          out.write(piece);
          release_pages(piece.data(), piece.size());
        }
        ++summary.kept_tensors;
        break;
      }
      case Source::Packed: {
        const io::TensorInfo& info = plan.input->info(t.input_name);
        const auto bytes = plan.input->data(t.input_name);
        current = Nf4Weight{};  // free the previous weight before quantizing the next
        current = quantize_nf4(info.dtype, bytes, info.shape, opt.blocksize, opt.double_quant);
        release_pages(bytes.data(), bytes.size());
        if (opt.double_quant && qk::f32_bits(current.offset) != qk::f32_bits(t.offset))
          throw_internal("NF4 double-quant offset of " + t.input_name + " differs between the two passes");
        out.write(as_bytes_of(current.packed));
        ++summary.quantized_tensors;
        summary.quantized_params += static_cast<int64_t>(current.numel());
        summary.quantized_storage_bytes += current.storage_bytes();
        break;
      }
      case Source::Absmax:
        out.write(opt.double_quant ? as_bytes_of(current.absmax_q) : as_bytes_of(current.absmax));
        break;
      case Source::NestedAbsmax: out.write(as_bytes_of(current.nested_absmax)); break;
      case Source::Inline: out.write(as_bytes_of(t.inline_bytes)); break;
    }
    summary.output_bytes += t.nbytes;
  }
  out.finish();
}

bool is_weight_file(const fs::path& p) {
  static const char* const exts[] = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"};
  const std::string ext = p.extension().string();
  for (const char* e : exts)
    if (ext == e) return true;
  return false;
}

// transformers' BitsAndBytesConfig.to_dict(), as save_pretrained writes it into config.json.
nlohmann::json quantization_config_json(const QuantizeOptions& opt) {
  return {{"_load_in_4bit", true},
          {"_load_in_8bit", false},
          {"bnb_4bit_compute_dtype", "bfloat16"},
          {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", "nf4"},
          {"bnb_4bit_use_double_quant", opt.double_quant},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", nullptr},
          {"llm_int8_threshold", 6.0},
          {"load_in_4bit", true},
          {"load_in_8bit", false},
          {"quant_method", "bitsandbytes"}};
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw_bad_input(p.string(), "cannot read: " + errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void check_input(const std::string& in_dir, const io::ModelConfig& config, const io::Checkpoint& ckpt) {
  const std::string config_path = (fs::path(in_dir) / "config.json").string();
  if (config.quantization)
    throw_bad_input(config_path,
                    "the model is already quantized (config.json has a quantization_config); quantize needs a "
                    "floating-point model");
  for (const std::string& name : ckpt.names())
    if (name.find(".quant_state.bitsandbytes__") != std::string::npos || name.ends_with(".absmax"))
      throw_bad_input(ckpt.file_of(name), "the model is already quantized (bitsandbytes 4-bit tensors present)",
                      "tensor " + dquote(name));
  const io::LayoutReport report = io::check_llama_layout(config, ckpt);
  for (const io::LayoutProblem& p : report.problems) {
    if (p.kind == io::LayoutProblem::Kind::Unexpected) continue;
    if (p.kind == io::LayoutProblem::Kind::Missing)
      throw_bad_input(in_dir, "tensor " + p.tensor + " is missing (expected " + p.detail + ")");
    throw_bad_input(p.file, "tensor " + p.tensor + " has " + p.detail);
  }
}

}  // namespace

QuantizeSummary quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                    const QuantizeOptions& options) {
  if (!qk::nf4::valid_blocksize(options.blocksize))
    throw_bad_input("quantize", "--blocksize must be a power of two in 32..4096", std::to_string(options.blocksize));
  std::error_code ec;
  if (!fs::is_directory(in_dir, ec)) throw_bad_input(in_dir, "not a directory");
  const fs::path config_path = fs::path(in_dir) / "config.json";
  if (!fs::exists(config_path, ec)) throw_bad_input(config_path.string(), "file not found");
  const io::ModelConfig config = io::load_model_config(config_path.string());
  const io::Checkpoint ckpt = io::Checkpoint::open(in_dir);
  check_input(in_dir, config, ckpt);

  const fs::path out = fs::absolute(fs::path(out_dir)).lexically_normal();
  if (out.filename().empty()) throw_bad_input(out_dir, "not a usable output folder name");
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) throw_bad_input(out_dir, "exists and is not a folder");
    if (!fs::is_empty(out, ec)) throw_bad_input(out_dir, "exists and is not empty; refusing to overwrite it");
  }
  fs::create_directories(out.parent_path(), ec);
  if (ec) throw_bad_input(out.parent_path().string(), "cannot create the folder: " + ec.message());

  std::map<std::string, io::TensorRole> roles;
  for (const io::ExpectedTensor& e : io::llama_tensor_layout(config)) roles.emplace(e.name, e.role);

  float code[256];
  qk::cpu::nf4_dynamic_code(code);
  float nf4[16];
  for (unsigned i = 0; i < 16; ++i) nf4[i] = qk::nf4::code_value(i);
  const std::string nf4_table = float_table_bytes(nf4, 16), dynamic_table = float_table_bytes(code, 256);

  QuantizeSummary summary;
  TempDir tmp(out);
  nlohmann::json weight_map = nlohmann::json::object();
  for (const io::SafetensorsFile& in : ckpt.files()) {
    ShardPlan plan;
    plan.input = &in;
    plan.file_name = fs::path(in.path()).filename().string();
    for (const io::TensorInfo& info : in.tensors()) {  // offset order, as the input lays them out
      summary.input_bytes += info.nbytes();
      const auto role = roles.find(info.name);
      if (role != roles.end() && role->second == io::TensorRole::Linear) {
        plan_linear(in, info, options, nf4_table, dynamic_table, plan.tensors);
      } else {
        plan.tensors.push_back({info.name, info.dtype, info.shape, info.nbytes(), Source::Copy, info.name, {}, 0.0f});
      }
    }
    for (const OutTensor& t : plan.tensors) weight_map[t.name] = plan.file_name;
    write_shard(plan, tmp.path() / plan.file_name, options, summary);
    // Read back the header as any loader would: a writer bug must not produce a folder.
    (void)io::SafetensorsFile::open((tmp.path() / plan.file_name).string());
    summary.files.push_back(plan.file_name);
  }

  if (fs::exists(fs::path(in_dir) / "model.safetensors.index.json", ec)) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", summary.output_bytes}};
    index["weight_map"] = weight_map;
    write_text_file(tmp.path() / "model.safetensors.index.json", index.dump(2) + "\n");
  }

  nlohmann::json config_json;
  try {
    config_json = nlohmann::json::parse(read_text(config_path));
  } catch (const nlohmann::json::parse_error&) {
    throw_bad_input(config_path.string(), "invalid JSON");  // load_model_config accepted it; unreachable
  }
  config_json["quantization_config"] = quantization_config_json(options);
  write_text_file(tmp.path() / "config.json", config_json.dump(2) + "\n");

  for (const auto& entry : fs::directory_iterator(in_dir)) {
    const fs::path& p = entry.path();
    const std::string name = p.filename().string();
    if (!entry.is_regular_file() || name.starts_with(".") || name == "config.json" ||
        name == "model.safetensors.index.json" || is_weight_file(p))
      continue;
    fs::copy_file(p, tmp.path() / name, ec);
    if (ec) throw_bad_input(p.string(), "cannot copy: " + ec.message());
    summary.copied_files.push_back(name);
  }
  std::sort(summary.copied_files.begin(), summary.copied_files.end());

  // mkdtemp makes the folder private (0700); the result is an ordinary model folder.
  fs::permissions(tmp.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec, ec);
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty, checked above
  if (::rename(tmp.path().c_str(), out.c_str()) != 0)
    throw_bad_input(out_dir, "cannot rename the temporary folder into place: " + errno_text(), tmp.path().string());
  tmp.committed();
  return summary;
}

}  // namespace qtrain::model
