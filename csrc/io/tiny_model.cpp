// The tiny-model writer: config, seeded bf16 weights, and a SentencePiece tokenizer trained on the
// project's own corpus.
#include "csrc/io/tiny_model.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "csrc/core/error.h"
#include "csrc/core/half.h"
#include "csrc/core/rng.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "csrc/text/spm_train.h"
#include "csrc/text/tiny_corpus.h"

namespace qtrain::io {
namespace {

namespace fs = std::filesystem;

void write_file_atomic(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp.string(), "cannot create file");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) throw_bad_input(tmp.string(), "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw_bad_input(path.string(), "cannot rename temporary file: " + ec.message());
}

// A small Llama-2-style template, so conversational datasets work on the tiny model.
constexpr const char* kChatTemplate =
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}";

std::string tokenizer_config_json(const TinyModelOptions& opt) {
  nlohmann::json j;
  j["add_bos_token"] = true;
  j["add_eos_token"] = false;
  j["bos_token"] = "<s>";
  j["eos_token"] = "</s>";
  j["unk_token"] = "<unk>";
  j["pad_token"] = nullptr;
  j["model_max_length"] = opt.max_position_embeddings;
  j["tokenizer_class"] = "LlamaTokenizer";
  j["clean_up_tokenization_spaces"] = false;
  j["sp_model_kwargs"] = nlohmann::json::object();
  j["chat_template"] = kChatTemplate;
  return j.dump(2) + "\n";
}

std::vector<bf16> init_tensor(const ExpectedTensor& t, uint64_t seed) {
  std::vector<bf16> v(static_cast<size_t>(numel(t.shape)));
  if (t.role == TensorRole::Norm) {
    for (auto& x : v) x = bf16(1.0f);
    return v;
  }
  Rng rng = Rng::for_stream(seed, t.name);
  for (auto& x : v) x = bf16(static_cast<float>(rng.normal(0.0, kTinyInitStd)));
  return v;
}

std::string shard_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, n);
  return buf;
}

}  // namespace

ModelConfig tiny_model_config(const TinyModelOptions& opt) {
  if (opt.arch != Architecture::Llama && opt.arch != Architecture::Qwen2)
    throw_bad_input("make-tiny", "unsupported architecture", "llama or qwen2");
  ModelConfig c;
  c.architecture = opt.arch;
  c.model_type = opt.arch == Architecture::Qwen2 ? "qwen2" : "llama";
  c.vocab_size = opt.vocab;
  c.hidden_size = opt.hidden;
  c.intermediate_size = opt.intermediate;
  c.num_hidden_layers = opt.layers;
  c.num_attention_heads = opt.heads;
  c.num_key_value_heads = opt.kv_heads;
  if (opt.heads > 0 && opt.hidden % opt.heads != 0)
    throw_bad_input("make-tiny", "--hidden must be a multiple of --heads",
                    std::to_string(opt.hidden) + " vs " + std::to_string(opt.heads));
  c.head_dim = opt.heads > 0 ? opt.hidden / opt.heads : 0;
  if (c.head_dim % 2 != 0)
    throw_bad_input("make-tiny", "head dimension (hidden / heads) must be even for RoPE", std::to_string(c.head_dim));
  c.hidden_act = "silu";
  c.max_position_embeddings = opt.max_position_embeddings;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = opt.tie_embeddings;
  c.attention_bias = opt.arch == Architecture::Qwen2;
  c.bos_token_id = text::kSpmBosId;
  c.eos_token_ids = {text::kSpmEosId};
  c.torch_dtype = "bfloat16";
  llama_tensor_layout(c);  // validates the sizes
  return c;
}

void write_tiny_model(const std::string& dir, const TinyModelOptions& opt) {
  const ModelConfig config = tiny_model_config(opt);
  if (opt.shards < 1) throw_bad_input("make-tiny", "--shards must be at least 1", std::to_string(opt.shards));
  // 256 byte pieces, 3 specials and the corpus' characters need about 320 ids; leave room for merges.
  if (opt.vocab < kTinyMinVocab)
    throw_bad_input("make-tiny", "--vocab must be at least " + std::to_string(kTinyMinVocab) +
                                     " (byte pieces, specials and the corpus' characters)",
                    std::to_string(opt.vocab));
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw_bad_input(dir, "cannot create directory: " + ec.message());

  const auto corpus = text::tiny_corpus(kTinyTokenizerCorpusSeed, kTinyTokenizerCorpusLines);
  text::SpmTrainOptions spm;
  spm.vocab_size = static_cast<int>(opt.vocab);
  write_file_atomic(root / "tokenizer.model", text::train_sentencepiece(corpus, spm));
  write_file_atomic(root / "tokenizer_config.json", tokenizer_config_json(opt));
  write_file_atomic(root / "config.json", model_config_to_json(config));

  const auto layout = llama_tensor_layout(config);
  std::vector<std::vector<bf16>> data;
  data.reserve(layout.size());
  for (const auto& t : layout) data.push_back(init_tensor(t, opt.seed));

  const int n = opt.shards;
  // A folder rewritten with another shard count must not keep the other layout's files around.
  fs::remove(root / (n == 1 ? "model.safetensors.index.json" : "model.safetensors"), ec);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  for (int s = 0; s < n; ++s) {
    std::vector<TensorToWrite> tensors;
    const std::string file = n == 1 ? "model.safetensors" : shard_name(s, n);
    for (size_t i = 0; i < layout.size(); ++i) {
      if (static_cast<int>(i * static_cast<size_t>(n) / layout.size()) != s) continue;
      const auto bytes = std::as_bytes(std::span(data[i]));
      tensors.push_back({layout[i].name, DType::BF16, layout[i].shape, bytes});
      weight_map[layout[i].name] = file;
      total += bytes.size();
    }
    write_safetensors((root / file).string(), tensors, meta);
  }
  if (n > 1) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    write_file_atomic(root / "model.safetensors.index.json", index.dump(2) + "\n");
  }
}

}  // namespace qtrain::io
