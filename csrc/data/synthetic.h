// A small synthetic instruction dataset in alpaca JSONL, built on the tiny corpus's question /
// answer pairs: the demo and the SFT tests train the tiny model on it. Same seed, same bytes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qtrain::data {

// One JSON object per element. Even examples ask the question as the instruction with an empty
// input; odd ones give a fixed instruction and the question as input.
std::vector<std::string> synthetic_alpaca_lines(uint64_t seed, size_t n);

// Writes the lines to `path` (temporary name, then rename).
void write_synthetic_alpaca(const std::string& path, uint64_t seed, size_t n);

}  // namespace qtrain::data
