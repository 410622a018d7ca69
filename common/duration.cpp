// Parsing and printing of human durations and of RFC 3339 times.
#include "errand/duration.hpp"

#include <time.h>

#include <array>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

namespace errand {

std::optional<Millis> parse_duration(std::string_view text) {
    // One or more NUMBER UNIT terms ("1h30m", "2m15.5s"), or one bare NUMBER of seconds.
    if (text.empty()) return std::nullopt;
    double ms = 0;
    const char* p = text.data();
    const char* const end = text.data() + text.size();
    bool first = true;
    while (p != end) {
        double value = 0;
        auto [next, ec] = std::from_chars(p, end, value, std::chars_format::fixed);
        if (ec != std::errc() || next == p || !std::isfinite(value) || value < 0)
            return std::nullopt;
        p = next;
        double scale = 0;
        auto unit_is = [&](std::string_view unit) {
            if (std::string_view(p, static_cast<std::size_t>(end - p)).starts_with(unit)) {
                p += unit.size();
                return true;
            }
            return false;
        };
        if (p == end && first)
            scale = 1000;  // a bare number: seconds
        else if (unit_is("ms"))
            scale = 1;
        else if (unit_is("s"))
            scale = 1000;
        else if (unit_is("m"))
            scale = 60'000;
        else if (unit_is("h"))
            scale = 3'600'000;
        else if (unit_is("d"))
            scale = 86'400'000;
        else
            return std::nullopt;
        ms += value * scale;
        if (ms > 1e15) return std::nullopt;
        first = false;
    }
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

std::string format_time(Millis epoch_ms) {
    // Floor division, so times before 1970 still get a millisecond part in 0..999.
    Millis secs = epoch_ms / 1000;
    Millis ms = epoch_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = static_cast<time_t>(secs);
    struct tm tm {};
    if (gmtime_r(&t, &tm) == nullptr) return fmt::format("@{}ms", epoch_ms);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

std::optional<Millis> parse_time(std::string_view text) {
    std::size_t i = 0;
    // Exactly n digits.
    auto number = [&](std::size_t n, int& out) {
        if (text.size() - i < n) return false;
        out = 0;
        for (std::size_t k = 0; k < n; ++k, ++i) {
            if (text[i] < '0' || text[i] > '9') return false;
            out = out * 10 + (text[i] - '0');
        }
        return true;
    };
    // One character out of `chars`.
    auto one_of = [&](std::string_view chars) {
        if (i >= text.size() || chars.find(text[i]) == std::string_view::npos) return false;
        ++i;
        return true;
    };
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    if (!(number(4, year) && one_of("-") && number(2, month) && one_of("-") && number(2, day) &&
          one_of("Tt") && number(2, hour) && one_of(":") && number(2, minute) && one_of(":") &&
          number(2, second))) {
        return std::nullopt;
    }
    Millis ms = 0;
    if (one_of(".")) {
        std::size_t start = i;
        for (Millis scale = 100; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            ms += (text[i] - '0') * scale;
            scale /= 10;
        }
        if (i == start) return std::nullopt;
    }
    Millis offset_minutes = 0;
    if (!one_of("Zz")) {
        if (i >= text.size() || (text[i] != '+' && text[i] != '-')) return std::nullopt;
        int sign = text[i++] == '-' ? -1 : 1;
        int oh = 0, om = 0;
        if (!(number(2, oh) && one_of(":") && number(2, om)) || oh > 23 || om > 59) {
            return std::nullopt;
        }
        offset_minutes = sign * (oh * 60 + om);
    }
    if (i != text.size()) return std::nullopt;

    static constexpr std::array<int, 12> kDays = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month < 1 || month > 12 || day < 1 || day > kDays[static_cast<std::size_t>(month - 1)] ||
        (month == 2 && day == 29 && !leap) || hour > 23 || minute > 59 || second > 60) {
        return std::nullopt;  // second 60 is a leap second; timegm rolls it into the next minute
    }
    struct tm tm {};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    Millis secs = static_cast<Millis>(timegm(&tm));
    return secs * 1000 + ms - offset_minutes * 60'000;
}

}  // namespace errand
