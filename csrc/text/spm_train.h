// Trains a SentencePiece model in-process (no files, no CLI) the way Llama's tokenizer.model is
// built: BPE, identity normalization, digits split, byte fallback. Special ids follow Llama:
// unk 0, bos 1, eos 2, no pad piece. One thread and no sentence sampling, so the same corpus
// always gives the same bytes.
#pragma once
#include <string>
#include <vector>

namespace qtrain::text {

inline constexpr int kSpmUnkId = 0;
inline constexpr int kSpmBosId = 1;
inline constexpr int kSpmEosId = 2;

struct SpmTrainOptions {
  int vocab_size = 512;
  std::string model_type = "bpe";  // "bpe" or "unigram"
  bool byte_fallback = true;
};

// Returns the serialized model (the bytes of a tokenizer.model file). The vocabulary has
// vocab_size pieces, or fewer when the corpus cannot fill it. Throws qtrain::Error (BadInput) when
// the trainer rejects the options, e.g. a vocabulary too small for the byte pieces and characters.
std::string train_sentencepiece(const std::vector<std::string>& corpus, const SpmTrainOptions& opt);

}  // namespace qtrain::text
