// "Did you mean": the known word closest to a mistyped one, for error messages (a subcommand of
// errand, a key of a config file).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace errand {

// The candidate nearest to `word` by edit distance (insertions, deletions, substitutions and
// swaps of neighbours, case-insensitive), if it is near enough to be a typo: at most 1 edit for
// words up to 4 letters, 2 up to 8, 3 beyond. The first of equally near candidates wins.
std::optional<std::string> closest_spelling(std::string_view word,
                                            const std::vector<std::string>& candidates);

}  // namespace errand
