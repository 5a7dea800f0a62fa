// The tokenizer on the tiny model's sentencepiece model: BOS/EOS switches, special and added tokens
// in text, offsets, decode, and the errors for bad folders.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "csrc/core/error.h"
#include "csrc/io/tiny_model.h"
#include "csrc/text/tokenizer.h"
#include "tests/unit/data/data_test_util.h"

namespace qtrain::text {
namespace {

using testutil::chat_tokenizer;

TEST(Tokenizer, LoadsTinyModelFolder) {
  const auto dir = std::filesystem::temp_directory_path() / "qtrain_tokenizer_tiny";
  std::filesystem::remove_all(dir);
  io::write_tiny_model(dir.string(), io::TinyModelOptions{});
  const Tokenizer t = Tokenizer::load(dir.string());
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_EQ(t.pad_id(), 0);  // pad_token null: unk
  EXPECT_TRUE(t.add_bos_token());
  EXPECT_FALSE(t.add_eos_token());
  EXPECT_NE(t.chat_template().find("[INST]"), std::string::npos);
  const auto ids = t.encode("What is 3 plus 4?");
  ASSERT_GT(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_NE(ids.back(), 2);
  EXPECT_EQ(t.decode(ids, true), "What is 3 plus 4?");
  EXPECT_EQ(t.decode(ids), "<s>What is 3 plus 4?");
  std::filesystem::remove_all(dir);
}

TEST(Tokenizer, BosEosSwitches) {
  const Tokenizer& t = chat_tokenizer();
  const auto plain = t.encode("red and blue", false, false);
  const auto both = t.encode("red and blue", true, true);
  ASSERT_EQ(both.size(), plain.size() + 2);
  EXPECT_EQ(both.front(), t.bos_id());
  EXPECT_EQ(both.back(), t.eos_id());
  EXPECT_EQ(std::vector<int32_t>(both.begin() + 1, both.end() - 1), plain);
  const Tokenizer eos_too = Tokenizer::from_parts(testutil::tiny_spm_model(), R"({"add_eos_token": true})", "cfg");
  EXPECT_EQ(eos_too.encode("red").back(), eos_too.eos_id());
  EXPECT_EQ(eos_too.encode("red").front(), eos_too.bos_id());
}

TEST(Tokenizer, AddedTokensAreSingleIds) {
  const Tokenizer& t = chat_tokenizer();
  EXPECT_EQ(t.vocab_size(), 518);
  EXPECT_EQ(t.piece_to_id("<|im_start|>"), 512);
  EXPECT_EQ(t.id_to_piece(513), "<|im_end|>");
  EXPECT_EQ(t.piece_to_id("<|nope|>"), -1);
  const std::string text = "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n";
  const auto ids = t.encode(text, false, false);
  EXPECT_EQ(ids.front(), 512);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 513), 1);
  for (int32_t id : ids) EXPECT_NE(id, t.unk_id());
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.decode(ids, true), "user\nWhat colour is the sky?\n");
  // The EOS string written in text is the EOS id, not "<", "/", "s", ">".
  const auto with_eos = t.encode("Paris.</s>", false, false);
  EXPECT_EQ(with_eos.back(), t.eos_id());
}

TEST(Tokenizer, OffsetsCoverTheText) {
  const Tokenizer& t = chat_tokenizer();
  const std::string text = "The cat<|im_end|> sat on Köln";
  const Encoding e = t.encode_with_offsets(text);
  ASSERT_EQ(e.ids.size(), e.begin.size());
  ASSERT_EQ(e.ids.size(), e.end.size());
  uint32_t covered = 0;
  for (size_t k = 0; k < e.ids.size(); ++k) {
    EXPECT_LE(e.begin[k], e.end[k]);
    EXPECT_LE(e.end[k], text.size());
    if (e.ids[k] == 513) {
      EXPECT_EQ(text.substr(e.begin[k], e.end[k] - e.begin[k]), "<|im_end|>");
    }
    covered = std::max(covered, e.end[k]);
  }
  EXPECT_EQ(covered, text.size());
}

TEST(Tokenizer, SpecialTokensFromRunFile) {
  Tokenizer t = Tokenizer::from_parts(testutil::tiny_spm_model(), testutil::kChatTokenizerConfig, "cfg");
  EXPECT_EQ(t.pad_id(), t.unk_id());
  t.set_special_token("pad_token", "</s>");
  EXPECT_EQ(t.pad_id(), t.eos_id());
  t.set_special_token("eos_token", "<|im_end|>");
  EXPECT_EQ(t.eos_id(), 513);
  EXPECT_EQ(t.eos_token(), "<|im_end|>");
  EXPECT_THROW(t.set_special_token("pad_token", "<pad>"), Error);
}

TEST(Tokenizer, BadInputs) {
  const std::string m = testutil::tiny_spm_model();
  auto msg = [&](const std::string& model, const std::string& cfg) {
    try {
      Tokenizer::from_parts(model, cfg, "tokenizer_config.json");
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::BadInput);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(msg(m, R"({"bos_token": "<bos>"})"),
            "tokenizer_config.json: bos_token '<bos>' is not in the vocabulary (key bos_token)");
  EXPECT_EQ(msg(m, R"({"added_tokens_decoder": {"5": {"content": "<x>"}}})"),
            "tokenizer_config.json: added token '<x>' has id 5, which tokenizer.model gives to '<0x02>' "
            "(added_tokens_decoder.5)");
  EXPECT_EQ(msg(m, R"({"add_bos_token": "yes"})"),
            "tokenizer_config.json: add_bos_token must be true or false (key add_bos_token)");
  EXPECT_NE(msg("garbage", "").find("not a sentencepiece model"), std::string::npos);
  const std::string json_error = msg(m, "{");
  EXPECT_EQ(json_error.rfind("tokenizer_config.json: not valid JSON: ", 0), 0u) << json_error;
  EXPECT_NE(json_error.find("(byte "), std::string::npos) << json_error;
  EXPECT_THROW(chat_tokenizer().decode({518}), Error);
  EXPECT_THROW(chat_tokenizer().id_to_piece(-1), Error);
}

TEST(Tokenizer, TokenizerJsonOnlyFolderIsAClearError) {
  const auto dir = std::filesystem::temp_directory_path() / "qtrain_tokenizer_json_only";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << "{}";
  try {
    Tokenizer::load(dir.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json (BPE) tokenizers are not supported yet"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qtrain::text
