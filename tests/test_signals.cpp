// Signals, for real: SIGTERM drains a worker daemon (running jobs finish or are stopped and handed
// back uncharged, prefetched ones go back at once), SIGTERM stops the broker cleanly and tells
// waiters and workers, SIGHUP reopens the daemons' log files.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using errand::JobState;

namespace {

// A queue command that runs until `gate` exists (the test opens it), then succeeds.
std::string gated(const std::filesystem::path& gate) {
    return "while [ ! -e " + gate.string() + " ]; do sleep 0.02; done; echo opened";
}

// A queue command that writes `marker` once it runs, then ignores SIGTERM and runs until
// SIGKILLed.
std::string blocks(const std::filesystem::path& marker) {
    return "trap '' TERM; touch " + marker.string() + "; while :; do sleep 0.05; done";
}

bool has_event(errand::Client& client, errand::JobId id, const std::string& reason) {
    auto events = client.history(id);
    return std::any_of(events.begin(), events.end(),
                       [&](const errand::Event& e) { return e.reason == reason; });
}

}  // namespace

TEST_CASE("signals: SIGTERM drains a worker: a long job is stopped and handed back uncharged") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto started = dir / "started";
    auto id = client.submit(job_spec("long", "", 3)).id;

    WorkerDaemon first(dir, broker.endpoint(),
                       {.name = "drainer",
                        .queues = {"long=" + blocks(started)},
                        .concurrency = 1,
                        .allow_commands = false,
                        .extra_args = {"--drain-timeout", "500ms", "--kill-grace", "500ms"}});
    REQUIRE_MESSAGE(wait_until([&] { return std::filesystem::exists(started); }, 10s),
                    first.logs());
    REQUIRE(client.status(id).state == JobState::running);
    REQUIRE(client.status(id).attempts == 1);

    const auto t0 = std::chrono::steady_clock::now();
    first.process().kill(SIGTERM);
    auto code = first.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, first.logs());
    CHECK(*code == 0);
    // The job ignores SIGTERM: it lasts the drain-timeout (500ms) and the kill-grace (500ms),
    // then SIGKILL; plus slack for the RELEASE round trip.
    CHECK_MESSAGE(since(t0) >= 900ms, "took " << since(t0).count() << " ms");
    CHECK_MESSAGE(since(t0) < 4s, "took " << since(t0).count() << " ms");

    // Back in ready, not charged: one attempt used, and one more allowed than before.
    auto job = client.status(id);
    CHECK(job.state == JobState::ready);
    CHECK(job.attempts == 1);
    CHECK(job.max_attempts == 4);
    CHECK(has_event(client, id, "released by worker"));
    CHECK(first.process().err().find("handed back") != std::string::npos);

    // A second worker does it; the first's attempt stays fenced off (attempt 2 now).
    WorkerDaemon second(dir, broker.endpoint(),
                        {.name = "finisher",
                         .queues = {"long=echo done"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    auto done = client.wait(id, 10s);
    REQUIRE_MESSAGE(done, second.logs());
    CHECK(done->state == JobState::succeeded);
    CHECK(done->attempts == 2);
    CHECK(done->max_attempts == 4);
    CHECK(done->result == std::optional<std::string>("done\n"));
}

namespace {

// True when no process `pid` runs: /proc has no entry, or it is a zombie waiting for init.
bool process_gone(pid_t pid) {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty()) return true;
    const auto paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

pid_t pid_in(const std::filesystem::path& file) {
    const std::string text = read_file(file);
    return text.empty() ? 0 : static_cast<pid_t>(std::stol(text));
}

}  // namespace

TEST_CASE("signals: a SIGKILLed worker takes its job's processes with it, children included") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto leader = dir / "leader.pid";
    const auto child = dir / "child.pid";
    // The job's leader (the shell) and a process it started in the background, which is no
    // child of the worker and so not reached by the leader's PR_SET_PDEATHSIG.
    const std::string command = "echo $$ > " + leader.string() + ".tmp; mv " + leader.string() +
                                ".tmp " + leader.string() + "; sleep 300 & echo $! > " +
                                child.string() + ".tmp; mv " + child.string() + ".tmp " +
                                child.string() + "; wait";
    client.submit(job_spec("long", "", 3));
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "doomed",
                         .queues = {"long=" + command},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    REQUIRE_MESSAGE(wait_until([&] { return pid_in(leader) > 0 && pid_in(child) > 0; }, 10s),
                    worker.logs());
    const pid_t leader_pid = pid_in(leader);
    const pid_t child_pid = pid_in(child);
    REQUIRE(!process_gone(leader_pid));
    REQUIRE(!process_gone(child_pid));
    // The worker's main thread forked one process, before any thread existed: the reaper.
    const std::string main_thread = "/proc/" + std::to_string(worker.process().pid()) + "/task/" +
                                    std::to_string(worker.process().pid());
    const pid_t reaper_pid = static_cast<pid_t>(std::stol(read_file(main_thread + "/children")));
    CHECK(read_file("/proc/" + std::to_string(reaper_pid) + "/comm") == "errand-reaper\n");

    worker.kill9();
    const bool gone = wait_until(
        [&] {
            return process_gone(leader_pid) && process_gone(child_pid) && process_gone(reaper_pid);
        },
        5s);
    CHECK_MESSAGE(process_gone(leader_pid), "the job's leader " << leader_pid << " still runs");
    CHECK_MESSAGE(process_gone(child_pid), "the job's child " << child_pid << " still runs");
    CHECK_MESSAGE(process_gone(reaper_pid), "the reaper " << reaper_pid << " still runs");
    if (!gone) {  // do not leave a sleep behind a failed run
        ::kill(leader_pid, SIGKILL);
        ::kill(child_pid, SIGKILL);
    }
}

TEST_CASE("signals: a second SIGTERM ends the drain at once") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto started = dir / "started";
    auto id = client.submit(job_spec("long", "", 1)).id;
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "impatient",
                         .queues = {"long=" + blocks(started)},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {"--drain-timeout", "10m", "--kill-grace", "200ms"}});
    REQUIRE_MESSAGE(wait_until([&] { return std::filesystem::exists(started); }, 10s),
                    worker.logs());
    worker.process().kill(SIGTERM);
    REQUIRE_MESSAGE(
        wait_until([&] { return worker.process().err().find("draining:") != std::string::npos; },
                   5s),
        worker.logs());
    CHECK(worker.process().running());
    worker.process().kill(SIGTERM);
    auto code = worker.process().wait_exit(5s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
    // max_attempts 1: had the stop counted, the job would be dead now.
    auto job = client.status(id);
    CHECK(job.state == JobState::ready);
    CHECK(job.attempts == 1);
    CHECK(job.max_attempts == 2);
}

TEST_CASE("signals: a job that finishes during the drain succeeds and the worker exits 0") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto gate = dir / "gate";
    const auto started = dir / "started";
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "patient",
                         .queues = {"short=touch " + started.string() + "; " + gated(gate)},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {"--drain-timeout", "60s"}});
    auto id = client.submit(job_spec("short")).id;
    // Running on the worker, not only dispatched: a dispatched job that has not started yet is
    // handed back by the drain (the next case).
    REQUIRE(wait_until([&] { return std::filesystem::exists(started); }, 10s));
    REQUIRE(client.status(id).state == JobState::running);

    worker.process().kill(SIGTERM);
    // Draining: it tells the broker and keeps the job running.
    REQUIRE_MESSAGE(
        wait_until([&] { return worker.process().err().find("draining") != std::string::npos; },
                   5s),
        worker.logs());
    CHECK(worker.process().running());
    // A job submitted now is not dispatched to the draining worker.
    auto later = client.submit(job_spec("short")).id;

    write_file(gate, "");
    auto code = worker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
    auto job = client.status(id);
    CHECK(job.state == JobState::succeeded);
    CHECK(job.attempts == 1);
    CHECK(job.max_attempts == 3);
    auto waiting = client.status(later);
    CHECK(waiting.state == JobState::ready);
    CHECK(waiting.attempts == 0);
}

TEST_CASE("signals: draining hands prefetched jobs back at once") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const auto gate = dir / "gate";
    auto running = client.submit(job_spec("pf")).id;
    auto queued = client.submit(job_spec("pf")).id;
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "prefetcher",
                         .queues = {"pf=" + gated(gate)},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {"--prefetch", "1", "--drain-timeout", "60s"}});
    // Both are dispatched: one runs, one waits in the worker.
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            return client.status(running).state == JobState::running &&
                                   client.status(queued).state == JobState::running;
                        },
                        10s),
                    worker.logs());

    worker.process().kill(SIGTERM);
    REQUIRE_MESSAGE(wait_until([&] { return client.status(queued).state == JobState::ready; }, 10s),
                    worker.logs());
    auto back = client.status(queued);
    CHECK(back.attempts == 1);
    CHECK(back.max_attempts == 4);
    CHECK(client.status(running).state == JobState::running);

    write_file(gate, "");
    auto code = worker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
    CHECK(client.status(running).state == JobState::succeeded);
    CHECK(client.status(queued).state == JobState::ready);
}

TEST_CASE("signals: broker SIGTERM exits 0 and a pending wait gets shutting_down, not silence") {
    TempDir dir;
    Broker broker(dir, {"--log-level", "debug"});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("nobody-serves-this")).id;

    // A raw WAIT, then a PING on the same connection: the PONG proves the WAIT was handled.
    RawConnection raw(broker.endpoint());
    raw.send("WAIT", errand::encode(errand::WaitRequest{7, id, 600'000}));
    raw.send("PING", errand::encode_req(8));
    auto pong = raw.recv(5s);
    REQUIRE(pong);
    REQUIRE(pong->command == "PONG");

    // And the CLI, waiting forever: its WAIT shows up in the broker's debug log.
    Process cli("cli-wait", {cli_bin(), "--broker", broker.endpoint(), "wait", std::to_string(id)},
                dir.path());
    const std::string waiting = "job=" + std::to_string(id) + " queue=nobody-serves-this";
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            auto err = broker.process().err();
                            std::size_t first = err.find(waiting + " attempt=0: a client waits");
                            return first != std::string::npos &&
                                   err.find(waiting + " attempt=0: a client waits", first + 1) !=
                                       std::string::npos;
                        },
                        10s),
                    broker.logs());

    broker.process().kill(SIGTERM);
    auto code = broker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, broker.logs());
    CHECK(*code == 0);

    auto reply = raw.recv(5s);
    REQUIRE(reply);
    CHECK(reply->command == "ERROR");
    errand::Body body(reply->body);
    auto err = errand::decode_error(body.reader());
    CHECK(err.code == errand::ErrorCode::shutting_down);
    CHECK(err.req == std::optional<std::uint64_t>(7));

    auto cli_code = cli.wait_exit(10s);
    REQUIRE_MESSAGE(cli_code, "errand wait still hangs\n" << cli.logs());
    CHECK(*cli_code == 121);  // refused: shutting_down
    CHECK_MESSAGE(cli.err().find("shutting down") != std::string::npos, cli.logs());

    // The job itself is untouched and waits for the next broker.
    broker.start();
    CHECK(client.status(id).state == JobState::ready);
}

TEST_CASE("signals: broker SIGTERM tells workers, which register again with the next broker") {
    TempDir dir;
    Broker broker(dir);
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "loyal",
                         .queues = {"echo=echo hi"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    {
        errand::Client client(broker.client_options());
        auto id = client.submit(job_spec("echo")).id;
        REQUIRE_MESSAGE(client.wait(id, 10s), worker.logs());
    }
    broker.process().kill(SIGTERM);
    REQUIRE(broker.process().wait_exit(10s) == std::optional<int>(0));
    CHECK_MESSAGE(
        wait_until(
            [&] { return worker.process().err().find("is shutting down") != std::string::npos; },
            5s),
        worker.logs());

    broker.start();
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("echo")).id;
    auto job = client.wait(id, 10s);
    REQUIRE_MESSAGE(job, worker.logs());
    CHECK(job->state == JobState::succeeded);
    CHECK(worker.process().running());
}

TEST_CASE("signals: SIGHUP reopens the log file of the broker and of the worker") {
    TempDir dir;
    const auto broker_log = dir / "broker.log";
    Broker broker(dir, {"--log-file", broker_log.string()});
    REQUIRE(read_file(broker_log).find("listening on") != std::string::npos);
    // Nothing goes to stderr any more.
    CHECK(broker.process().err().find("listening on") == std::string::npos);

    std::filesystem::rename(broker_log, dir / "broker.log.1");
    broker.process().kill(SIGHUP);
    REQUIRE_MESSAGE(
        wait_until(
            [&] { return read_file(broker_log).find("log file reopened") != std::string::npos; },
            5s),
        broker.logs());
    CHECK(read_file(dir / "broker.log.1").find("log file reopened") == std::string::npos);
    // And it keeps logging there.
    const auto worker_log = dir / "worker.log";
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "hup",
                         .queues = {"q=true"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {"--log-file", worker_log.string()}});
    CHECK_MESSAGE(wait_until(
                      [&] {
                          return read_file(broker_log).find("worker hup registered") !=
                                 std::string::npos;
                      },
                      10s),
                  broker.logs());

    REQUIRE_MESSAGE(
        wait_until(
            [&] { return read_file(worker_log).find("registered with") != std::string::npos; },
            10s),
        worker.logs());
    std::filesystem::rename(worker_log, dir / "worker.log.1");
    worker.process().kill(SIGHUP);
    CHECK_MESSAGE(
        wait_until(
            [&] { return read_file(worker_log).find("log file reopened") != std::string::npos; },
            5s),
        worker.logs());
    CHECK(worker.process().running());
}

namespace {

// The next message on `conn` that is not a HEARTBEAT, or nullopt after `timeout`.
std::optional<errand::Envelope> next_message(RawConnection& conn, milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        auto msg = conn.recv(left);
        if (!msg || msg->command != errand::cmd::kHeartbeat) return msg;
    }
}

// Registers `conn` as a worker of `queue` with `credit` slots and grants them.
void register_raw(RawConnection& conn, const std::string& instance, const std::string& queue,
                  std::uint32_t credit) {
    errand::RegisterRequest reg;
    reg.req = 1;
    reg.instance = instance;
    reg.name = "raw";
    reg.host = "test";
    reg.pid = 1;
    reg.queues = {queue};
    reg.concurrency = credit;
    conn.send(errand::cmd::kRegister, errand::encode(reg));
    auto registered = next_message(conn, 5s);
    REQUIRE(registered);
    REQUIRE(registered->command == errand::cmd::kRegistered);
    conn.send(errand::cmd::kCredit, errand::encode_credit(credit));
}

}  // namespace

TEST_CASE("RESULTS on the wire: one ACKS for the current attempts, ERROR stale for the others") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    auto a = client.submit(job_spec("batch", "a")).id;
    auto b = client.submit(job_spec("batch", "b")).id;
    auto c = client.submit(job_spec("batch", "c")).id;

    RawConnection conn(broker.endpoint());
    register_raw(conn, "raw-results", "batch", 3);
    std::map<errand::JobId, std::uint32_t> attempt;
    while (attempt.size() < 3) {
        auto msg = next_message(conn, 5s);
        REQUIRE_MESSAGE(msg, "fewer than 3 dispatches");
        REQUIRE(msg->command == errand::cmd::kDispatch);
        auto d = errand::decode_dispatch(errand::Body(msg->body).reader());
        attempt[d.id] = d.attempt;
    }

    // a succeeds, b fails for good, c's result names an attempt that was never dispatched.
    std::string done_a = errand::encode(errand::JobResult{true, a, attempt[a], 0, "ra", "", false});
    std::string fail_b =
        errand::encode(errand::JobResult{false, b, attempt[b], 4, std::nullopt, "no", true});
    std::string stale_c =
        errand::encode(errand::JobResult{true, c, attempt[c] + 5, 0, "rc", "", false});
    conn.send(errand::cmd::kResults, errand::encode_results({done_a, fail_b, stale_c}));
    std::vector<errand::Ack> acked;
    std::optional<errand::ErrorReply> refused;
    while (acked.size() < 2 || !refused) {
        auto msg = next_message(conn, 5s);
        REQUIRE_MESSAGE(msg, "no ACKS / ERROR for the RESULTS");
        if (msg->command == errand::cmd::kAcks) {
            for (const auto& ack : errand::decode_acks(errand::Body(msg->body).reader()))
                acked.push_back(ack);
        } else if (msg->command == errand::cmd::kError) {
            refused = errand::decode_error(errand::Body(msg->body).reader());
        } else {
            FAIL("unexpected " << msg->command);
        }
    }
    REQUIRE(acked.size() == 2);
    CHECK(acked[0].id == a);
    CHECK(acked[1].id == b);
    CHECK(refused->code == errand::ErrorCode::stale);
    CHECK(refused->id == std::optional<errand::JobId>(c));
    CHECK(client.status(a).state == errand::JobState::succeeded);
    CHECK(client.status(a).result == std::optional<std::string>("ra"));
    CHECK(client.status(b).state == errand::JobState::dead);
    CHECK(client.status(c).state == errand::JobState::running);

    // Sent again (the ACKS was lost, say): acknowledged again, nothing changes.
    conn.send(errand::cmd::kResults, errand::encode_results({done_a, fail_b}));
    auto again = next_message(conn, 5s);
    REQUIRE(again);
    REQUIRE(again->command == errand::cmd::kAcks);
    CHECK(errand::decode_acks(errand::Body(again->body).reader()).size() == 2);
    CHECK(client.status(a).attempts == attempt[a]);

    // A malformed element refuses the whole message: c is still running afterwards.
    std::string no_ok = errand::Writer(2).u64("id", c).u64("attempt", attempt[c]).take();
    std::string done_c = errand::encode(errand::JobResult{true, c, attempt[c], 0, "rc", "", false});
    conn.send(errand::cmd::kResults, errand::encode_results({done_c, no_ok}));
    auto bad = next_message(conn, 5s);
    REQUIRE(bad);
    REQUIRE(bad->command == errand::cmd::kError);
    CHECK(errand::decode_error(errand::Body(bad->body).reader()).code ==
          errand::ErrorCode::bad_request);
    CHECK(client.status(c).state == errand::JobState::running);
}

TEST_CASE("signals: RELEASE and DRAIN on the wire (fencing, stale, no dispatch after DRAIN)") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("wire", "", 2)).id;

    RawConnection conn(broker.endpoint());
    register_raw(conn, "raw-instance", "wire", 2);

    auto first = next_message(conn, 5s);
    REQUIRE(first);
    REQUIRE(first->command == errand::cmd::kDispatch);
    auto d1 = errand::decode_dispatch(errand::Body(first->body).reader());
    CHECK(d1.id == id);
    CHECK(d1.attempt == 1);

    // A release of an attempt that is not current changes nothing.
    conn.send(errand::cmd::kRelease, errand::encode(errand::Ack{id, 9}));
    auto stale = next_message(conn, 5s);
    REQUIRE(stale);
    REQUIRE(stale->command == errand::cmd::kError);
    auto err = errand::decode_error(errand::Body(stale->body).reader());
    CHECK(err.code == errand::ErrorCode::stale);
    CHECK(err.id == std::optional<errand::JobId>(id));
    CHECK(client.status(id).state == errand::JobState::running);

    // The current one goes back uncharged, and is dispatched again (one credit left) as
    // attempt 2, so anything attempt 1 says stays fenced off.
    conn.send(errand::cmd::kRelease, errand::encode(errand::Ack{id, 1}));
    auto ack = next_message(conn, 5s);
    REQUIRE(ack);
    REQUIRE(ack->command == errand::cmd::kAck);
    auto a = errand::decode_ack(errand::Body(ack->body).reader());
    CHECK(a.id == id);
    CHECK(a.attempt == 1);
    auto again = next_message(conn, 5s);
    REQUIRE(again);
    REQUIRE(again->command == errand::cmd::kDispatch);
    auto d2 = errand::decode_dispatch(errand::Body(again->body).reader());
    CHECK(d2.id == id);
    CHECK(d2.attempt == 2);
    auto job = client.status(id);
    CHECK(job.attempts == 2);
    CHECK(job.max_attempts == 3);

    conn.send(errand::cmd::kRelease, errand::encode(errand::Ack{id, 1}));
    auto stale_again = next_message(conn, 5s);
    REQUIRE(stale_again);
    CHECK(stale_again->command == errand::cmd::kError);

    // After DRAIN no credit counts: a new job is not dispatched to this connection. The PONG
    // comes after anything the SUBMIT's pass sent to it.
    conn.send(errand::cmd::kDrain, errand::Writer(0).take());
    conn.send(errand::cmd::kCredit, errand::encode_credit(5));
    auto other = client.submit(job_spec("wire")).id;
    conn.send(errand::cmd::kPing, errand::encode_req(42));
    for (;;) {
        auto msg = next_message(conn, 5s);
        REQUIRE_MESSAGE(msg, "no PONG");
        CHECK_MESSAGE(msg->command != errand::cmd::kDispatch, "dispatched after DRAIN");
        if (msg->command == errand::cmd::kPong) break;
    }
    CHECK(client.status(other).state == errand::JobState::ready);

    // Its running job still finishes normally.
    errand::JobResult done;
    done.ok = true;
    done.id = id;
    done.attempt = 2;
    done.result = "ok";
    conn.send(errand::cmd::kDone, errand::encode(done));
    auto done_ack = next_message(conn, 5s);
    REQUIRE(done_ack);
    CHECK(done_ack->command == errand::cmd::kAck);
    auto finished = client.status(id);
    CHECK(finished.state == errand::JobState::succeeded);
    CHECK(finished.attempts == 2);
}

TEST_CASE("protocol: REGISTERED tells a worker the broker's limits") {
    TempDir dir;
    Broker broker(dir, {"--max-result", "100", "--max-batch", "50", "--max-message", "2000000"});
    RawConnection conn(broker.endpoint());
    errand::RegisterRequest reg;
    reg.req = 3;
    reg.instance = "raw-limits";
    reg.name = "raw";
    reg.queues = {"q"};
    reg.concurrency = 1;
    conn.send(errand::cmd::kRegister, errand::encode(reg));
    auto msg = next_message(conn, 5s);
    REQUIRE(msg);
    REQUIRE(msg->command == errand::cmd::kRegistered);
    auto rep = errand::decode_registered(errand::Body(msg->body).reader());
    CHECK(rep.req == 3);
    CHECK(rep.max_result == 100);
    CHECK(rep.max_batch == 50);
    CHECK(rep.max_message == 2000000);
}

TEST_CASE("protocol: errors answering DONE, FAIL, PROGRESS and CREDIT carry id, attempt, req") {
    TempDir dir;
    Broker broker(dir, {"--max-result", "100"});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("q", "p")).id;

    // CREDIT before REGISTER: not_registered, with the req it carried.
    RawConnection conn(broker.endpoint());
    conn.send(errand::cmd::kCredit, errand::Writer(2).u64("n", 1).u64("req", 41).take());
    auto unregistered = next_message(conn, 5s);
    REQUIRE(unregistered);
    REQUIRE(unregistered->command == errand::cmd::kError);
    auto e0 = errand::decode_error(errand::Body(unregistered->body).reader());
    CHECK(e0.code == errand::ErrorCode::not_registered);
    CHECK(e0.req == std::optional<std::uint64_t>(41));

    register_raw(conn, "raw-errors", "q", 1);
    auto dispatch = next_message(conn, 5s);
    REQUIRE(dispatch);
    REQUIRE(dispatch->command == errand::cmd::kDispatch);
    auto d = errand::decode_dispatch(errand::Body(dispatch->body).reader());
    REQUIRE(d.id == id);

    auto expect_error = [&](std::string_view command, const std::string& body,
                            errand::ErrorCode code, std::uint64_t req) {
        CAPTURE(command);
        conn.send(command, body);
        auto msg = next_message(conn, 5s);
        REQUIRE(msg);
        REQUIRE(msg->command == errand::cmd::kError);
        auto e = errand::decode_error(errand::Body(msg->body).reader());
        CHECK(e.code == code);
        CHECK(e.req == std::optional<std::uint64_t>(req));
        CHECK(e.id == std::optional<errand::JobId>(id));
        CHECK(e.attempt == std::optional<std::uint32_t>(d.attempt));
    };
    // A result over --max-result.
    expect_error(errand::cmd::kDone,
                 errand::Writer(4)
                     .u64("req", 7)
                     .u64("id", id)
                     .u64("attempt", d.attempt)
                     .bin("result", std::string(200, 'x'))
                     .take(),
                 errand::ErrorCode::too_large, 7);
    // A FAIL without its error.
    expect_error(errand::cmd::kFail,
                 errand::Writer(3).u64("req", 8).u64("id", id).u64("attempt", d.attempt).take(),
                 errand::ErrorCode::bad_request, 8);
    // A PROGRESS over 100 %.
    expect_error(errand::cmd::kProgress,
                 errand::Writer(4)
                     .u64("req", 9)
                     .u64("id", id)
                     .u64("attempt", d.attempt)
                     .u64("percent", 101)
                     .take(),
                 errand::ErrorCode::bad_request, 9);
    CHECK(client.status(id).state == errand::JobState::running);

    // A result of an attempt that is not current: stale, with the req.
    conn.send(errand::cmd::kDone, errand::Writer(4)
                                      .u64("req", 10)
                                      .u64("id", id)
                                      .u64("attempt", d.attempt + 1)
                                      .bin("result", "r")
                                      .take());
    auto stale = next_message(conn, 5s);
    REQUIRE(stale);
    REQUIRE(stale->command == errand::cmd::kError);
    auto es = errand::decode_error(errand::Body(stale->body).reader());
    CHECK(es.code == errand::ErrorCode::stale);
    CHECK(es.req == std::optional<std::uint64_t>(10));
    CHECK(es.attempt == std::optional<std::uint32_t>(d.attempt + 1));

    // DONE's result is optional: without one the job succeeds with an empty result.
    conn.send(errand::cmd::kDone, errand::Writer(2).u64("id", id).u64("attempt", d.attempt).take());
    auto ack = next_message(conn, 5s);
    REQUIRE(ack);
    REQUIRE(ack->command == errand::cmd::kAck);
    auto job = client.status(id);
    CHECK(job.state == errand::JobState::succeeded);
    CHECK(job.result == std::optional<std::string>(""));
}

TEST_CASE("protocol: a worker daemon cuts results to the broker's --max-result") {
    TempDir dir;
    Broker broker(dir, {"--max-result", "200"});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("big", "")).id;
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "cutter",
                         .queues = {"big=yes | head -c 5000"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    auto job = client.wait(id, 10s);
    REQUIRE_MESSAGE(job, worker.logs() << broker.logs());
    CHECK(job->state == errand::JobState::succeeded);
    REQUIRE(job->result);
    CHECK(job->result->size() == 200);
    CHECK(job->result->find("[errand: output truncated at 200 bytes]") != std::string::npos);
}

TEST_CASE("protocol: a token names one job: a batch that repeats it, a reuse for another job") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    RawConnection conn(broker.endpoint());
    auto submit = [&](std::vector<errand::JobSpec> jobs) {
        errand::SubmitRequest req;
        req.req = 1;
        req.jobs = std::move(jobs);
        conn.send(errand::cmd::kSubmit, errand::encode(req));
        auto msg = next_message(conn, 5s);
        REQUIRE(msg);
        REQUIRE_MESSAGE(msg->command == errand::cmd::kSubmitted, msg->command);
        return errand::decode_submitted(errand::Body(msg->body).reader());
    };
    auto with_token = [](std::string queue, std::string payload, std::string token) {
        auto spec = job_spec(std::move(queue), std::move(payload));
        spec.token = std::move(token);
        return spec;
    };
    // The same token twice in one batch: one job, the second entry is its duplicate.
    auto first = submit({with_token("a", "one", "t1"), with_token("a", "two", "t1")});
    REQUIRE(first.ids.size() == 2);
    CHECK(first.ids[0] == first.ids[1]);
    CHECK(first.duplicate == std::vector<bool>{false, true});
    // The token again for a different job (other queue, other payload): the first job, unchanged.
    auto reused = submit({with_token("b", "three", "t1")});
    CHECK(reused.ids == std::vector<errand::JobId>{first.ids[0]});
    CHECK(reused.duplicate == std::vector<bool>{true});
    auto job = client.status(first.ids[0]);
    CHECK(job.queue == "a");
    CHECK(job.payload_size == 3);
    CHECK(client.list().size() == 1);
    // Once its job is gone (cancelled, then purged) the token names nothing: a new job.
    client.cancel(first.ids[0]);
    REQUIRE(client.purge(errand::JobState::cancelled) == 1);
    auto fresh = submit({with_token("b", "four", "t1")});
    CHECK(fresh.ids[0] > first.ids[0]);
    CHECK(fresh.duplicate == std::vector<bool>{false});
}

TEST_CASE(
    "signals: a job that daemonises (setsid) dies on cancel and on drain (a cgroup per job)") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    // The job leaves its process group with setsid, writes the escapee's pid once it leads its
    // own session (ERRAND_JOB_ID names the file) and runs on until it is stopped.
    const std::string esc = dir.str() + "/esc-$ERRAND_JOB_ID";
    const std::string command =
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & p=$!; "
        "while [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do sleep 0.01; done; echo $p > " +
        esc + ".tmp; mv " + esc + ".tmp " + esc + "; exec sleep 300";
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "daemons",
                         .queues = {"d=" + command},
                         .concurrency = 2,
                         .allow_commands = false,
                         .extra_args = {"--drain-timeout", "300ms", "--kill-grace", "200ms"}});
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            return worker.process().err().find(
                                       "each job runs in a cgroup of its own") != std::string::npos;
                        },
                        5s),
                    worker.logs());
    auto escapee = [&](errand::JobId id) {
        const auto file = dir / ("esc-" + std::to_string(id));
        REQUIRE_MESSAGE(wait_until([&] { return pid_in(file) > 0; }, 10s), worker.logs());
        const pid_t pid = pid_in(file);
        REQUIRE(!process_gone(pid));
        return pid;
    };

    const auto cancelled = client.submit(job_spec("d")).id;
    const pid_t first = escapee(cancelled);
    client.cancel(cancelled);
    const bool first_gone = wait_until([&] { return process_gone(first); }, 5s);
    CHECK_MESSAGE(first_gone, "cancel left the daemonised " << first << " running");

    const auto drained = client.submit(job_spec("d")).id;
    const pid_t second = escapee(drained);
    worker.process().kill(SIGTERM);
    auto code = worker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    const bool second_gone = wait_until([&] { return process_gone(second); }, 5s);
    CHECK_MESSAGE(second_gone, "the drain left the daemonised " << second << " running");
    if (!first_gone) ::kill(first, SIGKILL);
    if (!second_gone) ::kill(second, SIGKILL);
}

TEST_CASE("signals: a SIGKILLed worker takes a job's daemonised (setsid) process with it") {
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    const std::string esc = dir.str() + "/esc";
    const std::string command =
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & p=$!; "
        "while [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do sleep 0.01; done; echo $p > " +
        esc + ".tmp; mv " + esc + ".tmp " + esc + "; exec sleep 300";
    client.submit(job_spec("d"));
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "doomed-daemons",
                         .queues = {"d=" + command},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    REQUIRE_MESSAGE(wait_until([&] { return pid_in(esc) > 0; }, 10s), worker.logs());
    const pid_t escaped = pid_in(esc);
    REQUIRE(!process_gone(escaped));
    const int worker_pid = worker.process().pid();
    worker.kill9();
    const bool gone = wait_until([&] { return process_gone(escaped); }, 5s);
    CHECK_MESSAGE(gone, "the daemonised " << escaped << " outlived its SIGKILLed worker");
    if (!gone) ::kill(escaped, SIGKILL);
    // The reaper removed the job's cgroup too (the worker logged where it makes them).
    const std::string said = "each job runs in a cgroup of its own under ";
    const auto err = worker.process().err();
    const auto at = err.find(said);
    REQUIRE_MESSAGE(at != std::string::npos, worker.logs());
    const std::string root = err.substr(at + said.size(), err.find('\n', at) - at - said.size());
    const std::string prefix = "job-" + std::to_string(worker_pid) + "-";
    CHECK_MESSAGE(wait_until(
                      [&] {
                          for (const auto& entry : std::filesystem::directory_iterator(root))
                              if (entry.path().filename().string().rfind(prefix, 0) == 0)
                                  return false;
                          return true;
                      },
                      5s),
                  root);
}
