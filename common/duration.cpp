// Parsing and printing of human durations.
#include "errand/duration.hpp"

#include <charconv>

#include <fmt/format.h>

namespace errand {

std::optional<Millis> parse_duration(std::string_view text) {
    if (text.empty()) return std::nullopt;
    double value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr == text.data() || value < 0) return std::nullopt;
    std::string_view unit(ptr, static_cast<std::size_t>(text.data() + text.size() - ptr));
    double scale = 0;
    if (unit.empty() || unit == "s")
        scale = 1000;
    else if (unit == "ms")
        scale = 1;
    else if (unit == "m")
        scale = 60'000;
    else if (unit == "h")
        scale = 3'600'000;
    else if (unit == "d")
        scale = 86'400'000;
    else
        return std::nullopt;
    double ms = value * scale;
    if (ms > 1e15) return std::nullopt;
    return static_cast<Millis>(ms + 0.5);
}

std::string format_duration(Millis ms) {
    if (ms < 1000) return fmt::format("{}ms", ms);
    if (ms < 60'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
    if (ms < 3'600'000) return fmt::format("{:.1f}m", static_cast<double>(ms) / 60'000.0);
    return fmt::format("{:.1f}h", static_cast<double>(ms) / 3'600'000.0);
}

}  // namespace errand
