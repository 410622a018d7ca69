// Cron expressions (broker/cron.cpp): every field, steps, ranges, lists, names, @-forms, the
// 6-field form, daylight saving time both ways in two zones, and bad input. The "clock" is the
// time each next fire is computed after.
#include <date/date.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cron.hpp"

using errand::Millis;
using errand::broker::CronError;
using errand::broker::CronSchedule;

namespace {

Millis utc(const std::string& iso) {  // "2026-03-08T06:59:59Z"
    int y = 0;
    unsigned mo = 0, d = 0, h = 0, mi = 0, s = 0;
    REQUIRE(std::sscanf(iso.c_str(), "%d-%u-%uT%u:%u:%uZ", &y, &mo, &d, &h, &mi, &s) == 6);
    auto day = date::sys_days{date::year{y} / date::month{mo} / date::day{d}};
    auto t = day + std::chrono::hours{h} + std::chrono::minutes{mi} + std::chrono::seconds{s};
    return t.time_since_epoch().count() * 1000;
}

std::string iso(Millis ms) {
    return date::format("%FT%TZ", date::sys_seconds{std::chrono::seconds{ms / 1000}});
}

// The next `n` fire times after `from`, each computed after the previous one.
std::vector<std::string> fires(const std::string& expr, const std::string& zone,
                               const std::string& from, int n) {
    auto c = CronSchedule::parse(expr, zone);
    std::vector<std::string> out;
    Millis t = utc(from);
    for (int i = 0; i < n; ++i) {
        auto next = c.next_after(t);
        if (!next) break;
        out.push_back(iso(*next));
        t = *next;
    }
    return out;
}

using V = std::vector<std::string>;

std::string error_of(const std::string& expr, const std::string& zone = "UTC") {
    try {
        CronSchedule::parse(expr, zone);
    } catch (const CronError& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("cron: the seconds field of the 6-field form, steps from zero") {
    CHECK(fires("*/10 * * * * *", "UTC", "2026-01-01T00:00:03Z", 4) ==
          V{"2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z",
            "2026-01-01T00:00:40Z"});
    CHECK(fires("*/10 * * * * *", "UTC", "2026-01-01T00:00:50Z", 1) == V{"2026-01-01T00:01:00Z"});
    CHECK(fires("15,45 * * * * *", "UTC", "2026-01-01T00:00:15Z", 3) ==
          V{"2026-01-01T00:00:45Z", "2026-01-01T00:01:15Z", "2026-01-01T00:01:45Z"});
    // Strictly after: a time on a tick (and a fraction of a second past it) gives the next one.
    CHECK(*CronSchedule::parse("* * * * * *").next_after(utc("2026-01-01T00:00:00Z") + 999) ==
          utc("2026-01-01T00:00:01Z"));
}

TEST_CASE("cron: minute field: single value, list, range, step over a range") {
    CHECK(fires("5 * * * *", "UTC", "2026-01-01T00:05:00Z", 2) ==
          V{"2026-01-01T01:05:00Z", "2026-01-01T02:05:00Z"});
    CHECK(fires("0,20-22 * * * *", "UTC", "2026-01-01T00:00:00Z", 4) ==
          V{"2026-01-01T00:20:00Z", "2026-01-01T00:21:00Z", "2026-01-01T00:22:00Z",
            "2026-01-01T01:00:00Z"});
    CHECK(fires("10-40/15 * * * *", "UTC", "2026-01-01T00:00:00Z", 4) ==
          V{"2026-01-01T00:10:00Z", "2026-01-01T00:25:00Z", "2026-01-01T00:40:00Z",
            "2026-01-01T01:10:00Z"});
    CHECK(fires("50/5 * * * *", "UTC", "2026-01-01T00:00:00Z", 3) ==
          V{"2026-01-01T00:50:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:50:00Z"});
}

TEST_CASE("cron: hour field with a stepped range") {
    CHECK(fires("0 9-17/4 * * *", "UTC", "2026-01-01T00:00:00Z", 4) ==
          V{"2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z",
            "2026-01-02T09:00:00Z"});
}

TEST_CASE("cron: day of month, including days some months lack") {
    CHECK(fires("0 0 1,15 * *", "UTC", "2026-01-01T00:00:00Z", 3) ==
          V{"2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-15T00:00:00Z"});
    CHECK(fires("0 12 31 * *", "UTC", "2026-01-31T12:00:00Z", 2) ==
          V{"2026-03-31T12:00:00Z", "2026-05-31T12:00:00Z"});
    // 29 February: the next leap year.
    CHECK(fires("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1) == V{"2028-02-29T00:00:00Z"});
    // Never: no fire time, not a loop.
    CHECK_FALSE(CronSchedule::parse("0 0 30 2 *").next_after(utc("2026-01-01T00:00:00Z")));
}

TEST_CASE("cron: month field by number and by name") {
    CHECK(fires("0 0 1 2,jun *", "UTC", "2026-01-01T00:00:00Z", 3) ==
          V{"2026-02-01T00:00:00Z", "2026-06-01T00:00:00Z", "2027-02-01T00:00:00Z"});
    CHECK(fires("0 0 1 NOV-DEC *", "UTC", "2026-01-01T00:00:00Z", 3) ==
          V{"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-11-01T00:00:00Z"});
}

TEST_CASE("cron: day of week, 0 and 7 are Sunday, names, ranges") {
    // 2026-01-01 is a Thursday.
    CHECK(fires("0 0 * * 0", "UTC", "2026-01-01T00:00:00Z", 1) == V{"2026-01-04T00:00:00Z"});
    CHECK(fires("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z", 1) == V{"2026-01-04T00:00:00Z"});
    CHECK(fires("0 8 * * MON-FRI", "UTC", "2026-01-02T08:00:00Z", 2) ==
          V{"2026-01-05T08:00:00Z", "2026-01-06T08:00:00Z"});
    CHECK(fires("0 8 * * sat,sun", "UTC", "2026-01-01T00:00:00Z", 3) ==
          V{"2026-01-03T08:00:00Z", "2026-01-04T08:00:00Z", "2026-01-10T08:00:00Z"});
}

TEST_CASE("cron: day of month and day of week both restricted match either (Vixie cron)") {
    // The 13th, and every Friday: Fri 2 Jan, Fri 9 Jan, Tue 13 Jan, Fri 16 Jan.
    CHECK(fires("0 0 13 * FRI", "UTC", "2026-01-01T00:00:00Z", 4) ==
          V{"2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z",
            "2026-01-16T00:00:00Z"});
    // One of them `*`: both must match (every Friday).
    CHECK(fires("0 0 * * FRI", "UTC", "2026-01-01T00:00:00Z", 2) ==
          V{"2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z"});
}

TEST_CASE("cron: the @-forms") {
    const std::string from = "2026-01-01T00:30:00Z";  // a Thursday
    CHECK(fires("@hourly", "UTC", from, 2) == V{"2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"});
    CHECK(fires("@daily", "UTC", from, 2) == V{"2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"});
    CHECK(fires("@midnight", "UTC", from, 1) == V{"2026-01-02T00:00:00Z"});
    CHECK(fires("@weekly", "UTC", from, 2) == V{"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"});
    CHECK(fires("@monthly", "UTC", from, 2) == V{"2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"});
    CHECK(fires("@yearly", "UTC", from, 2) == V{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"});
    CHECK(fires("@annually", "UTC", from, 1) == V{"2027-01-01T00:00:00Z"});
}

TEST_CASE("cron: a zone's offset applies (Asia/Kolkata, +05:30, no DST)") {
    CHECK(fires("0 9 * * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", 2) ==
          V{"2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"});
}

// America/New_York 2026: clocks go forward on Sun 8 March at 02:00 EST (07:00 UTC) to 03:00 EDT,
// and back on Sun 1 November at 02:00 EDT (06:00 UTC) to 01:00 EST.
TEST_CASE("cron DST America/New_York: spring forward, a 02:30 job runs once, at 03:00 EDT") {
    CHECK(fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3) ==
          V{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"});
    // Every 30 minutes: the skipped hour's ticks collapse into one at the transition.
    CHECK(fires("*/30 * * * *", "America/New_York", "2026-03-08T06:10:00Z", 3) ==
          V{"2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"});
}

TEST_CASE("cron DST America/New_York: fall back, a 01:30 job runs once, at the first 01:30") {
    CHECK(fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2) ==
          V{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"});
    // Also when computed from inside the repeated hour (after the first 01:30, before the
    // second): the second 01:30 does not fire.
    CHECK(fires("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", 1) ==
          V{"2026-11-02T06:30:00Z"});
    // A job of every hour keeps its rhythm through both occurrences of 01:xx.
    CHECK(fires("*/30 * * * *", "America/New_York", "2026-11-01T04:50:00Z", 5) ==
          V{"2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z", "2026-11-01T07:00:00Z"});
    CHECK(fires("45 * * * *", "America/New_York", "2026-11-01T05:50:00Z", 2) ==
          V{"2026-11-01T06:45:00Z", "2026-11-01T07:45:00Z"});
}

// Europe/Berlin 2026: forward on Sun 29 March at 02:00 CET (01:00 UTC) to 03:00 CEST, back on
// Sun 25 October at 03:00 CEST (01:00 UTC) to 02:00 CET.
TEST_CASE("cron DST Europe/Berlin: spring forward, a 02:30 job runs once") {
    CHECK(fires("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3) ==
          V{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"});
    // 6-field form in the gap: every 20 minutes in the skipped hour fire once at 03:00 CEST.
    CHECK(fires("0 */20 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2) ==
          V{"2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"});
}

TEST_CASE("cron DST Europe/Berlin: fall back, a 02:30 job runs once, at the first 02:30") {
    CHECK(fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2) ==
          V{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"});
    CHECK(fires("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 4) ==
          V{"2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z",
            "2026-10-25T03:00:00Z"});
}

TEST_CASE("cron: bad expressions name the field and say what is wrong") {
    CHECK(error_of("61 * * * *") == "cron field 'minute' ('61'): 61 is out of range 0-59");
    CHECK(error_of("* 24 * * *") == "cron field 'hour' ('24'): 24 is out of range 0-23");
    CHECK(error_of("* * 0 * *") == "cron field 'day of month' ('0'): 0 is out of range 1-31");
    CHECK(error_of("* * * 13 *") == "cron field 'month' ('13'): 13 is out of range 1-12");
    CHECK(error_of("* * * * 8") == "cron field 'day of week' ('8'): 8 is out of range 0-7");
    CHECK(error_of("60 * * * * *") == "cron field 'second' ('60'): 60 is out of range 0-59");
    CHECK(error_of("* * * * FOO") ==
          "cron field 'day of week' ('FOO'): 'FOO' is not a day of week name");
    CHECK(error_of("*/0 * * * *") == "cron field 'minute' ('*/0'): step 0 is out of range 1-59");
    CHECK(error_of("5-1 * * * *") == "cron field 'minute' ('5-1'): range 5-1 runs backwards");
    CHECK(error_of("1,,2 * * * *") == "cron field 'minute' ('1,,2'): an empty list item");
    CHECK(error_of("x * * * *") == "cron field 'minute' ('x'): 'x' is not a number");
    CHECK(error_of("* * * *").find("has 4 fields") != std::string::npos);
    CHECK(error_of("").find("has 0 fields") != std::string::npos);
    CHECK(error_of("@fortnightly").find("unknown cron macro '@fortnightly'") != std::string::npos);
    CHECK(error_of("* * * * *", "Mars/Olympus_Mons") ==
          "unknown time zone 'Mars/Olympus_Mons' (give an IANA name such as 'Europe/Berlin' or "
          "'UTC')");
    CHECK(error_of(std::string(300, '*')).find("longer than 256") != std::string::npos);
}

TEST_CASE("cron DST: a seconds rhythm keeps every 10 s of elapsed time through both changes") {
    for (const char* zone : {"America/New_York", "Europe/Berlin"})
        for (const char* from : {"2026-11-01T04:30:00Z", "2026-10-25T00:00:00Z"}) {
            INFO(zone << " from " << from);
            auto c = CronSchedule::parse("*/10 * * * * *", zone);
            Millis t = utc(from);
            for (int i = 0; i < 3 * 360; ++i) {  // three hours around the fall-back
                auto next = c.next_after(t);
                REQUIRE(next);
                REQUIRE(*next - t == 10'000);
                t = *next;
            }
        }
}
