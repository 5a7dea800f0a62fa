// Reading, mixing and splitting SFT datasets.
#include "csrc/data/sft_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"

namespace qtrain::data {

void DataStats::add(const DataStats& o) {
  lines += o.lines;
  examples += o.examples;
  bad_lines += o.bad_lines;
  truncated += o.truncated;
  no_targets += o.no_targets;
  tokens += o.tokens;
  targets += o.targets;
  warnings.insert(warnings.end(), o.warnings.begin(), o.warnings.end());
}

text::ChatTemplate resolve_chat_template(const std::string& name, const text::Tokenizer& tok, const std::string& file,
                                         const std::string& where) {
  const text::ChatTemplate t = name == "tokenizer_default"
                                   ? text::recognise_chat_template(tok.chat_template(), file)
                                   : text::parse_chat_template(name, file, where);
  for (const auto& m : text::chat_template_markers(t, {tok.bos_token(), tok.eos_token()}))
    if (!tok.is_special_text(m))
      throw_bad_input(file, std::string("chat template ") + text::chat_template_name(t) + " needs '" + m +
                                "' as a single token, and the model's tokenizer has no such token",
                      where);
  return t;
}

text::Tokenizer load_run_tokenizer(const config::RunConfig& cfg) {
  text::Tokenizer tok = text::Tokenizer::load(cfg.base_model);
  for (const auto& [which, content] : cfg.special_tokens) {
    try {
      tok.set_special_token(which, content);
    } catch (const Error&) {
      auto o = cfg.origins.find("special_tokens");
      throw_bad_input(cfg.source, which + " '" + content + "' is not in the vocabulary of " + cfg.base_model +
                                      " (qtrain does not add tokens)",
                      "key special_tokens" + (o == cfg.origins.end() ? std::string() : ", " + o->second));
    }
  }
  return tok;
}

std::vector<Example> load_jsonl_dataset(const config::DatasetSpec& spec, const text::Tokenizer& tok,
                                        const RenderContext& ctx, const SftOptions& opt, DataStats& stats) {
  std::ifstream f(spec.path, std::ios::binary);
  if (!f) throw_bad_input(spec.path, "cannot open the dataset file", spec.where);
  std::vector<std::pair<int64_t, std::string>> lines;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.emplace_back(n, std::move(line));
  }
  DataStats s;
  s.lines = static_cast<int64_t>(lines.size());
  const int64_t allowed = std::max<int64_t>(opt.max_bad_lines,
                                            static_cast<int64_t>(opt.max_bad_fraction * static_cast<double>(s.lines)));
  std::vector<Example> out;
  for (const auto& [n, text] : lines) {
    const std::string where = spec.path + ":" + std::to_string(n);
    std::vector<text::Segment> segs;
    try {
      segs = render_record(nlohmann::json::parse(text), spec, ctx);
    } catch (const nlohmann::json::exception& e) {
      s.warnings.push_back(where + ": not valid JSON (" + e.what() + ")");
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::BadInput) throw;
      s.warnings.push_back(where + ": " + e.what());
    }
    if (segs.empty()) {
      if (++s.bad_lines > allowed)
        throw_bad_input(spec.path, "too many bad lines (" + std::to_string(s.bad_lines) + " of " +
                                       std::to_string(s.lines) + ", at most " + std::to_string(allowed) +
                                       " are skipped); the first: " + s.warnings.front());
      continue;
    }
    TokenizeResult r = tokenize_segments(segs, tok, opt.sequence_len);
    s.truncated += r.truncated ? 1 : 0;
    const int64_t targets = r.example.num_targets();
    if (targets == 0) {
      ++s.no_targets;
      continue;
    }
    s.tokens += static_cast<int64_t>(r.example.input_ids.size());
    s.targets += targets;
    out.push_back(std::move(r.example));
  }
  s.examples = static_cast<int64_t>(out.size());
  stats.add(s);
  return out;
}

void seeded_shuffle(std::vector<uint32_t>& v, uint64_t seed, const std::string& stream) {
  Rng rng = Rng::for_stream(seed, stream);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

size_t val_count(const config::RunConfig& cfg, size_t n) {
  if (cfg.val_set_size <= 0) return 0;
  size_t k = cfg.val_set_size >= 1 ? static_cast<size_t>(cfg.val_set_size)
                                   : std::max<size_t>(1, static_cast<size_t>(std::llround(cfg.val_set_size * static_cast<double>(n))));
  if (k >= n)
    throw_bad_input(cfg.source, "val_set_size holds out " + std::to_string(k) + " of " + std::to_string(n) +
                                    " examples, leaving none to train on",
                    "key val_set_size");
  return k;
}

SftData build_sft_data(const config::RunConfig& cfg, const text::Tokenizer& tok) {
  RenderContext ctx;
  ctx.tokens = {tok.bos_token(), tok.eos_token()};
  ctx.add_bos = tok.add_bos_token();
  ctx.train_on_inputs = cfg.train_on_inputs;
  const bool chat = std::any_of(cfg.datasets.begin(), cfg.datasets.end(),
                                [](const auto& d) { return d.type == "chat_template"; });
  if (chat) {
    auto o = cfg.origins.find("chat_template");
    ctx.chat = resolve_chat_template(cfg.chat_template, tok, cfg.source,
                                     "key chat_template" + (o == cfg.origins.end() ? std::string() : ", " + o->second));
  }
  SftOptions opt;
  opt.sequence_len = cfg.sequence_len;
  SftData d;
  std::vector<Example> all;
  for (const auto& spec : cfg.datasets) {
    auto part = load_jsonl_dataset(spec, tok, ctx, opt, d.stats);
    std::move(part.begin(), part.end(), std::back_inserter(all));
  }
  if (all.empty()) throw_bad_input(cfg.source, "the datasets hold no usable example", "key datasets");
  std::vector<uint32_t> order(all.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  if (cfg.shuffle_merged_datasets) seeded_shuffle(order, static_cast<uint64_t>(cfg.seed), "merge datasets");
  const size_t n_val = val_count(cfg, all.size());
  for (size_t i = 0; i < order.size(); ++i) (i < n_val ? d.val : d.train).push_back(std::move(all[order[i]]));
  return d;
}

}  // namespace qtrain::data
