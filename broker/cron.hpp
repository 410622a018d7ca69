// Cron expressions and their next fire time in a time zone (Howard Hinnant's date/tz, the
// system's tzdata). The broker's schedules (broker/schedules.*) fire at these times.
//
// Forms accepted (fields separated by blanks):
//   MIN HOUR DOM MON DOW            the standard 5 fields; seconds are 0
//   SEC MIN HOUR DOM MON DOW        6 fields: a leading seconds field (`*/10 * * * * *`)
//   @yearly @annually @monthly @weekly @daily @midnight @hourly
// Each field is a comma list of `*`, `N`, `A-B`, each optionally `/STEP`, and `N/STEP` (N to the
// field's maximum). Ranges: SEC 0-59, MIN 0-59, HOUR 0-23, DOM 1-31, MON 1-12 or JAN-DEC, DOW 0-7
// or SUN-SAT (0 and 7 are Sunday). As in Vixie cron, when both DOM and DOW are restricted (neither
// starts with `*`) a day matches when either does; otherwise both must.
//
// Daylight saving time (the contract the tests check, tests/test_cron.cpp):
// - A local time that does not exist (the hour skipped when clocks go forward) fires once, at the
//   instant the gap ends: a 02:30 job on a spring-forward day runs at 03:00 local time.
// - A local time that occurs twice (clocks go back) fires once, at its first occurrence, unless
//   the expression fires in every hour (HOUR is `*`): then it is a rhythm of elapsed time, and
//   its ticks in the repeated hour fire in both occurrences.
#pragma once

#include <bitset>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "errand/protocol.hpp"

namespace date {
class time_zone;
}

namespace errand::broker {

// A bad expression or an unknown time zone; the message names the field.
class CronError : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

class CronSchedule {
  public:
    // Throws CronError. `zone` is an IANA name ("Europe/Berlin", "UTC").
    static CronSchedule parse(std::string_view expr, std::string_view zone = "UTC");

    // The first fire time strictly after `after` (ms since the Unix epoch; fire times are whole
    // seconds), or nullopt when the expression never matches in the next eight years
    // (`0 0 30 2 *`).
    std::optional<Millis> next_after(Millis after) const;

    const std::string& expr() const { return expr_; }
    const std::string& zone_name() const { return zone_name_; }

  private:
    CronSchedule() = default;
    bool day_matches(int dom, unsigned dow) const;

    std::string expr_;
    std::string zone_name_;
    const date::time_zone* zone_ = nullptr;  // owned by date's tz database (lives forever)
    std::bitset<60> sec_, min_;
    std::bitset<24> hour_;
    std::bitset<32> dom_;  // 1-31
    std::bitset<13> mon_;  // 1-12
    std::bitset<7> dow_;   // 0-6, Sunday 0
    bool dom_star_ = false, dow_star_ = false;
    bool every_hour_ = false;
};

}  // namespace errand::broker
