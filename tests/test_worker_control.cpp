// Control of running workers, for real: `errand worker quiet|resume|stop|concurrency` against a
// broker and errand-worker daemons (and the library worker), each job a process the test gates,
// so what runs when is observable (files, WORKERS) rather than timed.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using errand::JobState;

namespace {

// Fast heartbeats: "the broker has heard from the worker since T" comes within ~100 ms.
const std::vector<std::string> kFastBroker = {"--heartbeat", "100ms", "--worker-timeout", "1s"};

// A queue command that marks DIR/started.ID, appends "start ID" / "end ID" to DIR/log, and runs
// until DIR/go.ID exists (or, with `gated` false, for 200 ms).
std::string job_command(const TempDir& dir, bool gated = true) {
    const std::string d = dir.str();
    std::string wait =
        gated ? "while [ ! -e " + d + "/go.$ERRAND_JOB_ID ]; do sleep 0.02; done" : "sleep 0.2";
    return "echo start $ERRAND_JOB_ID >> " + d + "/log; touch " + d + "/started.$ERRAND_JOB_ID; " +
           wait + "; echo end $ERRAND_JOB_ID >> " + d + "/log; echo ok";
}

bool started(const TempDir& dir, errand::JobId id) {
    return std::filesystem::exists(dir / ("started." + std::to_string(id)));
}
void open_gate(const TempDir& dir, errand::JobId id) {
    write_file(dir / ("go." + std::to_string(id)), "");
}

errand::Millis wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The workers of that name, as the broker lists them.
std::vector<errand::WorkerInfo> named(errand::Client& c, const std::string& name) {
    std::vector<errand::WorkerInfo> out;
    for (auto& w : c.workers())
        if (w.name == name) out.push_back(std::move(w));
    return out;
}

// Waits until the broker has handled a message of `name`'s sent after now (its heartbeats come
// every 100 ms): whatever the worker sent before, a CREDIT included, has been handled too.
bool heard_since_now(errand::Client& c, const std::string& name) {
    const errand::Millis t = wall_ms();
    return wait_until(
        [&] {
            auto ws = named(c, name);
            return ws.size() == 1 && ws[0].last_seen.time_since_epoch().count() > t + 1;
        },
        5s);
}

// The most "start" lines without their "end" at any point of DIR/log, over the jobs in `ids`.
int max_overlap(const TempDir& dir, const std::set<errand::JobId>& ids) {
    int now = 0, most = 0;
    for (const auto& line : read_lines(dir / "log")) {
        auto sp = line.find(' ');
        if (sp == std::string::npos) continue;
        if (!ids.count(std::stoull(line.substr(sp + 1)))) continue;
        now += line.starts_with("start") ? 1 : -1;
        most = std::max(most, now);
    }
    return most;
}

}  // namespace

TEST_CASE("worker control: quiet lets the running job finish, dispatches nothing, resume resumes") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "quiet-me",
                         .queues = {"q=" + job_command(dir)},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    auto a = client.submit(job_spec("q")).id;
    REQUIRE_MESSAGE(wait_until([&] { return started(dir, a); }, 10s), worker.logs());

    auto quiet = run_cli({"--broker", broker.endpoint(), "worker", "quiet", "quiet-me"});
    REQUIRE_MESSAGE(quiet.exit_code == 0, describe(quiet));
    CHECK_MESSAGE(quiet.out.find("quiet: 1 worker (quiet-me)") != std::string::npos, quiet.out);
    CHECK(quiet.out.find(" quiet, concurrency 1, 1 running") != std::string::npos);
    auto table = run_cli({"--broker", broker.endpoint(), "workers"});
    CHECK_MESSAGE(table.out.find("STATE") != std::string::npos, table.out);
    CHECK_MESSAGE(table.out.find(" quiet ") != std::string::npos, table.out);
    // The daemon heard it (the library logs the change).
    CHECK(wait_until(
        [&] {
            return worker.logs().find("quiet: taking no new jobs, finishing the 1 held") !=
                   std::string::npos;
        },
        5s));

    auto b = client.submit(job_spec("q")).id;
    open_gate(dir, a);
    auto done = client.wait(a, 10s);
    REQUIRE(done);
    CHECK(done->state == JobState::succeeded);
    // The worker granted its slot back after the result; the broker has handled that (and a
    // heartbeat after it), and still sent nothing.
    REQUIRE(heard_since_now(client, "quiet-me"));
    CHECK(client.status(b).state == JobState::ready);
    CHECK_FALSE(started(dir, b));
    auto ws = named(client, "quiet-me");
    REQUIRE(ws.size() == 1);
    CHECK(ws[0].state == "quiet");
    CHECK(ws[0].credit == 0);
    CHECK(ws[0].jobs.empty());

    auto resume = run_cli({"--broker", broker.endpoint(), "worker", "resume", "quiet-me"});
    REQUIRE_MESSAGE(resume.exit_code == 0, describe(resume));
    CHECK(resume.out.find(" active, concurrency 1") != std::string::npos);
    REQUIRE_MESSAGE(wait_until([&] { return started(dir, b); }, 5s), worker.logs());
    open_gate(dir, b);
    auto done_b = client.wait(b, 10s);
    REQUIRE(done_b);
    CHECK(done_b->state == JobState::succeeded);
    CHECK(named(client, "quiet-me").at(0).state == "active");
}

TEST_CASE("worker control: stop drains the daemon, its job finishes, it exits 0") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "stop-me",
                         .queues = {"q=" + job_command(dir)},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {}});
    auto a = client.submit(job_spec("q")).id;
    REQUIRE_MESSAGE(wait_until([&] { return started(dir, a); }, 10s), worker.logs());

    auto stop = run_cli({"--broker", broker.endpoint(), "worker", "stop", "stop-me"});
    REQUIRE_MESSAGE(stop.exit_code == 0, describe(stop));
    CHECK_MESSAGE(stop.out.find(" stopping, concurrency 2, 1 running") != std::string::npos,
                  stop.out);
    REQUIRE(wait_until(
        [&] { return worker.logs().find("asked this worker to stop") != std::string::npos; }, 5s));
    // Draining: a new job is not taken although a slot is free.
    auto b = client.submit(job_spec("q")).id;
    CHECK(named(client, "stop-me").at(0).state == "stopping");
    // Resume does not undo a stop.
    auto resumed = client.control_worker("stop-me", "resume");
    REQUIRE(resumed.size() == 1);
    CHECK(resumed[0].state == "stopping");
    CHECK(worker.process().running());
    open_gate(dir, a);
    auto code = worker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
    CHECK(client.status(a).state == JobState::succeeded);
    CHECK(client.status(b).state == JobState::ready);
    CHECK_FALSE(started(dir, b));
}

TEST_CASE("worker control: concurrency 1 -> 3 runs three at once, 3 -> 1 lets them finish") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "grow-me",
                         .queues = {"q=" + job_command(dir), "short=" + job_command(dir, false)},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    std::vector<errand::JobId> first;
    for (int i = 0; i < 3; ++i)
        first.push_back(client.submit(job_spec("q")).id);
    REQUIRE_MESSAGE(wait_until([&] { return started(dir, first[0]); }, 10s), worker.logs());
    REQUIRE(heard_since_now(client, "grow-me"));
    CHECK_FALSE(started(dir, first[1]));  // one at a time so far

    auto grow = run_cli({"--broker", broker.endpoint(), "worker", "concurrency", "grow-me", "3"});
    REQUIRE_MESSAGE(grow.exit_code == 0, describe(grow));
    CHECK_MESSAGE(grow.out.find("concurrency 3: 1 worker (grow-me)") != std::string::npos,
                  grow.out);
    // Three running at once: on the broker (WORKERS) and as processes.
    CHECK_MESSAGE(wait_until(
                      [&] {
                          auto ws = named(client, "grow-me");
                          return ws.size() == 1 && ws[0].jobs.size() == 3 && ws[0].concurrency == 3;
                      },
                      5s),
                  worker.logs());
    REQUIRE(wait_until([&] { return started(dir, first[1]) && started(dir, first[2]); }, 5s));
    CHECK(max_overlap(dir, {first.begin(), first.end()}) == 3);

    auto shrink = run_cli({"--broker", broker.endpoint(), "worker", "concurrency", "grow-me", "1"});
    REQUIRE_MESSAGE(shrink.exit_code == 0, describe(shrink));
    CHECK(shrink.out.find(" active, concurrency 1, 3 running") != std::string::npos);
    // Four short jobs behind the three; the running ones finish, then no more than one at once.
    std::set<errand::JobId> after;
    for (int i = 0; i < 4; ++i)
        after.insert(client.submit(job_spec("short")).id);
    for (auto id : first)
        open_gate(dir, id);
    for (auto id : first) {
        auto j = client.wait(id, 10s);
        REQUIRE(j);
        CHECK(j->state == JobState::succeeded);
    }
    std::size_t most_held = 0;
    REQUIRE(wait_until(
        [&] {
            auto ws = named(client, "grow-me");
            if (ws.size() == 1) most_held = std::max(most_held, ws[0].jobs.size());
            return std::all_of(after.begin(), after.end(), [&](auto id) {
                return client.status(id).state == JobState::succeeded;
            });
        },
        10s, 20ms));
    CHECK(most_held <= 1);
    CHECK(max_overlap(dir, after) == 1);
}

TEST_CASE("worker control: the library worker obeys quiet, and stays quiet across a reconnect") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    std::atomic<int> ran{0};
    std::atomic<bool> quiet_seen{false};
    errand::Worker worker({.endpoint = broker.endpoint(),
                           .name = "lib-worker",
                           .concurrency = 1,
                           .on_status =
                               [&](const errand::WorkerStatus& st) {
                                   if (st.quiet) quiet_seen = true;
                               },
                           .status_interval = 20ms});
    worker.handle("lib", [&](const errand::Job&) {
        ++ran;
        return errand::Outcome::success("done");
    });
    WorkerThread thread(worker);
    REQUIRE(wait_until([&] { return named(client, "lib-worker").size() == 1; }, 5s));
    const auto instance = named(client, "lib-worker").at(0).instance;

    // By instance id this time.
    auto changed = client.control_worker(instance, "quiet");
    REQUIRE(changed.size() == 1);
    CHECK(changed[0].name == "lib-worker");
    CHECK(changed[0].state == "quiet");
    REQUIRE(wait_until([&] { return quiet_seen.load(); }, 5s));
    auto id = client.submit(job_spec("lib")).id;
    REQUIRE(heard_since_now(client, "lib-worker"));
    CHECK(client.status(id).state == JobState::ready);
    CHECK(ran == 0);

    // The broker restarts; the worker registers again, and says it is quiet.
    broker.process().kill(SIGTERM);
    REQUIRE(broker.process().wait_exit(10s));
    broker.start();
    REQUIRE(wait_until(
        [&] {
            auto ws = named(client, "lib-worker");
            return ws.size() == 1 && ws[0].reconnects >= 1;
        },
        10s));
    auto ws = named(client, "lib-worker");
    CHECK(ws[0].state == "quiet");
    REQUIRE(heard_since_now(client, "lib-worker"));
    CHECK(client.status(id).state == JobState::ready);
    CHECK(ran == 0);

    client.control_worker("lib-worker", "resume");
    auto done = client.wait(id, 10s);
    REQUIRE(done);
    CHECK(done->state == JobState::succeeded);
    CHECK(ran == 1);
}

TEST_CASE("worker control: bad input gets a clear error and changes nothing") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "steady",
                         .queues = {"q=true"},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {}});
    REQUIRE(wait_until([&] { return named(client, "steady").size() == 1; }, 5s));
    const auto& ep = broker.endpoint();

    for (const char* action : {"quiet", "stop", "resume"}) {
        auto r = run_cli({"--broker", ep, "worker", action, "nobody"});
        CHECK_MESSAGE(r.exit_code == 121, describe(r));
        CHECK_MESSAGE(r.err.find("no worker named 'nobody'") != std::string::npos, describe(r));
    }
    auto unknown = run_cli({"--broker", ep, "worker", "concurrency", "nobody", "2"});
    CHECK(unknown.exit_code == 121);
    CHECK(unknown.err.find("no worker named 'nobody'") != std::string::npos);
    // Out of range: a usage error, whether or not a broker answers.
    for (const char* n : {"0", "1025", "-1"}) {
        auto r = run_cli({"--broker", ep, "worker", "concurrency", "steady", n});
        CHECK_MESSAGE(r.exit_code == 120, describe(r));
        CHECK_MESSAGE(r.err.find("concurrency must be 1-1024") != std::string::npos, describe(r));
        auto offline =
            run_cli({"--broker", "tcp://127.0.0.1:1", "worker", "concurrency", "steady", n});
        CHECK_MESSAGE(offline.exit_code == 120, describe(offline));
    }
    auto missing = run_cli({"--broker", ep, "worker", "quiet"});
    CHECK_MESSAGE(missing.exit_code == 120, describe(missing));
    auto no_action = run_cli({"--broker", ep, "worker"});
    CHECK_MESSAGE(no_action.exit_code == 120, describe(no_action));

    // The protocol's own refusals, with their codes.
    auto code_of = [&](const std::string& w, const std::string& action, std::uint32_t n) {
        try {
            client.control_worker(w, action, n);
        } catch (const errand::BrokerError& e) {
            return e.code();
        }
        return errand::ErrorCode::internal;
    };
    CHECK(code_of("nobody", "quiet", 0) == errand::ErrorCode::not_found);
    CHECK(code_of("steady", "pause", 0) == errand::ErrorCode::bad_request);
    CHECK(code_of("steady", "quiet", 3) == errand::ErrorCode::bad_request);
    CHECK(code_of("steady", "concurrency", 0) == errand::ErrorCode::bad_request);
    CHECK(code_of("steady", "concurrency", 1025) == errand::ErrorCode::bad_request);
    CHECK(code_of("", "quiet", 0) == errand::ErrorCode::bad_request);

    auto ws = named(client, "steady");
    REQUIRE(ws.size() == 1);
    CHECK(ws[0].state == "active");
    CHECK(ws[0].concurrency == 2);
    CHECK(ws[0].credit == 2);

    // Two processes of one name: the command reaches both and says so.
    WorkerDaemon twin(dir, broker.endpoint(),
                      {.name = "steady",
                       .queues = {"q=true"},
                       .concurrency = 1,
                       .allow_commands = false,
                       .extra_args = {}});
    REQUIRE(wait_until([&] { return named(client, "steady").size() == 2; }, 5s));
    auto both = run_cli({"--broker", ep, "worker", "quiet", "steady"});
    CHECK_MESSAGE(both.exit_code == 0, describe(both));
    CHECK_MESSAGE(both.out.find("quiet: 2 workers (steady)") != std::string::npos, both.out);
    for (const auto& w : named(client, "steady"))
        CHECK(w.state == "quiet");
}

TEST_CASE("worker control: errand-worker declares 8 for --prefetch auto (its default), 0 for 0") {
    TempDir dir;
    Broker broker(dir, kFastBroker);
    errand::Client client(broker.client_options());
    WorkerDaemon adaptive(dir, broker.endpoint(),
                          {.name = "adaptive",
                           .queues = {"q=" + job_command(dir)},
                           .concurrency = 2,
                           .allow_commands = false,
                           .extra_args = {}});
    WorkerDaemon strict(dir, broker.endpoint(),
                        {.name = "strict",
                         .queues = {"q=" + job_command(dir)},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {"--prefetch", "0"}});
    REQUIRE_MESSAGE(heard_since_now(client, "adaptive"), adaptive.logs());
    REQUIRE_MESSAGE(heard_since_now(client, "strict"), strict.logs());
    // The broker's cap is concurrency + prefetch: 2 + 8 for adaptive prefetch (whose worker
    // grants less while its jobs run long), 2 + 0 for --prefetch 0. Both start with no extra:
    // the credit they gave is their concurrency.
    auto a = named(client, "adaptive").at(0), s = named(client, "strict").at(0);
    CHECK(a.prefetch == errand::kAdaptivePrefetch);
    CHECK(s.prefetch == 0);
    CHECK(a.credit == 2);
    CHECK(s.credit == 2);
}
