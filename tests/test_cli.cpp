// Integration tests of the errand CLI against a real broker and worker daemon: output, JSON and
// exit codes (0 ok, job's exit code for submit --wait, 2 usage, 3 refused, 4 unreachable, 124).
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using nlohmann::json;

namespace {

// A broker and one worker daemon: queue `default` (command jobs only) and `cat-q` (echoes the
// payload back as the result).
struct CliWorld {
    TempDir dir;
    Broker broker{dir, {"--retry-delay", "100ms"}};
    WorkerDaemon worker{dir,
                        broker.endpoint(),
                        {.name = "cli-w",
                         .queues = {"default", "cat-q=cat"},
                         .concurrency = 2,
                         .allow_commands = true,
                         .extra_args = {}}};

    CliResult cli(std::vector<std::string> args, std::string_view stdin_text = {}) {
        args.insert(args.begin(), {"--broker", broker.endpoint()});
        return run_cli(args, stdin_text);
    }
};

// The id printed by `errand submit` (one line, digits only).
std::uint64_t parse_id(const CliResult& r) {
    std::string s = r.out;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    REQUIRE_MESSAGE(!s.empty(), describe(r));
    REQUIRE_MESSAGE(std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }),
                    describe(r));
    return std::stoull(s);
}

// A time in the JSON output: integer milliseconds since the epoch, or an ISO 8601 UTC string
// ("2026-11-28T19:17:19.581Z"). nullopt for anything else.
std::optional<std::int64_t> time_ms(const json& v) {
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (!v.is_string()) return std::nullopt;
    const auto text = v.get<std::string>();
    std::tm tm{};
    int ms = 0;
    char z = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z) != 8 ||
        z != 'Z')
        return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<std::int64_t>(timegm(&tm)) * 1000 + ms;
}

json parse_json(const CliResult& r) {
    json j = json::parse(r.out, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << describe(r));
    return j;
}

}  // namespace

TEST_CASE("cli: submit --wait -- echo hello prints the result and exits 0") {
    CliWorld w;
    auto r = w.cli({"submit", "--wait", "--", "echo", "hello"});
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
    CHECK_MESSAGE(r.out == "hello\n", describe(r));
}

TEST_CASE("cli: submit --wait of a failing command exits non-zero and the job is dead") {
    CliWorld w;
    auto r = w.cli({"submit", "--max-attempts", "1", "--wait", "--", "false"});
    // `false` exits 1 and --wait exits with the job's exit code.
    CHECK_MESSAGE(r.exit_code == 1, describe(r));
    CHECK_MESSAGE(r.out.empty(), describe(r));

    auto list = w.cli({"list", "--state", "dead", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    json jobs = parse_json(list);
    REQUIRE(jobs.is_array());
    REQUIRE_MESSAGE(jobs.size() == 1, describe(list));
    CHECK(jobs[0]["state"] == "dead");
    CHECK(jobs[0]["attempts"] == 1);
    CHECK(jobs[0]["max_attempts"] == 1);
    CHECK(jobs[0]["exit_code"] == 1);
    CHECK(jobs[0]["argv"] == json::array({"false"}));
}

TEST_CASE("cli: status --json has every key with the job's values; list --json contains it") {
    CliWorld w;
    auto sub = w.cli({"submit", "-q", "cat-q", "--payload", "hi"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    const auto id = parse_id(sub);

    auto waited = w.cli({"wait", std::to_string(id), "--timeout", "10s"});
    REQUIRE_MESSAGE(waited.exit_code == 0, describe(waited));

    auto st = w.cli({"status", std::to_string(id), "--json"});
    REQUIRE_MESSAGE(st.exit_code == 0, describe(st));
    json j = parse_json(st);
    REQUIRE_MESSAGE(j.is_object(), describe(st));
    for (const char* key :
         {"id", "queue", "state", "attempts", "max_attempts", "exit_code", "result", "error",
          "worker", "argv", "payload_size", "created_at", "started_at", "finished_at", "run_at"}) {
        CHECK_MESSAGE(j.contains(key), "missing key " << key << " in " << st.out);
    }
    CHECK(j["id"] == id);
    CHECK(j["queue"] == "cat-q");
    CHECK(j["state"] == "succeeded");
    CHECK(j["attempts"] == 1);
    CHECK(j["max_attempts"] == 3);
    CHECK(j["exit_code"] == 0);
    CHECK(j["result"] == "hi");
    CHECK(j["error"].is_null());
    CHECK(j["worker"] == "cli-w");
    CHECK(j["argv"].is_null());
    CHECK(j["payload_size"] == 2);
    CHECK(j["run_at"].is_null());
    const auto created = time_ms(j["created_at"]);
    const auto started = time_ms(j["started_at"]);
    const auto finished = time_ms(j["finished_at"]);
    REQUIRE_MESSAGE(created.has_value(), st.out);
    REQUIRE_MESSAGE(started.has_value(), st.out);
    REQUIRE_MESSAGE(finished.has_value(), st.out);
    CHECK(*created > 1'600'000'000'000);  // 2020 or later
    CHECK(*started >= *created);
    CHECK(*finished >= *started);
    CHECK(*finished - *created < 60'000);

    auto list = w.cli({"list", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    json jobs = parse_json(list);
    REQUIRE(jobs.is_array());
    auto it = std::find_if(jobs.begin(), jobs.end(), [&](const json& x) { return x["id"] == id; });
    REQUIRE_MESSAGE(it != jobs.end(), describe(list));
    CHECK((*it)["state"] == "succeeded");
    CHECK((*it)["queue"] == "cat-q");

    // Filters: the queue matches, another state does not.
    auto by_queue = parse_json(w.cli({"list", "-q", "cat-q", "--json"}));
    CHECK(by_queue.size() == 1);
    auto by_state = parse_json(w.cli({"list", "--state", "ready", "--json"}));
    CHECK(by_state.empty());
}

TEST_CASE("cli: submit --payload-file - reads stdin and the queue command echoes it") {
    CliWorld w;
    const std::string text = "line one\nline two \xe2\x9c\x93\n";
    auto r = w.cli({"submit", "-q", "cat-q", "--payload-file", "-", "--wait"}, text);
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
    CHECK_MESSAGE(r.out == text, describe(r));
}

TEST_CASE("cli: wait on an unknown id exits 3; wait --timeout on an unfinished job exits 124") {
    CliWorld w;
    auto unknown = w.cli({"wait", "987654321"});
    CHECK_MESSAGE(unknown.exit_code == 3, describe(unknown));

    auto status = w.cli({"status", "987654321"});
    CHECK_MESSAGE(status.exit_code == 3, describe(status));

    // No worker serves this queue, so the job stays ready.
    auto sub = w.cli({"submit", "-q", "nobody-serves-this", "--payload", "x"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    auto waited = w.cli({"wait", std::to_string(parse_id(sub)), "--timeout", "300ms"});
    CHECK_MESSAGE(waited.exit_code == 124, describe(waited));
    CHECK_MESSAGE(waited.elapsed < 5s, describe(waited));
}

TEST_CASE("cli: an unreachable broker exits 4 with 'cannot reach broker' within a few seconds") {
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto r = run_cli({"--broker", ep, "--timeout", "500ms", "ping"}, {}, 10s);
    CHECK_MESSAGE(r.exit_code == 4, describe(r));
    CHECK_MESSAGE(r.err.find("cannot reach broker") != std::string::npos, describe(r));
    CHECK_MESSAGE(r.err.find(ep) != std::string::npos, describe(r));
    // 500 ms of timeout plus process start-up; 3 s leaves room for a loaded CI machine.
    CHECK_MESSAGE(r.elapsed < 3s, describe(r));

    auto sub = run_cli({"--broker", ep, "--timeout", "500ms", "submit", "--payload", "x"}, {}, 10s);
    CHECK_MESSAGE(sub.exit_code == 4, describe(sub));
}

TEST_CASE("cli: usage errors exit 2") {
    // None of these reaches a broker, so no broker is needed: the endpoint has nothing on it.
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--no-such-flag", "ping"},
             {"submit", "--no-such-flag"},
             {"no-such-command"},
             {"status", "not-a-number"},
             {"submit", "--max-attempts", "many", "--payload", "x"},
             {"--timeout", "soon", "ping"},
         }) {
        std::vector<std::string> full = {"--broker", ep};
        full.insert(full.end(), args.begin(), args.end());
        auto r = run_cli(full, {}, 10s);
        std::string cmd;
        for (const auto& a : args)
            cmd += a + " ";
        CHECK_MESSAGE(r.exit_code == 2, "errand " << cmd << ": " << describe(r));
    }
}

TEST_CASE("cli: ping answers 0") {
    CliWorld w;
    auto r = w.cli({"ping"});
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
}
