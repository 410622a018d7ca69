// Queue limits end to end (issue 13, "Limits and defaults per queue"): a real broker, library
// workers and the CLI. A queue's max_running holds under load (sampled from STATS and from the
// database while it runs, and checked over the whole run from the jobs' stored times), the
// settings survive a restart, and bad input changes nothing.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "harness.hpp"

using namespace errand;
using namespace errand::test;

namespace {

// The rows of a one-column integer query on the broker's database (read-only, beside it).
std::vector<std::int64_t> column(const std::filesystem::path& db, const std::string& sql) {
    sqlite3* c = nullptr;
    std::vector<std::int64_t> out;
    if (sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        sqlite3_close(c);
        return out;
    }
    sqlite3_busy_timeout(c, 2000);
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(c, sql.c_str(), -1, &s, nullptr) == SQLITE_OK)
        while (sqlite3_step(s) == SQLITE_ROW)
            out.push_back(sqlite3_column_int64(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(c);
    return out;
}

std::uint64_t count_in(const QueueStats& q, JobState state) {
    for (auto [s, n] : q.counts)
        if (s == state) return n;
    return 0;
}

// The most intervals [start, end) that overlap at one instant.
int max_overlap(std::vector<std::pair<std::int64_t, std::int64_t>> runs) {
    std::vector<std::pair<std::int64_t, int>> edges;
    for (auto [s, e] : runs) {
        edges.emplace_back(s, +1);
        edges.emplace_back(e, -1);
    }
    std::sort(edges.begin(), edges.end());  // an end (-1) sorts before a start at the same ms
    int now = 0, most = 0;
    for (auto [t, d] : edges)
        most = std::max(most, now += d);
    return most;
}

// A library worker whose jobs take `work`; counts how many of its jobs run at once.
struct BusyWorker {
    BusyWorker(const Broker& broker, const std::string& name, std::atomic<int>& in_flight,
               std::atomic<int>& most, std::chrono::milliseconds work)
        : worker({.endpoint = broker.endpoint(),
                  .name = name,
                  .concurrency = 4,
                  .prefetch = 0,
                  .accept_commands = false,
                  .max_result = limits::kDefaultMaxResult}) {
        worker.handle("limited", [&in_flight, &most, work](const Job&) {
            int n = ++in_flight;
            int seen = most.load();
            while (n > seen && !most.compare_exchange_weak(seen, n)) {
            }
            std::this_thread::sleep_for(work);
            --in_flight;
            return Outcome::success("ok");
        });
        thread = std::make_unique<WorkerThread>(worker);
    }
    Worker worker;
    std::unique_ptr<WorkerThread> thread;
};

}  // namespace

TEST_CASE("max-running 2 under load: 4 workers x concurrency 4, 200 jobs, never 3 running") {
    TempDir dir;
    Broker broker(dir);
    auto set =
        run_cli({"--broker", broker.endpoint(), "queue", "set", "limited", "--max-running", "2"});
    REQUIRE_MESSAGE(set.exit_code == 0, describe(set));
    CHECK(set.out.find("max-running: 2") != std::string::npos);

    Client client(broker.client_options());
    constexpr int kJobs = 200;
    for (int batch = 0; batch < kJobs / 50; ++batch) {
        std::vector<JobSpec> specs;
        for (int i = 0; i < 50; ++i)
            specs.push_back(job_spec("limited"));
        client.submit_batch(std::move(specs));
    }
    std::atomic<int> in_flight{0}, most{0};
    std::vector<std::unique_ptr<BusyWorker>> workers;
    for (int i = 0; i < 4; ++i)
        workers.push_back(
            std::make_unique<BusyWorker>(broker, "w" + std::to_string(i), in_flight, most, 5ms));

    std::uint64_t most_stats = 0, samples = 0;
    std::int64_t most_db = 0;
    bool saw_held = false;
    bool finished = wait_until(
        [&] {
            for (const auto& q : client.stats().queues) {
                if (q.name != "limited") continue;
                most_stats = std::max(most_stats, count_in(q, JobState::running));
                ++samples;
                if (count_in(q, JobState::succeeded) == kJobs) return true;
            }
            auto running = column(broker.db_path(),
                                  "SELECT count(*) FROM jobs WHERE queue = 'limited' AND "
                                  "state = 'running'");
            if (!running.empty()) most_db = std::max(most_db, running.front());
            if (!saw_held)
                for (const auto& q : client.queues())
                    saw_held =
                        saw_held || (q.name == "limited" && q.held == std::string(kHeldMaxRunning));
            return false;
        },
        90s, 5ms);
    REQUIRE_MESSAGE(finished, broker.logs());
    workers.clear();
    CHECK(samples > 20);
    CHECK(most_stats <= 2);
    CHECK(most_db <= 2);
    CHECK(most.load() <= 2);
    CHECK(most.load() == 2);  // the limit was reached, not merely never needed
    CHECK(saw_held);

    // Over the whole run, from the stored times: no instant with three attempts running.
    auto starts = column(broker.db_path(), "SELECT started_at FROM jobs ORDER BY id");
    auto ends = column(broker.db_path(), "SELECT finished_at FROM jobs ORDER BY id");
    REQUIRE(starts.size() == static_cast<std::size_t>(kJobs));
    REQUIRE(ends.size() == starts.size());
    std::vector<std::pair<std::int64_t, std::int64_t>> runs;
    for (std::size_t i = 0; i < starts.size(); ++i)
        runs.emplace_back(starts[i], ends[i]);
    CHECK(max_overlap(runs) <= 2);
}

TEST_CASE("queue settings survive a broker restart; queues and queue show print them") {
    TempDir dir;
    Broker broker(dir);
    auto ep = broker.endpoint();
    REQUIRE(run_cli({"--broker", ep, "queue", "set", "slow", "--max-running", "3"}).exit_code == 0);
    broker.restart();
    auto show = run_cli({"--broker", ep, "queue", "show", "slow", "--json"});
    REQUIRE_MESSAGE(show.exit_code == 0, describe(show));
    CHECK(show.out.find("\"max_running\":3") != std::string::npos);
    // Listed by `errand queues` with no job in it.
    auto queues = run_cli({"--broker", ep, "queues"});
    REQUIRE_MESSAGE(queues.exit_code == 0, describe(queues));
    CHECK(queues.out.find("LIMITS") != std::string::npos);
    CHECK(queues.out.find("max-running 3") != std::string::npos);
    // And still obeyed after the restart.
    Client client(broker.client_options());
    auto s = client.queue_settings("slow");
    CHECK(s.max_running == 3u);

    auto unset = run_cli({"--broker", ep, "queue", "unset", "slow", "--max-running"});
    REQUIRE_MESSAGE(unset.exit_code == 0, describe(unset));
    CHECK(unset.out.find("no limit") != std::string::npos);
    broker.restart();
    CHECK_FALSE(client.queue_settings("slow").max_running.has_value());
}

TEST_CASE("errand status of a ready job held by its queue's max-running says so") {
    TempDir dir;
    Broker broker(dir);
    auto ep = broker.endpoint();
    REQUIRE(run_cli({"--broker", ep, "queue", "set", "gate", "--max-running", "1"}).exit_code == 0);
    Client client(broker.client_options());
    auto first = client.submit(job_spec("gate")).id;
    auto second = client.submit(job_spec("gate")).id;
    auto free = run_cli({"--broker", ep, "status", std::to_string(second)});
    CHECK_MESSAGE(free.out.find("state:    ready\n") != std::string::npos, describe(free));
    WorkerDaemon worker(dir, ep, {"w", {"gate=sleep 60"}, 2});
    REQUIRE(wait_until([&] { return client.status(first).state == JobState::running; }, 30s));
    auto held = run_cli({"--broker", ep, "status", std::to_string(second)});
    REQUIRE_MESSAGE(held.exit_code == 0, describe(held));
    CHECK_MESSAGE(held.out.find("state:    ready (held: at max-running)") != std::string::npos,
                  describe(held));
    CHECK(client.status(second).state == JobState::ready);
}

TEST_CASE("queue set/unset: bad input is a usage error or a refusal, and changes nothing") {
    TempDir dir;
    Broker broker(dir);
    auto ep = broker.endpoint();
    REQUIRE(run_cli({"--broker", ep, "queue", "set", "q", "--max-running", "4"}).exit_code == 0);
    const std::vector<std::vector<std::string>> usage = {
        {"queue", "set", "q", "--max-running", "0"},
        {"queue", "set", "q", "--max-running", "-1"},
        {"queue", "set", "q", "--max-running", "two"},
        {"queue", "set", "q", "--max-running", "1000001"},
        {"queue", "set", "q", "--rate", "-1/s"},
        {"queue", "set", "q", "--rate", "5/x"},
        {"queue", "set", "q", "--rate", "0/s"},
        {"queue", "set", "q", "--rate", "5"},
        {"queue", "set", "q", "--rate", "5/0s"},
        {"queue", "set", "q", "--rate", "5/2d"},
        {"queue", "set", "q"},
        {"queue", "set", "bad name", "--max-running", "2"},
        {"queue", "unset", "q"},
        {"queue", "unset", "q", "--max-running", "2"},
        {"queue", "frob", "q"},
        {"queue"},
    };
    for (auto args : usage) {
        std::string cmd;
        for (const auto& a : args)
            cmd += a + " ";
        args.insert(args.begin(), {"--broker", ep});
        auto r = run_cli(args);
        CHECK_MESSAGE(r.exit_code == 120, "errand " << cmd << ": " << describe(r));
        CHECK_MESSAGE(!r.err.empty(), "errand " << cmd << ": no message");
    }
    // The broker refuses what the CLI would not send (through the library).
    Client client(broker.client_options());
    QueueSettings zero;
    zero.queue = "q";
    zero.max_running = 0;
    CHECK_THROWS_AS(client.queue_set(zero), BrokerError);
    QueueSettings none;
    none.queue = "q";
    CHECK_THROWS_AS(client.queue_set(none), BrokerError);
    CHECK_THROWS_AS(client.queue_unset("q", {"nonsense"}), BrokerError);
    CHECK(client.queue_settings("q").max_running == 4u);
    CHECK_FALSE(client.queue_settings("q").rate.has_value());
}

// The most starts in any window [t, t + per) of the sorted start times.
static std::size_t most_in_window(std::vector<std::int64_t> starts, std::int64_t per) {
    std::sort(starts.begin(), starts.end());
    std::size_t most = 0, first = 0;
    for (std::size_t last = 0; last < starts.size(); ++last) {
        while (starts[last] - starts[first] >= per)
            ++first;
        most = std::max(most, last - first + 1);
    }
    return most;
}

TEST_CASE("rate 50/s: 500 jobs, 10 s of load, never more than 50 started in any second") {
    TempDir dir;
    Broker broker(dir);
    auto set =
        run_cli({"--broker", broker.endpoint(), "queue", "set", "limited", "--rate", "50/s"});
    REQUIRE_MESSAGE(set.exit_code == 0, describe(set));
    CHECK(set.out.find("rate:        50/1s") != std::string::npos);
    Client client(broker.client_options());
    constexpr int kJobs = 500;
    std::vector<JobSpec> specs;
    for (int i = 0; i < kJobs; ++i)
        specs.push_back(job_spec("limited"));
    client.submit_batch(std::move(specs));
    std::atomic<int> in_flight{0}, most{0};
    std::vector<std::unique_ptr<BusyWorker>> workers;
    for (int i = 0; i < 2; ++i)
        workers.push_back(
            std::make_unique<BusyWorker>(broker, "w" + std::to_string(i), in_flight, most, 1ms));
    bool saw_held = false;
    bool finished = wait_until(
        [&] {
            for (const auto& q : client.queues()) {
                if (q.name != "limited") continue;
                saw_held = saw_held || q.held == std::string(kHeldRate);
                for (auto [st, n] : q.counts)
                    if (st == JobState::succeeded && n == kJobs) return true;
            }
            return false;
        },
        60s, 10ms);
    REQUIRE_MESSAGE(finished, broker.logs());
    workers.clear();
    CHECK(saw_held);
    auto starts = column(broker.db_path(), "SELECT started_at FROM jobs");
    REQUIRE(starts.size() == static_cast<std::size_t>(kJobs));
    CHECK(most_in_window(starts, 1000) <= 50);
    MESSAGE("most starts in any 1 s window: " << most_in_window(starts, 1000));
    // Ten windows' worth: the last ones started nine windows after the first.
    auto [lo, hi] = std::minmax_element(starts.begin(), starts.end());
    CHECK(*hi - *lo >= 9000);
}

TEST_CASE(
    "queue defaults from the CLI: applied at submit, a job's own values win, kept on restart") {
    TempDir dir;
    Broker broker(dir);
    auto ep = broker.endpoint();
    auto set = run_cli({"--broker", ep, "queue", "set", "mail", "--max-attempts", "6", "--timeout",
                        "30s", "--priority", "4"});
    REQUIRE_MESSAGE(set.exit_code == 0, describe(set));
    CHECK(set.out.find("max-attempts 6, timeout 30s, priority 4") != std::string::npos);
    broker.restart();
    auto plain = run_cli({"--broker", ep, "submit", "-q", "mail", "--payload", "x"});
    REQUIRE_MESSAGE(plain.exit_code == 0, describe(plain));
    auto own = run_cli({"--broker", ep, "submit", "-q", "mail", "--payload", "x", "--max-attempts",
                        "3", "--priority", "0", "--timeout", "5s"});
    REQUIRE_MESSAGE(own.exit_code == 0, describe(own));
    Client client(broker.client_options());
    auto a = client.status(std::stoull(plain.out));
    CHECK(a.max_attempts == 6);
    CHECK(a.timeout == std::chrono::milliseconds(30000));
    CHECK(a.priority == 4);
    auto b = client.status(std::stoull(own.out));
    CHECK(b.max_attempts == 3);
    CHECK(b.timeout == std::chrono::milliseconds(5000));
    CHECK(b.priority == 0);
    for (const auto& bad :
         std::vector<std::vector<std::string>>{{"queue", "set", "mail", "--max-attempts", "0"},
                                               {"queue", "set", "mail", "--timeout", "0s"},
                                               {"queue", "set", "mail", "--timeout", "soon"},
                                               {"queue", "set", "mail", "--priority", "5000"}}) {
        auto args = bad;
        args.insert(args.begin(), {"--broker", ep});
        auto r = run_cli(args);
        CHECK_MESSAGE(r.exit_code == 120, describe(r));
    }
    CHECK(client.queue_settings("mail").max_attempts == 6u);
}

TEST_CASE(
    "queue retention and expires-in from the CLI: shown, kept on restart, applied at "
    "submit, bad input changes nothing, unset removes them") {
    TempDir dir;
    Broker broker(dir);
    auto ep = broker.endpoint();
    auto set = run_cli(
        {"--broker", ep, "queue", "set", "mail", "--retention", "2d", "--expires-in", "1h"});
    REQUIRE_MESSAGE(set.exit_code == 0, describe(set));
    CHECK_MESSAGE(set.out.find("retention:   2d") != std::string::npos, set.out);
    CHECK_MESSAGE(set.out.find("expires-in:  1h") != std::string::npos, set.out);
    broker.restart();
    auto show = run_cli({"--broker", ep, "queue", "show", "mail", "--json"});
    REQUIRE_MESSAGE(show.exit_code == 0, describe(show));
    CHECK_MESSAGE(show.out.find("\"retention_ms\":172800000") != std::string::npos, show.out);
    CHECK_MESSAGE(show.out.find("\"expires_in_ms\":3600000") != std::string::npos, show.out);
    auto queues = run_cli({"--broker", ep, "queues"});
    REQUIRE_MESSAGE(queues.exit_code == 0, describe(queues));
    CHECK_MESSAGE(queues.out.find("retention 2d expires-in 1h") != std::string::npos, queues.out);
    auto before = std::chrono::system_clock::now();
    auto plain = run_cli({"--broker", ep, "submit", "-q", "mail", "--payload", "x"});
    REQUIRE_MESSAGE(plain.exit_code == 0, describe(plain));
    Client client(broker.client_options());
    auto a = client.status(std::stoull(plain.out));
    REQUIRE(a.expires_at.has_value());
    CHECK(*a.expires_at >= before + 1h - 1s);
    CHECK(*a.expires_at <= std::chrono::system_clock::now() + 1h + 1s);
    for (const auto& bad :
         std::vector<std::vector<std::string>>{{"queue", "set", "mail", "--retention", "0s"},
                                               {"queue", "set", "mail", "--retention", "-1h"},
                                               {"queue", "set", "mail", "--retention", "forever"},
                                               {"queue", "set", "mail", "--expires-in", "0"},
                                               {"queue", "set", "mail", "--expires-in", "-5m"},
                                               {"queue", "set", "mail", "--expires-in", "soon"},
                                               {"queue", "set", "mail", "--expires-in", "100000d"},
                                               {"queue", "unset", "mail", "--retention", "1d"}}) {
        auto args = bad;
        args.insert(args.begin(), {"--broker", ep});
        auto r = run_cli(args);
        CHECK_MESSAGE(r.exit_code == 120, describe(r));
        CHECK_MESSAGE(!r.err.empty(), describe(r));
    }
    auto s = client.queue_settings("mail");
    CHECK(s.retention == std::chrono::milliseconds(172'800'000));
    CHECK(s.expires_in == std::chrono::milliseconds(3'600'000));
    auto unset = run_cli({"--broker", ep, "queue", "unset", "mail", "--retention", "--expires-in"});
    REQUIRE_MESSAGE(unset.exit_code == 0, describe(unset));
    CHECK_MESSAGE(unset.out.find("retention:   - (the broker's)") != std::string::npos, unset.out);
    broker.restart();
    s = client.queue_settings("mail");
    CHECK_FALSE(s.retention.has_value());
    CHECK_FALSE(s.expires_in.has_value());
    auto later = run_cli({"--broker", ep, "submit", "-q", "mail", "--payload", "x"});
    REQUIRE_MESSAGE(later.exit_code == 0, describe(later));
    CHECK_FALSE(client.status(std::stoull(later.out)).expires_at.has_value());
}
