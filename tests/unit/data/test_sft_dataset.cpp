// JSONL reading with file:line warnings and the bad-line limit, deterministic mixing and splitting,
// chat template resolution, and the synthetic alpaca generator.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "csrc/config/run_config.h"
#include "csrc/core/error.h"
#include "csrc/data/sft_dataset.h"
#include "csrc/data/synthetic.h"
#include "csrc/io/tiny_model.h"
#include "tests/unit/data/data_test_util.h"

namespace qtrain::data {
namespace {

using testutil::chat_tokenizer;

config::DatasetSpec spec(const std::string& path, const std::string& type) {
  config::DatasetSpec s;
  s.path = path;
  s.type = type;
  return s;
}

RenderContext ctx() {
  RenderContext c;
  c.tokens = {"<s>", "</s>"};
  return c;
}

std::vector<std::string> alpaca_lines(size_t n, const std::string& tag) {
  std::vector<std::string> v;
  for (size_t i = 0; i < n; ++i)
    v.push_back(nlohmann::json{{"instruction", tag + " " + std::to_string(i)}, {"output", "ok " + std::to_string(i)}}.dump());
  return v;
}

TEST(SftDataset, BadLinesAreSkippedWithFileLine) {
  const auto dir = testutil::temp_dir("d");
  auto lines = alpaca_lines(20, "q");
  lines[3] = "{not json";
  lines[7] = R"({"instruction": "x"})";
  lines.insert(lines.begin() + 5, "   ");  // blank lines are not examples and not errors
  const std::string path = testutil::write_lines(dir / "a.jsonl", lines);
  DataStats stats;
  const auto ex = load_jsonl_dataset(spec(path, "alpaca"), chat_tokenizer(), ctx(), SftOptions{}, stats);
  EXPECT_EQ(ex.size(), 18u);
  EXPECT_EQ(stats.lines, 20);
  EXPECT_EQ(stats.bad_lines, 2);
  ASSERT_EQ(stats.warnings.size(), 2u);
  EXPECT_EQ(stats.warnings[0].rfind(path + ":4: not valid JSON", 0), 0u) << stats.warnings[0];
  EXPECT_EQ(stats.warnings[1], path + ":9: missing field \"output\"");
}

TEST(SftDataset, TooManyBadLinesIsAnError) {
  const auto dir = testutil::temp_dir("d");
  auto lines = alpaca_lines(30, "q");
  for (size_t i = 0; i < 11; ++i) lines[i] = "[]";
  const std::string path = testutil::write_lines(dir / "a.jsonl", lines);
  DataStats stats;
  try {
    load_jsonl_dataset(spec(path, "alpaca"), chat_tokenizer(), ctx(), SftOptions{}, stats);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": too many bad lines (11 of 30, at most 10 are skipped); the first: " + path +
                                         ":1: a line must hold a JSON object");
  }
  SftOptions lenient;
  lenient.max_bad_lines = 11;
  EXPECT_EQ(load_jsonl_dataset(spec(path, "alpaca"), chat_tokenizer(), ctx(), lenient, stats).size(), 19u);
}

TEST(SftDataset, MissingFile) {
  DataStats stats;
  auto s = spec("/nonexistent/x.jsonl", "alpaca");
  s.where = "datasets[0], line 4";
  try {
    load_jsonl_dataset(s, chat_tokenizer(), ctx(), SftOptions{}, stats);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/x.jsonl: cannot open the dataset file (datasets[0], line 4)");
  }
}

TEST(SftDataset, TruncationAndEmptyTargetsCounted) {
  const auto dir = testutil::temp_dir("d");
  const std::string path = testutil::write_lines(
      dir / "a.jsonl", {nlohmann::json{{"instruction", std::string(3000, 'x')}, {"output", "y"}}.dump(),
                        nlohmann::json{{"instruction", "a"}, {"output", "b"}}.dump()});
  SftOptions opt;
  opt.sequence_len = 256;
  DataStats stats;
  const auto ex = load_jsonl_dataset(spec(path, "alpaca"), chat_tokenizer(), ctx(), opt, stats);
  EXPECT_EQ(stats.truncated, 1);
  EXPECT_EQ(stats.no_targets, 1);  // the long prompt left no room for the answer
  EXPECT_EQ(ex.size(), 1u);
}

config::RunConfig two_dataset_config(const std::filesystem::path& dir, const std::string& extra) {
  const std::string a = testutil::write_lines(dir / "a.jsonl", alpaca_lines(30, "alpha"));
  std::vector<std::string> texts;
  for (int i = 0; i < 20; ++i) texts.push_back(nlohmann::json{{"text", "beta " + std::to_string(i)}}.dump());
  const std::string b = testutil::write_lines(dir / "b.jsonl", texts);
  return config::parse_run_config("base_model: m\nnum_epochs: 1\ndatasets:\n  - {path: " + a +
                                      ", type: alpaca}\n  - {path: " + b + ", type: completion}\n" + extra,
                                  "run.yaml");
}

TEST(SftDataset, MixingAndSplittingAreDeterministic) {
  const auto dir = testutil::temp_dir("d");
  const auto cfg = two_dataset_config(dir, "val_set_size: 0.1\nseed: 3\n");
  const SftData d1 = build_sft_data(cfg, chat_tokenizer());
  const SftData d2 = build_sft_data(cfg, chat_tokenizer());
  EXPECT_EQ(d1.val.size(), 5u);
  EXPECT_EQ(d1.train.size(), 45u);
  EXPECT_EQ(d1.stats.examples, 50);
  for (size_t i = 0; i < d1.train.size(); ++i) EXPECT_EQ(d1.train[i].input_ids, d2.train[i].input_ids);
  // Mixed: the two datasets are interleaved, not one after the other.
  const int32_t alpha_first = d1.train[0].input_ids[1];
  bool changes = false;
  for (size_t i = 1; i < 10; ++i) changes |= d1.train[i].input_ids[1] != alpha_first;
  EXPECT_TRUE(changes);
  // Another seed, another order; the same examples.
  auto other = cfg;
  other.seed = 4;
  const SftData d3 = build_sft_data(other, chat_tokenizer());
  bool differs = false;
  for (size_t i = 0; i < d3.train.size(); ++i) differs |= d3.train[i].input_ids != d1.train[i].input_ids;
  EXPECT_TRUE(differs);
  // A count.
  EXPECT_EQ(build_sft_data(two_dataset_config(dir, "val_set_size: 7\n"), chat_tokenizer()).val.size(), 7u);
  // No shuffle: file order.
  const auto in_order = build_sft_data(two_dataset_config(dir, "shuffle_merged_datasets: false\n"), chat_tokenizer());
  EXPECT_EQ(chat_tokenizer().decode(in_order.train.back().input_ids, true), "beta 19");
}

TEST(SftDataset, SplitMustLeaveTrainingExamples) {
  const auto dir = testutil::temp_dir("d");
  try {
    build_sft_data(two_dataset_config(dir, "val_set_size: 50\n"), chat_tokenizer());
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "run.yaml: val_set_size holds out 50 of 50 examples, leaving none to train on (key val_set_size)");
  }
}

TEST(SftDataset, ChatTemplateResolution) {
  const auto& tok = chat_tokenizer();
  EXPECT_EQ(resolve_chat_template("tokenizer_default", tok, "run.yaml", ""), text::ChatTemplate::ChatML);
  EXPECT_EQ(resolve_chat_template("llama3", tok, "run.yaml", ""), text::ChatTemplate::Llama3);
  const text::Tokenizer plain = text::Tokenizer::from_parts(testutil::tiny_spm_model(), "", "tok");
  EXPECT_EQ(resolve_chat_template("llama2", plain, "run.yaml", ""), text::ChatTemplate::Llama2);
  try {
    resolve_chat_template("chatml", plain, "run.yaml", "key chat_template, line 9");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "run.yaml: chat template chatml needs '<|im_start|>' as a single token, and the model's tokenizer has "
                 "no such token (key chat_template, line 9)");
  }
}

// The tiny model folder end to end: its own Jinja template is recognised as llama2, the run file's
// special_tokens apply, and the targets are the assistant turn.
TEST(SftDataset, TinyModelChatWithTokenizerDefault) {
  const auto dir = testutil::temp_dir("d");
  io::write_tiny_model((dir / "model").string(), io::TinyModelOptions{});
  const std::string data = testutil::write_lines(
      dir / "chat.jsonl", {R"({"messages": [{"role": "user", "content": "What is 2 plus 2?"},)"
                           R"( {"role": "assistant", "content": "2 plus 2 is 4."}]})"});
  const auto cfg = config::parse_run_config("base_model: " + (dir / "model").string() + "\nmax_steps: 1\n" +
                                                "special_tokens: {pad_token: \"</s>\"}\n" +
                                                "datasets: [{path: " + data + ", type: chat_template}]\n",
                                            "run.yaml");
  const text::Tokenizer tok = load_run_tokenizer(cfg);
  EXPECT_EQ(tok.pad_id(), tok.eos_id());
  const SftData d = build_sft_data(cfg, tok);
  ASSERT_EQ(d.train.size(), 1u);
  const Example& e = d.train[0];
  EXPECT_EQ(tok.decode(e.input_ids), "<s>[INST] What is 2 plus 2? [/INST] 2 plus 2 is 4. </s>");
  std::vector<int32_t> targets;
  for (int32_t l : e.labels)
    if (l != kIgnoreLabel) targets.push_back(l);
  EXPECT_EQ(tok.decode(targets), "2 plus 2 is 4. </s>");
  auto bad = cfg;
  bad.special_tokens = {{"pad_token", "<pad>"}};
  EXPECT_THROW(load_run_tokenizer(bad), Error);
}

TEST(Synthetic, AlpacaLinesParseAndAreDeterministic) {
  const auto a = synthetic_alpaca_lines(5, 40), b = synthetic_alpaca_lines(5, 40);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, synthetic_alpaca_lines(6, 40));
  ASSERT_EQ(a.size(), 40u);
  const auto j0 = nlohmann::json::parse(a[0]), j1 = nlohmann::json::parse(a[1]);
  EXPECT_EQ(j0["input"], "");
  EXPECT_EQ(j1["instruction"], "Answer the question.");
  EXPECT_FALSE(j1["input"].get<std::string>().empty());
  const auto dir = testutil::temp_dir("d");
  write_synthetic_alpaca((dir / "s.jsonl").string(), 5, 40);
  DataStats stats;
  const auto ex = load_jsonl_dataset(spec((dir / "s.jsonl").string(), "alpaca"), chat_tokenizer(), ctx(), SftOptions{}, stats);
  EXPECT_EQ(ex.size(), 40u);
  EXPECT_EQ(stats.bad_lines, 0);
}

}  // namespace
}  // namespace qtrain::data
