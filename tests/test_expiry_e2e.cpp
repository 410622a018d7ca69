// Job expiry end to end: the real broker, worker daemon and CLI, on a SQLite file or (built as
// test_expiry_e2e_pg) on a PostgreSQL server started for each case. A job nobody takes by its
// --expires-in ends `expired` (awaited with WAIT, no sleeps); a job a worker took before its
// expiry runs to success however long it takes; bad --expires-in / --expires-at values are
// refused by the CLI and submit nothing.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cli_env.hpp"
#include "errand/client.hpp"
#include "errand/duration.hpp"
#include "harness.hpp"

using namespace errand::test;
using nlohmann::json;

TEST_CASE("expiry: a job nobody takes within --expires-in ends expired, and WAIT reports it") {
    Env env;
    auto id = env.submit({"-q", "nobody", "--payload", "late", "--expires-in", "1s"});
    auto before = env.status(id);
    CHECK(before["state"] == "ready");
    REQUIRE(before.contains("expires_at"));
    const auto expires_at = ms_of(before["expires_at"]);
    CHECK(expires_at - ms_of(before["created_at"]) == 1000);

    // WAIT gets it as finished: `errand wait` exits like a failed job and says why.
    auto w = env.cli({"wait", id, "--timeout", "30s"});
    CHECK_MESSAGE(w.exit_code == 1, describe(w), env.broker.logs());
    CHECK_MESSAGE(w.err.find("expired") != std::string::npos, describe(w));

    auto after = env.status(id);
    CHECK(after["state"] == "expired");
    CHECK(after["attempts"] == 0);
    CHECK(ms_of(after["finished_at"]) >= expires_at);
    auto history = env.cli({"history", id});
    CHECK_MESSAGE(history.out.find("expired") != std::string::npos, describe(history));
    auto list = env.cli({"list", "--state", "expired", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    json listed = json::parse(list.out);
    REQUIRE(listed.size() == 1);
    CHECK(std::to_string(listed[0]["id"].get<std::uint64_t>()) == id);
    json queues = json::parse(env.cli({"queues", "--json"}).out);
    bool found = false;
    for (const auto& q : queues)
        if (q["name"] == "nobody") {
            found = true;
            CHECK(q["counts"].value("expired", 0) == 1);
            CHECK(q["counts"].value("ready", 0) == 0);
        }
    CHECK(found);
    auto stats = env.cli({"stats"});
    CHECK_MESSAGE(stats.out.find(" 1 expired") != std::string::npos, describe(stats));

    // A worker that comes later runs nothing of it.
    WorkerDaemon worker(env.dir, env.broker.endpoint(), {"w1", {"nobody=cat"}, 1});
    auto fresh = env.cli({"submit", "-q", "nobody", "--payload", "fresh", "--wait"});
    CHECK_MESSAGE(fresh.exit_code == 0, describe(fresh), worker.logs());
    CHECK(fresh.out == "fresh");
    CHECK(env.status(id)["state"] == "expired");
}

TEST_CASE("expiry after dispatch: a job taken before its expiry succeeds though it runs past it") {
    Env env;
    WorkerDaemon worker(env.dir, env.broker.endpoint(), {"w1", {"slow=sleep 3; cat"}, 1});
    // The worker is registered and has its credit back once a first job has come back.
    auto warm =
        env.cli({"submit", "-q", "slow", "--payload", "warm", "--wait", "--wait-timeout", "30s"});
    REQUIRE_MESSAGE(warm.exit_code == 0, describe(warm), worker.logs(), env.broker.logs());
    auto r =
        env.cli({"submit", "-q", "slow", "--payload", "on time", "--expires-in", "2s", "--wait"});
    CHECK_MESSAGE(r.exit_code == 0, describe(r), worker.logs());
    CHECK(r.out == "on time");
    auto list = json::parse(env.cli({"list", "-q", "slow", "--json"}).out);
    REQUIRE(list.size() == 2);
    const auto& job = list[0];  // newest first
    CHECK(job["state"] == "succeeded");
    const auto expires_at = ms_of(job["expires_at"]);
    CHECK(ms_of(job["started_at"]) < expires_at);
    CHECK(ms_of(job["finished_at"]) > expires_at);  // it ran past its expiry, and was not stopped
}

TEST_CASE("expiry: bad --expires-in / --expires-at values are refused and nothing is submitted") {
    Env env;
    struct Bad {
        std::vector<std::string> args;
        std::string says;
    };
    const std::vector<Bad> bad = {
        {{"--expires-in", "-5s"}, "--expires-in"},
        {{"--expires-in=-5s"}, "not a duration"},
        {{"--expires-in", "abc"}, "not a duration"},
        {{"--expires-in", "0s"}, "more than 0"},
        {{"--expires-at", "tomorrow"}, "not a time"},
        {{"--expires-at", "2026-13-01T00:00:00Z"}, "not a time"},
        {{"--expires-at", "2026-12-01 10:00"}, "not a time"},
        {{"--expires-at", "2020-01-01T00:00:00Z"}, "already past"},
        {{"--expires-at", "1577836800"}, "already past"},
        {{"--expires-in", "1m", "--expires-at", "2099-01-01T00:00:00Z"}, "excludes"},
    };
    for (const auto& b : bad) {
        std::vector<std::string> args = {"submit", "-q", "refused", "--payload", "x"};
        args.insert(args.end(), b.args.begin(), b.args.end());
        auto r = env.cli(args);
        CAPTURE(describe(r));
        CHECK(r.exit_code == 120);
        CHECK(r.out.empty());
        CHECK(r.err.find(b.says) != std::string::npos);
    }
    // Nothing reached the broker.
    auto q = json::parse(env.cli({"queues", "--json"}).out);
    CHECK(q.empty());
    // Good forms are taken: RFC 3339 with an offset, and Unix seconds.
    auto id = env.submit({"-q", "taken", "--expires-at", "2099-01-01T02:00:00+02:00"});
    CHECK(ms_of(env.status(id)["expires_at"]) == 4070908800000);
    id = env.submit({"-q", "taken", "--expires-at", "4070908800"});
    CHECK(ms_of(env.status(id)["expires_at"]) == 4070908800000);
}

TEST_CASE("expiry through the library: JobSpec::expires_at / expires_in, Client::wait gets it") {
    Env env;
    errand::Client client(env.broker.client_options());
    const auto now =
        std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    errand::JobSpec at{.queue = "lib", .payload = "a"};
    at.expires_at = now + std::chrono::milliseconds(500);
    errand::JobSpec in{.queue = "lib", .payload = "b"};
    in.expires_in = std::chrono::milliseconds(700);
    auto a = client.submit(at).id;
    auto b = client.submit(in).id;
    CHECK(client.status(a).expires_at == at.expires_at);
    for (auto id : {a, b}) {
        auto job = client.wait(id, std::chrono::seconds(30));
        REQUIRE_MESSAGE(job.has_value(), env.broker.logs());
        CHECK(job->state == errand::JobState::expired);
        CHECK(job->error == "expired: not started by its expiry");
    }
    auto queues = client.queues();
    REQUIRE(queues.size() == 1);
    CHECK(queues[0].counts[static_cast<std::size_t>(errand::JobState::expired)].second == 2);
}

TEST_CASE("expiry across a broker crash: the restarted broker expires the job on time") {
    Env env;
    auto id = env.submit({"-q", "nobody", "--expires-in", "2s"});
    auto kept = env.submit({"-q", "nobody", "--expires-in", "1h"});
    env.broker.restart();  // SIGKILL, then start on the same database: memory rebuilt from it
    auto w = env.cli({"wait", id, "--timeout", "30s"});
    CHECK_MESSAGE(w.exit_code == 1, describe(w), env.broker.logs());
    CHECK(env.status(id)["state"] == "expired");
    CHECK(env.status(kept)["state"] == "ready");
}
