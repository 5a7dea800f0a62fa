// SentencePiece training on the tiny corpus: deterministic bytes, Llama's special ids, byte fallback.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include "csrc/core/error.h"
#include "csrc/text/spm_train.h"
#include "csrc/text/tiny_corpus.h"

namespace qtrain::text {
namespace {

const std::string& trained_model() {
  static const std::string model = train_sentencepiece(tiny_corpus(11, 2000), SpmTrainOptions{});
  return model;
}

TEST(SpmTrain, Deterministic) {
  EXPECT_EQ(train_sentencepiece(tiny_corpus(11, 2000), SpmTrainOptions{}), trained_model());
}

TEST(SpmTrain, LlamaSpecialIdsAndVocab) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(trained_model()).ok());
  EXPECT_EQ(sp.GetPieceSize(), 512);
  EXPECT_EQ(sp.unk_id(), kSpmUnkId);
  EXPECT_EQ(sp.bos_id(), kSpmBosId);
  EXPECT_EQ(sp.eos_id(), kSpmEosId);
  EXPECT_EQ(sp.pad_id(), -1);
  EXPECT_EQ(sp.IdToPiece(0), "<unk>");
  EXPECT_EQ(sp.IdToPiece(1), "<s>");
  EXPECT_EQ(sp.IdToPiece(2), "</s>");
  EXPECT_EQ(sp.IdToPiece(3), "<0x00>");  // byte pieces follow the specials, as in Llama
}

TEST(SpmTrain, RoundTripWithByteFallback) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(trained_model()).ok());
  for (const std::string s : {"What is the capital of France?", "Grüße aus Köln 42", "zebra {x} ~ 7+8"}) {
    std::vector<int> ids;
    ASSERT_TRUE(sp.Encode(s, &ids).ok());
    for (int id : ids) EXPECT_NE(id, kSpmUnkId) << s;
    std::string back;
    ASSERT_TRUE(sp.Decode(ids, &back).ok());
    EXPECT_EQ(back, s);
  }
  // Digits are split one by one.
  std::vector<std::string> pieces;
  ASSERT_TRUE(sp.Encode("123", &pieces).ok());
  EXPECT_EQ(pieces.back(), "3");
}

TEST(SpmTrain, RejectsBadOptions) {
  SpmTrainOptions bad;
  bad.model_type = "word2vec";
  EXPECT_THROW(train_sentencepiece(tiny_corpus(1, 10), bad), Error);
  EXPECT_THROW(train_sentencepiece({}, SpmTrainOptions{}), Error);
}

}  // namespace
}  // namespace qtrain::text
