// Each dataset format renders the exact text of FORMATS.md, and the labels are the shifted targets
// of the completion / assistant tokens only (all tokens with train_on_inputs).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/data/example.h"
#include "csrc/data/formats.h"
#include "tests/unit/data/data_test_util.h"

namespace qtrain::data {
namespace {

using nlohmann::json;
using testutil::chat_tokenizer;

config::DatasetSpec spec(const std::string& type) {
  config::DatasetSpec s;
  s.path = "mem.jsonl";
  s.type = type;
  return s;
}

RenderContext ctx() {
  RenderContext c;
  c.tokens = {"<s>", "</s>"};
  return c;
}

std::string trained_text(const std::vector<text::Segment>& s) {
  std::string out;
  for (const auto& g : s)
    if (g.train) out += g.text;
  return out;
}

// The targets of an example decoded back: what the loss will teach.
std::string targets_text(const Example& e) {
  std::vector<int32_t> t;
  for (int32_t l : e.labels)
    if (l != kIgnoreLabel) t.push_back(l);
  return chat_tokenizer().decode(t);
}

TEST(Formats, AlpacaText) {
  const auto with_input = render_record(json{{"instruction", "Add."}, {"input", "2 and 3"}, {"output", "5"}},
                                        spec("alpaca"), ctx());
  EXPECT_EQ(text::segments_text(with_input),
            "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n"
            "2 and 3\n\n### Response:\n5</s>");
  EXPECT_EQ(trained_text(with_input), "5</s>");
  const auto no_input = render_record(json{{"instruction", "Say hi."}, {"output", "Hi."}}, spec("alpaca"), ctx());
  EXPECT_EQ(text::segments_text(no_input),
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nSay hi.\n\n### Response:\nHi.</s>");
}

TEST(Formats, OtherFormatsText) {
  EXPECT_EQ(text::segments_text(render_record(json{{"text", "A cat."}}, spec("completion"), ctx())), "<s>A cat.</s>");
  EXPECT_EQ(trained_text(render_record(json{{"text", "A cat."}}, spec("completion"), ctx())), "A cat.</s>");
  const auto pc = render_record(json{{"prompt", "Q: sky?"}, {"completion", " Blue."}}, spec("prompt_completion"), ctx());
  EXPECT_EQ(text::segments_text(pc), "<s>Q: sky? Blue.</s>");
  EXPECT_EQ(trained_text(pc), " Blue.</s>");
  const json conv = {{"messages", {{{"role", "user"}, {"content", "Hi?"}}, {{"role", "assistant"}, {"content", "Hello."}}}}};
  const auto chat = render_record(conv, spec("chat_template"), ctx());
  EXPECT_EQ(text::segments_text(chat), "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n");
  EXPECT_EQ(trained_text(chat), "Hello.<|im_end|>");
}

TEST(Formats, CustomFieldNames) {
  auto s = spec("chat_template");
  s.field_messages = "conversation";
  s.message_field_role = "from";
  s.message_field_content = "value";
  const json conv = {{"conversation", {{{"from", "user"}, {"value", "A"}}, {{"from", "assistant"}, {"value", "B"}}}}};
  EXPECT_EQ(trained_text(render_record(conv, s, ctx())), "B<|im_end|>");
  auto a = spec("alpaca");
  a.field_output = "answer";
  EXPECT_EQ(trained_text(render_record(json{{"instruction", "Q"}, {"answer", "A"}}, a, ctx())), "A</s>");
}

TEST(Formats, BadRecords) {
  EXPECT_THROW(render_record(json{{"instruction", "Q"}}, spec("alpaca"), ctx()), Error);
  EXPECT_THROW(render_record(json{{"instruction", 3}, {"output", "x"}}, spec("alpaca"), ctx()), Error);
  EXPECT_THROW(render_record(json::array(), spec("completion"), ctx()), Error);
  EXPECT_THROW(render_record(json{{"messages", json::array()}}, spec("chat_template"), ctx()), Error);
  try {
    render_record(json{{"messages", {{{"role", "user"}}}}}, spec("chat_template"), ctx());
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "message 0: missing field \"content\"");
  }
}

TEST(Labels, ShiftedTargetsOnCompletionOnly) {
  const auto& tok = chat_tokenizer();
  const auto segs = render_record(json{{"instruction", "What is 3 plus 4?"}, {"output", "3 plus 4 is 7."}},
                                  spec("alpaca"), ctx());
  const Example e = tokenize_segments(segs, tok, 4096).example;
  ASSERT_EQ(e.input_ids.size(), e.labels.size());
  EXPECT_EQ(e.input_ids.front(), tok.bos_id());
  EXPECT_EQ(e.input_ids.back(), tok.eos_id());
  EXPECT_EQ(e.labels.back(), kIgnoreLabel);
  for (size_t i = 0; i + 1 < e.labels.size(); ++i) {
    if (e.labels[i] != kIgnoreLabel) {
      EXPECT_EQ(e.labels[i], e.input_ids[i + 1]);
    }
  }
  // The targets are exactly the answer and EOS; everything before is masked.
  EXPECT_EQ(targets_text(e), "3 plus 4 is 7.</s>");
  const size_t first = static_cast<size_t>(std::find_if(e.labels.begin(), e.labels.end(),
                                                        [](int32_t l) { return l != kIgnoreLabel; }) - e.labels.begin());
  for (size_t i = first; i + 1 < e.labels.size(); ++i) EXPECT_NE(e.labels[i], kIgnoreLabel) << i;
}

TEST(Labels, ChatAssistantTurnsOnly) {
  const json conv = {{"messages",
                      {{{"role", "user"}, {"content", "Hi?"}},
                       {{"role", "assistant"}, {"content", "Hello."}},
                       {{"role", "user"}, {"content", "Sky?"}},
                       {{"role", "assistant"}, {"content", "Blue."}}}}};
  const Example e = tokenize_segments(render_record(conv, spec("chat_template"), ctx()), chat_tokenizer(), 4096).example;
  EXPECT_EQ(targets_text(e), "Hello.<|im_end|>Blue.<|im_end|>");
  auto all = ctx();
  all.train_on_inputs = true;
  const Example f = tokenize_segments(render_record(conv, spec("chat_template"), all), chat_tokenizer(), 4096).example;
  EXPECT_EQ(f.num_targets(), static_cast<int64_t>(f.input_ids.size()) - 1);
}

TEST(Labels, Truncation) {
  const auto segs = render_record(json{{"text", "The red cat sat on the blue mat near the old tree."}}, spec("completion"), ctx());
  const TokenizeResult full = tokenize_segments(segs, chat_tokenizer(), 4096);
  EXPECT_FALSE(full.truncated);
  const TokenizeResult cut = tokenize_segments(segs, chat_tokenizer(), 5);
  EXPECT_TRUE(cut.truncated);
  ASSERT_EQ(cut.example.input_ids.size(), 5u);
  EXPECT_EQ(std::vector<int32_t>(full.example.input_ids.begin(), full.example.input_ids.begin() + 5), cut.example.input_ids);
  EXPECT_EQ(cut.example.labels.back(), kIgnoreLabel);
  EXPECT_EQ(cut.example.num_targets(), 4);
}

}  // namespace
}  // namespace qtrain::data
