// Cron expressions: parsing, and the next fire time in a zone (contract in cron.hpp).
#include "cron.hpp"

#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <vector>

namespace errand::broker {

namespace {

struct FieldSpec {
    const char* name;
    int lo, hi;
    const char* const* names;  // for MON (index 1-12) and DOW (0-6), else null
    int names_base;
};

constexpr const char* kMonths[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                   "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kDays[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

constexpr FieldSpec kSec{"second", 0, 59, nullptr, 0};
constexpr FieldSpec kMin{"minute", 0, 59, nullptr, 0};
constexpr FieldSpec kHour{"hour", 0, 23, nullptr, 0};
constexpr FieldSpec kDom{"day of month", 1, 31, nullptr, 0};
constexpr FieldSpec kMon{"month", 1, 12, kMonths, 1};
constexpr FieldSpec kDow{"day of week", 0, 7, kDays, 0};

[[noreturn]] void fail(const FieldSpec& f, std::string_view text, const std::string& why) {
    throw CronError(fmt::format("cron field '{}' ('{}'): {}", f.name, text, why));
}

int parse_value(const FieldSpec& f, std::string_view field, std::string_view v) {
    if (v.empty()) fail(f, field, "a value is missing");
    if (f.names && std::isalpha(static_cast<unsigned char>(v[0]))) {
        std::string up(v);
        for (auto& c : up)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        int n = f.names == kMonths ? 12 : 7;
        for (int i = 0; i < n; ++i)
            if (up == f.names[i]) return i + f.names_base;
        fail(f, field, fmt::format("'{}' is not a {} name", v, f.name));
    }
    int x = 0;
    for (char c : v) {
        if (c < '0' || c > '9') fail(f, field, fmt::format("'{}' is not a number", v));
        x = x * 10 + (c - '0');
        if (x > 1000) break;
    }
    if (x < f.lo || x > f.hi)
        fail(f, field, fmt::format("{} is out of range {}-{}", v, f.lo, f.hi));
    return x;
}

// The values a field allows (bit i: value i).
template <std::size_t N>
std::bitset<N> parse_field(const FieldSpec& f, std::string_view field) {
    std::bitset<N> bits;
    if (field.empty()) fail(f, field, "empty");
    std::size_t start = 0;
    while (start <= field.size()) {
        std::size_t comma = field.find(',', start);
        std::string_view part = field.substr(
            start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        if (part.empty()) fail(f, field, "an empty list item");
        int lo = f.lo, hi = f.hi, step = 1;
        std::string_view range = part;
        if (auto slash = part.find('/'); slash != std::string_view::npos) {
            range = part.substr(0, slash);
            std::string_view s = part.substr(slash + 1);
            if (s.empty() || s.size() > 4 ||
                !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
                fail(f, field, fmt::format("step '{}' is not a number", s));
            step = std::stoi(std::string(s));
            if (step < 1 || step > f.hi)
                fail(f, field, fmt::format("step {} is out of range 1-{}", s, f.hi));
        }
        bool slashed = range.size() != part.size();
        if (range == "*") {
            // the whole range
        } else if (auto dash = range.find('-'); dash != std::string_view::npos) {
            lo = parse_value(f, field, range.substr(0, dash));
            hi = parse_value(f, field, range.substr(dash + 1));
            if (lo > hi) fail(f, field, fmt::format("range {}-{} runs backwards", lo, hi));
        } else {
            lo = parse_value(f, field, range);
            if (!slashed) hi = lo;  // `N/STEP` runs from N to the maximum
        }
        for (int v = lo; v <= hi; v += step) {
            int bit = (&f == &kDow && v == 7) ? 0 : v;
            bits.set(static_cast<std::size_t>(bit));
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return bits;
}

std::vector<std::string_view> split_blanks(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])))
            ++i;
        std::size_t j = i;
        while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j])))
            ++j;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

}  // namespace

CronSchedule CronSchedule::parse(std::string_view expr, std::string_view zone) {
    CronSchedule c;
    if (expr.size() > 256) throw CronError("cron expression is longer than 256 characters");
    c.expr_ = std::string(expr);
    std::string_view body = expr;
    std::string macro;
    auto words = split_blanks(body);
    if (words.size() == 1 && !words[0].empty() && words[0][0] == '@') {
        static constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kMacros{{
            {"@yearly", "0 0 1 1 *"},
            {"@annually", "0 0 1 1 *"},
            {"@monthly", "0 0 1 * *"},
            {"@weekly", "0 0 * * 0"},
            {"@daily", "0 0 * * *"},
            {"@midnight", "0 0 * * *"},
            {"@hourly", "0 * * * *"},
        }};
        auto it = std::find_if(kMacros.begin(), kMacros.end(),
                               [&](const auto& m) { return m.first == words[0]; });
        if (it == kMacros.end())
            throw CronError(fmt::format(
                "unknown cron macro '{}' (known: @yearly @annually @monthly @weekly @daily "
                "@midnight @hourly)",
                words[0]));
        words = split_blanks(it->second);
    }
    std::string_view sec = "0";
    if (words.size() == 6) {
        sec = words[0];
        words.erase(words.begin());
    } else if (words.size() != 5) {
        throw CronError(fmt::format(
            "cron expression '{}' has {} fields; give 5 (minute hour day-of-month month "
            "day-of-week), 6 (a leading second), or an @-form such as @daily",
            expr, words.size()));
    }
    c.sec_ = parse_field<60>(kSec, sec);
    c.min_ = parse_field<60>(kMin, words[0]);
    c.hour_ = parse_field<24>(kHour, words[1]);
    c.dom_ = parse_field<32>(kDom, words[2]);
    c.mon_ = parse_field<13>(kMon, words[3]);
    c.dow_ = std::bitset<7>(parse_field<8>(kDow, words[4]).to_ulong() & 0x7f);
    c.dom_star_ = words[2][0] == '*';
    c.dow_star_ = words[4][0] == '*';
    c.every_hour_ = c.hour_.all();
    if (zone.empty()) zone = "UTC";
    try {
        c.zone_ = date::locate_zone(zone);
    } catch (const std::exception&) {
        throw CronError(
            fmt::format("unknown time zone '{}' (give an IANA name such as "
                        "'Europe/Berlin' or 'UTC')",
                        zone));
    }
    c.zone_name_ = std::string(zone);
    return c;
}

bool CronSchedule::day_matches(int dom, unsigned dow) const {
    bool d = dom_.test(static_cast<std::size_t>(dom));
    bool w = dow_.test(dow);
    if (dom_star_ || dow_star_) return d && w;
    return d || w;
}

std::optional<Millis> CronSchedule::next_after(Millis after) const {
    using namespace std::chrono;
    using date::local_seconds;
    using sys_s = date::sys_seconds;
    const sys_s after_s = floor<seconds>(date::sys_time<milliseconds>(milliseconds(after)));
    const Millis after_ms = after;

    // The first local time at or after `t` whose fields match (nullopt past `limit`).
    auto next_local = [&](local_seconds t, local_seconds limit) -> std::optional<local_seconds> {
        while (t <= limit) {
            auto day = floor<date::days>(t);
            date::year_month_day ymd{day};
            unsigned mon = static_cast<unsigned>(ymd.month());
            if (!mon_.test(mon)) {
                auto ym = date::year_month{ymd.year(), ymd.month()} + date::months{1};
                t = local_seconds(date::local_days{ym / 1});
                continue;
            }
            unsigned wd = date::weekday{day}.c_encoding();
            if (!day_matches(static_cast<int>(static_cast<unsigned>(ymd.day())), wd)) {
                t = local_seconds(day + date::days{1});
                continue;
            }
            date::hh_mm_ss<seconds> hms{t - day};
            auto h = static_cast<std::size_t>(hms.hours().count());
            auto m = static_cast<std::size_t>(hms.minutes().count());
            auto s = static_cast<std::size_t>(hms.seconds().count());
            if (!hour_.test(h)) {
                t = floor<hours>(t) + hours{1};
                continue;
            }
            if (!min_.test(m)) {
                t = floor<minutes>(t) + minutes{1};
                continue;
            }
            if (!sec_.test(s)) {
                t += seconds{1};
                continue;
            }
            return t;
        }
        return std::nullopt;
    };

    // The instants a local time fires at (see cron.hpp on DST), keeping the earliest after
    // `after`.
    std::optional<sys_s> best;
    auto consider = [&](sys_s inst) {
        if (inst.time_since_epoch().count() * 1000 > after_ms && (!best || inst < *best))
            best = inst;
    };
    // Candidates in local order are in instant order except the second occurrences of a
    // repeated hour, which only a schedule of every hour fires: when `after` lies in the first
    // occurrence (clocks go back within `shift` of it), the search starts `shift` earlier in
    // local time. A candidate that is not ambiguous ends the search once something was found
    // (nothing later in local order fires earlier).
    const auto after_info = zone_->get_info(after_s);
    const local_seconds after_local{after_s.time_since_epoch() + after_info.offset};
    const local_seconds limit = after_local + date::days{366 * 8};
    local_seconds t = after_local;
    if (every_hour_ && after_info.end - after_s <= hours{3}) {
        const auto shift = after_info.offset - zone_->get_info(after_info.end).offset;
        if (shift > seconds{0} && after_info.end - after_s <= shift) t -= shift;
    }
    for (int guard = 0; guard < 100'000; ++guard) {
        auto l = next_local(t, limit);
        if (!l) break;
        if (best) {
            auto info = zone_->get_info(*best);
            if (*l > local_seconds{best->time_since_epoch() + info.offset} + hours{3}) break;
        }
        auto li = zone_->get_info(*l);
        switch (li.result) {
            case date::local_info::unique:
                consider(sys_s{l->time_since_epoch() - li.first.offset});
                break;
            case date::local_info::nonexistent:
                consider(li.first.end);  // the instant the gap ends
                break;
            case date::local_info::ambiguous:
                consider(sys_s{l->time_since_epoch() - li.first.offset});
                if (every_hour_) consider(sys_s{l->time_since_epoch() - li.second.offset});
                break;
        }
        if (best && li.result != date::local_info::ambiguous) break;
        t = *l + seconds{1};
    }
    if (!best) return std::nullopt;
    return static_cast<Millis>(best->time_since_epoch().count()) * 1000;
}

}  // namespace errand::broker
