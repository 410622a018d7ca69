// Human durations on the command line: "250ms", "5s", "2m", "1h", "1d", or a bare number of
// seconds.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand {

std::optional<Millis> parse_duration(std::string_view text);
std::string format_duration(Millis ms);

}  // namespace errand
