// SentencePiece plus tokenizer_config.json: special tokens, added tokens and BOS/EOS handling.
#include "csrc/text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/core/error.h"

namespace qtrain::text {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw_bad_input(p.string(), "cannot open file");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A special token in tokenizer_config.json is a string, an AddedToken object {"content": ...}, or null.
std::string token_content(const json& j, const std::string& file, const std::string& key) {
  if (j.is_null()) return {};
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  throw_bad_input(file, key + " must be a string or an object with \"content\"", "key " + key);
}

}  // namespace

struct Tokenizer::Spm {
  sentencepiece::SentencePieceProcessor sp;
};

Tokenizer::Tokenizer() : spm_(std::make_unique<Spm>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path model = dir / "tokenizer.model";
  if (!fs::exists(model)) {
    if (fs::exists(dir / "tokenizer.json"))
      throw_bad_input((dir / "tokenizer.json").string(),
                      "tokenizer.json (BPE) tokenizers are not supported yet; qtrain needs a sentencepiece "
                      "tokenizer.model in the model folder");
    throw_bad_input(model_dir, "no tokenizer.model in the model folder");
  }
  const fs::path config = dir / "tokenizer_config.json";
  const std::string config_text = fs::exists(config) ? read_file(config) : std::string();
  Tokenizer t = from_parts(read_file(model), config_text, fs::exists(config) ? config.string() : model.string());
  if (t.chat_template_.empty() && fs::exists(dir / "chat_template.jinja"))
    t.chat_template_ = read_file(dir / "chat_template.jinja");
  return t;
}

Tokenizer Tokenizer::from_parts(const std::string& spm_model, const std::string& config_json,
                                const std::string& source) {
  Tokenizer t;
  t.source_ = source;
  if (const auto st = t.spm_->sp.LoadFromSerializedProto(spm_model); !st.ok())
    throw_bad_input(source, "not a sentencepiece model: " + st.ToString());
  t.spm_size_ = t.spm_->sp.GetPieceSize();
  t.vocab_size_ = t.spm_size_;
  t.unk_id_ = t.spm_->sp.unk_id();
  t.bos_id_ = t.spm_->sp.bos_id();
  t.eos_id_ = t.spm_->sp.eos_id();
  if (t.bos_id_ >= 0) t.bos_token_ = t.spm_->sp.IdToPiece(t.bos_id_);
  if (t.eos_id_ >= 0) t.eos_token_ = t.spm_->sp.IdToPiece(t.eos_id_);
  if (t.unk_id_ >= 0) t.unk_token_ = t.spm_->sp.IdToPiece(t.unk_id_);
  for (int id = 0; id < t.spm_size_; ++id)
    if (t.spm_->sp.IsControl(id) && id != t.unk_id_) t.spm_control_.emplace_back(t.spm_->sp.IdToPiece(id), id);
  const int spm_pad = t.spm_->sp.pad_id();
  if (spm_pad >= 0) t.pad_token_ = t.spm_->sp.IdToPiece(spm_pad);

  if (!config_json.empty()) {
    json j;
    try {
      j = json::parse(config_json);
    } catch (const json::parse_error& e) {
      throw_bad_input(source, std::string("not valid JSON: ") + e.what(), "byte " + std::to_string(e.byte));
    }
    if (!j.is_object()) throw_bad_input(source, "tokenizer_config.json must be a JSON object");
    for (const char* key : {"add_bos_token", "add_eos_token"}) {
      if (!j.contains(key) || j[key].is_null()) continue;
      if (!j[key].is_boolean()) throw_bad_input(source, std::string(key) + " must be true or false", std::string("key ") + key);
      (std::string(key) == "add_bos_token" ? t.add_bos_ : t.add_eos_) = j[key].get<bool>();
    }
    if (j.contains("added_tokens_decoder")) {
      const json& dec = j["added_tokens_decoder"];
      if (!dec.is_object()) throw_bad_input(source, "added_tokens_decoder must be an object", "key added_tokens_decoder");
      for (const auto& [id_text, tok] : dec.items()) {
        const std::string where = "added_tokens_decoder." + id_text;
        int32_t id = -1;
        try {
          size_t used = 0;
          id = static_cast<int32_t>(std::stol(id_text, &used));
          if (used != id_text.size() || id < 0) id = -1;
        } catch (const std::exception&) {
          id = -1;
        }
        if (id < 0) throw_bad_input(source, "an added token's key must be its id", where);
        AddedToken a;
        a.id = id;
        a.content = token_content(tok, source, where);
        if (a.content.empty()) throw_bad_input(source, "an added token needs a non-empty content", where);
        if (tok.is_object() && tok.contains("special") && tok["special"].is_boolean()) a.special = tok["special"].get<bool>();
        if (id < t.spm_size_ && t.spm_->sp.IdToPiece(id) != a.content)
          throw_bad_input(source, "added token '" + a.content + "' has id " + id_text +
                                      ", which tokenizer.model gives to '" + t.spm_->sp.IdToPiece(id) + "'", where);
        t.vocab_size_ = std::max(t.vocab_size_, id + 1);
        t.added_.push_back(a);
      }
      std::sort(t.added_.begin(), t.added_.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    }
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      if (!j.contains(key)) continue;
      const std::string content = token_content(j[key], source, key);
      if (content.empty()) {
        if (std::string(key) == "pad_token") t.pad_token_.clear();
        continue;
      }
      try {
        t.set_special_token(key, content);
      } catch (const Error&) {
        throw_bad_input(source, std::string(key) + " '" + content + "' is not in the vocabulary", std::string("key ") + key);
      }
    }
    if (j.contains("chat_template")) {
      const json& ct = j["chat_template"];
      if (ct.is_string()) {
        t.chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": ..., "template": ...}]: the one named "default"
        for (const auto& e : ct)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            t.chat_template_ = e["template"].get<std::string>();
      }
    }
  }
  // Resolve the pad token now that every other token is known.
  t.pad_id_ = t.pad_token_.empty() ? -1 : t.piece_to_id(t.pad_token_);
  if (t.pad_id_ < 0) t.pad_id_ = t.unk_id_ >= 0 ? t.unk_id_ : t.eos_id_;
  t.rebuild_special_text();
  return t;
}

void Tokenizer::set_special_token(const std::string& which, const std::string& content) {
  const int32_t id = piece_to_id(content);
  if (id < 0)
    throw_bad_input(source_, which + " '" + content + "' is not in the vocabulary (qtrain does not add tokens)");
  if (which == "bos_token") bos_id_ = id, bos_token_ = content;
  else if (which == "eos_token") eos_id_ = id, eos_token_ = content;
  else if (which == "unk_token") unk_id_ = id, unk_token_ = content;
  else if (which == "pad_token") pad_id_ = id, pad_token_ = content;
  else throw_bad_input(source_, "unknown special token kind '" + which + "'");
  rebuild_special_text();
}

void Tokenizer::rebuild_special_text() {
  special_text_.clear();
  special_by_id_.clear();
  auto add = [&](const std::string& content, int32_t id) {
    if (content.empty() || id < 0) return;
    special_by_id_[id] = content;
    for (const auto& s : special_text_)
      if (s.first == content) return;
    special_text_.emplace_back(content, id);
  };
  for (const auto& a : added_) add(a.content, a.id);
  for (const auto& [piece, id] : spm_control_) add(piece, id);
  add(bos_token_, bos_id_);
  add(eos_token_, eos_id_);
  if (pad_id_ != unk_id_) add(pad_token_, pad_id_);
  // unk is left to sentencepiece: "<unk>" in text is rare and HF does not agree on it.
  std::stable_sort(special_text_.begin(), special_text_.end(),
                   [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  for (const auto& a : added_)
    if (a.content == piece) return a.id;
  const std::string p(piece);
  const int id = spm_->sp.PieceToId(p);
  if (id >= 0 && id < spm_size_ && spm_->sp.IdToPiece(id) == p) return id;
  return -1;
}

bool Tokenizer::is_special_text(std::string_view content) const {
  for (const auto& s : special_text_)
    if (s.first == content) return true;
  return false;
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size_)
    throw_bad_input(source_, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                 std::to_string(vocab_size_));
  for (const auto& a : added_)
    if (a.id == id) return a.content;
  if (id < spm_size_) return spm_->sp.IdToPiece(id);
  return {};
}

void Tokenizer::append_spm(std::string_view chunk, uint32_t offset, Encoding& out) const {
  if (chunk.empty()) return;
  const auto proto = spm_->sp.EncodeAsImmutableProto(chunk);
  for (const auto& p : proto.pieces()) {
    out.ids.push_back(static_cast<int32_t>(p.id()));
    out.begin.push_back(offset + p.begin());
    out.end.push_back(offset + p.end());
  }
}

Encoding Tokenizer::encode_with_offsets(std::string_view text) const {
  Encoding out;
  size_t chunk_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& s : special_text_)
      if (text.compare(i, s.first.size(), s.first) == 0) {
        hit = &s;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    append_spm(text.substr(chunk_start, i - chunk_start), static_cast<uint32_t>(chunk_start), out);
    out.ids.push_back(hit->second);
    out.begin.push_back(static_cast<uint32_t>(i));
    out.end.push_back(static_cast<uint32_t>(i + hit->first.size()));
    i += hit->first.size();
    chunk_start = i;
  }
  append_spm(text.substr(chunk_start), static_cast<uint32_t>(chunk_start), out);
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const { return encode(text, add_bos_, add_eos_); }

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  const Encoding e = encode_with_offsets(text);
  ids.insert(ids.end(), e.ids.begin(), e.ids.end());
  if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string s;
    if (const auto st = spm_->sp.Decode(run, &s); !st.ok()) throw_internal("sentencepiece decode: " + st.ToString());
    // Each run decodes as a text of its own: sentencepiece drops the dummy-prefix space of its
    // first piece, which is also the space encode_with_offsets added after a special token, so
    // decode(encode(text)) gives the text back.
    out += s;
    run.clear();
  };
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size_)
      throw_bad_input(source_, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                   std::to_string(vocab_size_));
    auto s = special_by_id_.find(id);
    if (s != special_by_id_.end() || id >= spm_size_) {
      flush();
      if (!skip_special && s != special_by_id_.end()) out += s->second;
      continue;
    }
    run.push_back(id);
  }
  flush();
  return out;
}

}  // namespace qtrain::text
