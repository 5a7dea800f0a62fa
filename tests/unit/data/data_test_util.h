// Shared fixtures of the data tests: a tokenizer trained on the tiny corpus with ChatML and
// Llama-3 markers as added tokens, and temporary JSONL files.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "csrc/text/spm_train.h"
#include "csrc/text/tiny_corpus.h"
#include "csrc/text/tokenizer.h"

namespace qtrain::testutil {

inline const std::string& tiny_spm_model() {
  static const std::string model = text::train_sentencepiece(text::tiny_corpus(11, 2000), text::SpmTrainOptions{});
  return model;
}

// 512 sentencepiece pieces, then the six markers at ids 512..517.
inline const char* kChatTokenizerConfig = R"({
  "add_bos_token": true, "add_eos_token": false,
  "bos_token": {"__type": "AddedToken", "content": "<s>", "special": true},
  "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null,
  "added_tokens_decoder": {
    "512": {"content": "<|im_start|>", "special": true},
    "513": {"content": "<|im_end|>", "special": true},
    "514": {"content": "<|begin_of_text|>", "special": true},
    "515": {"content": "<|start_header_id|>", "special": true},
    "516": {"content": "<|end_header_id|>", "special": true},
    "517": {"content": "<|eot_id|>", "special": true}
  },
  "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
})";

inline const text::Tokenizer& chat_tokenizer() {
  static const text::Tokenizer tok = text::Tokenizer::from_parts(tiny_spm_model(), kChatTokenizerConfig, "tok");
  return tok;
}

// A folder under the system temp dir named after the test, emptied first; left behind afterwards
// so a failing test's files can be looked at.
inline std::filesystem::path temp_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             ("qtrain_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::ofstream f(path);
  for (const auto& l : lines) f << l << '\n';
  return path.string();
}

}  // namespace qtrain::testutil
