// The job lifecycle end to end, against a real broker and real workers (daemon and library):
// retries with growing backoff, dead and retry, timeouts, delays, priorities, cancel, unique keys,
// pause/resume across a restart, stale results, progress and purge. Through the library and the
// CLI.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "errand/codec.hpp"
#include "errand/worker.hpp"
#include "harness.hpp"

using namespace errand::test;
using errand::JobState;
using nlohmann::json;

namespace {

errand::WorkerOptions lib_worker(const Broker& broker, std::string name) {
    errand::WorkerOptions o;
    o.endpoint = broker.endpoint();
    o.name = std::move(name);
    o.concurrency = 1;
    return o;
}

WorkerSpec daemon(std::string name, std::vector<std::string> queues,
                  std::vector<std::string> extra_args = {}) {
    return {.name = std::move(name),
            .queues = std::move(queues),
            .concurrency = 1,
            .allow_commands = false,
            .extra_args = std::move(extra_args)};
}

CliResult cli(const Broker& broker, std::vector<std::string> args) {
    args.insert(args.begin(), {"--broker", broker.endpoint()});
    return run_cli(args);
}

// The id printed by `errand submit` (one line, digits only).
errand::JobId parse_id(const CliResult& r) {
    std::string s = r.out;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    REQUIRE_MESSAGE(!s.empty(), describe(r));
    REQUIRE_MESSAGE(std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }),
                    describe(r));
    return std::stoull(s);
}

json parse_json(const CliResult& r) {
    json j = json::parse(r.out, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << describe(r));
    return j;
}

std::string quote(const std::filesystem::path& p) {
    return "'" + p.string() + "'";
}

// A process is gone when /proc has no entry for it or it is a zombie (an orphaned job process may
// wait for a reaper that is slow or absent in a container).
bool alive(pid_t pid) {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty()) return ::kill(pid, 0) == 0 || errno == EPERM;
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) return true;
    const char state = stat[paren + 2];
    return state != 'Z' && state != 'X';
}

std::vector<pid_t> read_pids(const std::filesystem::path& file) {
    std::vector<pid_t> pids;
    for (const auto& line : read_lines(file))
        if (!line.empty()) pids.push_back(static_cast<pid_t>(std::stol(line)));
    return pids;
}

// A shell snippet that records its own pid and the pid of a `sleep 30` it waits for.
std::string sleeper(const std::filesystem::path& pids) {
    return "echo $$ >> " + quote(pids) + "; sleep 30 & echo $! >> " + quote(pids) + "; wait";
}

std::uint64_t count_of(const errand::QueueInfo& q, JobState s) {
    for (const auto& [state, n] : q.counts)
        if (state == s) return n;
    return 0;
}

std::optional<errand::QueueInfo> find_queue(errand::Client& client, const std::string& name) {
    for (auto& q : client.queues())
        if (q.name == name) return q;
    return std::nullopt;
}

// The queue's object in `errand queues --json` (an array of objects with "name").
json queue_json(const json& all, const std::string& name) {
    REQUIRE_MESSAGE(all.is_array(), all.dump());
    for (const auto& q : all)
        if (q.value("name", "") == name) return q;
    FAIL("queue " << name << " missing from " << all.dump());
    return {};
}

// A state's count in a queue object of `errand queues --json`: "counts": {"ready": n, ...}.
std::uint64_t json_count(const json& q, const std::string& state) {
    REQUIRE_MESSAGE(q.contains("counts"), q.dump());
    return q["counts"].value(state, std::uint64_t{0});
}

std::string show(const std::vector<errand::Event>& events) {
    std::string s;
    for (const auto& e : events)
        s += std::to_string(e.at.time_since_epoch().count()) + " " +
             (e.from ? std::string(errand::to_string(*e.from)) : std::string("-")) + " -> " +
             std::string(errand::to_string(e.to)) + " attempt " + std::to_string(e.attempt) +
             " worker " + e.worker.value_or("-") + " (" + e.reason + ")\n";
    return s;
}

using Edge = std::pair<std::optional<JobState>, JobState>;
std::vector<Edge> edges(const std::vector<errand::Event>& events) {
    std::vector<Edge> out;
    for (const auto& e : events)
        out.emplace_back(e.from, e.to);
    return out;
}

// How long the job stayed `retrying` after each failed attempt, in order (ms, broker clock).
std::vector<errand::Millis> retry_gaps(const std::vector<errand::Event>& events) {
    std::vector<errand::Millis> gaps;
    for (std::size_t i = 0; i + 1 < events.size(); ++i)
        if (events[i].to == JobState::retrying && events[i + 1].from == JobState::retrying)
            gaps.push_back((events[i + 1].at - events[i].at).count());
    return gaps;
}

// "2026-11-28T19:17:19Z" for a time in ms since the epoch (whole seconds).
std::string rfc3339(errand::Millis epoch_ms) {
    time_t t = static_cast<time_t>(epoch_ms / 1000);
    struct tm tm {};
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

// The next message of `command` on a raw connection, skipping broker heartbeats and the like.
std::optional<errand::Envelope> next_of(RawConnection& conn, std::string_view command,
                                        milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        auto msg = conn.recv(left);
        if (!msg) return std::nullopt;
        if (msg->command == command) return msg;
        if (msg->command == errand::cmd::kError)
            FAIL_CHECK("unexpected ERROR while waiting for "
                       << command << ": "
                       << errand::decode_error(errand::Body(msg->body).reader()).message);
    }
}

// Registers a raw connection as worker `name` on `queue` and grants it one credit.
void register_ghost(RawConnection& conn, const std::string& name, const std::string& queue) {
    errand::RegisterRequest reg;
    reg.req = 1;
    reg.instance = name + "-instance";
    reg.name = name;
    reg.host = "test";
    reg.pid = static_cast<std::uint64_t>(::getpid());
    reg.queues = {queue};
    reg.concurrency = 1;
    conn.send(errand::cmd::kRegister, errand::encode(reg));
    REQUIRE_MESSAGE(next_of(conn, errand::cmd::kRegistered, 5s).has_value(), "no REGISTERED");
    conn.send(errand::cmd::kCredit, errand::encode_credit(1));
}

// Sends DONE for (id, attempt) and returns the broker's ERROR reply (which must come).
errand::ErrorReply late_done(RawConnection& conn, errand::JobId id, std::uint32_t attempt,
                             const std::string& result) {
    errand::JobResult done;
    done.ok = true;
    done.id = id;
    done.attempt = attempt;
    done.result = result;
    conn.send(errand::cmd::kDone, errand::encode(done));
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
        auto msg = conn.recv(500ms);
        if (!msg) continue;
        if (msg->command == errand::cmd::kAck) FAIL("the late result was ACKed");
        if (msg->command == errand::cmd::kError)
            return errand::decode_error(errand::Body(msg->body).reader());
    }
    FAIL("no reply to the late DONE");
    return {};
}

}  // namespace

// ---- 1. retries with exponential backoff ---------------------------------------------------

TEST_CASE("lifecycle: fails twice then succeeds on attempt 3; the backoff gap grows") {
    TempDir dir;
    // A broker default base of 5 s: the jobs' own backoff must be what applies.
    Broker broker(dir, {"--retry-delay", "5s"});
    errand::Worker worker(lib_worker(broker, "lib-w"));
    worker.handle("flaky", [](const errand::Job& job) {
        if (job.attempt < 3)
            return errand::Outcome::failure("attempt " + std::to_string(job.attempt) + " fails");
        return errand::Outcome::success("ok on attempt " + std::to_string(job.attempt));
    });
    worker.handle("capped", [](const errand::Job& job) {
        return errand::Outcome::failure("never works, attempt " + std::to_string(job.attempt));
    });
    WorkerThread runner(worker);
    errand::Client client(broker.client_options());

    auto spec = job_spec("flaky", "", 5);
    spec.backoff = 200ms;
    const auto id = client.submit(spec).id;
    // Capped: base 100 ms, cap 150 ms -> d = 100, 150, 150 (uncapped the third would be 400).
    auto capped_spec = job_spec("capped", "", 4);
    capped_spec.backoff = 100ms;
    capped_spec.backoff_cap = 150ms;
    const auto capped_id = client.submit(capped_spec).id;

    auto job = client.wait(id, 15s);
    REQUIRE_MESSAGE(job.has_value(), broker.logs());
    CHECK(job->state == JobState::succeeded);
    CHECK(job->attempts == 3);
    CHECK(job->result == "ok on attempt 3");

    auto events = client.history(id);
    CAPTURE(show(events));
    using S = JobState;
    const std::vector<Edge> expected = {
        {std::nullopt, S::ready}, {S::ready, S::running}, {S::running, S::retrying},
        {S::retrying, S::ready},  {S::ready, S::running}, {S::running, S::retrying},
        {S::retrying, S::ready},  {S::ready, S::running}, {S::running, S::succeeded},
    };
    CHECK(edges(events) == expected);
    std::vector<std::uint32_t> dispatched;
    for (const auto& e : events)
        if (e.to == S::running) dispatched.push_back(e.attempt);
    CHECK(dispatched == std::vector<std::uint32_t>{1, 2, 3});
    for (std::size_t i = 1; i < events.size(); ++i)
        CHECK(events[i].at >= events[i - 1].at);

    // Equal jitter: gap n is in [d/2, d] with d = 200 ms, 400 ms; promotion adds at most 50 ms.
    auto gaps = retry_gaps(events);
    REQUIRE(gaps.size() == 2);
    MESSAGE("retry gaps " << gaps[0] << " ms, " << gaps[1] << " ms");
    CHECK(gaps[0] >= 100);
    CHECK(gaps[0] <= 200 + 50);
    CHECK(gaps[1] >= 200);
    CHECK(gaps[1] <= 400 + 50);
    CHECK(gaps[1] >= gaps[0]);

    auto capped = client.wait(capped_id, 15s);
    REQUIRE(capped.has_value());
    CHECK(capped->state == JobState::dead);
    CHECK(capped->attempts == 4);
    CHECK(capped->error == "never works, attempt 4");
    auto capped_events = client.history(capped_id);
    auto capped_gaps = retry_gaps(capped_events);
    CAPTURE(show(capped_events));
    REQUIRE(capped_gaps.size() == 3);
    CHECK(capped_gaps[0] >= 50);
    CHECK(capped_gaps[0] <= 100 + 50);
    CHECK(capped_gaps[2] >= 75);
    CHECK(capped_gaps[2] <= 150 + 50);
    CHECK(capped_events.back().from == JobState::running);
    CHECK(capped_events.back().to == JobState::dead);

    // The CLI shows the same history.
    auto text = cli(broker, {"history", std::to_string(id)});
    CHECK_MESSAGE(text.exit_code == 0, describe(text));
    CHECK_MESSAGE(text.out.find("retrying") != std::string::npos, describe(text));
    CHECK_MESSAGE(text.out.find("succeeded") != std::string::npos, describe(text));
    auto as_json = cli(broker, {"history", std::to_string(id), "--json"});
    REQUIRE_MESSAGE(as_json.exit_code == 0, describe(as_json));
    auto j = parse_json(as_json);
    REQUIRE_MESSAGE(j.is_array(), describe(as_json));
    CHECK(j.size() == events.size());
    if (j.size() == events.size()) {
        CHECK(j.front()["to"] == "ready");
        CHECK(j.back()["from"] == "running");
        CHECK(j.back()["to"] == "succeeded");
    }
    auto missing = cli(broker, {"history", "999999"});
    CHECK_MESSAGE(missing.exit_code == 121, describe(missing));
}

// ---- 2. dead, then retry -----------------------------------------------------------------

TEST_CASE("lifecycle: always failing -> dead after max attempts; retry ID and retry --dead") {
    TempDir dir;
    Broker broker(dir, {"--retry-delay", "50ms"});
    const auto effects = dir / "effects";
    const auto fixed = dir / "fixed";
    const std::string command = "echo \"$ERRAND_JOB_ID $ERRAND_ATTEMPT\" >> " + quote(effects) +
                                "; [ -e " + quote(fixed) + " ] || exit 1; echo fixed";
    WorkerDaemon worker(dir, broker.endpoint(),
                        daemon("w", {"fragile=" + command, "other=" + command}));
    errand::Client client(broker.client_options());

    const auto a = client.submit(job_spec("fragile", "", 2)).id;
    const auto b = client.submit(job_spec("fragile", "", 2)).id;
    const auto c = client.submit(job_spec("fragile", "", 2)).id;
    const auto d = client.submit(job_spec("other", "", 2)).id;
    for (auto id : {a, b, c, d}) {
        auto job = client.wait(id, 15s);
        REQUIRE_MESSAGE(job.has_value(), "job " << id << " not dead in time\n" << worker.logs());
        CHECK(job->state == JobState::dead);
        CHECK(job->attempts == 2);
        CHECK(job->exit_code == 1);
    }
    CHECK(read_lines(effects).size() == 8);

    // Retrying a job that is not dead is refused.
    auto early = cli(broker, {"retry", "999999"});
    CHECK_MESSAGE(early.exit_code == 121, describe(early));

    write_file(fixed, "");
    auto r = cli(broker, {"retry", std::to_string(a)});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto again = client.wait(a, 10s);
    REQUIRE(again.has_value());
    CHECK(again->state == JobState::succeeded);
    CHECK(again->attempts == 3);      // attempt numbers only grow: 2 used, then one more
    CHECK(again->max_attempts == 4);  // the 2 used + the 2 it was submitted with
    CHECK(again->result == "fixed\n");
    const auto lines = read_lines(effects);
    const auto a_runs = std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
        return l.rfind(std::to_string(a) + " ", 0) == 0;
    });
    CHECK(a_runs == 3);
    auto events = client.history(a);
    CAPTURE(show(events));
    REQUIRE(events.size() >= 3);
    CHECK(events[events.size() - 3].from == JobState::dead);
    CHECK(events[events.size() - 3].to == JobState::ready);
    CHECK(events.back().to == JobState::succeeded);

    // A succeeded job cannot be retried.
    auto twice = cli(broker, {"retry", std::to_string(a)});
    CHECK_MESSAGE(twice.exit_code == 121, describe(twice));

    // --dead -q fragile: b and c come back, d (another queue) stays dead.
    auto bulk = cli(broker, {"retry", "--dead", "-q", "fragile"});
    REQUIRE_MESSAGE(bulk.exit_code == 0, describe(bulk));
    for (auto id : {b, c}) {
        auto job = client.wait(id, 10s);
        REQUIRE(job.has_value());
        CHECK(job->state == JobState::succeeded);
        CHECK(job->attempts == 3);
    }
    CHECK(client.status(d).state == JobState::dead);

    // The library: retry_dead with no queue brings back the rest.
    auto ids = client.retry_dead();
    CHECK(ids == std::vector<errand::JobId>{d});
    auto dj = client.wait(d, 10s);
    REQUIRE(dj.has_value());
    CHECK(dj->state == JobState::succeeded);
    CHECK(client.retry_dead().empty());
}

// ---- 3. timeout ---------------------------------------------------------------------------

TEST_CASE("lifecycle: sleep 30 with --timeout 1s is killed, process group and all, and retried") {
    TempDir dir;
    Broker broker(dir);
    const auto pids = dir / "pids";
    // The job ignores SIGTERM (so does its sleep): only the SIGKILL after --kill-grace ends it.
    const std::string command = "trap '' TERM; " + sleeper(pids);
    WorkerDaemon worker(dir, broker.endpoint(),
                        daemon("w", {"slow=" + command}, {"--kill-grace", "500ms"}));
    errand::Client client(broker.client_options());

    const auto id = parse_id(cli(broker, {"submit", "-q", "slow", "--timeout", "1s",
                                          "--max-attempts", "2", "--backoff", "100ms"}));
    auto info = client.status(id);
    CHECK(info.timeout == 1000ms);

    REQUIRE_MESSAGE(wait_until([&] { return read_pids(pids).size() >= 4; }, 15s),
                    "attempt 2 never started\n"
                        << worker.logs() << broker.logs());
    const auto all = read_pids(pids);
    CHECK(client.status(id).attempts >= 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CAPTURE(all[i]);
        CHECK_MESSAGE(wait_until([&] { return !alive(all[i]); }, 2s),
                      "a process of attempt 1 survived its timeout");
    }

    auto job = client.wait(id, 15s);
    REQUIRE(job.has_value());
    CHECK(job->state == JobState::dead);
    CHECK(job->attempts == 2);
    REQUIRE(job->error.has_value());
    CHECK_MESSAGE(job->error->find("timed out") != std::string::npos, *job->error);
    for (auto pid : read_pids(pids)) {
        CAPTURE(pid);
        CHECK(wait_until([&] { return !alive(pid); }, 2s));
    }

    // Attempt 1 ended at timeout + kill grace, well before the broker's own 5 s grace.
    auto events = client.history(id);
    CAPTURE(show(events));
    std::optional<errand::Timestamp> started, failed;
    for (const auto& e : events) {
        if (e.to == JobState::running && e.attempt == 1) started = e.at;
        if (e.from == JobState::running && e.attempt == 1 && !failed) failed = e.at;
    }
    REQUIRE(started.has_value());
    REQUIRE(failed.has_value());
    MESSAGE("attempt 1 failed " << (*failed - *started).count() << " ms after its dispatch");
    // SIGTERM is ignored, so the end comes with the SIGKILL at timeout + kill grace (1.5 s).
    CHECK(*failed - *started >= 1500ms - 50ms);
    CHECK(*failed - *started <= 3000ms);
}

// ---- 4. delay and run-at ------------------------------------------------------------------

TEST_CASE("lifecycle: --delay 2s and --at run on time, also across a broker restart") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());

    const auto now = client.ping().time;
    const errand::Timestamp at =
        std::chrono::floor<std::chrono::seconds>(now) + 4s;  // 3-4 s from now, whole seconds
    const auto delayed = parse_id(cli(broker, {"submit", "-q", "later", "--delay", "2s"}));
    const auto timed = parse_id(
        cli(broker, {"submit", "-q", "later", "--at", rfc3339(at.time_since_epoch().count())}));

    auto d = client.status(delayed);
    CHECK(d.state == JobState::scheduled);
    REQUIRE(d.run_at.has_value());
    CHECK(*d.run_at >= d.created_at + 2000ms);
    CHECK(*d.run_at <= d.created_at + 2050ms);
    auto t = client.status(timed);
    CHECK(t.state == JobState::scheduled);
    CHECK(t.run_at == at);

    // Scheduled jobs survive a crash; the worker connects only afterwards.
    broker.restart();
    errand::Client after(broker.client_options());
    if (after.ping().time + 100ms < d.created_at + 2000ms)
        CHECK(after.status(delayed).state == JobState::scheduled);
    WorkerDaemon worker(dir, broker.endpoint(), daemon("w", {"later=echo ran"}));

    auto dj = after.wait(delayed, 10s);
    REQUIRE_MESSAGE(dj.has_value(), worker.logs() << broker.logs());
    CHECK(dj->state == JobState::succeeded);
    REQUIRE(dj->started_at.has_value());
    const auto waited = *dj->started_at - dj->created_at;
    MESSAGE("--delay 2s started after " << waited.count() << " ms");
    CHECK(waited >= 2000ms);
    CHECK(waited <= 2500ms);

    auto tj = after.wait(timed, 10s);
    REQUIRE(tj.has_value());
    CHECK(tj->state == JobState::succeeded);
    REQUIRE(tj->started_at.has_value());
    CHECK(*tj->started_at >= at);
    CHECK(*tj->started_at <= at + 500ms);

    auto events = after.history(delayed);
    CAPTURE(show(events));
    REQUIRE(events.size() >= 2);
    CHECK(events[0].to == JobState::scheduled);
    CHECK(events[1].from == JobState::scheduled);
    CHECK(events[1].to == JobState::ready);
}

// ---- 5. priorities ------------------------------------------------------------------------

TEST_CASE("lifecycle: a single-slot worker runs higher priorities first, FIFO within one") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto effects = dir / "effects";

    std::vector<std::pair<int, errand::JobId>> jobs;
    for (int p : {0, 5, -3, 5, 10})
        jobs.emplace_back(
            p, parse_id(cli(broker, {"submit", "-q", "prio", "--priority", std::to_string(p)})));
    for (const auto& [p, id] : jobs)
        CHECK(client.status(id).priority == p);
    auto too_high = cli(broker, {"submit", "-q", "prio", "--priority", "1001"});
    CHECK_MESSAGE((too_high.exit_code == 120 || too_high.exit_code == 121), describe(too_high));
    auto library_too_low = job_spec("prio");
    library_too_low.priority = -1001;
    CHECK_THROWS_AS(client.submit(library_too_low), errand::BrokerError);

    WorkerDaemon worker(dir, broker.endpoint(),
                        daemon("w", {"prio=echo \"$ERRAND_JOB_ID\" >> " + quote(effects)}));
    for (const auto& [p, id] : jobs) {
        auto job = client.wait(id, 10s);
        REQUIRE_MESSAGE(job.has_value(), worker.logs());
        CHECK(job->state == JobState::succeeded);
    }
    // 10, 5 (first), 5 (second), 0, -3.
    const std::vector<std::string> expected = {
        std::to_string(jobs[4].second), std::to_string(jobs[1].second),
        std::to_string(jobs[3].second), std::to_string(jobs[0].second),
        std::to_string(jobs[2].second)};
    CHECK(read_lines(effects) == expected);
    errand::Timestamp last{};
    for (std::size_t i : {4, 1, 3, 0, 2}) {
        auto started = client.status(jobs[i].second).started_at.value_or(errand::Timestamp{});
        CHECK(started >= last);
        last = started;
    }
}

// ---- 6. cancel ----------------------------------------------------------------------------

TEST_CASE("lifecycle: cancel stops a running job's processes; scheduled and ready at once") {
    TempDir dir;
    Broker broker(dir);
    const auto pids = dir / "pids";
    const std::string command =
        "read what; if [ \"$what\" = sleep ]; then " + sleeper(pids) + "; fi; echo quick";
    WorkerDaemon worker(dir, broker.endpoint(), daemon("w", {"c=" + command}));
    errand::Client client(broker.client_options());

    const auto id = client.submit(job_spec("c", "sleep\n")).id;
    REQUIRE_MESSAGE(wait_until([&] { return read_pids(pids).size() == 2; }, 10s),
                    "the job never started\n"
                        << worker.logs());
    CHECK(client.status(id).state == JobState::running);

    auto r = cli(broker, {"cancel", std::to_string(id)});
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
    auto now = client.status(id);
    CHECK(now.state == JobState::cancelled);
    CHECK(now.finished_at.has_value());
    auto waited = client.wait(id, 1s);
    REQUIRE(waited.has_value());
    CHECK(waited->state == JobState::cancelled);
    for (auto pid : read_pids(pids)) {
        CAPTURE(pid);
        CHECK_MESSAGE(wait_until([&] { return !alive(pid); }, 7s), "job process survived cancel");
    }

    // The worker's slot is free again, and its late report of the killed attempt changed nothing.
    const auto quick = client.submit(job_spec("c", "x\n")).id;
    auto q = client.wait(quick, 10s);
    REQUIRE_MESSAGE(q.has_value(), worker.logs());
    CHECK(q->state == JobState::succeeded);
    CHECK(q->result == "quick\n");
    auto still = client.status(id);
    CHECK(still.state == JobState::cancelled);
    CHECK(still.attempts == 1);
    auto events = client.history(id);
    CAPTURE(show(events));
    REQUIRE_FALSE(events.empty());
    CHECK(events.back().from == JobState::running);
    CHECK(events.back().to == JobState::cancelled);

    // Ready (no worker serves the queue) and scheduled jobs are cancelled at once.
    const auto ready = client.submit(job_spec("nobody")).id;
    CHECK(client.cancel(ready).state == JobState::cancelled);
    auto later = job_spec("nobody");
    later.delay = 60'000ms;
    const auto scheduled = client.submit(later).id;
    CHECK(client.status(scheduled).state == JobState::scheduled);
    CHECK(client.cancel(scheduled).state == JobState::cancelled);
    CHECK(client.status(scheduled).state == JobState::cancelled);

    // Finished jobs cannot be cancelled: invalid_state, CLI exit 121.
    auto finished = cli(broker, {"cancel", std::to_string(quick)});
    CHECK_MESSAGE(finished.exit_code == 121, describe(finished));
    auto twice = cli(broker, {"cancel", std::to_string(id)});
    CHECK_MESSAGE(twice.exit_code == 121, describe(twice));
    try {
        client.cancel(quick);
        FAIL_CHECK("cancel of a succeeded job was accepted");
    } catch (const errand::BrokerError& e) {
        CHECK(e.code() == errand::ErrorCode::invalid_state);
    }
    CHECK(client.status(quick).state == JobState::succeeded);
    auto unknown = cli(broker, {"cancel", "999999"});
    CHECK_MESSAGE(unknown.exit_code == 121, describe(unknown));
}

// ---- 7. unique keys -----------------------------------------------------------------------

TEST_CASE("lifecycle: one unique key, one unfinished job; a new one once it has finished") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());

    auto spec = job_spec("uq", "first");
    spec.unique = "report-42";
    auto first = client.submit(spec);
    CHECK_FALSE(first.duplicate);
    auto spec2 = job_spec("uq", "second");
    spec2.unique = "report-42";
    auto second = client.submit(spec2);
    CHECK(second.duplicate);
    CHECK(second.id == first.id);
    CHECK(parse_id(cli(broker, {"submit", "-q", "uq", "--unique", "report-42"})) == first.id);
    CHECK(client.status(first.id).unique == "report-42");

    auto other_spec = job_spec("uq");
    other_spec.unique = "report-43";
    auto other = client.submit(other_spec);
    CHECK_FALSE(other.duplicate);
    CHECK(other.id != first.id);

    WorkerDaemon worker(dir, broker.endpoint(), daemon("w", {"uq=cat"}));
    auto done = client.wait(first.id, 10s);
    REQUIRE_MESSAGE(done.has_value(), worker.logs());
    CHECK(done->state == JobState::succeeded);
    CHECK(done->result == "first");  // the duplicates added nothing

    auto third = client.submit(spec2);
    CHECK_FALSE(third.duplicate);
    CHECK(third.id != first.id);
    auto t = client.wait(third.id, 10s);
    REQUIRE(t.has_value());
    CHECK(t->result == "second");

    errand::ListFilter filter;
    filter.queue = "uq";
    CHECK(client.list(filter).size() == 3);
}

// ---- 8. pause and resume ------------------------------------------------------------------

TEST_CASE("lifecycle: a paused queue dispatches nothing, across a broker restart, until resumed") {
    TempDir dir;
    Broker broker(dir);
    const auto effects = dir / "effects";
    errand::JobId held = 0;
    {
        errand::Client client(broker.client_options());
        client.pause("held");
        held = client.submit(job_spec("held")).id;
    }
    broker.restart();
    errand::Client client(broker.client_options());

    WorkerDaemon worker(dir, broker.endpoint(),
                        daemon("w", {"held=echo ran >> " + quote(effects), "probe=echo probe"}));
    // Once a probe job has run, the worker is connected with a free slot.
    const auto probe = client.submit(job_spec("probe")).id;
    auto p = client.wait(probe, 10s);
    REQUIRE_MESSAGE(p.has_value(), worker.logs() << broker.logs());
    CHECK(p->state == JobState::succeeded);
    CHECK_FALSE(wait_until([&] { return client.status(held).state != JobState::ready; }, 300ms));
    auto h = client.status(held);
    CHECK(h.state == JobState::ready);
    CHECK(h.attempts == 0);
    CHECK(read_lines(effects).empty());

    auto info = find_queue(client, "held");
    REQUIRE(info.has_value());
    CHECK(info->paused);
    CHECK(count_of(*info, JobState::ready) == 1);
    auto listed = cli(broker, {"queues", "--json"});
    REQUIRE_MESSAGE(listed.exit_code == 0, describe(listed));
    auto q = queue_json(parse_json(listed), "held");
    CHECK(q["paused"] == true);
    CHECK(json_count(q, "ready") == 1);

    auto r = cli(broker, {"resume", "held"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto job = client.wait(held, 10s);
    REQUIRE(job.has_value());
    CHECK(job->state == JobState::succeeded);
    CHECK(read_lines(effects).size() == 1);
    auto after = cli(broker, {"queues", "--json"});
    REQUIRE_MESSAGE(after.exit_code == 0, describe(after));
    auto q2 = queue_json(parse_json(after), "held");
    CHECK(q2["paused"] == false);
    CHECK(json_count(q2, "succeeded") == 1);

    // The CLI pauses too.
    auto paused = cli(broker, {"pause", "probe"});
    CHECK_MESSAGE(paused.exit_code == 0, describe(paused));
    auto pinfo = find_queue(client, "probe");
    REQUIRE(pinfo.has_value());
    CHECK(pinfo->paused);
}

// ---- 9. stale results ---------------------------------------------------------------------

TEST_CASE("lifecycle: the result of a lost worker's attempt is refused as stale") {
    TempDir dir;
    Broker broker(dir, {"--worker-timeout", "1s", "--heartbeat", "200ms"});
    errand::Client client(broker.client_options());

    // A raw connection poses as worker "ghost", takes attempt 1 and then falls silent.
    RawConnection ghost(broker.endpoint());
    register_ghost(ghost, "ghost", "contested");
    const auto id = client.submit(job_spec("contested", "", 3)).id;
    auto dispatch = next_of(ghost, errand::cmd::kDispatch, 5s);
    REQUIRE_MESSAGE(dispatch.has_value(), broker.logs());
    auto d = errand::decode_dispatch(errand::Body(dispatch->body).reader());
    CHECK(d.id == id);
    CHECK(d.attempt == 1);

    WorkerDaemon w2(dir, broker.endpoint(), daemon("w2", {"contested=printf second"}));
    auto job = client.wait(id, 10s);
    REQUIRE_MESSAGE(job.has_value(), w2.logs() << broker.logs());
    CHECK(job->state == JobState::succeeded);
    CHECK(job->attempts == 2);
    CHECK(job->worker == "w2");
    CHECK(job->result == "second");

    // The ghost wakes up and reports attempt 1.
    auto err = late_done(ghost, id, 1, "first");
    CHECK(err.code == errand::ErrorCode::stale);
    CHECK(err.id == id);
    CHECK(err.attempt == 1u);
    auto final_job = client.status(id);
    CHECK(final_job.result == "second");
    CHECK(final_job.worker == "w2");
    CHECK(final_job.attempts == 2);

    auto events = client.history(id);
    CAPTURE(show(events));
    bool ran_on_ghost = false;
    bool lost = false;
    for (const auto& e : events) {
        if (e.to == JobState::running && e.attempt == 1 && e.worker == "ghost") ran_on_ghost = true;
        if (e.from == JobState::running && e.to == JobState::ready && e.attempt == 1 &&
            e.reason.find("worker lost") != std::string::npos)
            lost = true;
    }
    CHECK(ran_on_ghost);
    CHECK(lost);
}

TEST_CASE(
    "lifecycle: no result by timeout + grace: the broker fails the attempt; late result stale") {
    TempDir dir;
    Broker broker(dir, {"--timeout-grace", "300ms", "--retry-delay", "50ms"});
    errand::Client client(broker.client_options());
    RawConnection ghost(broker.endpoint());
    register_ghost(ghost, "ghost", "timed");

    auto spec = job_spec("timed", "", 2);
    spec.timeout = 300ms;
    const auto id = client.submit(spec).id;
    auto dispatch = next_of(ghost, errand::cmd::kDispatch, 5s);
    REQUIRE_MESSAGE(dispatch.has_value(), broker.logs());
    const auto dispatched_at = std::chrono::steady_clock::now();
    auto d = errand::decode_dispatch(errand::Body(dispatch->body).reader());
    CHECK(d.id == id);
    CHECK(d.timeout_ms == 300);
    // Heartbeat that the job is held, so the ghost is not lost meanwhile.
    ghost.send(errand::cmd::kHeartbeat, errand::encode(errand::WorkerHeartbeat{1, {id}}));

    // The ghost has no credit left: after the backoff the job waits in ready, attempt 1 used.
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            auto s = client.status(id);
                            return s.state == JobState::ready && s.attempts == 1;
                        },
                        5s),
                    broker.logs());
    CHECK(since(dispatched_at) >= 550ms);
    auto s = client.status(id);
    REQUIRE(s.error.has_value());
    CHECK_MESSAGE(s.error->find("timed out") != std::string::npos, *s.error);

    auto err = late_done(ghost, id, 1, "too late");
    CHECK(err.code == errand::ErrorCode::stale);
    CHECK(err.id == id);
    auto after = client.status(id);
    CHECK(after.state == JobState::ready);
    CHECK(after.attempts == 1);
    CHECK_FALSE(after.result.has_value());

    auto events = client.history(id);
    CAPTURE(show(events));
    bool timed_out = false;
    for (const auto& e : events)
        if (e.from == JobState::running && e.to == JobState::retrying && e.attempt == 1)
            timed_out = true;
    CHECK(timed_out);
}

// ---- 10. progress -------------------------------------------------------------------------

TEST_CASE("lifecycle: progress written to fd 3 by a daemon job shows in status") {
    TempDir dir;
    Broker broker(dir);
    const auto gate = dir / "gate";
    REQUIRE(::mkfifo(gate.c_str(), 0600) == 0);
    const std::string command =
        "echo '20 starting' >&3; echo '50 halfway' >&\"$ERRAND_PROGRESS_FD\"; "
        "cat " +
        quote(gate) + " > /dev/null; echo finished";
    WorkerDaemon worker(dir, broker.endpoint(), daemon("w", {"prog=" + command}));
    errand::Client client(broker.client_options());

    const auto id = client.submit(job_spec("prog")).id;
    const bool reported = wait_until(
        [&] { return client.status(id).progress == std::optional<std::uint32_t>(50); }, 10s);
    auto info = client.status(id);
    CHECK_MESSAGE(reported, "progress " << (info.progress ? std::to_string(*info.progress) : "none")
                                        << "\n"
                                        << worker.logs());
    CHECK(info.state == JobState::running);
    CHECK(info.progress_message == "halfway");

    auto text = cli(broker, {"status", std::to_string(id)});
    CHECK_MESSAGE(text.exit_code == 0, describe(text));
    CHECK_MESSAGE(text.out.find("halfway") != std::string::npos, describe(text));
    auto as_json = cli(broker, {"status", std::to_string(id), "--json"});
    REQUIRE_MESSAGE(as_json.exit_code == 0, describe(as_json));
    auto j = parse_json(as_json);
    CHECK_MESSAGE(j["progress"] == 50, j.dump());
    CHECK_MESSAGE(j["progress_message"] == "halfway", j.dump());

    // Open the fifo's write end (the job is blocked reading it) and close it: the job goes on.
    int fd = -1;
    REQUIRE(wait_until(
        [&] {
            fd = ::open(gate.c_str(), O_WRONLY | O_NONBLOCK);
            return fd >= 0;
        },
        5s));
    ::close(fd);
    auto job = client.wait(id, 10s);
    REQUIRE(job.has_value());
    CHECK(job->state == JobState::succeeded);
    CHECK(job->result == "finished\n");
}

TEST_CASE("lifecycle: a library handler's job.progress() shows in status") {
    TempDir dir;
    Broker broker(dir);
    std::atomic<bool> release{false};
    errand::Worker worker(lib_worker(broker, "lib-w"));
    worker.handle("libprog", [&](const errand::Job& job) {
        job.progress(30, "thirty");
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!release && !job.cancelled() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(5ms);
        return errand::Outcome::success("released");
    });
    WorkerThread runner(worker);
    errand::Client client(broker.client_options());

    const auto id = client.submit(job_spec("libprog")).id;
    CHECK(wait_until([&] { return client.status(id).progress == std::optional<std::uint32_t>(30); },
                     5s));
    auto info = client.status(id);
    CHECK(info.state == JobState::running);
    CHECK(info.progress_message == "thirty");
    release = true;
    auto job = client.wait(id, 10s);
    REQUIRE(job.has_value());
    CHECK(job->state == JobState::succeeded);
    CHECK(job->result == "released");
}

// ---- 11. purge ----------------------------------------------------------------------------

TEST_CASE("lifecycle: purge removes succeeded jobs of a queue; counts follow") {
    TempDir dir;
    Broker broker(dir);
    // Exit 99 (the daemon's default --permanent-exit-code) is dead at once.
    const std::string command = "read x; [ \"$x\" = bad ] && exit 99; echo ok";
    WorkerDaemon worker(dir, broker.endpoint(), daemon("w", {"pq=" + command, "keep=" + command}));
    errand::Client client(broker.client_options());

    std::vector<errand::JobId> good;
    for (int i = 0; i < 3; ++i)
        good.push_back(client.submit(job_spec("pq", "good\n")).id);
    const auto bad = client.submit(job_spec("pq", "bad\n", 3)).id;
    const auto kept = client.submit(job_spec("keep", "good\n")).id;
    for (auto id : good) {
        auto job = client.wait(id, 10s);
        REQUIRE_MESSAGE(job.has_value(), worker.logs());
        CHECK(job->state == JobState::succeeded);
    }
    auto b = client.wait(bad, 10s);
    REQUIRE(b.has_value());
    CHECK(b->state == JobState::dead);
    CHECK(b->attempts == 1);
    CHECK(b->exit_code == 99);
    REQUIRE(client.wait(kept, 10s).has_value());

    auto before = find_queue(client, "pq");
    REQUIRE(before.has_value());
    CHECK(count_of(*before, JobState::succeeded) == 3);
    CHECK(count_of(*before, JobState::dead) == 1);
    auto before_json = cli(broker, {"queues", "--json"});
    REQUIRE_MESSAGE(before_json.exit_code == 0, describe(before_json));
    CHECK(json_count(queue_json(parse_json(before_json), "pq"), "succeeded") == 3);

    // Nothing finished an hour ago; running is not a finished state.
    CHECK(client.purge(JobState::succeeded, std::string("pq"), std::chrono::hours(1)) == 0);
    auto not_terminal = cli(broker, {"purge", "--state", "running"});
    CHECK_MESSAGE((not_terminal.exit_code == 120 || not_terminal.exit_code == 121),
                  describe(not_terminal));

    auto r = cli(broker, {"purge", "--state", "succeeded", "-q", "pq"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    CHECK_MESSAGE(r.out.find('3') != std::string::npos, describe(r));
    for (auto id : good) {
        auto s = cli(broker, {"status", std::to_string(id)});
        CHECK_MESSAGE(s.exit_code == 121, describe(s));
        CHECK_THROWS_AS(client.status(id), errand::BrokerError);
    }
    CHECK(client.status(bad).state == JobState::dead);
    CHECK(client.status(kept).state == JobState::succeeded);

    auto after = find_queue(client, "pq");
    REQUIRE(after.has_value());
    CHECK(count_of(*after, JobState::succeeded) == 0);
    CHECK(count_of(*after, JobState::dead) == 1);
    auto after_json = cli(broker, {"queues", "--json"});
    REQUIRE_MESSAGE(after_json.exit_code == 0, describe(after_json));
    auto all = parse_json(after_json);
    CHECK(json_count(queue_json(all, "pq"), "succeeded") == 0);
    CHECK(json_count(queue_json(all, "pq"), "dead") == 1);
    CHECK(json_count(queue_json(all, "keep"), "succeeded") == 1);

    CHECK(client.purge(JobState::dead) == 1);
    CHECK_THROWS_AS(client.status(bad), errand::BrokerError);
}

// ---- worker daemon options ----------------------------------------------------------------

TEST_CASE("lifecycle: worker --permanent-exit-code, --default-timeout and a weighted queue spec") {
    TempDir dir;
    Broker broker(dir, {"--retry-delay", "50ms"});
    const std::string command =
        "read x; case \"$x\" in perm) exit 7;; ninety-nine) exit 99;; hang) sleep 30;; esac; "
        "echo ok";
    WorkerDaemon worker(dir, broker.endpoint(),
                        daemon("w", {"wq:5=" + command},
                               {"--permanent-exit-code", "7", "--default-timeout", "500ms",
                                "--kill-grace", "200ms"}));
    errand::Client client(broker.client_options());

    const auto perm = client.submit(job_spec("wq", "perm\n", 3)).id;
    const auto ninety_nine = client.submit(job_spec("wq", "ninety-nine\n", 2)).id;
    const auto hang = client.submit(job_spec("wq", "hang\n", 1)).id;
    const auto fine = client.submit(job_spec("wq", "fine\n", 1)).id;

    auto p = client.wait(perm, 10s);
    REQUIRE_MESSAGE(p.has_value(), worker.logs());
    CHECK(p->state == JobState::dead);
    CHECK(p->attempts == 1);  // permanent: no retry
    CHECK(p->exit_code == 7);
    auto n = client.wait(ninety_nine, 10s);
    REQUIRE(n.has_value());
    CHECK(n->state == JobState::dead);
    CHECK(n->attempts == 2);  // 99 is an ordinary failure on this worker
    CHECK(n->exit_code == 99);
    auto h = client.wait(hang, 10s);
    REQUIRE(h.has_value());
    CHECK(h->state == JobState::dead);
    REQUIRE(h->error.has_value());
    CHECK_MESSAGE(h->error->find("timed out") != std::string::npos, *h->error);
    REQUIRE(h->started_at.has_value());
    REQUIRE(h->finished_at.has_value());
    CHECK(*h->finished_at - *h->started_at >= 500ms);
    CHECK(*h->finished_at - *h->started_at <= 2500ms);
    auto f = client.wait(fine, 10s);
    REQUIRE(f.has_value());
    CHECK(f->state == JobState::succeeded);
    CHECK(f->result == "ok\n");
}

// ---- retention ----------------------------------------------------------------------------

TEST_CASE("lifecycle: --retention deletes finished jobs and their counts; unfinished ones stay") {
    TempDir dir;
    Broker broker(dir, {"--retention", "1s"});
    errand::Worker worker({.endpoint = broker.endpoint(), .name = "ret-w", .concurrency = 2});
    worker.handle("ret", [](const errand::Job&) { return errand::Outcome::success("x"); });
    std::thread runner([&] { worker.run(); });
    errand::Client client(broker.client_options());
    std::vector<errand::JobId> done;
    for (int i = 0; i < 20; ++i)
        done.push_back(client.submit(job_spec("ret")).id);
    for (auto id : done)
        REQUIRE(client.wait(id, 10s).has_value());
    const auto waiting = client.submit(job_spec("nobody-serves-this")).id;

    // Retention looks once a second and deletes what finished more than 1 s ago.
    bool gone = wait_until(
        [&] {
            try {
                client.status(done.back());
                return false;
            } catch (const errand::BrokerError& e) {
                return e.code() == errand::ErrorCode::not_found;
            }
        },
        5s, 50ms);
    worker.stop();
    runner.join();
    REQUIRE_MESSAGE(gone, broker.logs());
    for (auto id : done)
        CHECK_THROWS_AS(client.status(id), errand::BrokerError);
    CHECK_THROWS_AS(client.history(done.front()), errand::BrokerError);
    CHECK(client.status(waiting).state == JobState::ready);
    auto q = find_queue(client, "ret");
    CHECK_FALSE(q.has_value());  // no jobs left: the queue is not listed
}

TEST_CASE("lifecycle: a daemon whose result is refused as stale logs the job's queue and attempt") {
    TempDir dir;
    Broker broker(dir, {"--worker-timeout", "1s", "--heartbeat", "200ms"});
    errand::Client client(broker.client_options());
    WorkerDaemon w1(dir, broker.endpoint(), daemon("w1", {"paused=sleep 1.5; printf first"}));
    const auto id = client.submit(job_spec("paused", "", 3)).id;
    REQUIRE(wait_until([&] { return client.status(id).state == JobState::running; }, 10s));
    // Paused past the worker timeout: the broker gives attempt 1 up and another worker runs
    // attempt 2. The job's own process is not paused and finishes meanwhile.
    w1.process().kill(SIGSTOP);
    WorkerDaemon w2(dir, broker.endpoint(), daemon("w2", {"paused=printf second"}));
    auto job = client.wait(id, 15s);
    REQUIRE_MESSAGE(job.has_value(), w2.logs() << broker.logs());
    CHECK(job->attempts == 2);
    w1.process().kill(SIGCONT);
    // w1 reports attempt 1; the broker refuses it, and w1 says which job it was.
    auto line = "job=" + std::to_string(id) + " queue=paused attempt=1: result refused as stale";
    CHECK_MESSAGE(
        wait_until([&] { return w1.process().err().find(line) != std::string::npos; }, 10s),
        w1.logs());
    CHECK(client.status(id).result == "second");
}
