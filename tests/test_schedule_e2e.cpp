// Cron schedules end to end: a real broker and worker daemon, schedules added with the CLI, each
// tick's job run once; a broker SIGKILLed across ticks; the CLI's bad input; two brokers on one
// PostgreSQL database, one of them SIGKILLed, firing each tick once.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pg.hpp"
#include "pg_server.hpp"

using namespace errand;
using namespace errand::test;

namespace {

Millis wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The ticks of schedule `name`'s jobs in `queue` (from their unique keys), ascending; fails on a
// job of the queue that is not the schedule's.
std::vector<Millis> ticks(errand::Client& client, const std::string& queue,
                          const std::string& name) {
    std::vector<Millis> out;
    const std::string prefix = "schedule:" + name + ":";
    for (const auto& j : client.list({.queue = queue, .state = std::nullopt, .limit = 10000})) {
        REQUIRE(j.unique.has_value());
        REQUIRE(j.unique->rfind(prefix, 0) == 0);
        out.push_back(std::stoll(j.unique->substr(prefix.size())));
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<std::string> cli(const Broker& broker, std::vector<std::string> args) {
    args.insert(args.begin(), {"--broker", broker.endpoint()});
    return args;
}

}  // namespace

TEST_CASE("schedule e2e: a 1-second schedule's jobs run on a worker daemon, one per tick") {
    TempDir dir;
    Broker broker(dir);
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "w",
                         .queues = {"tick=printf ran"},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {}});
    auto added = run_cli(
        cli(broker, {"schedule", "add", "every-second", "--cron", "* * * * * *", "-q", "tick"}));
    REQUIRE_MESSAGE(added.exit_code == 0, describe(added));
    CHECK(added.out.find("every-second") != std::string::npos);
    errand::Client client(broker.client_options());
    // Three ticks that have run.
    REQUIRE(wait_until(
        [&] {
            return client.list({.queue = "tick", .state = JobState::succeeded, .limit = 100})
                       .size() >= 3;
        },
        15s, 50ms));
    for (const auto& j : client.list({.queue = "tick", .state = JobState::succeeded, .limit = 100}))
        CHECK(j.result == "ran");
    auto t = ticks(client, "tick", "every-second");
    REQUIRE(t.size() >= 3);
    for (std::size_t i = 0; i < t.size(); ++i) {
        CHECK(t[i] % 1000 == 0);                    // on the second
        if (i > 0) CHECK(t[i] - t[i - 1] == 1000);  // each tick, once
    }
    auto s = client.schedule("every-second");
    REQUIRE(s.last_job.has_value());
    REQUIRE(s.next_at.has_value());
    CHECK(*s.next_at > *s.last_at);
    auto list = run_cli(cli(broker, {"schedule", "list"}));
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    CHECK(list.out.find("NAME") == 0);
    CHECK(list.out.find("every-second") != std::string::npos);
    CHECK(list.out.find("* * * * * *") != std::string::npos);
    auto shown_json = run_cli(cli(broker, {"schedule", "show", "every-second", "--json"}));
    REQUIRE_MESSAGE(shown_json.exit_code == 0, describe(shown_json));
    CHECK(shown_json.out.find("\"name\":\"every-second\"") != std::string::npos);
    CHECK(shown_json.out.find("\"next_at\":\"20") != std::string::npos);  // an RFC 3339 time
    auto list_json = run_cli(cli(broker, {"schedule", "list", "--json"}));
    REQUIRE_MESSAGE(list_json.exit_code == 0, describe(list_json));
    CHECK(list_json.out.rfind("[{\"name\":\"every-second\"", 0) == 0);
    // Paused through the CLI: no new job while paused.
    auto paused = run_cli(cli(broker, {"schedule", "pause", "every-second"}));
    REQUIRE_MESSAGE(paused.exit_code == 0, describe(paused));
    CHECK(paused.out.find("paused:    yes") != std::string::npos);
    auto before = ticks(client, "tick", "every-second").size();
    auto shown = client.schedule("every-second");  // a round trip after the pause committed
    CHECK(shown.paused);
    const auto start = std::chrono::steady_clock::now();
    wait_until([&] { return since(start) >= 2500ms; }, 3s, 100ms);  // 2.5 s of would-be ticks
    CHECK(ticks(client, "tick", "every-second").size() == before);
    auto removed = run_cli(cli(broker, {"schedule", "rm", "every-second"}));
    CHECK_MESSAGE(removed.exit_code == 0, describe(removed));
    CHECK(client.schedules().empty());
}

TEST_CASE("schedule e2e: a broker SIGKILLed across ticks fires each tick once (catch-up all)") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    Schedule s;
    s.name = "all";
    s.cron = "* * * * * *";
    s.catch_up = "all";
    s.job.queue = "q";
    client.schedule_add(s);
    Schedule l = s;
    l.name = "latest";
    l.catch_up = "latest";
    l.job.queue = "ql";
    client.schedule_add(l);
    REQUIRE(wait_until([&] { return ticks(client, "q", "all").size() >= 2; }, 10s, 50ms));
    broker.kill9();
    const Millis down = wall_ms();
    const auto start = std::chrono::steady_clock::now();
    wait_until([&] { return since(start) >= 3500ms; }, 4s, 100ms);  // 3 ticks or more missed
    const Millis up = wall_ms();
    broker.start();
    errand::Client again(broker.client_options());
    REQUIRE(wait_until(
        [&] { return !ticks(again, "q", "all").empty() && ticks(again, "q", "all").back() >= up; },
        10s, 50ms));
    // `all`: every tick from the first to the last, once each, those of the outage included.
    auto t = ticks(again, "q", "all");
    for (std::size_t i = 1; i < t.size(); ++i)
        CHECK(t[i] - t[i - 1] == 1000);
    CHECK(std::count_if(t.begin(), t.end(), [&](Millis x) { return x > down && x < up; }) >= 3);
    // `latest`: of the ticks while it was down, at most the last fired (in the second before
    // the broker was back); none of the earlier ones.
    auto tl = ticks(again, "ql", "latest");
    CHECK(std::set<Millis>(tl.begin(), tl.end()).size() == tl.size());
    CHECK(std::count_if(tl.begin(), tl.end(),
                        [&](Millis x) { return x > down + 1000 && x < up - 1000; }) == 0);
}

TEST_CASE("schedule e2e: bad input gets a clear error from the CLI and changes nothing") {
    TempDir dir;
    Broker broker(dir);
    auto ok = run_cli(cli(broker, {"schedule",
                                   "add",
                                   "good",
                                   "--cron",
                                   "@daily",
                                   "--tz",
                                   "Europe/Berlin",
                                   "-q",
                                   "q",
                                   "--backoff",
                                   "1s,1m",
                                   "--timeout",
                                   "30s",
                                   "--max-attempts",
                                   "5",
                                   "--expires-in",
                                   "1h",
                                   "--",
                                   "echo",
                                   "hi"}));
    REQUIRE_MESSAGE(ok.exit_code == 0, describe(ok));
    CHECK(ok.out.find("argv:      echo hi") != std::string::npos);
    CHECK_MESSAGE(ok.out.find("expires:   1h after each tick") != std::string::npos, ok.out);
    auto shown = run_cli(cli(broker, {"schedule", "show", "good"}));
    CHECK_MESSAGE(shown.out.find("expires:   1h after each tick") != std::string::npos,
                  describe(shown));
    constexpr int kRefused = 121, kUsage = 120;  // client/cli_exit.hpp
    struct Case {
        std::vector<std::string> args;
        int exit_code;
        std::string says;
    };
    const std::vector<Case> cases = {
        {{"schedule", "add", "b", "--cron", "61 * * * *"},
         kRefused,
         "cron field 'minute' ('61'): 61 is out of range 0-59"},
        {{"schedule", "add", "b", "--cron", "* * * * * * *"}, kRefused, "has 7 fields"},
        {{"schedule", "add", "b", "--cron", "@daily", "--tz", "Mars/Olympus"},
         kRefused,
         "unknown time zone 'Mars/Olympus'"},
        {{"schedule", "add", "good", "--cron", "@hourly"}, kRefused, "exists already"},
        {{"schedule", "add", "b", "--cron", "@daily", "--catch-up", "sometimes"},
         kUsage,
         "sometimes"},
        {{"schedule", "add", "bad name", "--cron", "@daily"}, kUsage, "invalid schedule name"},
        {{"schedule", "add", "b", "--cron", "@daily", "--backoff", "1m,1s"},
         kUsage,
         "not BASE[,CAP]"},
        {{"schedule", "add", "b", "--cron", "@daily", "--expires-in", "0s"},
         kUsage,
         "must be more than 0"},
        {{"schedule", "add", "b", "--cron", "@daily", "--expires-in", "-1h"}, kUsage, "expires-in"},
        {{"schedule", "add", "b", "--cron", "@daily", "--expires-in", "soon"},
         kUsage,
         "not a duration"},
        {{"schedule", "show", "nope"}, kRefused, "no schedule named 'nope'"},
        {{"schedule", "rm", "nope"}, kRefused, "no schedule named 'nope'"},
        {{"schedule", "pause", "nope"}, kRefused, "no schedule named 'nope'"},
        {{"schedule", "resume", "nope"}, kRefused, "no schedule named 'nope'"},
        {{"schedule"}, kUsage, "subcommand is required"},
    };
    for (const auto& c : cases) {
        auto r = run_cli(cli(broker, c.args));
        INFO(describe(r));
        CHECK(r.exit_code == c.exit_code);
        CHECK(r.err.find(c.says) != std::string::npos);
    }
    errand::Client client(broker.client_options());
    auto all = client.schedules();
    REQUIRE(all.size() == 1);
    CHECK(all[0].name == "good");
    CHECK(all[0].cron == "@daily");
    CHECK(all[0].zone == "Europe/Berlin");
    REQUIRE(all[0].job.argv.has_value());
    CHECK(*all[0].job.argv == std::vector<std::string>{"echo", "hi"});
    CHECK(all[0].job.backoff == 1000ms);
    CHECK(all[0].job.backoff_cap == 60000ms);
    CHECK(all[0].job.timeout == 30000ms);
    CHECK(all[0].job.max_attempts == 5);
    CHECK(all[0].job.expires_in == 3600000ms);
}

TEST_CASE("schedule e2e: two brokers on one PostgreSQL database fire each tick once") {
    errand::pgserver::PgServer pg;
    TempDir d1, d2;
    const std::vector<std::string> args{"--db",  pg.uri(),           "--heartbeat",
                                        "200ms", "--worker-timeout", "1s"};
    Broker b1(d1, args), b2(d2, args);
    WorkerDaemon worker(d2, b2.endpoint(),
                        {.name = "w",
                         .queues = {"tick=printf ran"},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {}});
    auto added = run_cli(cli(b1, {"schedule", "add", "s", "--cron", "* * * * * *", "-q", "tick"}));
    REQUIRE_MESSAGE(added.exit_code == 0, describe(added));
    errand::Client c2(b2.client_options());
    REQUIRE(wait_until([&] { return ticks(c2, "tick", "s").size() >= 4; }, 15s, 50ms));
    // The broker the schedule was added through dies; the other goes on firing, without a gap.
    b1.kill9();
    const auto killed_at = ticks(c2, "tick", "s").size();
    REQUIRE(wait_until([&] { return ticks(c2, "tick", "s").size() >= killed_at + 4; }, 15s, 50ms));
    auto t = ticks(c2, "tick", "s");
    for (std::size_t i = 1; i < t.size(); ++i)
        CHECK(t[i] - t[i - 1] == 1000);
    // The database agrees: one job per tick.
    broker::pg::Connection db(pg.conninfo());
    CHECK(db.query("SELECT count(*) - count(DISTINCT unique_key) FROM jobs").i64(0, 0) == 0);
    REQUIRE(wait_until(
        [&] {
            return c2.list({.queue = "tick", .state = JobState::succeeded, .limit = 1000}).size() >=
                   t.size();
        },
        15s, 50ms));
}
