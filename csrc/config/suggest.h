// "Did you mean ...?" for names the user typed: the closest of the known names by edit distance,
// offered only when it is close enough to be a plausible typo.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace qtrain::config {

// Levenshtein distance (insert, delete, substitute, each cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The closest candidate, or "" when none is within max(2, |name| / 3) edits.
std::string closest_name(std::string_view name, const std::vector<std::string>& candidates);

// "; did you mean 'x'?" or "" when there is no close candidate.
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates);

}  // namespace qtrain::config
