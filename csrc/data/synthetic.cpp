// Question/answer pairs -> alpaca records.
#include "csrc/data/synthetic.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/text/tiny_corpus.h"

namespace qtrain::data {

std::vector<std::string> synthetic_alpaca_lines(uint64_t seed, size_t n) {
  std::vector<std::string> out;
  const auto pairs = text::tiny_qa_pairs(seed, n);
  for (size_t i = 0; i < pairs.size(); ++i) {
    nlohmann::ordered_json j;
    if (i % 2 == 0) {
      j["instruction"] = pairs[i].question;
      j["input"] = "";
    } else {
      j["instruction"] = "Answer the question.";
      j["input"] = pairs[i].question;
    }
    j["output"] = pairs[i].answer;
    out.push_back(j.dump());
  }
  return out;
}

void write_synthetic_alpaca(const std::string& path, uint64_t seed, size_t n) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw_bad_input(p.parent_path().string(), "cannot create folder: " + ec.message());
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp, "cannot create file");
    for (const auto& line : synthetic_alpaca_lines(seed, n)) f << line << '\n';
    if (!f.flush()) throw_bad_input(tmp, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, p, ec);
  if (ec) throw_bad_input(path, "cannot rename temporary file: " + ec.message());
}

}  // namespace qtrain::data
