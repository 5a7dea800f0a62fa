// JSON record -> segments, one function per format. Non-chat formats end the target with EOS so
// the model learns to stop; chat templates write their own end-of-turn markers.
#include "csrc/data/formats.h"

#include "csrc/core/error.h"

namespace qtrain::data {
namespace {

using json = nlohmann::json;

std::string field(const json& r, const std::string& name, bool required) {
  if (!r.contains(name) || r[name].is_null()) {
    if (required) throw_bad_input("", "missing field \"" + name + "\"");
    return {};
  }
  if (!r[name].is_string()) throw_bad_input("", "field \"" + name + "\" must be a string");
  return r[name].get<std::string>();
}

std::vector<text::Message> messages(const json& r, const config::DatasetSpec& spec) {
  if (!r.contains(spec.field_messages)) throw_bad_input("", "missing field \"" + spec.field_messages + "\"");
  const json& ms = r[spec.field_messages];
  if (!ms.is_array() || ms.empty()) throw_bad_input("", "\"" + spec.field_messages + "\" must be a non-empty list");
  std::vector<text::Message> out;
  for (size_t i = 0; i < ms.size(); ++i) {
    if (!ms[i].is_object()) throw_bad_input("", "message " + std::to_string(i) + " is not an object");
    try {
      out.push_back({field(ms[i], spec.message_field_role, true), field(ms[i], spec.message_field_content, true)});
    } catch (const Error& e) {
      throw_bad_input("", "message " + std::to_string(i) + ": " + e.what());
    }
  }
  return out;
}

}  // namespace

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  if (input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\n" + instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\n" + instruction +
         "\n\n### Input:\n" + input + "\n\n### Response:\n";
}

std::vector<text::Segment> render_record(const json& record, const config::DatasetSpec& spec, const RenderContext& ctx) {
  if (!record.is_object()) throw_bad_input("", "a line must hold a JSON object");
  std::vector<text::Segment> segs;
  const std::string bos = ctx.add_bos ? ctx.tokens.bos : std::string();
  if (spec.type == "alpaca") {
    const std::string prompt = alpaca_prompt(field(record, spec.field_instruction, true), field(record, spec.field_input, false));
    segs = {{bos + prompt, false}, {field(record, spec.field_output, true) + ctx.tokens.eos, true}};
  } else if (spec.type == "completion") {
    segs = {{bos, false}, {field(record, spec.field, true) + ctx.tokens.eos, true}};
  } else if (spec.type == "prompt_completion") {
    segs = {{bos + field(record, spec.field_prompt, true), false},
            {field(record, spec.field_completion, true) + ctx.tokens.eos, true}};
  } else if (spec.type == "chat_template") {
    segs = text::render_chat(ctx.chat, messages(record, spec), ctx.tokens, spec.roles_to_train);
  } else {
    throw_bad_input("", "unknown dataset type '" + spec.type + "'");
  }
  if (ctx.train_on_inputs)
    for (auto& s : segs) s.train = true;
  return segs;
}

}  // namespace qtrain::data
