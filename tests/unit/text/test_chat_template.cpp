// The built-in chat templates render the exact strings of FORMATS.md, mark only the trained roles,
// and recognise a model's Jinja template by its markers.
#include <gtest/gtest.h>

#include "csrc/core/error.h"
#include "csrc/text/chat_template.h"

namespace qtrain::text {
namespace {

const std::vector<Message> kConv = {{"system", "Be brief."}, {"user", "Hi?"}, {"assistant", "Hello."}};

std::string trained_text(const std::vector<Segment>& s) {
  std::string out;
  for (const auto& g : s)
    if (g.train) out += g.text;
  return out;
}

TEST(ChatTemplate, ChatML) {
  const auto s = render_chat(ChatTemplate::ChatML, kConv, {});
  EXPECT_EQ(segments_text(s),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n");
  EXPECT_EQ(trained_text(s), "Hello.<|im_end|>");
  EXPECT_EQ(segments_text(render_chat(ChatTemplate::ChatML, {{"user", "Hi?"}}, {}, {"assistant"}, true)),
            "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, Llama2) {
  const auto s = render_chat(ChatTemplate::Llama2, kConv, {});
  EXPECT_EQ(segments_text(s), "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s>");
  EXPECT_EQ(trained_text(s), "Hello. </s>");
  const auto multi = render_chat(ChatTemplate::Llama2, {{"user", "A"}, {"assistant", "B"}, {"user", "C"}, {"assistant", "D"}}, {});
  EXPECT_EQ(segments_text(multi), "<s>[INST] A [/INST] B </s><s>[INST] C [/INST] D </s>");
  EXPECT_EQ(trained_text(multi), "B </s>D </s>");
  EXPECT_THROW(render_chat(ChatTemplate::Llama2, {{"assistant", "B"}}, {}), Error);
  EXPECT_THROW(render_chat(ChatTemplate::Llama2, {{"user", "A"}, {"user", "B"}}, {}), Error);
}

TEST(ChatTemplate, Llama3) {
  const auto s = render_chat(ChatTemplate::Llama3, kConv, {});
  EXPECT_EQ(segments_text(s),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>");
  EXPECT_EQ(trained_text(s), "Hello.<|eot_id|>");
}

TEST(ChatTemplate, Alpaca) {
  const auto s = render_chat(ChatTemplate::Alpaca, kConv, {"<s>", "</s>"});
  EXPECT_EQ(segments_text(s), "<s>Be brief.\n\n### Instruction:\nHi?\n\n### Response:\nHello.</s>\n\n");
  EXPECT_EQ(trained_text(s), "Hello.</s>");
}

TEST(ChatTemplate, RolesToTrain) {
  const auto s = render_chat(ChatTemplate::ChatML, kConv, {}, {"user", "assistant"});
  EXPECT_EQ(trained_text(s), "Hi?<|im_end|>Hello.<|im_end|>");
}

TEST(ChatTemplate, BadConversations) {
  EXPECT_THROW(render_chat(ChatTemplate::ChatML, {{"robot", "x"}}, {}), Error);
  EXPECT_THROW(render_chat(ChatTemplate::ChatML, {{"user", "x"}, {"system", "y"}}, {}), Error);
}

TEST(ChatTemplate, RecognisesJinja) {
  EXPECT_EQ(recognise_chat_template("{{ '<|im_start|>' + m.role }}", "t"), ChatTemplate::ChatML);
  EXPECT_EQ(recognise_chat_template("<|start_header_id|>{{ role }}", "t"), ChatTemplate::Llama3);
  EXPECT_EQ(recognise_chat_template("{{ '[INST] ' + c + ' [/INST]' }}", "t"), ChatTemplate::Llama2);
  EXPECT_EQ(recognise_chat_template("### Instruction: {{ c }}", "t"), ChatTemplate::Alpaca);
  try {
    recognise_chat_template("", "models/tiny");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "models/tiny: the model folder has no chat_template; set chat_template: chatml, llama2, llama3 or alpaca");
  }
  EXPECT_THROW(recognise_chat_template("{{ weird }}", "t"), Error);
  EXPECT_EQ(parse_chat_template("llama3", "f", ""), ChatTemplate::Llama3);
  EXPECT_THROW(parse_chat_template("vicuna", "f", ""), Error);
}

}  // namespace
}  // namespace qtrain::text
