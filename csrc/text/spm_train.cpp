// SentencePiece training through the library's key/value interface, with the corpus handed over
// by an iterator instead of a file.
#include "csrc/text/spm_train.h"

#include <sentencepiece_trainer.h>

#include <string>
#include <unordered_map>

#include "csrc/core/error.h"

namespace qtrain::text {
namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

std::string train_sentencepiece(const std::vector<std::string>& corpus, const SpmTrainOptions& opt) {
  if (opt.model_type != "bpe" && opt.model_type != "unigram")
    throw_bad_input("tokenizer", "unknown sentencepiece model type '" + opt.model_type + "'", "bpe or unigram");
  if (corpus.empty()) throw_bad_input("tokenizer", "empty training corpus");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", opt.model_type},
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"byte_fallback", opt.byte_fallback ? "true" : "false"},
      {"character_coverage", "1.0"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", std::to_string(kSpmUnkId)},
      {"bos_id", std::to_string(kSpmBosId)},
      {"eos_id", std::to_string(kSpmEosId)},
      {"pad_id", "-1"},
      // Determinism: one thread, every sentence, no shuffling.
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", "4192"},
      // A vocabulary larger than the corpus supports ends up with fewer pieces instead of failing;
      // the model's embedding then has unused rows, as many released models do.
      {"hard_vocab_limit", "false"},
      {"minloglevel", "2"},
  };
  VectorIterator it(corpus);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!st.ok()) throw_bad_input("tokenizer", std::string("sentencepiece training failed: ") + st.ToString());
  if (model.empty()) throw_internal("sentencepiece training returned an empty model");
  return model;
}

}  // namespace qtrain::text
