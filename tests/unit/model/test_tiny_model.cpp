// The tiny-model writer: a complete, loadable, deterministic HF folder.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/core/error.h"
#include "csrc/core/half.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "csrc/io/tiny_model.h"

namespace qtrain::io {
namespace {

namespace fs = std::filesystem;

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class TinyModel : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("qtrain_tiny_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string dir(const std::string& name) const { return (root_ / name).string(); }
  fs::path root_;
};

TEST_F(TinyModel, CompleteAndLoadable) {
  TinyModelOptions opt;
  opt.seed = 3;
  write_tiny_model(dir("m"), opt);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir("m")) / f)) << f;

  const ModelConfig c = load_model_config(dir("m") + "/config.json");
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.intermediate_size, 176);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.torch_dtype, "bfloat16");

  const Checkpoint ck = Checkpoint::open(dir("m"));
  const LayoutReport r = check_llama_layout(c, ck);
  EXPECT_TRUE(r.valid());
  EXPECT_TRUE(r.problems.empty());
  EXPECT_EQ(ck.names().size(), llama_tensor_layout(c).size());

  // Norm weights are exactly 1; the rest look like normal(0, 0.02).
  for (const auto& name : ck.names()) {
    const auto& info = ck.info(name);
    ASSERT_EQ(info.dtype, DType::BF16);
    const auto bytes = ck.data(name);
    const auto* v = reinterpret_cast<const uint16_t*>(bytes.data());
    const size_t n = bytes.size() / 2;
    if (name.find("norm") != std::string::npos) {
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(bf16_bits_to_f32(v[i]), 1.0f) << name;
      continue;
    }
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; ++i) {
      const double x = bf16_bits_to_f32(v[i]);
      s1 += x;
      s2 += x * x;
    }
    const double mean = s1 / static_cast<double>(n), sd = std::sqrt(s2 / static_cast<double>(n) - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.003) << name;
    EXPECT_NEAR(sd, kTinyInitStd, 0.002) << name;
  }

  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(dir("m") + "/tokenizer.model").ok());
  EXPECT_EQ(sp.GetPieceSize(), 512);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);

  const auto tc = nlohmann::json::parse(read_all(fs::path(dir("m")) / "tokenizer_config.json"));
  EXPECT_EQ(tc.at("bos_token"), "<s>");
  EXPECT_EQ(tc.at("eos_token"), "</s>");
  EXPECT_EQ(tc.at("unk_token"), "<unk>");
  EXPECT_EQ(tc.at("add_bos_token"), true);
  EXPECT_EQ(tc.at("add_eos_token"), false);
  EXPECT_EQ(tc.at("tokenizer_class"), "LlamaTokenizer");
  EXPECT_EQ(tc.at("model_max_length"), 512);
}

TEST_F(TinyModel, SameSeedSameBytesOtherSeedOtherWeights) {
  TinyModelOptions opt;
  opt.seed = 7;
  write_tiny_model(dir("a"), opt);
  write_tiny_model(dir("b"), opt);
  opt.seed = 8;
  write_tiny_model(dir("c"), opt);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_EQ(read_all(fs::path(dir("a")) / f), read_all(fs::path(dir("b")) / f)) << f;
  EXPECT_NE(read_all(fs::path(dir("a")) / "model.safetensors"), read_all(fs::path(dir("c")) / "model.safetensors"));
  EXPECT_EQ(read_all(fs::path(dir("a")) / "tokenizer.model"), read_all(fs::path(dir("c")) / "tokenizer.model"));
}

TEST_F(TinyModel, Qwen2TiedAndSharded) {
  TinyModelOptions opt;
  opt.arch = Architecture::Qwen2;
  opt.tie_embeddings = true;
  opt.shards = 3;
  opt.layers = 3;
  write_tiny_model(dir("q"), opt);
  EXPECT_TRUE(fs::exists(fs::path(dir("q")) / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(fs::path(dir("q")) / "model.safetensors"));
  const ModelConfig c = load_model_config(dir("q") + "/config.json");
  EXPECT_EQ(c.architecture, Architecture::Qwen2);
  EXPECT_TRUE(c.tie_word_embeddings);
  const Checkpoint ck = Checkpoint::open(dir("q"));
  EXPECT_EQ(ck.files().size(), 3u);
  EXPECT_TRUE(ck.contains("model.layers.2.self_attn.k_proj.bias"));
  EXPECT_FALSE(ck.contains("lm_head.weight"));
  EXPECT_TRUE(check_llama_layout(c, ck).problems.empty());

  const auto index = nlohmann::json::parse(read_all(fs::path(dir("q")) / "model.safetensors.index.json"));
  EXPECT_EQ(index.at("weight_map").size(), ck.names().size());
  uint64_t total = 0;
  for (const auto& n : ck.names()) total += ck.info(n).nbytes();
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
}

TEST_F(TinyModel, LayoutCheckFindsProblems) {
  TinyModelOptions opt;
  write_tiny_model(dir("m"), opt);
  const Checkpoint ck = Checkpoint::open(dir("m"));
  ModelConfig c = tiny_model_config(opt);
  c.num_hidden_layers = 3;  // the checkpoint lacks layer 2
  c.intermediate_size = 192;
  c.tie_word_embeddings = true;  // lm_head becomes unexpected
  const LayoutReport r = check_llama_layout(c, ck);
  EXPECT_FALSE(r.valid());
  int missing = 0, wrong = 0, unexpected = 0;
  for (const auto& p : r.problems) {
    missing += p.kind == LayoutProblem::Kind::Missing;
    wrong += p.kind == LayoutProblem::Kind::WrongShape;
    unexpected += p.kind == LayoutProblem::Kind::Unexpected;
    if (p.kind == LayoutProblem::Kind::Unexpected) {
      EXPECT_EQ(p.tensor, "lm_head.weight");
    }
  }
  EXPECT_EQ(missing, 9);
  EXPECT_EQ(wrong, 2 * 3);
  EXPECT_EQ(unexpected, 1);
}

TEST_F(TinyModel, VocabLargerThanTheTokenizer) {
  TinyModelOptions opt;
  opt.vocab = 4096;
  write_tiny_model(dir("v"), opt);
  const ModelConfig c = load_model_config(dir("v") + "/config.json");
  EXPECT_EQ(c.vocab_size, 4096);
  EXPECT_EQ(Checkpoint::open(dir("v")).info("model.embed_tokens.weight").shape, (std::vector<int64_t>{4096, 64}));
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(dir("v") + "/tokenizer.model").ok());
  EXPECT_GT(sp.GetPieceSize(), 1000);
  EXPECT_LE(sp.GetPieceSize(), 4096);
}

TEST_F(TinyModel, RejectsBadOptions) {
  TinyModelOptions opt;
  opt.heads = 5;  // 64 is not a multiple of 5
  EXPECT_THROW(write_tiny_model(dir("x"), opt), Error);
  opt = {};
  opt.kv_heads = 3;
  EXPECT_THROW(write_tiny_model(dir("x"), opt), Error);
  opt = {};
  opt.vocab = 100;
  EXPECT_THROW(write_tiny_model(dir("x"), opt), Error);
}

}  // namespace
}  // namespace qtrain::io
