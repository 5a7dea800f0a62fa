// A small English-like corpus generated from word lists with a seeded generator: simple narrative
// sentences plus question/answer pairs (arithmetic, capitals, colours, opposites) that a tiny model
// can learn. It trains the tiny model's tokenizer and feeds the tiny datasets of the tests and the
// demo; the same seed always gives the same text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qtrain::text {

struct QaPair {
  std::string question;  // e.g. "What is 3 plus 4?"
  std::string answer;    // e.g. "3 plus 4 is 7."
};

// `n` question/answer pairs drawn from all kinds of facts.
std::vector<QaPair> tiny_qa_pairs(uint64_t seed, size_t n);

// `n` lines: about two thirds narrative sentences, the rest "Question: ... Answer: ..." lines.
std::vector<std::string> tiny_corpus(uint64_t seed, size_t n);

}  // namespace qtrain::text
