// Job dependencies end to end: the real broker, worker daemon and CLI, on a SQLite file or (built
// as test_deps_e2e_pg) on a PostgreSQL server started for each case. A chain a -> b -> c runs in
// order; a dead parent cancels its child and grandchild (and --after-any runs anyway); bad --after
// values are refused and submit nothing. Finishing is awaited with WAIT, no sleeps.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "cli_env.hpp"
#include "errand/duration.hpp"
#include "harness.hpp"

using namespace errand::test;
using nlohmann::json;

TEST_CASE("after: a chain a -> b -> c runs in order") {
    Env env;
    auto a = env.submit({"-q", "chain", "--payload", "a"});
    auto b = env.submit({"-q", "chain", "--payload", "b", "--after", a});
    auto c = env.submit({"-q", "chain", "--payload", "c", "--after", b});
    CHECK(env.status(b)["state"] == "blocked");
    CHECK(env.status(c)["state"] == "blocked");
    auto list = env.cli({"list", "--state", "blocked", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    CHECK(json::parse(list.out).size() == 2);
    auto stats = env.cli({"stats"});
    CHECK_MESSAGE(stats.out.find(" 2 blocked") != std::string::npos, describe(stats));

    WorkerDaemon worker(env.dir, env.broker.endpoint(), {"w1", {"chain=cat"}, 4});
    auto w = env.cli({"wait", c, "--timeout", "60s"});
    REQUIRE_MESSAGE(w.exit_code == 0, describe(w), worker.logs(), env.broker.logs());
    CHECK(w.out == "c");
    auto ja = env.status(a), jb = env.status(b), jc = env.status(c);
    CHECK(ja["state"] == "succeeded");
    CHECK(jb["state"] == "succeeded");
    CHECK(ms_of(ja["finished_at"]) <= ms_of(jb["started_at"]));
    CHECK(ms_of(jb["finished_at"]) <= ms_of(jc["started_at"]));
    auto history = env.cli({"history", c});
    CHECK_MESSAGE(history.out.find("unblocked") != std::string::npos, describe(history));
}

TEST_CASE("after: a dead parent cancels its child and grandchild; --after-any runs anyway") {
    Env env;
    auto parent = env.submit({"-q", "bad", "--max-attempts", "1", "--payload", "x"});
    auto child = env.submit({"-q", "good", "--payload", "child", "--after", parent});
    auto grandchild = env.submit({"-q", "good", "--payload", "gc", "--after", child});
    auto any = env.submit({"-q", "good", "--payload", "any", "--after", parent, "--after-any"});
    WorkerDaemon worker(env.dir, env.broker.endpoint(), {"w1", {"bad=false", "good=cat"}, 2});
    auto w = env.cli({"wait", any, "--timeout", "60s"});
    REQUIRE_MESSAGE(w.exit_code == 0, describe(w), worker.logs(), env.broker.logs());
    CHECK(w.out == "any");
    CHECK(env.status(parent)["state"] == "dead");
    auto jc = env.status(child);
    CHECK(jc["state"] == "cancelled");
    CHECK(jc["error"] == "parent " + parent + " dead");
    auto jg = env.status(grandchild);
    CHECK(jg["state"] == "cancelled");
    CHECK(jg["error"] == "parent " + child + " cancelled");
}

TEST_CASE("after: bad --after values are refused and nothing is submitted") {
    Env env;
    struct Bad {
        std::vector<std::string> args;
        std::string says;
    };
    const std::vector<Bad> bad = {
        {{"--after", "abc"}, "--after: must be job ids separated by commas"},
        {{"--after", "1,,2"}, "--after: must be job ids separated by commas"},
        {{"--after", "0"}, "--after: must be job ids separated by commas"},
        {{"--after", "999999"}, "no job 999999"},
        {{"--after-any"}, "--after"},
    };
    for (const auto& b : bad) {
        std::vector<std::string> args = {"submit", "-q", "refused", "--payload", "x"};
        args.insert(args.end(), b.args.begin(), b.args.end());
        auto r = env.cli(args);
        CAPTURE(describe(r));
        CHECK(r.exit_code != 0);
        CHECK(r.out.empty());
        CHECK(r.err.find(b.says) != std::string::npos);
    }
    auto q = json::parse(env.cli({"queues", "--json"}).out);
    CHECK(q.empty());
}
