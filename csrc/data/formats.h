// The dataset formats of FORMATS.md, from one JSON record to text segments marked for loss:
//   alpaca            {"instruction", "input", "output"} with the Stanford Alpaca prompt text
//   chat_template     {"messages": [{"role", "content"}]} through a built-in chat template
//   completion        {"text"}: plain text, every token a target
//   prompt_completion {"prompt", "completion"}: loss on the completion only
// Field names come from the dataset's entry in the run file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/text/chat_template.h"

namespace qtrain::data {

// The Alpaca prompt up to and including "### Response:\n"; the input block only when input is non-empty.
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

struct RenderContext {
  text::ChatTemplate chat = text::ChatTemplate::ChatML;
  text::TemplateTokens tokens;  // the tokenizer's BOS / EOS strings
  bool add_bos = true;          // tokenizer_config's add_bos_token, for the non-chat formats
  bool train_on_inputs = false;
};

// Throws BadInput without a file name (the caller adds file:line) when a field is missing or has
// the wrong type.
std::vector<text::Segment> render_record(const nlohmann::json& record, const config::DatasetSpec& spec,
                                         const RenderContext& ctx);

}  // namespace qtrain::data
