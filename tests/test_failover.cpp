// Clients and workers that fail over between brokers (issue 12, stage 3), and what a client
// says when no broker can be reached (issue 14). Real brokers on one PostgreSQL database started
// for the test; a client or worker given several endpoints moves to the next when its broker is
// SIGKILLed, resending with the same tokens (no job twice) and handing over the jobs it holds
// (not re-run).
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "harness.hpp"
#include "pg.hpp"
#include "pg_server.hpp"

using namespace errand;
using namespace errand::test;
using errand::pgserver::PgServer;

namespace {

// Short heartbeats; a worker timeout long enough that a worker which moved to another broker has
// re-registered (and so kept its job) before the dead broker's attempts would be rescued.
std::vector<std::string> cluster_args(const PgServer& pg) {
    return {"--db", pg.uri(), "--heartbeat", "200ms", "--worker-timeout", "3s"};
}

std::int64_t scalar(const PgServer& pg, const std::string& sql) {
    broker::pg::Connection c(pg.conninfo());
    return c.query(sql).i64(0, 0);
}

std::string both(const Broker& a, const Broker& b) {
    return a.endpoint() + "," + b.endpoint();
}

}  // namespace

TEST_CASE(
    "a client with two brokers: its broker SIGKILLed, it goes on through the other, no job "
    "twice") {
    PgServer pg;
    TempDir d1, d2;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));
    ClientOptions opt = a.client_options();
    opt.endpoints = {a.endpoint(), b.endpoint()};
    Client client(opt);
    REQUIRE(client.endpoint() == a.endpoint());

    // One-at-a-time submits with tokens; A dies after the first 100 acknowledgements.
    constexpr int kJobs = 300;
    std::map<std::string, JobId> acked;  // token -> id
    std::vector<milliseconds> gaps;      // from each submit's start to its acknowledgement
    for (int i = 0; i < kJobs; ++i) {
        if (i == 100) a.kill9();
        auto spec = job_spec("f", std::to_string(i));
        spec.token = unique_token();
        auto t0 = std::chrono::steady_clock::now();
        auto r = client.submit(spec);
        gaps.push_back(since(t0));
        acked[*spec.token] = r.id;
    }
    CHECK(client.failovers() >= 1);
    CHECK(client.endpoint() == b.endpoint());
    auto slowest = *std::max_element(gaps.begin(), gaps.end());
    MESSAGE("slowest submit (the one across the failover): " << slowest.count() << " ms");
    CHECK(slowest < 5000ms);  // within one request timeout: it moved, it did not time out

    // Every acknowledged job exists once; nothing else does.
    CHECK(scalar(pg, "SELECT count(*) FROM jobs WHERE queue = 'f'") == kJobs);
    std::set<JobId> ids;
    for (const auto& [token, id] : acked)
        ids.insert(id);
    CHECK(ids.size() == static_cast<std::size_t>(kJobs));
    Client cb(b.client_options());
    for (JobId id : {acked.begin()->second, acked.rbegin()->second})
        CHECK(cb.status(id).queue == "f");
}

TEST_CASE(
    "a worker with two brokers: its broker SIGKILLed mid-job, it registers with the other; "
    "the job is not run again and its result lands") {
    PgServer pg;
    TempDir d1, d2;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));

    std::mutex mu;
    std::map<JobId, int> runs;
    std::atomic<bool> release{false};
    Worker worker({.endpoint = {},
                   .endpoints = {a.endpoint(), b.endpoint()},
                   .name = "mover",
                   .concurrency = 1,
                   .prefetch = 0,
                   .accept_commands = false,
                   .max_result = limits::kDefaultMaxResult});
    worker.handle("m", [&](const Job& job) {
        {
            std::lock_guard lock(mu);
            ++runs[job.id];
        }
        // The first job runs until the test lets it go (after its broker died).
        if (job.payload == "hold") wait_until([&] { return release.load(); }, 30s);
        return Outcome::success("done:" + job.payload);
    });
    WorkerThread thread(worker);

    Client ca(a.client_options());
    auto held = ca.submit(job_spec("m", "hold")).id;
    REQUIRE_MESSAGE(wait_until([&] { return ca.status(held).state == JobState::running; }, 10s),
                    a.logs());
    a.kill9();

    // The worker shows up on B, holding its job, before the job ends.
    Client cb(b.client_options());
    bool moved = wait_until(
        [&] {
            for (const auto& w : cb.workers())
                if (w.name == "mover" && w.jobs.size() == 1 && w.jobs[0].id == held) return true;
            return false;
        },
        10s);
    REQUIRE_MESSAGE(moved, b.logs());
    auto registered = cb.workers();
    REQUIRE(registered.size() == 1);
    CHECK(registered[0].reconnects == 1);

    release = true;
    auto done = cb.wait(held, 20s);
    REQUIRE_MESSAGE(done.has_value(), b.logs());
    CHECK(done->state == JobState::succeeded);
    CHECK(done->attempts == 1);
    CHECK(done->result == "done:hold");
    auto history = cb.history(held);
    CHECK_FALSE(std::any_of(history.begin(), history.end(),
                            [](const Event& e) { return e.reason == "worker lost"; }));

    // And it takes new work from B.
    auto next = cb.submit(job_spec("m", "next")).id;
    auto ran = cb.wait(next, 20s);
    REQUIRE(ran.has_value());
    CHECK(ran->state == JobState::succeeded);
    std::lock_guard lock(mu);
    CHECK(runs[held] == 1);
    CHECK(runs[next] == 1);
}

TEST_CASE("the daemon and the CLI take a comma-separated --broker list and fail over") {
    PgServer pg;
    TempDir d1, d2, wd;
    auto debug = cluster_args(pg);
    debug.insert(debug.end(), {"--log-level", "debug"});  // A logs the WAIT it holds
    Broker a(d1, debug), b(d2, cluster_args(pg));
    WorkerDaemon daemon(wd, both(a, b), {"d", {"slow=sleep 3; echo slept"}, 1});
    Client ca(a.client_options());
    auto id = ca.submit(job_spec("slow", "")).id;
    REQUIRE_MESSAGE(wait_until([&] { return ca.status(id).state == JobState::running; }, 10s),
                    a.logs(), daemon.logs());

    // A CLI waiting on the job through A,B while A dies: answered through B.
    auto waiting = std::async(std::launch::async, [&] {
        return run_cli({"--broker", both(a, b), "wait", std::to_string(id), "--timeout", "30s"}, {},
                       40s);
    });
    REQUIRE_MESSAGE(
        wait_until([&] { return a.logs().find("a client waits for it") != std::string::npos; },
                   10s),
        a.logs());
    a.kill9();
    auto waited = waiting.get();
    CHECK_MESSAGE(waited.exit_code == 0, describe(waited));
    CHECK(waited.out == "slept\n");

    // The job ran once; the daemon moved to B with it.
    Client cb(b.client_options());
    auto job = cb.status(id);
    CHECK(job.attempts == 1);
    CHECK(job.worker == "d");
    CHECK_MESSAGE(daemon.logs().find("registering with " + b.endpoint()) != std::string::npos,
                  daemon.logs());

    // The CLI with the dead broker first in its list.
    auto r = run_cli({"--broker", both(a, b), "submit", "--wait", "-q", "slow"});
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
    CHECK(r.out == "slept\n");
}

TEST_CASE("bad --broker lists are usage errors") {
    for (const std::string& list :
         {std::string("tcp://127.0.0.1:1,"), std::string(",tcp://127.0.0.1:1"),
          std::string("tcp://127.0.0.1:1,,tcp://127.0.0.1:2"),
          std::string("tcp://127.0.0.1:1,tcp://127.0.0.1:")}) {
        auto r = run_cli({"--broker", list, "ping"});
        CHECK_MESSAGE(r.exit_code == 120, describe(r));
        CHECK_MESSAGE(r.err.find("bad --broker") != std::string::npos, describe(r));
    }
    TempDir wd;
    Process w("worker", {worker_bin(), "--broker", "tcp://127.0.0.1:1,", "--queue", "q"},
              wd.path());
    auto rc = w.wait_exit(10s);
    REQUIRE(rc.has_value());
    CHECK(*rc == 2);
    CHECK_MESSAGE(w.err().find("empty endpoint") != std::string::npos, w.logs());
}

TEST_CASE(
    "errand wait with its broker gone says so and exits 122 (unreachable); --retry-forever waits "
    "on") {
    TempDir d, cli_logs;
    Broker broker(d, {"--heartbeat", "200ms", "--log-level", "debug"});
    Client client(broker.client_options());
    auto id = client.submit(job_spec("nobody", "x")).id;  // no worker serves it

    auto wait_cli = [&](const std::string& name, bool forever) {
        std::vector<std::string> argv = {cli_bin(),           "--broker",  broker.endpoint(),
                                         "--request-timeout", "1s",        "wait",
                                         std::to_string(id),  "--timeout", "60s"};
        if (forever) argv.emplace_back("--retry-forever");
        return std::make_unique<Process>(name, argv, cli_logs.path());
    };
    auto gone = wait_cli("gone", false);
    auto patient = wait_cli("patient", true);
    auto waiters = [&] {
        std::size_t n = 0, at = 0;
        auto logs = broker.process().out() + broker.process().err();
        while ((at = logs.find("a client waits for it", at)) != std::string::npos) {
            ++n;
            ++at;
        }
        return n;
    };
    REQUIRE_MESSAGE(wait_until([&] { return waiters() >= 2; }, 10s), broker.logs());
    auto killed_at = std::chrono::steady_clock::now();
    broker.process().kill(SIGKILL);
    REQUIRE(broker.process().wait_exit(5s).has_value());

    auto rc = gone->wait_exit(20s);
    REQUIRE_MESSAGE(rc.has_value(), gone->logs());
    CHECK_MESSAGE(*rc == 122, gone->logs());
    CHECK_MESSAGE(gone->err().find("cannot reach broker") != std::string::npos, gone->logs());
    CHECK(since(killed_at) < 15s);  // not the 60 s of its --timeout

    // The patient one said so and waits on; the broker comes back, the job runs, it prints it.
    REQUIRE_MESSAGE(
        wait_until([&] { return patient->err().find("--retry-forever") != std::string::npos; },
                   15s),
        patient->logs());
    CHECK(patient->running());
    broker.restart();
    TempDir wd;
    WorkerDaemon worker(wd, broker.endpoint(), {"w", {"nobody=cat"}, 1});
    auto prc = patient->wait_exit(30s);
    REQUIRE_MESSAGE(prc.has_value(), patient->logs(), broker.logs(), worker.logs());
    CHECK_MESSAGE(*prc == 0, patient->logs());
    CHECK(patient->out() == "x");
}

TEST_CASE("a worker daemon whose broker does not answer says so") {
    TempDir wd;
    auto nobody = "tcp://127.0.0.1:" + std::to_string(free_port());
    WorkerDaemon worker(wd, nobody, {"lonely", {"q=cat"}, 1});
    bool said = wait_until(
        [&] { return worker.logs().find("cannot reach broker at " + nobody) != std::string::npos; },
        15s, 50ms);
    CHECK_MESSAGE(said, worker.logs());
}
