// End-to-end tests: many jobs through a real broker and worker daemons, each run exactly once;
// and the C++ Worker library serving a queue from a thread of the test.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "errand/codec.hpp"
#include "errand/worker.hpp"
#include "harness.hpp"

using namespace errand::test;
using errand::JobState;

TEST_CASE("e2e: 2000 jobs across 2 workers x concurrency 4 each complete exactly once") {
    constexpr std::size_t kJobs = 2000;
    TempDir dir;
    Broker broker(dir);
    const auto effects = dir / "effects";
    const std::string command = "echo \"$ERRAND_JOB_ID\" >> '" + effects.string() + "'";
    WorkerDaemon w1(dir, broker.endpoint(),
                    {.name = "w1",
                     .queues = {"bulk=" + command},
                     .concurrency = 4,
                     .allow_commands = false,
                     .extra_args = {}});
    WorkerDaemon w2(dir, broker.endpoint(),
                    {.name = "w2",
                     .queues = {"bulk=" + command},
                     .concurrency = 4,
                     .allow_commands = false,
                     .extra_args = {}});

    errand::Client client(broker.client_options(10'000));
    std::vector<errand::JobSpec> specs(kJobs);
    for (std::size_t i = 0; i < kJobs; ++i) {
        specs[i].queue = "bulk";
        specs[i].payload = "job " + std::to_string(i);
    }
    const auto start = std::chrono::steady_clock::now();
    auto submitted = client.submit_batch(specs);
    REQUIRE(submitted.size() == kJobs);
    std::set<errand::JobId> ids;
    for (const auto& s : submitted) {
        CHECK_FALSE(s.duplicate);
        ids.insert(s.id);
    }
    REQUIRE(ids.size() == kJobs);  // distinct ids

    // Completion is pushed by WAIT; one overall deadline bounds the whole loop.
    const auto deadline = start + 120s;
    for (auto id : ids) {
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        REQUIRE_MESSAGE(left.count() > 0, "jobs not finished within 120 s");
        auto job = client.wait(id, left);
        REQUIRE_MESSAGE(job.has_value(), "job " << id << " not finished within the deadline");
        REQUIRE_MESSAGE(job->state == JobState::succeeded,
                        "job " << id << " ended " << errand::to_string(job->state) << ": "
                               << job->error.value_or(""));
    }
    MESSAGE("2000 jobs ran in " << since(start).count() << " ms");

    errand::ListFilter filter;
    filter.state = JobState::succeeded;
    filter.limit = errand::limits::kMaxListLimit;
    auto done = client.list(filter);
    CHECK(done.size() == kJobs);
    std::map<std::string, std::size_t> per_worker;
    std::set<errand::JobId> listed;
    for (const auto& job : done) {
        listed.insert(job.id);
        CHECK(job.attempts == 1);
        per_worker[job.worker.value_or("(none)")]++;
    }
    CHECK(listed == ids);
    CHECK(per_worker.size() == 2);
    CHECK(per_worker["w1"] > 0);
    CHECK(per_worker["w2"] > 0);
    MESSAGE("w1 ran " << per_worker["w1"] << ", w2 ran " << per_worker["w2"]);

    // Side effects: each id exactly once.
    std::map<std::string, int> seen;
    for (const auto& line : read_lines(effects))
        seen[line]++;
    CHECK(seen.size() == kJobs);
    for (auto id : ids) {
        auto it = seen.find(std::to_string(id));
        CHECK_MESSAGE(it != seen.end(), "job " << id << " left no side effect");
        if (it != seen.end()) CHECK_MESSAGE(it->second == 1, "job " << id << " ran " << it->second);
    }
}

TEST_CASE("e2e: a library Worker's results round-trip through Client::wait") {
    TempDir dir;
    Broker broker(dir);
    errand::Worker worker({.endpoint = broker.endpoint(),
                           .name = "lib-w",
                           .concurrency = 2,
                           .accept_commands = false,
                           .max_result = errand::limits::kDefaultMaxResult});
    std::atomic<int> calls{0};
    worker.handle("lib", [&](const errand::Job& job) {
        ++calls;
        return errand::Outcome::success("echo:" + job.payload + ":" + job.queue + ":" +
                                        std::to_string(job.attempt));
    });
    WorkerThread runner(worker);

    errand::Client client(broker.client_options());
    auto a = client.submit(job_spec("lib", std::string("bin\0ary", 7)));
    auto b = client.submit(job_spec("lib", "second"));
    auto ja = client.wait(a.id, 10s);
    auto jb = client.wait(b.id, 10s);
    REQUIRE(ja.has_value());
    REQUIRE(jb.has_value());
    CHECK(ja->state == JobState::succeeded);
    CHECK(ja->result == "echo:" + std::string("bin\0ary", 7) + ":lib:1");
    CHECK(ja->exit_code == 0);
    CHECK(ja->attempts == 1);
    CHECK(ja->worker == "lib-w");
    CHECK(ja->payload_size == 7);
    CHECK(jb->state == JobState::succeeded);
    CHECK(jb->result == "echo:second:lib:1");
    CHECK(calls.load() == 2);
}

TEST_CASE("e2e: a library handler that throws is retried, then dead with the message as error") {
    TempDir dir;
    Broker broker(dir, {"--retry-delay", "100ms"});
    errand::Worker worker({.endpoint = broker.endpoint(),
                           .name = "lib-w",
                           .concurrency = 1,
                           .accept_commands = false,
                           .max_result = errand::limits::kDefaultMaxResult});
    std::atomic<int> calls{0};
    std::atomic<std::uint32_t> last_attempt{0};
    worker.handle("boom", [&](const errand::Job& job) -> errand::Outcome {
        ++calls;
        last_attempt = job.attempt;
        throw std::runtime_error("kaboom on attempt " + std::to_string(job.attempt));
    });
    WorkerThread runner(worker);

    errand::Client client(broker.client_options());
    auto s = client.submit(job_spec("boom", "x", 3));
    auto job = client.wait(s.id, 15s);
    REQUIRE(job.has_value());
    CHECK(job->state == JobState::dead);
    CHECK(job->attempts == 3);
    CHECK(job->max_attempts == 3);
    CHECK(job->error == "kaboom on attempt 3");
    CHECK_FALSE(job->result.has_value());
    CHECK(job->finished_at.has_value());
    CHECK(calls.load() == 3);
    CHECK(last_attempt.load() == 3);
}

TEST_CASE("e2e: a library handler's failure outcome and a permanent failure") {
    TempDir dir;
    Broker broker(dir, {"--retry-delay", "100ms"});
    errand::Worker worker({.endpoint = broker.endpoint(),
                           .name = "lib-w",
                           .concurrency = 1,
                           .accept_commands = false,
                           .max_result = errand::limits::kDefaultMaxResult});
    std::atomic<int> calls{0};
    worker.handle("flaky", [&](const errand::Job& job) {
        ++calls;
        if (job.attempt < 2) return errand::Outcome::failure("not yet", 7);
        return errand::Outcome::success("ok on " + std::to_string(job.attempt));
    });
    worker.handle("fatal", [&](const errand::Job&) {
        return errand::Outcome::failure("hopeless", 9, /*permanent=*/true);
    });
    WorkerThread runner(worker);

    errand::Client client(broker.client_options());
    auto flaky = client.submit(job_spec("flaky", "", 3));
    auto fatal = client.submit(job_spec("fatal", "", 5));
    auto jf = client.wait(flaky.id, 10s);
    auto jx = client.wait(fatal.id, 10s);
    REQUIRE(jf.has_value());
    REQUIRE(jx.has_value());
    CHECK(jf->state == JobState::succeeded);
    CHECK(jf->attempts == 2);
    CHECK(jf->result == "ok on 2");
    CHECK(jx->state == JobState::dead);
    CHECK(jx->attempts == 1);  // permanent: no retry although 5 were allowed
    CHECK(jx->error == "hopeless");
    CHECK(jx->exit_code == 9);
}

TEST_CASE("e2e: the worker daemon's job contract: stdin, env, stdout, exit codes, big payloads") {
    TempDir dir;
    Broker broker(dir, {"--retry-delay", "100ms"});
    WorkerDaemon worker(
        dir, broker.endpoint(),
        {.name = "contract",
         .queues = {"cat=cat",
                    "env=printf '%s %s %s' \"$ERRAND_JOB_ID\" \"$ERRAND_QUEUE\" "
                    "\"$ERRAND_ATTEMPT\"",
                    "exit3=echo partial; exit 3", "huge=head -c 3000000 /dev/zero | tr '\\0' x"},
         .concurrency = 2,
         .allow_commands = false,
         .extra_args = {}});
    errand::Client client(broker.client_options());

    SUBCASE("a 1 MiB payload goes in on stdin and comes back as the result") {
        std::string payload(errand::limits::kDefaultMaxPayload, '\0');
        std::mt19937 rng(7);
        for (auto& c : payload)
            c = static_cast<char>(rng() & 0xff);
        auto job = client.wait(client.submit(job_spec("cat", payload)).id, 20s);
        REQUIRE(job.has_value());
        CHECK(job->state == JobState::succeeded);
        CHECK(job->payload_size == payload.size());
        REQUIRE(job->result.has_value());
        CHECK(job->result->size() == payload.size());
        CHECK((*job->result == payload));  // not printed: a megabyte of noise
    }
    SUBCASE("ERRAND_JOB_ID, ERRAND_QUEUE and ERRAND_ATTEMPT are set") {
        auto id = client.submit(job_spec("env")).id;
        auto job = client.wait(id, 10s);
        REQUIRE(job.has_value());
        CHECK(job->result == std::to_string(id) + " env 1");
    }
    SUBCASE("a non-zero exit is a failed attempt, retried, then dead with its exit code") {
        auto job = client.wait(client.submit(job_spec("exit3", "", 2)).id, 10s);
        REQUIRE(job.has_value());
        CHECK(job->state == JobState::dead);
        CHECK(job->attempts == 2);
        CHECK(job->exit_code == 3);
        CHECK(job->error.has_value());
    }
    SUBCASE("output over the result limit is truncated and marked, not refused") {
        auto job = client.wait(client.submit(job_spec("huge")).id, 20s);
        REQUIRE(job.has_value());
        CHECK(job->state == JobState::succeeded);
        REQUIRE(job->result.has_value());
        CHECK(job->result->size() <= errand::limits::kDefaultMaxResult);
        CHECK(job->result->size() > 0);
        // The daemon keeps a prefix of the output and says so at the end (worker/process.hpp).
        const auto cut = job->result->rfind('\n');
        REQUIRE(cut != std::string::npos);
        CHECK(cut > 1'000'000);
        CHECK(job->result->find_first_not_of('x') == cut);
        CHECK(job->result->substr(cut).find("truncated") != std::string::npos);
    }
}

TEST_CASE("e2e: a resubmitted token returns the existing job instead of a second one") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    auto spec = job_spec("idem", "once");
    spec.token = errand::unique_token();
    auto first = client.submit(spec);
    auto again = client.submit(spec);
    CHECK_FALSE(first.duplicate);
    CHECK(again.duplicate);
    CHECK(again.id == first.id);
    errand::ListFilter all;
    CHECK(client.list(all).size() == 1);
}

TEST_CASE("e2e: a JobSpec's chrono times and durations come back from STATUS as they went in") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    using std::chrono::system_clock;
    using std::chrono::time_point_cast;
    const errand::Timestamp before = time_point_cast<milliseconds>(system_clock::now());
    const errand::Timestamp at = before + 1h;
    auto scheduled = client.submit(
        {.queue = "chrono", .priority = 7, .run_at = at, .timeout = 90s, .backoff = 2s});
    auto delayed = client.submit({.queue = "chrono", .delay = 10min, .timeout = 1500ms});
    auto plain = client.submit({.queue = "chrono"});
    const errand::Timestamp after = time_point_cast<milliseconds>(system_clock::now());

    auto s = client.status(scheduled.id);
    CHECK(s.state == JobState::scheduled);
    CHECK(s.run_at == at);
    CHECK(s.timeout == 90'000ms);
    CHECK(s.priority == 7);
    CHECK(s.created_at >= before);
    CHECK(s.created_at <= after);
    CHECK_FALSE(s.started_at.has_value());
    auto h = client.history(scheduled.id);
    REQUIRE(h.size() == 1);
    CHECK(h[0].at == s.created_at);

    auto d = client.status(delayed.id);
    CHECK(d.state == JobState::scheduled);
    REQUIRE(d.run_at.has_value());
    CHECK(*d.run_at - d.created_at == 10min);  // the broker's now + delay
    CHECK(d.timeout == 1500ms);

    auto p = client.status(plain.id);
    CHECK(p.state == JobState::ready);
    CHECK_FALSE(p.timeout.has_value());
    CHECK_FALSE(p.run_at.has_value());
}

TEST_CASE("unique_token: 32 hex digits, increasing within a thread, different across threads") {
    auto now_ms = [] {
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count());
    };
    const std::uint64_t before = now_ms();
    std::vector<std::string> mine;
    for (int i = 0; i < 1000; ++i)
        mine.push_back(errand::unique_token());
    // Led by the time in ms (11 hex digits), so every thread's tokens of one moment sort
    // together at the broker's token index's right edge.
    const std::uint64_t after = now_ms();
    CHECK(std::stoull(mine.front().substr(0, 11), nullptr, 16) >= before);
    CHECK(std::stoull(mine.back().substr(0, 11), nullptr, 16) <= after);
    for (const auto& t : mine) {
        CHECK(t.size() == 32);
        CHECK(t.find_first_not_of("0123456789abcdef") == std::string::npos);
    }
    CHECK(std::is_sorted(mine.begin(), mine.end()));
    CHECK(std::adjacent_find(mine.begin(), mine.end()) == mine.end());
    std::vector<std::string> other;
    std::thread([&] {
        for (int i = 0; i < 1000; ++i)
            other.push_back(errand::unique_token());
    }).join();
    std::set<std::string> all(mine.begin(), mine.end());
    all.insert(other.begin(), other.end());
    CHECK(all.size() == 2000);
    CHECK(mine.front().substr(0, 16) != other.front().substr(0, 16));
}

TEST_CASE("e2e: submit_and_wait runs a job and brings its result back in one request") {
    TempDir dir;
    Broker broker(dir);
    errand::Worker worker({.endpoint = broker.endpoint(),
                           .name = "sw",
                           .concurrency = 1,
                           .accept_commands = false,
                           .max_result = errand::limits::kDefaultMaxResult});
    std::atomic<bool> release{false};
    worker.handle("sw", [&](const errand::Job& job) {
        if (job.payload == "hold")  // waits for the test, bounded
            for (int i = 0; i < 1000 && !release.load(); ++i)
                std::this_thread::sleep_for(10ms);
        return errand::Outcome::success("got:" + job.payload);
    });
    WorkerThread runner(worker);
    errand::Client client(broker.client_options());

    // A fresh job: submitted, run, and its result returned by the same call.
    errand::Submitted submitted;
    auto spec = job_spec("sw", "one");
    spec.token = errand::unique_token();
    auto job = client.submit_and_wait(spec, 10s, &submitted);
    REQUIRE(job.has_value());
    CHECK(job->id == submitted.id);
    CHECK_FALSE(submitted.duplicate);
    CHECK(job->state == JobState::succeeded);
    CHECK(job->result == "got:one");

    // The same token again: the finished job comes back at once, no second run.
    errand::Submitted again;
    auto same = client.submit_and_wait(spec, 10s, &again);
    REQUIRE(same.has_value());
    CHECK(again.duplicate);
    CHECK(same->id == submitted.id);
    CHECK(same->result == "got:one");
    CHECK(client.list({}).size() == 1);

    // A job that does not finish in time: nullopt, the job is still there and finishes later.
    errand::Submitted held;
    auto none = client.submit_and_wait(job_spec("sw", "hold"), 300ms, &held);
    CHECK_FALSE(none.has_value());
    CHECK(held.id > submitted.id);
    release = true;
    auto later = client.wait(held.id, 10s);
    REQUIRE(later.has_value());
    CHECK(later->result == "got:hold");

    // wait_ms needs exactly one job.
    RawConnection raw(broker.endpoint());
    errand::SubmitRequest two;
    two.req = 7;
    two.jobs = {job_spec("sw", "a"), job_spec("sw", "b")};
    two.wait_ms = 1000;
    raw.send(errand::cmd::kSubmit, errand::encode(two));
    auto reply = raw.recv(5s);
    REQUIRE(reply.has_value());
    CHECK(reply->command == errand::cmd::kError);
    CHECK(client.list({}).size() == 2);  // nothing was added
}

TEST_CASE("e2e: STATS and QUEUES, answered off the loop, see every change acknowledged before") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    errand::Client other(broker.client_options());
    // Queues named so that the order of arrival is not the order of names.
    const std::vector<std::string> names{"rq-c", "rq-a", "rq-b"};
    for (std::size_t round = 1; round <= 20; ++round) {
        for (const auto& q : names)
            client.submit(job_spec(q, "x"));
        if (round == 10) client.pause("rq-b");
        // Each answer is read right after the acknowledgements: it must count all of them,
        // whichever connection asks, and list the queues by name.
        auto st = other.stats();
        std::vector<std::string> seen;
        for (const auto& q : st.queues) {
            seen.push_back(q.name);
            CHECK(q.counts[static_cast<std::size_t>(JobState::ready)].second == round);
            CHECK(q.submitted == round);
            CHECK(q.paused == (q.name == "rq-b" && round >= 10));
        }
        CHECK(seen == std::vector<std::string>{"rq-a", "rq-b", "rq-c"});
        auto qs = client.queues();
        REQUIRE(qs.size() == 3);
        CHECK(qs[0].name == "rq-a");
        CHECK(qs[2].counts[static_cast<std::size_t>(JobState::ready)].second == round);
    }
    // Asked by many clients at once, each gets its own answer (its own req).
    std::vector<std::thread> askers;
    std::atomic<int> right{0};
    for (int i = 0; i < 8; ++i)
        askers.emplace_back([&] {
            errand::Client c(broker.client_options());
            for (int k = 0; k < 25; ++k)
                if (c.stats().queues.size() == 3 && c.queues().size() == 3) ++right;
        });
    for (auto& t : askers)
        t.join();
    CHECK(right.load() == 8 * 25);
    CHECK(client.ping().version.size() > 0);
}

namespace {

// A library worker (concurrency 1, the default prefetch) whose handler runs `run_ms` per job,
// except for the job "block", which waits until released. After `warmup` such jobs, one blocks
// the handler and `extra` more are submitted: the test then counts how many of those the broker
// dispatched to the worker (held by it, waiting for its one handler).
struct AdaptiveProbe {
    TempDir dir;
    Broker broker{dir};
    errand::Worker worker{{.endpoint = broker.endpoint(),
                           .name = "adaptive",
                           .concurrency = 1,
                           .accept_commands = false,
                           .max_result = errand::limits::kDefaultMaxResult}};
    std::mutex mu;
    std::condition_variable cv;
    bool blocked = false, release = false;
    int run_ms = 0;

    AdaptiveProbe(int ms) : run_ms(ms) {
        worker.handle("ad", [this](const errand::Job& job) {
            std::unique_lock lock(mu);
            if (job.payload == "block") {
                blocked = true;
                cv.notify_all();
                cv.wait(lock, [&] { return release; });
            } else if (run_ms > 0) {
                lock.unlock();
                std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
            }
            return errand::Outcome::success("");
        });
    }

    // Runs `warmup` jobs one after the other; then the blocking one and `extra` more; returns
    // the extra jobs, with the handler still blocked.
    std::vector<errand::JobId> block_behind(errand::Client& client, int warmup, int extra) {
        for (int i = 0; i < warmup; ++i) {
            auto j = client.wait(client.submit(job_spec("ad", "warm")).id, 10s);
            REQUIRE(j.has_value());
            REQUIRE(j->state == JobState::succeeded);
        }
        client.submit(job_spec("ad", "block"));
        {
            std::unique_lock lock(mu);
            REQUIRE(cv.wait_for(lock, 10s, [&] { return blocked; }));
        }
        std::vector<errand::JobId> ids;
        for (int i = 0; i < extra; ++i)
            ids.push_back(client.submit(job_spec("ad", "x")).id);
        return ids;
    }

    int running(errand::Client& client, const std::vector<errand::JobId>& ids) {
        int n = 0;
        for (auto id : ids)
            if (client.status(id).state == JobState::running) ++n;
        return n;
    }

    void finish(errand::Client& client, const std::vector<errand::JobId>& ids) {
        {
            std::lock_guard lock(mu);
            release = true;
        }
        cv.notify_all();
        for (auto id : ids) {
            auto j = client.wait(id, 10s);
            REQUIRE(j.has_value());
            CHECK(j->state == JobState::succeeded);
        }
    }
};

}  // namespace

TEST_CASE("e2e: a library worker holds up to 8 jobs beyond its concurrency while jobs run short") {
    AdaptiveProbe p(0);
    WorkerThread runner(p.worker);
    errand::Client client(p.broker.client_options());
    auto ids = p.block_behind(client, 20, 10);
    // The handler is blocked; 8 of the 10 jobs come to the worker anyway (its adaptive
    // prefetch), the other 2 stay ready. Before, none came: a job only for a free handler.
    CHECK(wait_until([&] { return p.running(client, ids) == 8; }, 10s));
    CHECK(p.running(client, ids) == 8);
    p.finish(client, ids);
}

TEST_CASE("e2e: a library worker whose jobs run long holds only its concurrency") {
    AdaptiveProbe p(60);
    WorkerThread runner(p.worker);
    errand::Client client(p.broker.client_options());
    auto ids = p.block_behind(client, 10, 3);
    // Every credit the worker gave rode on its results before the blocking job was dispatched,
    // so the acknowledged SUBMITs above found none: the 3 jobs are ready, not dispatched.
    CHECK(p.running(client, ids) == 0);
    p.finish(client, ids);
}

namespace {
std::size_t threads_of_this_process() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
        ++n;
    return n;
}
}  // namespace

TEST_CASE("e2e: the library's clients and workers share one ZeroMQ context (one I/O thread)") {
    TempDir dir;
    Broker broker(dir);
    errand::Client first(broker.client_options());  // the process's context exists from here
    first.ping();
    const std::size_t before = threads_of_this_process();
    std::vector<std::unique_ptr<errand::Client>> clients;
    std::vector<std::unique_ptr<errand::Worker>> workers;
    for (int i = 0; i < 10; ++i) {
        clients.push_back(std::make_unique<errand::Client>(broker.client_options()));
        clients.back()->ping();
        workers.push_back(std::make_unique<errand::Worker>(
            errand::WorkerOptions{.endpoint = broker.endpoint(), .name = "w" + std::to_string(i)}));
    }
    // A context of its own each made two threads each (ZeroMQ's I/O thread and its reaper).
    CHECK(threads_of_this_process() == before);
    clients.clear();
    workers.clear();
    CHECK_FALSE(first.ping().version.empty());  // the shared context outlives the others
}
