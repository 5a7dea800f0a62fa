// The tokenizer of a Hugging Face model folder: tokenizer.model through the sentencepiece library,
// with the special tokens, added tokens and BOS/EOS switches that tokenizer_config.json declares.
// Special-token strings written in the text ("<|im_start|>", "</s>") become their ids instead of
// being split into pieces, as HF's tokenizers do; the text between them goes to sentencepiece.
// Folders with only tokenizer.json (byte-level BPE) are not supported yet and fail clearly.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qtrain::text {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = true;
};

// Token ids with the byte range [begin, end) of the input that each one covers. A token that
// covers no byte (e.g. the second byte-fallback piece of a character) has begin == end.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<uint32_t> begin;
  std::vector<uint32_t> end;
};

class Tokenizer {
 public:
  // Reads <dir>/tokenizer.model and <dir>/tokenizer_config.json (optional; chat_template.jinja is
  // read when the config has no chat_template). Throws BadInput naming the file.
  static Tokenizer load(const std::string& model_dir);
  // From the bytes of a tokenizer.model and the text of a tokenizer_config.json ("" for none);
  // `source` names them in messages.
  static Tokenizer from_parts(const std::string& spm_model, const std::string& config_json, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // With BOS / EOS as tokenizer_config.json's add_bos_token / add_eos_token say.
  std::vector<int32_t> encode(std::string_view text) const;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const;
  // No BOS / EOS added; special-token strings in the text are mapped to their ids.
  Encoding encode_with_offsets(std::string_view text) const;
  // Special tokens are written as their strings unless skip_special. Throws BadInput on an id
  // outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  std::string id_to_piece(int32_t id) const;
  // The id of a piece or added token, -1 when the vocabulary has no such piece.
  int32_t piece_to_id(std::string_view piece) const;
  // Whether `content` is matched as one token when it appears in text.
  bool is_special_text(std::string_view content) const;

  int32_t vocab_size() const { return vocab_size_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  // pad_token when set; else the sentencepiece pad piece, else unk, else eos. Padded positions
  // carry label -100 and lie outside every row's attention length, so any valid id works.
  int32_t pad_id() const { return pad_id_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  bool add_bos_token() const { return add_bos_; }
  bool add_eos_token() const { return add_eos_; }
  // The Jinja chat template of the folder, "" when none.
  const std::string& chat_template() const { return chat_template_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

  // Sets bos_token / eos_token / pad_token / unk_token to a string of the vocabulary (the run
  // file's special_tokens). Throws BadInput when the vocabulary lacks it: qtrain does not grow
  // the embeddings.
  void set_special_token(const std::string& which, const std::string& content);

 private:
  Tokenizer();
  void rebuild_special_text();
  void append_spm(std::string_view chunk, uint32_t offset, Encoding& out) const;

  struct Spm;
  std::unique_ptr<Spm> spm_;
  std::string source_;
  int32_t spm_size_ = 0;
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1, pad_id_ = -1;
  std::string bos_token_, eos_token_, unk_token_, pad_token_;
  bool add_bos_ = true;
  bool add_eos_ = false;
  std::string chat_template_;
  std::vector<AddedToken> added_;
  // Control pieces of tokenizer.model (other than unk): special tokens HF matches in text too.
  std::vector<std::pair<std::string, int32_t>> spm_control_;
  // Strings matched as single tokens in text, longest first, with their ids.
  std::vector<std::pair<std::string, int32_t>> special_text_;
  std::map<int32_t, std::string> special_by_id_;
};

}  // namespace qtrain::text
