// Chat templates written out in C++ (no Jinja engine): ChatML, Llama-2, Llama-3 and an
// Alpaca-style chat layout. A conversation renders to text segments, each marked as carrying loss
// or not, so that the tokenizer's byte offsets later give the label mask. A model folder's own
// Jinja template ("tokenizer_default") is recognised by its markers and mapped to one of these.
#pragma once
#include <string>
#include <vector>

namespace qtrain::text {

enum class ChatTemplate { ChatML, Llama2, Llama3, Alpaca };

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
};

// A piece of rendered text; `train` when its tokens are targets of the loss.
struct Segment {
  std::string text;
  bool train = false;
};

// The BOS / EOS strings the Llama-2 and Alpaca layouts write (the tokenizer's own).
struct TemplateTokens {
  std::string bos = "<s>";
  std::string eos = "</s>";
};

// "chatml", "llama2", "llama3", "alpaca". Throws BadInput (file, where) for anything else.
ChatTemplate parse_chat_template(const std::string& name, const std::string& file, const std::string& where);
const char* chat_template_name(ChatTemplate t);

// Maps a Jinja template to the built-in one with the same markers: <|im_start|> -> chatml,
// <|start_header_id|> -> llama3, [INST] -> llama2, "### Instruction" -> alpaca. An empty or
// unrecognised template is BadInput naming `file` and asking for an explicit chat_template.
ChatTemplate recognise_chat_template(const std::string& jinja, const std::string& file);

// Renders a conversation. Content of roles in `roles_to_train`, with the turn's end marker, carries
// loss; headers and other roles do not. add_generation_prompt appends the assistant header.
// Throws BadInput (no file) for an unknown role or an order the template cannot express.
std::vector<Segment> render_chat(ChatTemplate t, const std::vector<Message>& messages, const TemplateTokens& tokens,
                                 const std::vector<std::string>& roles_to_train = {"assistant"},
                                 bool add_generation_prompt = false);

// Strings of the layout that must be single tokens of the vocabulary.
std::vector<std::string> chat_template_markers(ChatTemplate t, const TemplateTokens& tokens);

// The concatenated text of the segments.
std::string segments_text(const std::vector<Segment>& segments);

}  // namespace qtrain::text
