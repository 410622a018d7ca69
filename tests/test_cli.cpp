// Integration tests of the errand CLI against a real broker and worker daemon: output, JSON and
// exit codes (0 ok, the job's exit code for submit --wait, 120 usage, 121 refused, 122 unreachable,
// 124), for submitting and following jobs and for the lifecycle commands (cancel, retry, pause,
// resume, purge, queues, history).
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "errand/version.hpp"
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

TEST_CASE("cli: wait on an unknown id exits 121; wait --timeout on an unfinished job exits 124") {
    CliWorld w;
    auto unknown = w.cli({"wait", "987654321"});
    CHECK_MESSAGE(unknown.exit_code == 121, describe(unknown));

    auto status = w.cli({"status", "987654321"});
    CHECK_MESSAGE(status.exit_code == 121, describe(status));

    // No worker serves this queue, so the job stays ready.
    auto sub = w.cli({"submit", "-q", "nobody-serves-this", "--payload", "x"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    auto waited = w.cli({"wait", std::to_string(parse_id(sub)), "--timeout", "300ms"});
    CHECK_MESSAGE(waited.exit_code == 124, describe(waited));
    CHECK_MESSAGE(waited.elapsed < 5s, describe(waited));
}

TEST_CASE("cli: an unreachable broker exits 122 with 'cannot reach broker' within a few seconds") {
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto r = run_cli({"--broker", ep, "--request-timeout", "500ms", "ping"}, {}, 10s);
    CHECK_MESSAGE(r.exit_code == 122, describe(r));
    CHECK_MESSAGE(r.err.find("cannot reach broker") != std::string::npos, describe(r));
    CHECK_MESSAGE(r.err.find(ep) != std::string::npos, describe(r));
    // 500 ms of timeout plus process start-up; 3 s leaves room for a loaded CI machine.
    CHECK_MESSAGE(r.elapsed < 3s, describe(r));

    auto sub = run_cli({"--broker", ep, "--request-timeout", "500ms", "submit", "--payload", "x"},
                       {}, 10s);
    CHECK_MESSAGE(sub.exit_code == 122, describe(sub));
}

TEST_CASE("cli: usage errors exit 120") {
    // None of these reaches a broker, so no broker is needed: the endpoint has nothing on it.
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--no-such-flag", "ping"},
             {"submit", "--no-such-flag"},
             {"no-such-command"},
             {"status", "not-a-number"},
             {"submit", "--max-attempts", "many", "--payload", "x"},
             {"--request-timeout", "soon", "ping"},
             // --timeout is the job's timeout on submit and the wait's on wait, nothing global.
             {"--timeout", "1s", "ping"},
             {"ping", "--timeout", "1s"},
         }) {
        std::vector<std::string> full = {"--broker", ep};
        full.insert(full.end(), args.begin(), args.end());
        auto r = run_cli(full, {}, 10s);
        std::string cmd;
        for (const auto& a : args)
            cmd += a + " ";
        CHECK_MESSAGE(r.exit_code == 120, "errand " << cmd << ": " << describe(r));
    }
}

TEST_CASE("cli: ping answers 0") {
    CliWorld w;
    auto r = w.cli({"ping"});
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
}

TEST_CASE("cli: usage errors of the lifecycle options and subcommands exit 120") {
    // None of these reaches a broker, so no broker is needed: the endpoint has nothing on it.
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"retry"},
             {"retry", "7", "--dead"},
             {"retry", "-q", "default"},
             {"retry", "not-a-number"},
             {"cancel"},
             {"cancel", "x"},
             {"pause"},
             {"pause", "bad queue"},
             {"resume"},
             {"purge"},
             {"purge", "--state", "ready"},
             {"purge", "--state", "running"},
             {"purge", "--state", "nonsense"},
             {"purge", "--state", "dead", "--older-than", "soon"},
             {"history"},
             {"history", "x"},
             {"queues", "extra"},
             {"submit", "--payload", "x", "--at", "yesterday"},
             {"submit", "--payload", "x", "--at", "2026-11-28T20:00:00"},   // no zone
             {"submit", "--payload", "x", "--at", "2026-02-29T20:00:00Z"},  // not a leap year
             {"submit", "--payload", "x", "--at", "2026-11-28T24:00:00Z"},
             {"submit", "--payload", "x", "--at", "2026-11-28 20:00:00Z"},
             {"submit", "--payload", "x", "--delay", "1s", "--at", "2026-11-28T20:00:00Z"},
             {"submit", "--payload", "x", "--delay", "soon"},
             {"submit", "--payload", "x", "--backoff", "5s,1s"},
             {"submit", "--payload", "x", "--backoff", "5s,"},
             {"submit", "--payload", "x", "--backoff", "fast"},
             {"submit", "--payload", "x", "--priority", "1001"},
             {"submit", "--payload", "x", "--priority", "-1001"},
             {"submit", "--payload", "x", "--timeout", "0"},
             {"submit", "--payload", "x", "--timeout", "8d"},
             {"submit", "--payload", "x", "--unique", ""},
             {"submit", "--payload", "x", "--unique", std::string(300, 'k')},
         }) {
        std::vector<std::string> full = {"--broker", ep, "--request-timeout", "200ms"};
        full.insert(full.end(), args.begin(), args.end());
        auto r = run_cli(full, {}, 10s);
        std::string cmd;
        for (const auto& a : args)
            cmd += a + " ";
        CHECK_MESSAGE(r.exit_code == 120, "errand " << cmd << ": " << describe(r));
        CHECK_MESSAGE(r.err.find("error: ") == 0, "errand " << cmd << ": " << describe(r));
    }

    // The messages name what is wrong.
    auto purge = run_cli({"--broker", ep, "purge", "--state", "ready"}, {}, 10s);
    CHECK_MESSAGE(purge.err.find("succeeded, dead, cancelled") != std::string::npos,
                  describe(purge));
    auto at = run_cli({"--broker", ep, "submit", "--at", "yesterday"}, {}, 10s);
    CHECK_MESSAGE(at.err.find("RFC 3339") != std::string::npos, describe(at));
    auto backoff = run_cli({"--broker", ep, "submit", "--backoff", "5s,1s"}, {}, 10s);
    CHECK_MESSAGE(backoff.err.find("cap") != std::string::npos, describe(backoff));
    auto old = run_cli({"--broker", ep, "--timeout", "1s", "ping"}, {}, 10s);
    CHECK_MESSAGE(old.err.find("--request-timeout") != std::string::npos, describe(old));
}

TEST_CASE("cli: pause shows in queues until resume; queues --json counts every state") {
    CliWorld w;
    auto sub = w.cli({"submit", "-q", "cat-q", "--payload", "a"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    REQUIRE(w.cli({"wait", std::to_string(parse_id(sub)), "--timeout", "10s"}).exit_code == 0);

    auto paused = w.cli({"pause", "cat-q"});
    CHECK_MESSAGE(paused.exit_code == 0, describe(paused));
    CHECK_MESSAGE(paused.out == "queue cat-q paused\n", describe(paused));
    CHECK_MESSAGE(paused.err.empty(), describe(paused));
    // A queue no job has used is paused too, with a warning that names the likely one.
    auto typo = w.cli({"pause", "cat-qq"});
    CHECK_MESSAGE(typo.exit_code == 0, describe(typo));
    CHECK_MESSAGE(typo.err ==
                      "warning: no job has used queue 'cat-qq' yet (did you mean 'cat-q'?); "
                      "pausing it anyway\n",
                  describe(typo));
    REQUIRE(w.cli({"resume", "cat-qq"}).exit_code == 0);

    // A paused queue accepts jobs but runs none.
    auto held = w.cli({"submit", "-q", "cat-q", "--payload", "b"});
    REQUIRE_MESSAGE(held.exit_code == 0, describe(held));
    const auto held_id = parse_id(held);
    auto waited = w.cli({"wait", std::to_string(held_id), "--timeout", "500ms"});
    CHECK_MESSAGE(waited.exit_code == 124, describe(waited));

    auto q = w.cli({"queues", "--json"});
    REQUIRE_MESSAGE(q.exit_code == 0, describe(q));
    json queues = parse_json(q);
    REQUIRE_MESSAGE(queues.is_array(), describe(q));
    auto cat = std::find_if(queues.begin(), queues.end(),
                            [](const json& x) { return x["name"] == "cat-q"; });
    REQUIRE_MESSAGE(cat != queues.end(), describe(q));
    CHECK((*cat)["paused"] == true);
    for (const char* state :
         {"scheduled", "ready", "running", "retrying", "succeeded", "dead", "cancelled"}) {
        CHECK_MESSAGE((*cat)["counts"].contains(state), "missing " << state << " in " << q.out);
    }
    CHECK((*cat)["counts"]["succeeded"] == 1);
    CHECK((*cat)["counts"]["ready"] == 1);
    CHECK_MESSAGE(time_ms((*cat)["oldest_ready_at"]).has_value(), q.out);

    // The table: a header, then the queue's row says it is paused.
    auto table = w.cli({"queues"});
    REQUIRE_MESSAGE(table.exit_code == 0, describe(table));
    CHECK_MESSAGE(table.out.rfind("QUEUE ", 0) == 0, describe(table));
    auto row = table.out.find("\ncat-q ");
    REQUIRE_MESSAGE(row != std::string::npos, describe(table));
    auto row_end = table.out.find('\n', row + 1);
    CHECK_MESSAGE(table.out.substr(row, row_end - row).find(" yes ") != std::string::npos,
                  describe(table));

    auto resumed = w.cli({"resume", "cat-q"});
    CHECK_MESSAGE(resumed.exit_code == 0, describe(resumed));
    CHECK_MESSAGE(resumed.out == "queue cat-q resumed\n", describe(resumed));
    auto done = w.cli({"wait", std::to_string(held_id), "--timeout", "10s"});
    CHECK_MESSAGE(done.exit_code == 0, describe(done));
    CHECK_MESSAGE(done.out == "b", describe(done));
    auto after = parse_json(w.cli({"queues", "--json"}));
    auto cat2 = std::find_if(after.begin(), after.end(),
                             [](const json& x) { return x["name"] == "cat-q"; });
    REQUIRE(cat2 != after.end());
    CHECK((*cat2)["paused"] == false);
}

TEST_CASE("cli: cancel prints the job; a finished job cannot be cancelled (exit 121)") {
    CliWorld w;
    auto queued = w.cli({"submit", "-q", "nobody-serves-this", "--payload", "x"});
    REQUIRE_MESSAGE(queued.exit_code == 0, describe(queued));
    const auto id = parse_id(queued);
    auto cancelled = w.cli({"cancel", std::to_string(id)});
    CHECK_MESSAGE(cancelled.exit_code == 0, describe(cancelled));
    CHECK_MESSAGE(cancelled.out == "cancelled job " + std::to_string(id) + "\n",
                  describe(cancelled));
    auto st = parse_json(w.cli({"status", std::to_string(id), "--json"}));
    CHECK(st["state"] == "cancelled");

    auto finished = w.cli({"submit", "-q", "cat-q", "--payload", "x", "--wait"});
    REQUIRE_MESSAGE(finished.exit_code == 0, describe(finished));
    auto last = parse_json(w.cli({"list", "-q", "cat-q", "--json"}));
    REQUIRE(last.size() == 1);
    auto again = w.cli({"cancel", std::to_string(last[0]["id"].get<std::uint64_t>())});
    CHECK_MESSAGE(again.exit_code == 121, describe(again));
    CHECK_MESSAGE(again.err.find("error: ") == 0, describe(again));
    CHECK_MESSAGE(again.out.empty(), describe(again));

    auto unknown = w.cli({"cancel", "987654321"});
    CHECK_MESSAGE(unknown.exit_code == 121, describe(unknown));
}

TEST_CASE("cli: run-now readies scheduled jobs; delete removes finished ones, --force live ones") {
    CliWorld w;
    auto submit_later = [&] {
        auto r = w.cli({"submit", "-q", "nobody-serves-this", "--delay", "1h", "--payload", "x"});
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
        return std::to_string(parse_id(r));
    };
    auto a = submit_later(), b = submit_later();
    auto state = [&](const std::string& id) {
        return parse_json(w.cli({"status", id, "--json"}))["state"].get<std::string>();
    };
    auto now = w.cli({"run-now", a, b});
    CHECK_MESSAGE(now.exit_code == 0, describe(now));
    CHECK(now.out == "job " + a + " is ready now\njob " + b + " is ready now\n");
    CHECK(state(a) == "ready");
    auto again = w.cli({"run-now", a});  // ready: refused
    CHECK_MESSAGE(again.exit_code == 121, describe(again));
    CHECK_MESSAGE(again.err.find("only scheduled or retrying") != std::string::npos,
                  describe(again));

    auto live = w.cli({"delete", a});
    CHECK_MESSAGE(live.exit_code == 121, describe(live));
    CHECK_MESSAGE(live.err.find("force") != std::string::npos, describe(live));
    CHECK(state(a) == "ready");
    auto forced = w.cli({"delete", "--force", a});
    CHECK_MESSAGE(forced.exit_code == 0, describe(forced));
    CHECK(forced.out == "deleted job " + a + "\n");
    CHECK(w.cli({"status", a}).exit_code == 121);

    auto finished = w.cli({"submit", "-q", "cat-q", "--payload", "x", "--wait"});
    REQUIRE_MESSAGE(finished.exit_code == 0, describe(finished));
    auto last = parse_json(w.cli({"list", "-q", "cat-q", "--json"}));
    REQUIRE(last.size() == 1);
    auto done = std::to_string(last[0]["id"].get<std::uint64_t>());
    // Several ids: the unknown one is reported, the others are deleted.
    auto several = w.cli({"delete", "987654321", done});
    CHECK_MESSAGE(several.exit_code == 121, describe(several));
    CHECK(several.out == "deleted job " + done + "\n");
    CHECK_MESSAGE(several.err.find("job 987654321") != std::string::npos, describe(several));
    CHECK(w.cli({"history", done}).exit_code == 121);
    CHECK(w.cli({"run-now"}).exit_code == 120);
    CHECK(w.cli({"delete", "x"}).exit_code == 120);
    CHECK(state(b) == "ready");
}

TEST_CASE("cli: pause --for resumes the queue by itself; queues shows until when") {
    CliWorld w;
    for (const char* bad : {"0", "0s", "-1s", "soon"}) {
        auto r = w.cli({"pause", "cat-q", "--for", bad});
        CHECK_MESSAGE(r.exit_code == 120, describe(r));
    }
    auto long_pause = w.cli({"pause", "nobody-q", "--for", "1h"});
    CHECK_MESSAGE(long_pause.exit_code == 0, describe(long_pause));
    CHECK_MESSAGE(long_pause.out.find("queue nobody-q paused for 1h (until ") == 0,
                  describe(long_pause));
    auto table = w.cli({"queues"});
    CHECK_MESSAGE(table.out.find("until ") != std::string::npos, describe(table));
    auto queues = parse_json(w.cli({"queues", "--json"}));
    bool shown = false;
    for (const auto& q : queues)
        if (q["name"] == "nobody-q")
            shown = q["paused"] == true && time_ms(q["paused_until"]).has_value();
    CHECK(shown);

    // A short one ends by itself: the job submitted meanwhile runs once it is over.
    auto start = std::chrono::steady_clock::now();
    auto paused = w.cli({"pause", "cat-q", "--for", "1s"});
    REQUIRE_MESSAGE(paused.exit_code == 0, describe(paused));
    auto ran = w.cli({"submit", "-q", "cat-q", "--payload", "after", "--wait"});
    CHECK_MESSAGE(ran.exit_code == 0, describe(ran));
    CHECK(ran.out == "after");
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(900));
    queues = parse_json(w.cli({"queues", "--json"}));
    for (const auto& q : queues)
        if (q["name"] == "cat-q") {
            CHECK(q["paused"] == false);
            CHECK(q["paused_until"].is_null());
        }
}

TEST_CASE("cli: history of a finished job goes (new) → ready → running → succeeded") {
    CliWorld w;
    auto sub = w.cli({"submit", "-q", "cat-q", "--payload", "h"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    const auto id = std::to_string(parse_id(sub));
    REQUIRE(w.cli({"wait", id, "--timeout", "10s"}).exit_code == 0);

    auto h = w.cli({"history", id, "--json"});
    REQUIRE_MESSAGE(h.exit_code == 0, describe(h));
    json events = parse_json(h);
    REQUIRE_MESSAGE(events.is_array(), describe(h));
    std::vector<std::string> to;
    for (const auto& e : events) {
        for (const char* key : {"at", "from", "to", "attempt", "worker", "reason"})
            CHECK_MESSAGE(e.contains(key), "missing " << key << " in " << h.out);
        CHECK_MESSAGE(time_ms(e["at"]).has_value(), h.out);
        to.push_back(e["to"].get<std::string>());
    }
    const std::vector<std::string> expected = {"ready", "running", "succeeded"};
    CHECK_MESSAGE(to == expected, h.out);
    REQUIRE(events.size() == 3);
    CHECK(events[0]["from"].is_null());
    CHECK(events[1]["from"] == "ready");
    CHECK(events[1]["attempt"] == 1);
    CHECK(events[1]["worker"] == "cli-w");
    CHECK(events[2]["from"] == "running");

    auto text = w.cli({"history", id});
    REQUIRE_MESSAGE(text.exit_code == 0, describe(text));
    CHECK_MESSAGE(text.out.find("(new) → ready") != std::string::npos, describe(text));
    CHECK_MESSAGE(text.out.find("ready → running") != std::string::npos, describe(text));
    CHECK_MESSAGE(text.out.find("running → succeeded") != std::string::npos, describe(text));
    CHECK(std::count(text.out.begin(), text.out.end(), '\n') == 3);

    CHECK(w.cli({"history", "987654321"}).exit_code == 121);
}

TEST_CASE("cli: submit --at, --priority, --timeout and --unique reach the job") {
    CliWorld w;
    // One hour from now, written with a +02:00 offset and a fraction.
    const std::time_t in_an_hour = std::time(nullptr) + 3600;
    const std::time_t local = in_an_hour + 2 * 3600;
    std::tm tm{};
    gmtime_r(&local, &tm);
    char at[64];
    std::strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S.250+02:00", &tm);

    auto sub = w.cli({"submit", "-q", "cat-q", "--payload", "x", "--at", at, "--priority", "7",
                      "--timeout", "30s", "--backoff", "500ms,30s", "--unique", "nightly"});
    REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
    const auto id = parse_id(sub);

    auto st = w.cli({"status", std::to_string(id), "--json"});
    REQUIRE_MESSAGE(st.exit_code == 0, describe(st));
    json j = parse_json(st);
    CHECK(j["state"] == "scheduled");
    CHECK(time_ms(j["run_at"]) == static_cast<std::int64_t>(in_an_hour) * 1000 + 250);
    CHECK(j["priority"] == 7);
    CHECK(j["timeout_ms"] == 30000);
    CHECK(j["unique"] == "nightly");
    CHECK(j.contains("progress"));
    CHECK(j.contains("progress_message"));

    auto text = w.cli({"status", std::to_string(id)});
    REQUIRE_MESSAGE(text.exit_code == 0, describe(text));
    CHECK_MESSAGE(text.out.find("runs at:") != std::string::npos, describe(text));
    CHECK_MESSAGE(text.out.find("priority:") != std::string::npos, describe(text));
    CHECK_MESSAGE(text.out.find("unique key:") != std::string::npos, describe(text));

    // The same unique key while the first job is unfinished: the existing id and a note.
    auto dup = w.cli({"submit", "-q", "cat-q", "--payload", "y", "--unique", "nightly"});
    CHECK_MESSAGE(dup.exit_code == 0, describe(dup));
    CHECK_MESSAGE(parse_id(dup) == id, describe(dup));
    CHECK_MESSAGE(dup.err.find("unique key nightly") != std::string::npos, describe(dup));

    auto cancelled = w.cli({"cancel", std::to_string(id)});
    CHECK_MESSAGE(cancelled.exit_code == 0, describe(cancelled));
}

TEST_CASE("cli: retry brings a dead job back; purge deletes finished jobs") {
    CliWorld w;
    auto failed = w.cli({"submit", "--max-attempts", "1", "--wait", "--", "sh", "-c", "exit 7"});
    REQUIRE_MESSAGE(failed.exit_code == 7, describe(failed));
    auto dead = parse_json(w.cli({"list", "--state", "dead", "--json"}));
    REQUIRE(dead.size() == 1);
    const auto id = std::to_string(dead[0]["id"].get<std::uint64_t>());

    auto retried = w.cli({"retry", id});
    CHECK_MESSAGE(retried.exit_code == 0, describe(retried));
    CHECK_MESSAGE(retried.out == "job " + id + " is ready again\n", describe(retried));
    auto again = w.cli({"wait", id, "--timeout", "10s"});
    CHECK_MESSAGE(again.exit_code == 7, describe(again));

    auto all = w.cli({"retry", "--dead", "-q", "default"});
    CHECK_MESSAGE(all.exit_code == 0, describe(all));
    CHECK_MESSAGE(all.out == "1 dead job is ready again\n", describe(all));
    CHECK(w.cli({"wait", id, "--timeout", "10s"}).exit_code == 7);

    auto none = w.cli({"retry", "--dead", "-q", "cat-q"});
    CHECK_MESSAGE(none.out == "0 dead jobs are ready again\n", describe(none));

    auto purged = w.cli({"purge", "--state", "dead"});
    CHECK_MESSAGE(purged.exit_code == 0, describe(purged));
    CHECK_MESSAGE(purged.out == "purged 1 job\n", describe(purged));
    CHECK(w.cli({"status", id}).exit_code == 121);
    auto nothing = w.cli({"purge", "--state", "succeeded", "--older-than", "1h"});
    CHECK_MESSAGE(nothing.out == "purged 0 jobs\n", describe(nothing));
}

TEST_CASE(
    "a malformed endpoint is a usage error (CLI 120, daemons 2) naming the value, in every "
    "program") {
    TempDir dir;
    auto cli = run_cli({"--broker", "tcp://127.0.0.1:", "ping"}, {}, 10s);
    CHECK(cli.exit_code == 120);
    CHECK_MESSAGE(cli.err.find("bad --broker 'tcp://127.0.0.1:': tcp:// needs a port after the "
                               "':'") != std::string::npos,
                  describe(cli));
    Process worker("worker", {worker_bin(), "--broker", "tcp://127.0.0.1:", "--queue", "default"},
                   dir.path());
    CHECK(worker.wait_exit(10s) == 2);  // it aborted (134) before
    CHECK_MESSAGE(worker.err().find("bad --broker 'tcp://127.0.0.1:'") != std::string::npos,
                  worker.logs());
    Process broker(
        "broker",
        {broker_bin(), "--listen", "tcp://127.0.0.1:99999", "--db", (dir / "x.db").string()},
        dir.path());
    CHECK(broker.wait_exit(10s) == 2);
    CHECK_MESSAGE(broker.err().find("the port 99999 is not 1-65535") != std::string::npos,
                  broker.logs());
    CHECK_FALSE(std::filesystem::exists(dir / "x.db"));  // nothing was started or created
}

namespace {

// Runs `command` through /bin/sh; its exit status and stdout (for programs other than errand).
std::pair<int, std::string> shell(const std::string& command) {
    std::FILE* p = ::popen(command.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;)
        out.append(buf, n);
    const int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string version() {
    return ERRAND_VERSION;
}

}  // namespace

TEST_CASE("cli: --version of errand, errand-broker and errand-worker prints the version, exit 0") {
    auto r = run_cli({"--version"}, {}, 10s);
    CHECK_MESSAGE(r.exit_code == 0, describe(r));
    CHECK(r.out == "errand " + version() + "\n");
    for (const auto& [bin, name] :
         {std::pair{broker_bin(), "errand-broker"}, std::pair{worker_bin(), "errand-worker"}}) {
        auto [code, out] = shell("'" + bin + "' --version");
        CHECK(code == 0);
        CHECK(out == std::string(name) + " " + version() + "\n");
    }
}

TEST_CASE("cli: a mistyped subcommand exits 120 and names the one meant") {
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto r = run_cli({"--broker", ep, "stauts", "3"}, {}, 10s);
    CHECK_MESSAGE(r.exit_code == 120, describe(r));
    CHECK(r.err ==
          "error: 'stauts' is not an errand command; did you mean 'status'? (see --help)\n");
    auto far = run_cli({"--broker", ep, "frobnicate"}, {}, 10s);
    CHECK_MESSAGE(far.exit_code == 120, describe(far));
    CHECK(far.err == "error: 'frobnicate' is not an errand command (see --help)\n");
    auto sub = run_cli({"--broker", ep, "sumbit", "--payload", "x"}, {}, 10s);
    CHECK_MESSAGE(sub.exit_code == 120, describe(sub));
    CHECK(sub.err.find("did you mean 'submit'?") != std::string::npos);
}

TEST_CASE("cli: bash completion offers subcommands and each one's options from --help") {
    const char* dir = std::getenv("ERRAND_COMPLETIONS_DIR");
    REQUIRE_MESSAGE(dir, "ERRAND_COMPLETIONS_DIR is not set");
    auto complete = [&](const std::string& words) {
        // COMP_WORDS as bash fills them for the line typed so far; the last word is completed.
        auto [code, out] =
            shell("bash -c 'source \"" + std::string(dir) + "/errand.bash\"; COMP_WORDS=(" + words +
                  "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _errand; "
                  "printf \"%s\\n\" \"${COMPREPLY[@]}\" | sort'");
        CHECK(code == 0);
        return out;
    };
    const std::string cli = "\"" + cli_bin() + "\"";
    CHECK(complete(cli + " sta") == "stats\nstatus\n");
    CHECK(complete(cli + " submit --wai") == "--wait\n--wait-timeout\n");
    CHECK(complete(cli + " --bro") == "--broker\n");
    CHECK(complete(cli + " list --state d") == "dead\n");
    CHECK(complete("\"" + worker_bin() + "\" --drain") == "--drain-timeout\n");
}

TEST_CASE("cli: ERRAND_REQUEST_TIMEOUT sets --request-timeout; a bad value exits 120") {
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
    const std::string cli = "'" + cli_bin() + "' --broker " + ep;
    auto [bad, bad_out] = shell("ERRAND_REQUEST_TIMEOUT=soon " + cli + " ping 2>&1");
    CHECK(bad == 120);
    CHECK_MESSAGE(bad_out.find("'soon' is not a duration") != std::string::npos, bad_out);
    // Nothing listens there: the ping gives up after the variable's 300ms, not the default 5s.
    const auto start = std::chrono::steady_clock::now();
    auto [code, out] = shell("ERRAND_REQUEST_TIMEOUT=300ms " + cli + " ping 2>&1");
    CHECK(code == 122);
    CHECK_MESSAGE(out.find("timed out after 300ms") != std::string::npos, out);
    CHECK(std::chrono::steady_clock::now() - start < 4s);
}

TEST_CASE(
    "cli: status, wait and cancel take several ids; a refused one is reported, the rest run") {
    CliWorld w;
    std::vector<std::string> ids;
    for (const char* payload : {"a", "b", "c"}) {
        auto sub = w.cli({"submit", "-q", "cat-q", "--payload", payload});
        REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
        ids.push_back(std::to_string(parse_id(sub)));
    }
    auto waited = w.cli({"wait", ids[0], ids[1], ids[2], "--timeout", "10s"});
    CHECK_MESSAGE(waited.exit_code == 0, describe(waited));
    CHECK(waited.out == "abc");  // each result's bytes, in the order given

    auto st = w.cli({"status", ids[0], "987654321", ids[2], "--json"});
    CHECK_MESSAGE(st.exit_code == 121, describe(st));
    std::vector<std::string> lines;
    for (std::size_t at = 0, nl; (nl = st.out.find('\n', at)) != std::string::npos; at = nl + 1)
        lines.push_back(st.out.substr(at, nl - at));
    REQUIRE_MESSAGE(lines.size() == 2, describe(st));
    CHECK(json::parse(lines[0])["id"] == std::stoull(ids[0]));
    CHECK(json::parse(lines[1])["id"] == std::stoull(ids[2]));
    CHECK_MESSAGE(st.err.starts_with("error: job 987654321: "), describe(st));

    std::vector<std::string> later;
    for (int i = 0; i < 2; ++i) {
        auto sub = w.cli({"submit", "-q", "cat-q", "--payload", "x", "--delay", "1h30m"});
        REQUIRE_MESSAGE(sub.exit_code == 0, describe(sub));
        later.push_back(std::to_string(parse_id(sub)));
    }
    auto cancelled = w.cli({"cancel", later[0], later[1]});
    CHECK_MESSAGE(cancelled.exit_code == 0, describe(cancelled));
    CHECK(cancelled.out == "cancelled job " + later[0] + "\ncancelled job " + later[1] + "\n");
    // Waiting on a finished-successfully job and a cancelled one: the first failure's code.
    auto mixed = w.cli({"wait", ids[0], later[0], "--timeout", "5s"});
    CHECK_MESSAGE(mixed.exit_code == 1, describe(mixed));
}

namespace {

// The jobs of `queue` (no worker serves it, so they stay ready), by id.
std::map<std::uint64_t, json> jobs_of(CliWorld& w, const std::string& queue) {
    auto list = w.cli({"list", "-q", queue, "--limit", "10000", "--json"});
    REQUIRE_MESSAGE(list.exit_code == 0, describe(list));
    std::map<std::uint64_t, json> out;
    for (const auto& j : parse_json(list))
        out[j["id"].get<std::uint64_t>()] = j;
    return out;
}

std::vector<std::uint64_t> id_lines(const CliResult& r) {
    std::vector<std::uint64_t> ids;
    for (std::size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos; at = nl + 1)
        ids.push_back(std::stoull(r.out.substr(at, nl - at)));
    return ids;
}

}  // namespace

TEST_CASE("cli: submit --jsonl submits every line in batches and prints the ids in input order") {
    CliWorld w;
    // 2500 jobs to a queue nobody serves; every 7th sets its own priority, the others take
    // --priority; one has a command line and options in both spellings (ms and "1h30m").
    std::string input;
    for (int i = 0; i < 2500; ++i) {
        json line = {{"payload", "job " + std::to_string(i)}, {"unique", "u-" + std::to_string(i)}};
        if (i % 7 == 0) line["priority"] = 9;
        if (i == 3) {
            line["argv"] = {"echo", "hi"};
            line["timeout_ms"] = 30000;
            line["delay_ms"] = "1h30m";
            line["max_attempts"] = 5;
        }
        input += line.dump() + (i == 10 ? "\r\n\n  \n" : "\n");  // CRLF and blank lines are fine
    }
    const auto file = w.dir / "jobs.jsonl";
    write_file(file, input);
    auto r = w.cli({"submit", "-q", "bulk", "--priority", "2", "--jsonl", file.string()});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto ids = id_lines(r);
    REQUIRE(ids.size() == 2500);
    // stderr is not a terminal: one summary line, no progress drawing.
    CHECK_MESSAGE(r.err.starts_with("submitted 2500 jobs in 3 batches in "), describe(r));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find('\r') == std::string::npos);

    auto jobs = jobs_of(w, "bulk");
    REQUIRE(jobs.size() == 2500);
    for (int i = 0; i < 2500; ++i) {
        const json& j = jobs.at(ids[i]);
        CHECK(j["unique"] == "u-" + std::to_string(i));
        CHECK(j["priority"] == (i % 7 == 0 ? 9 : 2));
        CHECK(j["payload_size"] == ("job " + std::to_string(i)).size());
    }
    const json& three = jobs.at(ids[3]);
    CHECK(three["argv"] == json::array({"echo", "hi"}));
    CHECK(three["timeout_ms"] == 30000);
    CHECK(three["max_attempts"] == 5);
    CHECK(three["state"] == "scheduled");

    // From stdin, smaller batches; the same unique keys are duplicates with the same ids.
    auto again = w.cli({"submit", "-q", "bulk", "--jsonl", "-", "--batch-size", "400"}, input);
    REQUIRE_MESSAGE(again.exit_code == 0, describe(again));
    CHECK(id_lines(again) == ids);
    CHECK_MESSAGE(again.err.starts_with("submitted 2500 jobs in 7 batches in "), describe(again));
    CHECK_MESSAGE(again.err.find("2500 already existed") != std::string::npos, describe(again));
    CHECK(jobs_of(w, "bulk").size() == 2500);
}

TEST_CASE("cli: a bad --jsonl line is named by line; its batch is not sent, earlier ones are") {
    CliWorld w;
    std::string input;
    for (int i = 1; i <= 5; ++i) {
        input += i == 4 ? R"({"queu":"q","payload":"4"})"
                          "\n"
                        : json({{"payload", std::to_string(i)}}).dump() + "\n";
    }
    const auto file = w.dir / "bad.jsonl";
    write_file(file, input);

    // A file is checked whole first: nothing is submitted.
    auto r = w.cli({"submit", "-q", "bad-q", "--jsonl", file.string()});
    CHECK_MESSAGE(r.exit_code == 120, describe(r));
    CHECK_MESSAGE(r.out.empty(), describe(r));
    CHECK_MESSAGE(r.err == "error: " + file.string() +
                               ":4: unknown key 'queu' (did you mean 'queue'?); nothing was "
                               "submitted\n",
                  describe(r));
    CHECK(jobs_of(w, "bad-q").empty());

    // From a pipe, with batches of 2: lines 1-2 are committed, the batch of lines 3-4 is not.
    auto piped = w.cli({"submit", "-q", "bad-q", "--jsonl", "-", "--batch-size", "2"}, input);
    CHECK_MESSAGE(piped.exit_code == 120, describe(piped));
    auto ids = id_lines(piped);
    CHECK(ids.size() == 2);
    CHECK_MESSAGE(piped.err.find("stdin:4: unknown key 'queu'") != std::string::npos,
                  describe(piped));
    CHECK_MESSAGE(piped.err.find("the 2 jobs before line 3 were submitted") != std::string::npos,
                  describe(piped));
    auto jobs = jobs_of(w, "bad-q");
    CHECK(jobs.size() == 2);
    for (auto id : ids)
        CHECK(jobs.count(id) == 1);

    // Each kind of bad value names its line and key.
    for (const auto& [line, why] : std::vector<std::pair<std::string, std::string>>{
             {"not json", "not valid JSON"},
             {"[1]", "a line must be a JSON object"},
             {R"({"queue":"bad queue"})", "invalid queue name 'bad queue'"},
             {R"({"priority":5000})", "'priority' must be an integer from -1000 to 1000"},
             {R"({"argv":"ls"})", "'argv' must be an array"},
             {R"({"timeout_ms":"soon"})", "'timeout_ms' must be integer milliseconds"},
             {R"({"run_at":"tomorrow"})", "'run_at' must be an RFC 3339 time"},
             {R"({"run_at":0,"delay_ms":5})", "give 'run_at' or 'delay_ms', not both"},
             {R"({"backoff_ms":"5s","backoff_cap_ms":"1s"})", "'backoff_cap_ms' must not be less"},
         }) {
        auto bad = w.cli({"submit", "-q", "bad-q", "--jsonl", "-"}, "{}\n" + line + "\n");
        CHECK_MESSAGE(bad.exit_code == 120, line << ": " << describe(bad));
        CHECK_MESSAGE(bad.err.find("stdin:2: " + why) != std::string::npos,
                      line << ": " << describe(bad));
    }
    CHECK(jobs_of(w, "bad-q").size() == 2);

    // --jsonl goes with neither a payload nor --wait nor a command line.
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"submit", "--jsonl", "-", "--payload", "x"},
             {"submit", "--jsonl", "-", "--wait"},
             {"submit", "--jsonl", "-", "--", "echo"},
             {"submit", "--batch-size", "5", "--payload", "x"},
             {"submit", "--jsonl", "-", "--batch-size", "1001"},
             {"submit", "--jsonl", (w.dir / "missing.jsonl").string()},
         }) {
        auto bad = w.cli(args);
        CHECK_MESSAGE(bad.exit_code == 120, args.back() << ": " << describe(bad));
    }
}

TEST_CASE("cli: on a terminal, submit --jsonl and wait ID... draw a progress line") {
    CliWorld w;
    std::string input;
    for (int i = 0; i < 30; ++i)
        input += json({{"payload", std::to_string(i)}}).dump() + "\n";
    const auto file = w.dir / "jobs.jsonl";
    write_file(file, input);
    const std::string cli = "'" + cli_bin() + "' --broker " + w.broker.endpoint();
    // script(1) gives errand a pseudo-terminal; its output is what the terminal showed.
    auto [code, shown] =
        shell("timeout 60 script -qec \"" + cli + " submit -q cat-q --jsonl " + file.string() +
              " --batch-size 10 > " + (w.dir / "ids").string() + "\" /dev/null");
    CHECK_MESSAGE(code == 0, shown);
    CHECK_MESSAGE(
        shown.find("[########################] 30/30 jobs submitted") != std::string::npos, shown);
    CHECK_MESSAGE(shown.find("submitted 30 jobs in 3 batches") != std::string::npos, shown);
    auto ids = read_lines(w.dir / "ids");
    REQUIRE(ids.size() == 30);

    std::string wait_cmd = cli + " wait --timeout 30s";
    for (const auto& id : ids)
        wait_cmd += " " + id;
    auto [wcode, wshown] =
        shell("timeout 60 script -qec \"" + wait_cmd + " > /dev/null\" /dev/null");
    CHECK_MESSAGE(wcode == 0, wshown);
    CHECK_MESSAGE(wshown.find("] 0/30 jobs finished") != std::string::npos, wshown);
    CHECK_MESSAGE(wshown.find("30/30 jobs finished") != std::string::npos, wshown);
}

TEST_CASE("cli: a job's own exit code never looks like errand's refused/unreachable/usage codes") {
    CliWorld w;
    auto code_of = [&](int job_exit) {
        return w
            .cli({"submit", "--max-attempts", "1", "--wait", "--", "sh", "-c",
                  "exit " + std::to_string(job_exit)})
            .exit_code;
    };
    // Codes outside errand's 120-125 pass through, including the shell's 126/127 and 128+S.
    for (int c : {2, 3, 4, 64, 119, 126, 127, 130, 255})
        CHECK_MESSAGE(code_of(c) == c, "job exit " << c);
    // errand's own codes are reported as 1; the real code is in the message and in status.
    for (int c : {120, 121, 122, 124, 125})
        CHECK_MESSAGE(code_of(c) == 1, "job exit " << c);
    auto r = w.cli({"submit", "--max-attempts", "1", "--wait", "--", "sh", "-c", "exit 122"});
    CHECK_MESSAGE(r.err.find("exit code 122") != std::string::npos, describe(r));

    // The scheme is printed once, by errand --help, not by each subcommand's.
    auto help = w.cli({"--help"});
    CHECK(help.exit_code == 0);
    CHECK_MESSAGE(help.out.find("Exit codes (the same for every subcommand):") != std::string::npos,
                  help.out);
    CHECK(help.out.find("121      the broker refused") != std::string::npos);
    auto sub_help = w.cli({"wait", "--help"});
    CHECK(sub_help.out.find("Exit codes") == std::string::npos);
}

TEST_CASE("cli: a --jsonl batch the broker refuses names its lines; earlier batches stay") {
    TempDir dir;
    Broker broker(dir, {"--max-batch", "2"});
    std::string input;
    for (int i = 0; i < 5; ++i)
        input += json({{"queue", "refused-q"}, {"payload", std::to_string(i)}}).dump() + "\n";
    auto cli = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"--broker", broker.endpoint()});
        return run_cli(args, input);
    };
    // Batches of 3 are over the broker's --max-batch 2: the first is refused whole.
    auto r = cli({"submit", "--jsonl", "-", "--batch-size", "3"});
    CHECK_MESSAGE(r.exit_code == 121, describe(r));
    CHECK_MESSAGE(r.out.empty(), describe(r));
    CHECK_MESSAGE(
        r.err.find("(the batch of lines 1-3); nothing was submitted") != std::string::npos,
        describe(r));
    // Batches of 2 fit: all five go, in three batches.
    auto ok = cli({"submit", "--jsonl", "-", "--batch-size", "2"});
    CHECK_MESSAGE(ok.exit_code == 0, describe(ok));
    CHECK(id_lines(ok).size() == 5);
    CHECK_MESSAGE(ok.err.starts_with("submitted 5 jobs in 3 batches"), describe(ok));
}

TEST_CASE("cli: submit --jsonl lines carry after and after_any, as --after / --after-any do") {
    CliWorld w;
    auto p1 = w.cli({"submit", "-q", "parents", "--payload", "1"});
    auto p2 = w.cli({"submit", "-q", "parents", "--payload", "2"});
    REQUIRE_MESSAGE(p1.exit_code == 0, describe(p1));
    REQUIRE_MESSAGE(p2.exit_code == 0, describe(p2));
    const auto a = std::stoull(p1.out), b = std::stoull(p2.out);
    std::string input = json({{"payload", "both"}, {"after", {a, b}}}).dump() + "\n" +
                        json({{"payload", "any"}, {"after", {a}}, {"after_any", true}}).dump() +
                        "\n" + json({{"payload", "free"}}).dump() + "\n";
    auto r = w.cli({"submit", "-q", "kids", "--jsonl", "-"}, input);
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
    auto ids = id_lines(r);
    REQUIRE(ids.size() == 3);
    auto jobs = jobs_of(w, "kids");
    CHECK(jobs.at(ids[0])["state"] == "blocked");
    CHECK(jobs.at(ids[1])["state"] == "blocked");
    CHECK(jobs.at(ids[2])["state"] == "ready");
    // Parent a cancelled: the child of both is cancelled, the after_any one is released.
    auto cancel = w.cli({"cancel", std::to_string(a)});
    REQUIRE_MESSAGE(cancel.exit_code == 0, describe(cancel));
    bool settled = wait_until(
        [&] {
            auto now = jobs_of(w, "kids");
            return now.at(ids[0])["state"] == "cancelled" && now.at(ids[1])["state"] == "ready";
        },
        10s, 20ms);
    CHECK_MESSAGE(settled, jobs_of(w, "kids").at(ids[1]).dump());

    for (const auto& [line, why] : std::vector<std::pair<std::string, std::string>>{
             {R"({"after":"1"})", "'after' must be an array"},
             {R"({"after":[0]})", "'after' must hold job ids"},
             {R"({"after":[-3]})", "'after' must hold job ids"},
             {R"({"after":[1,1]})", "'after' names job 1 twice"},
             {R"({"after_any":true})", "'after_any' needs 'after'"},
             {R"({"after":[1],"after_any":"yes"})", "'after_any' must be true or false"},
         }) {
        auto bad = w.cli({"submit", "-q", "bad-after", "--jsonl", "-"}, "{}\n" + line + "\n");
        CHECK_MESSAGE(bad.exit_code == 120, line << ": " << describe(bad));
        CHECK_MESSAGE(bad.err.find("stdin:2: " + why) != std::string::npos,
                      line << ": " << describe(bad));
    }
    CHECK(jobs_of(w, "bad-after").empty());
}
