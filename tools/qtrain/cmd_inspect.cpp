// `qtrain inspect <dir>`: what a model folder holds (config, tensors, sizes) and whether it is a
// complete model of its architecture. Exit code 2 when it is not. A bitsandbytes 4-bit weight is shown
// as one nf4 row (its shape from the quant state, its companion tensors folded in), each one checked.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "csrc/core/error.h"
#include "csrc/io/bnb4bit.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/nf4_weights.h"
#include "tools/qtrain/commands.h"

namespace qtrain::tools {
namespace {

namespace fs = std::filesystem;

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(n) / (1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(n) / (1ull << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024.0);
  return buf;
}

std::string list_string(const std::vector<int64_t>& v) {
  if (v.empty()) return "none";
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s;
}

void print_config(const io::ModelConfig& c) {
  std::printf("architecture   %s (model_type %s)\n", io::architecture_name(c.architecture), c.model_type.c_str());
  std::printf("layers         %lld\n", static_cast<long long>(c.num_hidden_layers));
  std::printf("hidden         %lld (intermediate %lld, act %s)\n", static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.intermediate_size), c.hidden_act.c_str());
  std::printf("heads          %lld (kv heads %lld, head dim %lld)\n", static_cast<long long>(c.num_attention_heads),
              static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.head_dim));
  std::printf("vocab          %lld (bos %s, eos %s, pad %s)\n", static_cast<long long>(c.vocab_size),
              c.bos_token_id ? std::to_string(*c.bos_token_id).c_str() : "none", list_string(c.eos_token_ids).c_str(),
              c.pad_token_id ? std::to_string(*c.pad_token_id).c_str() : "none");
  std::printf("positions      %lld (rope theta %g, scaling %s", static_cast<long long>(c.max_position_embeddings),
              c.rope_theta, c.rope_scaling.type.c_str());
  if (c.rope_scaling.type != "default") std::printf(" x%g", c.rope_scaling.factor);
  std::printf(")\n");
  std::printf("rms_norm_eps   %g\n", c.rms_norm_eps);
  std::printf("tied embedding %s\n", c.tie_word_embeddings ? "yes" : "no");
  std::printf("torch_dtype    %s\n", c.torch_dtype.c_str());
  if (c.quantization)
    std::printf("quantization   %s%s, double quant %s, compute %s\n", c.quantization->load_in_4bit ? "4-bit " : "",
                c.quantization->quant_type.c_str(), c.quantization->use_double_quant ? "yes" : "no",
                c.quantization->compute_dtype.c_str());
}

const char* problem_kind(io::LayoutProblem::Kind k) {
  switch (k) {
    case io::LayoutProblem::Kind::Missing: return "missing";
    case io::LayoutProblem::Kind::WrongShape: return "wrong shape";
    case io::LayoutProblem::Kind::WrongDtype: return "wrong dtype";
    case io::LayoutProblem::Kind::Unexpected: return "unexpected";
  }
  return "?";
}

int inspect(const std::string& dir) {
  if (!fs::is_directory(dir)) throw_bad_input(dir, "not a directory");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) throw_bad_input(config_path, "file not found");
  const io::ModelConfig config = io::load_model_config(config_path);
  const io::Checkpoint ckpt = io::Checkpoint::open(dir);

  std::printf("model          %s\n", dir.c_str());
  print_config(config);
  std::printf("parameters     %lld (from the config)\n", static_cast<long long>(io::llama_parameter_count(config)));

  // The architecture's order (layer by layer) reads better than sorted names; extras go last.
  std::vector<std::string> names;
  std::set<std::string> listed;
  for (const auto& e : io::llama_tensor_layout(config))
    if (ckpt.contains(e.name) && listed.insert(e.name).second) names.push_back(e.name);
  for (const auto& n : ckpt.names())
    if (listed.insert(n).second) names.push_back(n);
  // 4-bit weights: checked here (sizes, quant state, code tables) so a damaged one fails inspect.
  struct Nf4Row {
    io::Bnb4bitTensors t;
    uint64_t bytes = 0;  // all of its tensors
  };
  std::map<std::string, Nf4Row> nf4;
  std::set<std::string> folded;  // companion tensors shown inside their weight's row
  uint64_t nf4_params = 0, nf4_storage = 0;
  std::set<int64_t> blocksizes;
  std::set<bool> nested;
  for (const auto& e : io::llama_tensor_layout(config)) {
    if (e.role != io::TensorRole::Linear || !ckpt.contains(e.name) || !io::is_bnb4bit_weight(ckpt, e.name)) continue;
    Nf4Row row{io::read_bnb4bit_tensors(ckpt, e.name, e.shape), 0};
    model::check_nf4_tables(ckpt, row.t);
    for (const auto& part : io::bnb4bit_tensor_names(e.name, row.t.state.nested)) {
      row.bytes += ckpt.info(part).nbytes();
      if (part != e.name) folded.insert(part);
    }
    nf4_params += row.t.numel;
    nf4_storage += row.t.packed.size() + row.t.absmax.size() + row.t.nested_absmax.size();
    blocksizes.insert(row.t.state.blocksize);
    nested.insert(row.t.state.nested);
    nf4.emplace(e.name, std::move(row));
  }
  std::erase_if(names, [&](const std::string& n) { return folded.count(n) != 0; });

  std::map<std::string, size_t> per_dtype;
  uint64_t total = 0;
  size_t name_width = 4;
  for (const auto& n : names) {
    const auto& info = ckpt.info(n);
    const auto q = nf4.find(n);
    ++per_dtype[q != nf4.end() ? "nf4" : dtype_name(info.dtype)];
    total += q != nf4.end() ? q->second.bytes : info.nbytes();
    name_width = std::max(name_width, n.size());
  }
  std::string dtypes;
  for (const auto& [name, count] : per_dtype)
    dtypes += (dtypes.empty() ? "" : ", ") + name + " x" + std::to_string(count);
  std::printf("files          %zu safetensors file%s\n", ckpt.files().size(), ckpt.files().size() == 1 ? "" : "s");
  std::printf("tensors        %zu (%s)\n", names.size(), dtypes.empty() ? "none" : dtypes.c_str());
  std::printf("size           %llu bytes (%s)\n", static_cast<unsigned long long>(total), human_bytes(total).c_str());
  std::string tokenizer;
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(fs::path(dir) / f)) tokenizer += (tokenizer.empty() ? "" : ", ") + std::string(f);
  std::printf("tokenizer      %s\n", tokenizer.empty() ? "none found" : tokenizer.c_str());
  if (!nf4.empty()) {
    std::string bs;
    for (int64_t b : blocksizes) bs += (bs.empty() ? "" : "/") + std::to_string(b);
    // Bits of the data that grows with the weight; the shared code tables and quant_state JSON are
    // constants per tensor and left out (4 + 32/64 = 4.5 plain, 4.127 double-quantized at 64).
    std::printf("nf4            %zu linear weights, blocksize %s, double quant %s, %.3f bits/param\n", nf4.size(),
                bs.c_str(), nested.size() > 1 ? "mixed" : (*nested.begin() ? "yes" : "no"),
                8.0 * static_cast<double>(nf4_storage) / static_cast<double>(nf4_params));
  }
  std::printf("\n");

  const bool sharded = ckpt.files().size() > 1;
  std::printf("%-*s  %-16s  %-5s  %12s%s\n", static_cast<int>(name_width), "name", "shape", "dtype", "bytes",
              sharded ? "  file" : "");
  for (const auto& n : names) {
    const auto& info = ckpt.info(n);
    const auto q = nf4.find(n);
    if (q == nf4.end()) {
      std::printf("%-*s  %-16s  %-5s  %12zu", static_cast<int>(name_width), n.c_str(),
                  io::shape_string(info.shape).c_str(), dtype_name(info.dtype), info.nbytes());
    } else {
      std::printf("%-*s  %-16s  %-5s  %12llu", static_cast<int>(name_width), n.c_str(),
                  io::shape_string(q->second.t.state.shape).c_str(), "nf4",
                  static_cast<unsigned long long>(q->second.bytes));
    }
    if (sharded) std::printf("  %s", fs::path(ckpt.file_of(n)).filename().c_str());
    if (q != nf4.end())
      std::printf("  blocksize %lld, double quant %s", static_cast<long long>(q->second.t.state.blocksize),
                  q->second.t.state.nested ? "yes" : "no");
    std::printf("\n");
  }

  const io::LayoutReport report = io::check_llama_layout(config, ckpt);
  std::printf("\n");
  for (const auto& p : report.problems)
    std::printf("%-12s %s%s%s: %s\n", problem_kind(p.kind), p.tensor.c_str(), p.file.empty() ? "" : " in ",
                p.file.empty() ? "" : fs::path(p.file).filename().c_str(), p.detail.c_str());
  if (report.valid()) {
    std::printf("check          ok: every tensor of %s present with the expected shape%s\n",
                io::architecture_name(config.architecture),
                report.problems.empty() ? "" : " (unexpected tensors ignored)");
    return 0;
  }
  size_t bad = 0;
  const io::LayoutProblem* first = nullptr;
  for (const auto& p : report.problems)
    if (p.kind != io::LayoutProblem::Kind::Unexpected) {
      ++bad;
      if (!first) first = &p;
    }
  const std::string more = bad > 1 ? "; " + std::to_string(bad - 1) + " more problem(s) listed above" : "";
  if (first->kind == io::LayoutProblem::Kind::Missing)
    throw_bad_input(dir, "tensor " + first->tensor + " is missing (expected " + first->detail + ")" + more);
  throw_bad_input(first->file, "tensor " + first->tensor + " has " + first->detail + more);
}

}  // namespace

Command add_inspect(CLI::App& root) {
  auto dir = std::make_shared<std::string>();
  CLI::App* app = root.add_subcommand("inspect", "Summarize a model folder and check that it is complete");
  app->add_option("dir", *dir, "Model folder (config.json, safetensors, tokenizer)")->required();
  return {app, [dir]() { return inspect(*dir); }};
}

}  // namespace qtrain::tools
