// JSONL datasets for SFT: read each file, render and tokenize every line, then mix the datasets
// (concatenate, shuffle with the run's seed) and hold out a validation split. A bad line is
// skipped with a "file:line: what" warning until there are more than max(10, 1%) of them, which
// is an error: a file that is mostly wrong should stop the run, a few stray lines should not.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "csrc/config/run_config.h"
#include "csrc/data/example.h"
#include "csrc/data/formats.h"
#include "csrc/text/tokenizer.h"

namespace qtrain::data {

struct DataStats {
  int64_t lines = 0;       // non-blank lines read
  int64_t examples = 0;    // examples kept
  int64_t bad_lines = 0;   // skipped with a warning
  int64_t truncated = 0;   // cut to sequence_len
  int64_t no_targets = 0;  // dropped: nothing left to learn after truncation
  int64_t tokens = 0;      // input tokens of the kept examples
  int64_t targets = 0;     // target tokens of the kept examples
  std::vector<std::string> warnings;  // "file:line: what", one per bad line
  void add(const DataStats& o);
};

struct SftOptions {
  int64_t sequence_len = 2048;
  int64_t max_bad_lines = 10;     // allowed bad lines: max(max_bad_lines, max_bad_fraction * lines)
  double max_bad_fraction = 0.01;
};

// The template for chat_template datasets: the named one, or for "tokenizer_default" the one the
// tokenizer's Jinja template is recognised as. Checks that the tokenizer has the template's
// markers as single tokens. `file` and `where` name the setting in messages.
text::ChatTemplate resolve_chat_template(const std::string& name, const text::Tokenizer& tok, const std::string& file,
                                         const std::string& where);

// The tokenizer of cfg.base_model with the run file's special_tokens applied. Throws BadInput
// naming the run file when a special token is not in the vocabulary.
text::Tokenizer load_run_tokenizer(const config::RunConfig& cfg);

// Reads one JSONL file. Throws BadInput for a missing file or too many bad lines.
std::vector<Example> load_jsonl_dataset(const config::DatasetSpec& spec, const text::Tokenizer& tok,
                                        const RenderContext& ctx, const SftOptions& opt, DataStats& stats);

struct SftData {
  std::vector<Example> train;
  std::vector<Example> val;
  DataStats stats;
};

// Every dataset of the run file, mixed and split. Dataset paths are taken as written (relative to
// the working directory). val_set_size < 1 takes round(fraction * n) examples (at least one when
// the fraction is > 0), >= 1 that many; the split must leave training examples.
SftData build_sft_data(const config::RunConfig& cfg, const text::Tokenizer& tok);

// The deterministic shuffle used for mixing and epochs: Fisher-Yates driven by Rng::for_stream(seed, stream).
void seeded_shuffle(std::vector<uint32_t>& v, uint64_t seed, const std::string& stream);

// How many of n examples val_set_size holds out. Throws BadInput (cfg.source, key val_set_size)
// when nothing would be left to train on.
size_t val_count(const config::RunConfig& cfg, size_t n);

}  // namespace qtrain::data
