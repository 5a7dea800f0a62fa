// The tiny corpus: deterministic per seed, varied, and its facts are right.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "csrc/text/tiny_corpus.h"

namespace qtrain::text {
namespace {

TEST(TinyCorpus, SameSeedSameText) {
  EXPECT_EQ(tiny_corpus(5, 500), tiny_corpus(5, 500));
  EXPECT_NE(tiny_corpus(5, 500), tiny_corpus(6, 500));
  const auto a = tiny_qa_pairs(5, 100), b = tiny_qa_pairs(5, 100);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].question, b[i].question);
    EXPECT_EQ(a[i].answer, b[i].answer);
  }
}

TEST(TinyCorpus, PrefixIsStable) {
  // A longer corpus starts with the shorter one, so line counts can change without reshuffling.
  const auto short_c = tiny_corpus(9, 50), long_c = tiny_corpus(9, 80);
  for (size_t i = 0; i < short_c.size(); ++i) EXPECT_EQ(short_c[i], long_c[i]);
}

TEST(TinyCorpus, MixOfNarrativeAndQuestions) {
  const auto c = tiny_corpus(1, 3000);
  ASSERT_EQ(c.size(), 3000u);
  size_t questions = 0;
  std::set<std::string> distinct(c.begin(), c.end());
  for (const auto& line : c) {
    ASSERT_FALSE(line.empty());
    EXPECT_TRUE(line.back() == '.') << line;
    if (line.rfind("Question: ", 0) == 0) ++questions;
  }
  EXPECT_GT(questions, 800u);
  EXPECT_LT(questions, 1200u);
  EXPECT_GT(distinct.size(), 1500u);
}

TEST(TinyCorpus, ArithmeticAnswersAreRight) {
  int checked = 0;
  for (const auto& p : tiny_qa_pairs(3, 500)) {
    int a = 0, b = 0, r = 0;
    char op[8] = {};
    if (std::sscanf(p.question.c_str(), "What is %d %7s %d?", &a, op, &b) == 3) {
      ASSERT_EQ(std::sscanf(p.answer.c_str(), "%*d %*s %*d is %d.", &r), 1) << p.answer;
      EXPECT_EQ(r, std::string(op) == "plus" ? a + b : a - b) << p.question << " " << p.answer;
      EXPECT_GE(r, 0);
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(TinyCorpus, CapitalFacts) {
  bool found = false;
  for (const auto& p : tiny_qa_pairs(4, 500))
    if (p.question == "What is the capital of France?") {
      EXPECT_EQ(p.answer, "The capital of France is Paris.");
      found = true;
    }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace qtrain::text
