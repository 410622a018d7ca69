// Parsing and printing of human durations.
#include "errand/duration.hpp"

#include <charconv>
#include <cmath>

#include <fmt/format.h>

namespace errand {

std::optional<Millis> parse_duration(std::string_view text) {
    if (text.empty()) return std::nullopt;
    double value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr == text.data() || !std::isfinite(value) || value < 0)
        return std::nullopt;
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
    // Whole units print without decimals ("5s", "2m"); others with one ("1.5s").
    struct Unit {
        Millis size;
        const char* name;
    };
    static constexpr Unit kUnits[] = {
        {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
    for (const auto& u : kUnits) {
        if (ms < u.size) continue;
        if (ms % u.size == 0) return fmt::format("{}{}", ms / u.size, u.name);
        return fmt::format("{:.1f}{}", static_cast<double>(ms) / static_cast<double>(u.size),
                           u.name);
    }
    return fmt::format("{}ms", ms);
}

}  // namespace errand
