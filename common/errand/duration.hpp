// Human durations on the command line: "250ms", "5s", "2m", "1h", "1d", compounds of them
// ("1h30m", "2m15s"), or one bare number of seconds ("90"); and times as RFC 3339 UTC strings, the
// one form times take in JSON and on screen.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand {

std::optional<Millis> parse_duration(std::string_view text);
std::string format_duration(Millis ms);
inline std::string format_duration(std::chrono::milliseconds d) {
    return format_duration(d.count());
}

// Milliseconds since the Unix epoch in UTC with milliseconds: "2026-11-28T19:30:00.123Z".
std::string format_time(Millis epoch_ms);
inline std::string format_time(Timestamp t) {
    return format_time(t.time_since_epoch().count());
}
// An RFC 3339 time in ms since the epoch: "2026-11-28T20:00:00Z", "2026-11-28T20:00:00.250+02:00"
// ('t' and 'z' may be lower case; digits past milliseconds are dropped). nullopt for anything
// else, including out-of-range fields and a missing zone.
std::optional<Millis> parse_time(std::string_view text);

}  // namespace errand
