// Crash recovery: a broker killed with SIGKILL loses nothing it acknowledged and runs nothing
// twice; a worker killed mid-job has its job re-run elsewhere once the broker declares it lost.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using errand::JobState;

namespace {

// A queue command that records each run as a line "ID" in `effects`.
std::string record_command(const std::filesystem::path& effects) {
    return "echo \"$ERRAND_JOB_ID\" >> '" + effects.string() + "'";
}

}  // namespace

TEST_CASE("recovery: 500 acknowledged submissions survive a SIGKILLed broker and run once each") {
    constexpr int kJobs = 500;
    TempDir dir;
    Broker broker(dir);
    std::set<errand::JobId> ids;
    {
        errand::Client client(broker.client_options());
        for (int i = 0; i < kJobs; ++i) {
            auto s = client.submit(job_spec("durable", "payload " + std::to_string(i)));
            CHECK_FALSE(s.duplicate);
            ids.insert(s.id);
        }
    }
    REQUIRE(ids.size() == kJobs);

    // Right after the last acknowledgement: no graceful shutdown, nothing flushed on exit.
    broker.restart();

    errand::Client client(broker.client_options(10'000));
    errand::ListFilter all;
    all.limit = errand::limits::kMaxListLimit;
    auto listed = client.list(all);
    REQUIRE_MESSAGE(listed.size() == kJobs, broker.logs());
    std::set<errand::JobId> listed_ids;
    for (const auto& job : listed) {
        listed_ids.insert(job.id);
        CHECK(job.state == JobState::ready);
        CHECK(job.attempts == 0);
        CHECK(job.queue == "durable");
    }
    CHECK(listed_ids == ids);

    const auto effects = dir / "effects";
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "w1",
                         .queues = {"durable=" + record_command(effects)},
                         .concurrency = 4,
                         .allow_commands = false,
                         .extra_args = {}});
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (auto id : ids) {
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        REQUIRE_MESSAGE(left.count() > 0, "jobs not finished within 60 s");
        auto job = client.wait(id, left);
        REQUIRE_MESSAGE(job.has_value(), "job " << id << " not finished in time");
        CHECK(job->state == JobState::succeeded);
        CHECK(job->attempts == 1);
    }

    std::map<std::string, int> seen;
    for (const auto& line : read_lines(effects))
        seen[line]++;
    CHECK(seen.size() == ids.size());
    for (auto id : ids) {
        auto it = seen.find(std::to_string(id));
        CHECK_MESSAGE(it != seen.end(), "job " << id << " never ran");
        if (it != seen.end()) CHECK_MESSAGE(it->second == 1, "job " << id << " ran " << it->second);
    }
}

TEST_CASE("recovery: a job of a SIGKILLed worker completes on the other worker, attempt 2") {
    TempDir dir;
    // The broker declares a worker lost after 2 s of silence (heartbeats every 1 s by default).
    Broker broker(dir, {"--worker-timeout", "2s", "--heartbeat", "1s"});
    const auto started = dir / "started";
    const std::string command = "if [ \"$ERRAND_ATTEMPT\" = 1 ]; then touch '" + started.string() +
                                "'; sleep 30; fi; echo done";
    WorkerDaemon w1(dir, broker.endpoint(),
                    {.name = "w1",
                     .queues = {"slow=" + command},
                     .concurrency = 1,
                     .allow_commands = false,
                     .extra_args = {}});
    WorkerDaemon w2(dir, broker.endpoint(),
                    {.name = "w2",
                     .queues = {"slow=" + command},
                     .concurrency = 1,
                     .allow_commands = false,
                     .extra_args = {}});

    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("slow", "", 3)).id;
    REQUIRE_MESSAGE(wait_until([&] { return std::filesystem::exists(started); }, 10s),
                    "attempt 1 never started\n"
                        << w1.logs() << w2.logs() << broker.logs());

    auto running = client.status(id);
    REQUIRE(running.state == JobState::running);
    REQUIRE(running.attempts == 1);
    REQUIRE(running.worker.has_value());
    const bool first_is_w1 = *running.worker == "w1";
    REQUIRE_MESSAGE((first_is_w1 || *running.worker == "w2"), *running.worker);
    WorkerDaemon& victim = first_is_w1 ? w1 : w2;
    const std::string survivor = first_is_w1 ? "w2" : "w1";

    const auto killed_at = std::chrono::steady_clock::now();
    victim.kill9();
    auto job = client.wait(id, 15s);
    const auto elapsed = since(killed_at);
    REQUIRE_MESSAGE(job.has_value(), "job not finished 15 s after its worker was killed");
    CHECK(job->state == JobState::succeeded);
    CHECK(job->attempts == 2);
    CHECK(job->worker == survivor);
    CHECK(job->result == "done\n");
    MESSAGE("completed " << elapsed.count() << " ms after the kill");
    // Bound: the last heartbeat came at most at the kill, so the worker is declared lost by
    // kill + 2 s (--worker-timeout) plus at most one heartbeat period (1 s) of tick granularity;
    // re-dispatch and `echo done` take milliseconds. 500 ms of slack covers process start-up
    // and scheduling on a loaded 2-core CI machine.
    CHECK(elapsed <= 3500ms);
}

TEST_CASE("recovery: a broker SIGKILLed during a 3 s job and restarted records it once") {
    TempDir dir;
    Broker broker(dir);
    const auto effects = dir / "effects";
    const std::string command = "echo \"$ERRAND_JOB_ID $ERRAND_ATTEMPT\" >> '" + effects.string() +
                                "'; sleep 3; printf finished";
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "w1",
                         .queues = {"long=" + command},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});

    errand::JobId id = 0;
    {
        errand::Client client(broker.client_options());
        id = client.submit(job_spec("long", "", 3)).id;
    }
    REQUIRE_MESSAGE(wait_until([&] { return !read_lines(effects).empty(); }, 10s),
                    "the job never started\n"
                        << worker.logs() << broker.logs());

    const auto killed_at = std::chrono::steady_clock::now();
    broker.restart();
    MESSAGE("broker back after " << since(killed_at).count() << " ms");
    CHECK(since(killed_at) < 3s);  // the job is still running: the restart is the point

    errand::Client client(broker.client_options());
    auto job = client.wait(id, 20s);
    REQUIRE_MESSAGE(job.has_value(), "job not finished 20 s after the restart");
    CHECK(job->state == JobState::succeeded);
    CHECK(job->attempts == 1);
    CHECK(job->result == "finished");
    CHECK(job->exit_code == 0);
    CHECK(job->worker == "w1");
    auto lines = read_lines(effects);
    CHECK(lines == std::vector<std::string>{std::to_string(id) + " 1"});

    // The result itself is durable: another crash keeps it.
    broker.restart();
    errand::Client again(broker.client_options());
    auto after = again.status(id);
    CHECK(after.state == JobState::succeeded);
    CHECK(after.result == "finished");
    CHECK(after.attempts == 1);
    CHECK(read_lines(effects).size() == 1);
}
