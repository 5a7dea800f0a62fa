// `qtrain quantize` in process: make-tiny -> quantize -> load -> dequantize must equal the qk::cpu
// quantize -> dequantize of the original bf16 weights exactly; everything else is copied byte for
// byte; shards keep their tensors; bad or already quantized input is refused and leaves nothing.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "csrc/io/bnb4bit.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "csrc/io/tiny_model.h"
#include "runtime/model/nf4_weights.h"
#include "runtime/model/quantize_checkpoint.h"
#include "unit/io/io_test_util.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;
using io::testing::expect_bad_input;
using io::testing::ScratchDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool bits_differ(float a, float b) { return std::bit_cast<uint32_t>(a) != std::bit_cast<uint32_t>(b); }

std::string bytes_of(const io::Checkpoint& c, const std::string& name) {
  const auto d = c.data(name);
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

// Checks a quantized folder against its source, weight by weight.
void expect_round_trip(const std::string& src, const std::string& dst, const QuantizeOptions& opt) {
  const io::ModelConfig in_cfg = io::load_model_config(src);
  const io::ModelConfig out_cfg = io::load_model_config(dst);
  ASSERT_TRUE(out_cfg.quantization.has_value());
  EXPECT_TRUE(out_cfg.quantization->load_in_4bit);
  EXPECT_EQ(out_cfg.quantization->quant_type, "nf4");
  EXPECT_EQ(out_cfg.quantization->use_double_quant, opt.double_quant);
  EXPECT_EQ(out_cfg.quantization->compute_dtype, "bfloat16");
  io::ModelConfig stripped = out_cfg;
  stripped.quantization.reset();
  EXPECT_EQ(stripped, in_cfg);

  const io::Checkpoint in = io::Checkpoint::open(src);
  const io::Checkpoint out = io::Checkpoint::open(dst);
  const io::LayoutReport report = io::check_llama_layout(out_cfg, out);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front().tensor << ": " << report.problems.front().detail;

  const auto weights = load_nf4_linear_weights(out_cfg, out);
  size_t linear = 0;
  for (const io::ExpectedTensor& e : io::llama_tensor_layout(in_cfg)) {
    if (e.role != io::TensorRole::Linear) {
      EXPECT_EQ(out.info(e.name).dtype, in.info(e.name).dtype) << e.name;
      EXPECT_EQ(bytes_of(out, e.name), bytes_of(in, e.name)) << e.name << " not copied byte for byte";
      continue;
    }
    ++linear;
    ASSERT_TRUE(weights.count(e.name)) << e.name;
    const Nf4Weight& got = weights.at(e.name);
    const Nf4Weight want = quantize_nf4(in.info(e.name).dtype, in.data(e.name), e.shape, opt.blocksize, opt.double_quant);
    EXPECT_EQ(got.shape, e.shape);
    EXPECT_EQ(got.blocksize, opt.blocksize);
    EXPECT_EQ(got.double_quant, opt.double_quant);
    EXPECT_EQ(got.packed, want.packed) << e.name;
    const auto a = dequantize_nf4_f32(got), b = dequantize_nf4_f32(want);
    ASSERT_EQ(a.size(), b.size());
    size_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += bits_differ(a[i], b[i]);
    EXPECT_EQ(differ, 0u) << e.name;
    // And the values are a faithful 4-bit copy of the original.
    const auto orig = in.data(e.name);
    double err = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, orig.data() + 2 * i, 2);
      const float x = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
      err += (a[i] - x) * (a[i] - x);
      norm += x * x;
    }
    EXPECT_LT(std::sqrt(err / norm), 0.15) << e.name;
  }
  EXPECT_EQ(weights.size(), linear);
  EXPECT_EQ(slurp(fs::path(dst) / "tokenizer.model"), slurp(fs::path(src) / "tokenizer.model"));
  EXPECT_EQ(slurp(fs::path(dst) / "tokenizer_config.json"), slurp(fs::path(src) / "tokenizer_config.json"));
}

TEST(Quantize, RoundTripDoubleQuant) {
  ScratchDir s;
  io::TinyModelOptions opt;
  opt.hidden = 128;
  opt.intermediate = 200;  // 200 x 128 = 400 blocks: two nested blocks, the second partial
  opt.seed = 11;
  io::write_tiny_model(s.file("tiny"), opt);
  const QuantizeSummary sum = quantize_checkpoint(s.file("tiny"), s.file("q"), {});
  EXPECT_EQ(sum.quantized_tensors, 14u);
  EXPECT_EQ(sum.kept_tensors, 7u);
  EXPECT_NEAR(sum.bits_per_param(), 4.127, 0.005);
  EXPECT_EQ(sum.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(s.file("q") + "/model.safetensors.index.json"));
  expect_round_trip(s.file("tiny"), s.file("q"), {});
}

TEST(Quantize, RoundTripPlainAbsmaxQwen2OddBlocks) {
  ScratchDir s;
  io::TinyModelOptions opt;
  opt.arch = io::Architecture::Qwen2;  // q/k/v biases stay bf16
  opt.hidden = 96;
  opt.heads = 6;
  opt.kv_heads = 2;
  opt.intermediate = 161;  // 96 x 161: a partial last block
  io::write_tiny_model(s.file("tiny"), opt);
  QuantizeOptions q;
  q.blocksize = 128;
  q.double_quant = false;
  const QuantizeSummary sum = quantize_checkpoint(s.file("tiny"), s.file("q"), q);
  EXPECT_NEAR(sum.bits_per_param(), 4.25, 0.01);
  expect_round_trip(s.file("tiny"), s.file("q"), q);
  const io::Checkpoint out = io::Checkpoint::open(s.file("q"));
  EXPECT_EQ(out.info("model.layers.0.mlp.down_proj.weight.absmax").dtype, DType::F32);
  EXPECT_FALSE(out.contains("model.layers.0.mlp.down_proj.weight.nested_absmax"));
  EXPECT_EQ(out.info("model.layers.0.self_attn.q_proj.bias").dtype, DType::BF16);
}

TEST(Quantize, QuantStateJsonInFormatsOrder) {
  ScratchDir s;
  io::write_tiny_model(s.file("tiny"), {});
  quantize_checkpoint(s.file("tiny"), s.file("q"), {});
  const io::Checkpoint out = io::Checkpoint::open(s.file("q"));
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const std::string text = bytes_of(out, name + io::kBnbQuantStateNf4);
  size_t last = 0;
  for (const char* key : {"\"quant_type\": \"nf4\"", "\"blocksize\": 64", "\"dtype\": \"bfloat16\"",
                          "\"shape\": [64, 176]", "\"nested_blocksize\": 256", "\"nested_dtype\": \"float32\"",
                          "\"nested_offset\": "}) {
    const size_t at = text.find(key);
    ASSERT_NE(at, std::string::npos) << key << " in " << text;
    EXPECT_GT(at, last) << key << " out of order in " << text;
    last = at;
  }
  const Nf4Weight w = load_nf4_weight(out, name, {64, 176});
  EXPECT_EQ(text, io::bnb4bit_quant_state_json(w.quant_state()));
  // The offset in the JSON is the mean of the absmax, read back exactly.
  const Nf4Weight fresh = quantize_nf4(DType::BF16, io::Checkpoint::open(s.file("tiny")).data(name), {64, 176}, 64, true);
  EXPECT_EQ(w.offset, fresh.offset);
  EXPECT_EQ(w.nested_absmax, fresh.nested_absmax);
  EXPECT_EQ(w.absmax_q, fresh.absmax_q);
}

TEST(Quantize, KeepsTheSharding) {
  ScratchDir s;
  io::TinyModelOptions opt;
  opt.shards = 3;
  opt.layers = 3;
  io::write_tiny_model(s.file("tiny"), opt);
  const QuantizeSummary sum = quantize_checkpoint(s.file("tiny"), s.file("q"), {});
  ASSERT_EQ(sum.files.size(), 3u);
  const io::Checkpoint in = io::Checkpoint::open(s.file("tiny"));
  const io::Checkpoint out = io::Checkpoint::open(s.file("q"));
  for (const std::string& name : in.names()) {
    const std::string in_file = fs::path(in.file_of(name)).filename().string();
    const bool linear = out.contains(name + io::kBnbQuantStateNf4);
    for (const std::string& n : linear ? io::bnb4bit_tensor_names(name, true) : std::vector<std::string>{name})
      EXPECT_EQ(fs::path(out.file_of(n)).filename().string(), in_file) << n;
  }
  const auto index = nlohmann::json::parse(slurp(fs::path(s.file("q")) / "model.safetensors.index.json"));
  uint64_t total = 0;
  for (const std::string& n : out.names()) total += out.info(n).nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(sum.output_bytes, total);
  EXPECT_EQ(index["weight_map"].size(), out.names().size());
  expect_round_trip(s.file("tiny"), s.file("q"), {});
}

bool no_temp_left(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("qtrain-tmp") != std::string::npos) return false;
  return true;
}

TEST(Quantize, RefusesAndLeavesNothing) {
  ScratchDir s;
  io::write_tiny_model(s.file("tiny"), {});
  quantize_checkpoint(s.file("tiny"), s.file("q"), {});
  // Already quantized.
  expect_bad_input([&] { quantize_checkpoint(s.file("q"), s.file("q2"), {}); }, s.file("q") + "/config.json",
                   "already quantized");
  EXPECT_FALSE(fs::exists(s.file("q2")));
  // Quantized tensors under a config without quantization_config.
  fs::copy(s.file("q"), s.file("q_noconfig"));
  fs::copy_file(s.file("tiny") + "/config.json", s.file("q_noconfig") + "/config.json",
                fs::copy_options::overwrite_existing);
  expect_bad_input([&] { quantize_checkpoint(s.file("q_noconfig"), s.file("q3"), {}); },
                   s.file("q_noconfig") + "/model.safetensors", "already quantized");
  // An existing, non-empty output.
  expect_bad_input([&] { quantize_checkpoint(s.file("tiny"), s.file("q"), {}); }, s.file("q"), "not empty");
  // A bad blocksize.
  QuantizeOptions bad;
  bad.blocksize = 48;
  expect_bad_input([&] { quantize_checkpoint(s.file("tiny"), s.file("q4"), bad); }, "quantize", "--blocksize");
  // An invalid model (a missing tensor) is refused before anything is written.
  fs::copy(s.file("tiny"), s.file("broken"));
  io::TinyModelOptions three;
  three.layers = 3;
  io::write_tiny_model(s.file("three"), three);
  fs::copy_file(s.file("three") + "/config.json", s.file("broken") + "/config.json", fs::copy_options::overwrite_existing);
  expect_bad_input([&] { quantize_checkpoint(s.file("broken"), s.file("q5"), {}); }, s.file("broken"),
                   "model.layers.2.input_layernorm.weight is missing");
  for (const char* n : {"q3", "q4", "q5"}) EXPECT_FALSE(fs::exists(s.file(n))) << n;
  EXPECT_TRUE(no_temp_left(s.str()));
  // An empty output folder is fine.
  fs::create_directories(s.file("empty"));
  EXPECT_NO_THROW(quantize_checkpoint(s.file("tiny"), s.file("empty"), {}));
  EXPECT_TRUE(fs::exists(s.file("empty") + "/model.safetensors"));
  EXPECT_TRUE(no_temp_left(s.str()));
}

}  // namespace
}  // namespace qtrain::model
