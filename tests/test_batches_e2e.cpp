// Batches end to end: the real broker, worker daemon and CLI, on a SQLite file or (built as
// test_batches_e2e_pg) on a PostgreSQL server started for each case. A batch's callbacks fire
// exactly once although its worker is SIGKILLed and its broker crashes while members run; a
// dead member makes on_complete name it and on_success not fire; what the CLI refuses. Finishing
// is awaited with WAIT, no sleeps: a callback is submitted in the pass that finishes the last
// member, so once every member is seen finished the callback's job exists.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "cli_env.hpp"
#include "harness.hpp"

using namespace errand::test;
using nlohmann::json;

namespace {

std::string open_batch(const Env& env, std::vector<std::string> args) {
    args.insert(args.begin(), {"batch", "open"});
    auto r = env.cli(args);
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r), env.broker.logs());
    auto id = r.out.substr(0, r.out.find('\n'));
    REQUIRE_MESSAGE(!id.empty(), describe(r));
    return id;
}

json batch_json(const Env& env, const std::string& id) {
    auto r = env.cli({"batch", "status", id, "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    return json::parse(r.out);
}

}  // namespace

TEST_CASE("batch: callbacks fire exactly once through a SIGKILLed worker and a broker crash") {
    Env env;
    auto b = open_batch(env, {"--description", "e2e", "--on-complete", "cb", "--on-success", "cb"});
    std::vector<std::string> members;
    for (int i = 0; i < 20; ++i)
        members.push_back(
            env.submit({"-q", "work", "--batch", b, "--payload", "m" + std::to_string(i)}));
    CHECK(env.status(members[0])["batch"] == std::stoull(b));
    auto sealed = env.cli({"batch", "seal", b});
    REQUIRE_MESSAGE(sealed.exit_code == 0, describe(sealed));
    CHECK_MESSAGE(sealed.out.find("state:       sealed") != std::string::npos, describe(sealed));
    {
        // Members run 100 ms each, four at a time; once the first is done, the worker is killed
        // holding others and the broker crashes with it.
        WorkerDaemon w1(env.dir, env.broker.endpoint(), {"w1", {"work=sleep 0.1; cat"}, 4});
        auto first = env.cli({"wait", members[0], "--timeout", "60s"});
        REQUIRE_MESSAGE(first.exit_code == 0, describe(first), w1.logs());
        w1.kill9();
    }
    env.broker.restart();
    WorkerDaemon w2(env.dir, env.broker.endpoint(), {"w2", {"work=cat", "cb=cat"}, 4});
    std::vector<std::string> wait = {"wait"};
    wait.insert(wait.end(), members.begin(), members.end());
    wait.insert(wait.end(), {"--timeout", "90s"});
    auto all = env.cli(wait);
    REQUIRE_MESSAGE(all.exit_code == 0, describe(all), w2.logs(), env.broker.logs());

    auto s = batch_json(env, b);
    CHECK(s["state"] == "succeeded");
    CHECK(s["total"] == 20);
    CHECK(s["succeeded"] == 20);
    CHECK(s["pending"] == 0);
    REQUIRE(s["complete_job"].is_number());
    REQUIRE(s["success_job"].is_number());
    CHECK(s["complete_job"] != s["success_job"]);
    for (const char* which : {"complete_job", "success_job"}) {
        auto r =
            env.cli({"wait", std::to_string(s[which].get<std::uint64_t>()), "--timeout", "60s"});
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r), w2.logs());
        auto summary = json::parse(r.out);
        CHECK(summary["batch"] == std::stoull(b));
        CHECK(summary["callback"] ==
              (std::string(which) == "complete_job" ? "complete" : "success"));
        CHECK(summary["description"] == "e2e");
        CHECK(summary["total"] == 20);
        CHECK(summary["succeeded"] == 20);
        CHECK(summary["failed_ids"].empty());
    }
    // Exactly two callback jobs, whatever the crash replayed.
    auto cb = env.cli({"list", "-q", "cb", "--json"});
    REQUIRE_MESSAGE(cb.exit_code == 0, describe(cb));
    CHECK(json::parse(cb.out).size() == 2);
}

TEST_CASE(
    "batch: a dead member is named by on_complete and on_success does not fire; "
    "--batch refusals; JSONL members") {
    Env env;
    auto b = open_batch(env, {"--on-complete", "cb", "--on-success", "cb"});
    auto good = env.submit({"-q", "work", "--batch", b, "--payload", "ok"});
    auto bad = env.submit({"-q", "bad", "--batch", b, "--max-attempts", "1"});
    // Members from a JSONL file: its lines' "batch" (or --batch for all of them).
    std::string jsonl = (env.dir.path() / "jobs.jsonl").string();
    {
        std::ofstream f(jsonl);
        f << R"({"queue":"work","payload":"j1","batch":)" << b << "}\n";
        f << R"({"queue":"work","payload":"j2"})"
          << "\n";
    }
    auto bulk = env.cli({"submit", "--jsonl", jsonl, "--batch", b});
    REQUIRE_MESSAGE(bulk.exit_code == 0, describe(bulk));
    CHECK(batch_json(env, b)["total"] == 4);
    auto ids_out = bulk.out;
    env.cli({"batch", "seal", b});

    auto late = env.cli({"submit", "-q", "work", "--batch", b});
    CHECK(late.exit_code == 121);
    CHECK_MESSAGE(late.err.find("batch " + b + " is sealed") != std::string::npos, describe(late));
    auto zero = env.cli({"submit", "-q", "work", "--batch", "0"});
    CHECK(zero.exit_code == 120);
    auto unknown = env.cli({"submit", "-q", "work", "--batch", "999999"});
    CHECK(unknown.exit_code == 121);
    CHECK_MESSAGE(unknown.err.find("no batch 999999") != std::string::npos, describe(unknown));
    auto missing = env.cli({"batch", "status", "999999"});
    CHECK(missing.exit_code == 121);
    auto argv_alone = env.cli({"batch", "open", "--", "echo", "hi"});
    CHECK(argv_alone.exit_code == 120);
    CHECK(batch_json(env, b)["total"] == 4);  // nothing of the refusals joined

    WorkerDaemon w(env.dir, env.broker.endpoint(), {"w", {"work=cat", "bad=false", "cb=cat"}, 2});
    auto members = env.cli({"wait", good, bad, "--timeout", "60s"});
    CHECK(members.exit_code != 120);  // the dead member fails the wait; it has finished
    std::vector<std::string> bulk_ids;
    for (std::size_t at = 0; at < ids_out.size();) {
        auto nl = ids_out.find('\n', at);
        if (nl == std::string::npos) nl = ids_out.size();
        if (nl > at) bulk_ids.push_back(ids_out.substr(at, nl - at));
        at = nl + 1;
    }
    REQUIRE(bulk_ids.size() == 2);
    auto rest = env.cli({"wait", bulk_ids[0], bulk_ids[1], "--timeout", "60s"});
    REQUIRE_MESSAGE(rest.exit_code == 0, describe(rest), w.logs());

    auto s = batch_json(env, b);
    CHECK(s["state"] == "complete");
    CHECK(s["succeeded"] == 3);
    CHECK(s["dead"] == 1);
    REQUIRE(s["complete_job"].is_number());
    CHECK(s["success_job"].is_null());
    auto r = env.cli(
        {"wait", std::to_string(s["complete_job"].get<std::uint64_t>()), "--timeout", "60s"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto summary = json::parse(r.out);
    CHECK(summary["callback"] == "complete");
    CHECK(summary["failed_ids"] == json::array({std::stoull(bad)}));
    auto text = env.cli({"batch", "status", b});
    CHECK_MESSAGE(text.out.find("3 succeeded, 1 dead") != std::string::npos, describe(text));
    auto list = env.cli({"batch", "list"});
    CHECK_MESSAGE(list.out.find("complete") != std::string::npos, describe(list));
}

TEST_CASE("batch submit: opens, submits a JSONL file's jobs into the batch, seals, prints its id") {
    Env env;
    std::string jsonl = (env.dir.path() / "jobs.jsonl").string();
    {
        std::ofstream f(jsonl);
        for (int i = 0; i < 3; ++i)
            f << R"({"payload":"p)" << i << R"("})"
              << "\n";
    }
    auto r = env.cli({"batch", "submit", "--jsonl", jsonl, "-q", "work", "--on-success", "cb"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto b = r.out.substr(0, r.out.find('\n'));
    CHECK(r.out == b + "\n");  // the batch's id only
    auto s = batch_json(env, b);
    CHECK(s["state"] == "sealed");
    CHECK(s["total"] == 3);
    WorkerDaemon w(env.dir, env.broker.endpoint(), {"w", {"work=cat", "cb=cat"}, 2});
    auto list = env.cli({"list", "-q", "work", "--json"});
    REQUIRE(list.exit_code == 0);
    std::vector<std::string> wait = {"wait"};
    for (const auto& j : json::parse(list.out))
        wait.push_back(std::to_string(j["id"].get<std::uint64_t>()));
    REQUIRE(wait.size() == 4);
    wait.insert(wait.end(), {"--timeout", "60s"});
    auto done = env.cli(wait);
    REQUIRE_MESSAGE(done.exit_code == 0, describe(done), w.logs());
    auto after = batch_json(env, b);
    CHECK(after["state"] == "succeeded");
    CHECK(after["success_job"].is_number());
    // A bad line: nothing of the file is submitted, and the error names the open batch.
    {
        std::ofstream f(jsonl);
        f << R"({"payload":"ok"})"
          << "\n"
          << R"({"queue":7})"
          << "\n";
    }
    auto bad = env.cli({"batch", "submit", "--jsonl", jsonl});
    CHECK(bad.exit_code == 120);
    CHECK_MESSAGE(bad.err.find("stays open") != std::string::npos, describe(bad));
    // A line naming a batch of its own would leave the batch being built.
    {
        std::ofstream f(jsonl);
        f << R"({"payload":"elsewhere","batch":)" << b << "}\n";
    }
    auto other = env.cli({"batch", "submit", "--jsonl", jsonl});
    CHECK(other.exit_code == 120);
    CHECK_MESSAGE(other.err.find("'batch' is not for the lines") != std::string::npos,
                  describe(other));
    // The callbacks' options without a callback.
    auto lonely = env.cli({"batch", "open", "--max-attempts", "3"});
    CHECK(lonely.exit_code == 120);
}
