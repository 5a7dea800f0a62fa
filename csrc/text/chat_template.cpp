// The four built-in chat layouts. The marker strings follow FORMATS.md (ChatML, Llama-2, Llama-3);
// the Alpaca chat layout reuses the Alpaca prompt headers.
#include "csrc/text/chat_template.h"

#include <algorithm>

#include "csrc/core/error.h"

namespace qtrain::text {
namespace {

bool trained(const std::string& role, const std::vector<std::string>& roles) {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

void check_role(const Message& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw_bad_input("", "message " + std::to_string(i) + " has unknown role '" + m.role + "' (system, user, assistant)");
  if (m.role == "system" && i != 0) throw_bad_input("", "a system message may only come first (message " + std::to_string(i) + ")");
}

// Appends to the last segment when it has the same loss flag, so runs stay few.
void push(std::vector<Segment>& out, std::string text, bool train) {
  if (text.empty()) return;
  if (!out.empty() && out.back().train == train) out.back().text += text;
  else out.push_back({std::move(text), train});
}

std::vector<Segment> render_chatml(const std::vector<Message>& ms, const std::vector<std::string>& roles, bool gen) {
  std::vector<Segment> out;
  for (const auto& m : ms) {
    push(out, "<|im_start|>" + m.role + "\n", false);
    push(out, m.content + "<|im_end|>", trained(m.role, roles));
    push(out, "\n", false);
  }
  if (gen) push(out, "<|im_start|>assistant\n", false);
  return out;
}

std::vector<Segment> render_llama3(const std::vector<Message>& ms, const std::vector<std::string>& roles, bool gen) {
  std::vector<Segment> out;
  push(out, "<|begin_of_text|>", false);
  for (const auto& m : ms) {
    push(out, "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", false);
    push(out, m.content + "<|eot_id|>", trained(m.role, roles));
  }
  if (gen) push(out, "<|start_header_id|>assistant<|end_header_id|>\n\n", false);
  return out;
}

// Llama-2 needs user/assistant turns in strict alternation; the system prompt joins the first user turn.
std::vector<Segment> render_llama2(const std::vector<Message>& ms, const TemplateTokens& tok,
                                   const std::vector<std::string>& roles, bool gen) {
  std::vector<Segment> out;
  size_t i = 0;
  std::string system;
  if (!ms.empty() && ms[0].role == "system") system = ms[i++].content;
  bool first = true;
  while (i < ms.size()) {
    if (ms[i].role != "user")
      throw_bad_input("", "llama2 template: message " + std::to_string(i) + " must be a user turn, got " + ms[i].role);
    std::string user = ms[i].content;
    if (first && !system.empty()) user = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user;
    push(out, tok.bos + "[INST] ", false);
    push(out, user, trained("user", roles));
    push(out, " [/INST]", false);
    first = false;
    ++i;
    if (i < ms.size()) {
      if (ms[i].role != "assistant")
        throw_bad_input("", "llama2 template: message " + std::to_string(i) + " must be an assistant turn, got " + ms[i].role);
      push(out, " ", false);
      push(out, ms[i].content + " " + tok.eos, trained("assistant", roles));
      ++i;
    }
  }
  if (first && !system.empty()) throw_bad_input("", "llama2 template: a system message needs a user turn after it");
  (void)gen;  // the generation prompt is the " [/INST]" that ends every user turn
  return out;
}

std::vector<Segment> render_alpaca(const std::vector<Message>& ms, const TemplateTokens& tok,
                                   const std::vector<std::string>& roles, bool gen) {
  std::vector<Segment> out;
  push(out, tok.bos, false);
  for (const auto& m : ms) {
    if (m.role == "system") {
      push(out, m.content, trained(m.role, roles));
      push(out, "\n\n", false);
    } else if (m.role == "user") {
      push(out, "### Instruction:\n", false);
      push(out, m.content, trained(m.role, roles));
      push(out, "\n\n### Response:\n", false);
    } else {
      push(out, m.content + tok.eos, trained(m.role, roles));
      push(out, "\n\n", false);
    }
  }
  (void)gen;  // the generation prompt is the "### Response:\n" that ends every user turn
  return out;
}

}  // namespace

ChatTemplate parse_chat_template(const std::string& name, const std::string& file, const std::string& where) {
  if (name == "chatml") return ChatTemplate::ChatML;
  if (name == "llama2") return ChatTemplate::Llama2;
  if (name == "llama3") return ChatTemplate::Llama3;
  if (name == "alpaca") return ChatTemplate::Alpaca;
  throw_bad_input(file, "unknown chat template '" + name + "' (chatml, llama2, llama3, alpaca)", where);
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::ChatML: return "chatml";
    case ChatTemplate::Llama2: return "llama2";
    case ChatTemplate::Llama3: return "llama3";
    case ChatTemplate::Alpaca: return "alpaca";
  }
  return "?";
}

ChatTemplate recognise_chat_template(const std::string& jinja, const std::string& file) {
  if (jinja.empty())
    throw_bad_input(file, "the model folder has no chat_template; set chat_template: chatml, llama2, llama3 or alpaca");
  if (jinja.find("<|im_start|>") != std::string::npos) return ChatTemplate::ChatML;
  if (jinja.find("<|start_header_id|>") != std::string::npos) return ChatTemplate::Llama3;
  if (jinja.find("[INST]") != std::string::npos) return ChatTemplate::Llama2;
  if (jinja.find("### Instruction") != std::string::npos) return ChatTemplate::Alpaca;
  throw_bad_input(file, "the model's chat_template is not one qtrain recognises; set chat_template: chatml, llama2, "
                        "llama3 or alpaca");
}

std::vector<Segment> render_chat(ChatTemplate t, const std::vector<Message>& messages, const TemplateTokens& tokens,
                                 const std::vector<std::string>& roles_to_train, bool add_generation_prompt) {
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  switch (t) {
    case ChatTemplate::ChatML: return render_chatml(messages, roles_to_train, add_generation_prompt);
    case ChatTemplate::Llama2: return render_llama2(messages, tokens, roles_to_train, add_generation_prompt);
    case ChatTemplate::Llama3: return render_llama3(messages, roles_to_train, add_generation_prompt);
    case ChatTemplate::Alpaca: return render_alpaca(messages, tokens, roles_to_train, add_generation_prompt);
  }
  return {};
}

std::vector<std::string> chat_template_markers(ChatTemplate t, const TemplateTokens& tokens) {
  switch (t) {
    case ChatTemplate::ChatML: return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplate::Llama3: return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case ChatTemplate::Llama2:
    case ChatTemplate::Alpaca: return {tokens.bos, tokens.eos};
  }
  return {};
}

std::string segments_text(const std::vector<Segment>& segments) {
  std::string s;
  for (const auto& g : segments) s += g.text;
  return s;
}

}  // namespace qtrain::text
