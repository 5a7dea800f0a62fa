// Word lists and sentence templates of the tiny corpus. Every choice goes through qtrain::Rng, so
// the text depends only on the seed.
#include "csrc/text/tiny_corpus.h"

#include <array>
#include <string_view>

#include "csrc/core/rng.h"

namespace qtrain::text {
namespace {

constexpr std::array<std::string_view, 16> kNames = {"Anna", "Ben", "Clara", "David", "Emma", "Felix",
                                                      "Grace", "Henry", "Iris", "Jack", "Lena", "Max",
                                                      "Nora", "Oscar", "Paula", "Sam"};
constexpr std::array<std::string_view, 20> kNouns = {"cat", "dog", "bird", "tree", "river", "house", "boat",
                                                     "apple", "book", "garden", "window", "horse", "lamp",
                                                     "bridge", "cloud", "stone", "flower", "road", "letter",
                                                     "song"};
constexpr std::array<std::string_view, 14> kAdjectives = {"small", "big", "old", "young", "red", "green",
                                                          "quiet", "happy", "dark", "bright", "warm", "cold",
                                                          "tall", "slow"};
constexpr std::array<std::string_view, 12> kVerbs = {"sees", "likes", "finds", "paints", "follows", "carries",
                                                     "watches", "builds", "opens", "reads", "draws", "visits"};
constexpr std::array<std::string_view, 10> kPlaces = {"in the park", "by the sea", "at home", "near the hill",
                                                      "in the town", "under the tree", "on the road",
                                                      "in the morning", "at night", "after school"};
constexpr std::array<std::string_view, 11> kNumbers = {"zero", "one", "two", "three", "four", "five",
                                                       "six", "seven", "eight", "nine", "ten"};

struct Capital {
  std::string_view country, city;
};
constexpr std::array<Capital, 20> kCapitals = {{{"France", "Paris"},     {"Germany", "Berlin"},
                                                {"Italy", "Rome"},       {"Spain", "Madrid"},
                                                {"Japan", "Tokyo"},      {"Egypt", "Cairo"},
                                                {"Canada", "Ottawa"},    {"Peru", "Lima"},
                                                {"Kenya", "Nairobi"},    {"Norway", "Oslo"},
                                                {"Greece", "Athens"},    {"Poland", "Warsaw"},
                                                {"Chile", "Santiago"},   {"Cuba", "Havana"},
                                                {"Ireland", "Dublin"},   {"Austria", "Vienna"},
                                                {"Portugal", "Lisbon"},  {"Sweden", "Stockholm"},
                                                {"Finland", "Helsinki"}, {"Hungary", "Budapest"}}};

struct Pair {
  std::string_view a, b;
};
constexpr std::array<Pair, 12> kOpposites = {{{"hot", "cold"},   {"big", "small"},  {"up", "down"},
                                              {"day", "night"},  {"fast", "slow"},  {"old", "new"},
                                              {"open", "closed"}, {"light", "dark"}, {"early", "late"},
                                              {"full", "empty"}, {"left", "right"}, {"high", "low"}}};
constexpr std::array<Pair, 8> kColours = {{{"the sky", "blue"},     {"grass", "green"},  {"snow", "white"},
                                           {"a banana", "yellow"}, {"coal", "black"},   {"a tomato", "red"},
                                           {"an orange", "orange"}, {"a plum", "purple"}}};

template <typename A>
auto pick(Rng& rng, const A& list) {
  return list[static_cast<size_t>(rng.below(list.size()))];
}

std::string capitalized(std::string_view s) {
  std::string r(s);
  if (!r.empty() && r[0] >= 'a' && r[0] <= 'z') r[0] = static_cast<char>(r[0] - 'a' + 'A');
  return r;
}

// Each draw goes into its own variable first: the operands of a chain of `+` are evaluated in an
// unspecified order, which would make the text depend on the compiler.
std::string narrative(Rng& rng) {
  const std::string noun(pick(rng, kNouns));
  const std::string adj(pick(rng, kAdjectives));
  const std::string name(pick(rng, kNames));
  const std::string verb(pick(rng, kVerbs));
  const std::string place(pick(rng, kPlaces));
  switch (rng.below(5)) {
    case 0:
      return name + " " + verb + " the " + adj + " " + noun + " " + place + ".";
    case 1:
      return "The " + adj + " " + noun + " is " + place + ".";
    case 2: {
      const std::string count(kNumbers[2 + rng.below(9)]);
      return name + " has " + count + " " + adj + " " + noun + "s.";
    }
    case 3: {
      const std::string other_name(pick(rng, kNames));
      const std::string other_verb(pick(rng, kVerbs));
      const std::string other_noun(pick(rng, kNouns));
      return capitalized(place) + ", " + name + " " + verb + " a " + noun + " and " + other_name + " " +
             other_verb + " a " + other_noun + ".";
    }
    default: {
      const std::string other_adj(pick(rng, kAdjectives));
      return "Every " + noun + " is " + adj + ", but this one is " + other_adj + ".";
    }
  }
}

QaPair qa_pair(Rng& rng) {
  switch (rng.below(5)) {
    case 0: {
      const uint64_t a = rng.below(10), b = rng.below(10);
      const std::string q = std::to_string(a) + " plus " + std::to_string(b);
      return {"What is " + q + "?", q + " is " + std::to_string(a + b) + "."};
    }
    case 1: {
      uint64_t a = rng.below(20), b = rng.below(10);
      if (b > a) std::swap(a, b);
      const std::string q = std::to_string(a) + " minus " + std::to_string(b);
      return {"What is " + q + "?", q + " is " + std::to_string(a - b) + "."};
    }
    case 2: {
      const Capital c = pick(rng, kCapitals);
      return {"What is the capital of " + std::string(c.country) + "?",
              "The capital of " + std::string(c.country) + " is " + std::string(c.city) + "."};
    }
    case 3: {
      const Pair p = pick(rng, kOpposites);
      return {"What is the opposite of " + std::string(p.a) + "?",
              "The opposite of " + std::string(p.a) + " is " + std::string(p.b) + "."};
    }
    default: {
      const Pair p = pick(rng, kColours);
      return {"What colour is " + std::string(p.a) + "?", capitalized(p.a) + " is " + std::string(p.b) + "."};
    }
  }
}

}  // namespace

std::vector<QaPair> tiny_qa_pairs(uint64_t seed, size_t n) {
  Rng rng = Rng::for_stream(seed, "tiny_qa_pairs");
  std::vector<QaPair> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(qa_pair(rng));
  return out;
}

std::vector<std::string> tiny_corpus(uint64_t seed, size_t n) {
  Rng rng = Rng::for_stream(seed, "tiny_corpus");
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (rng.below(3) == 0) {
      const QaPair p = qa_pair(rng);
      out.push_back("Question: " + p.question + " Answer: " + p.answer);
    } else {
      out.push_back(narrative(rng));
    }
  }
  return out;
}

}  // namespace qtrain::text
