// Configuration of the daemons, for real: flags, ERRAND_* environment variables and a TOML file
// (--config), with the precedence flag > environment > file > default, shown by --dump-config,
// whose output reads back unchanged; and a broker that really serves what its file says.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;

namespace {

struct Run {
    int code = -1;
    std::string out;
    std::string err;
};

// Runs a daemon to completion (it must exit by itself: --dump-config, bad flags).
Run run(const TempDir& dir, const std::string& name, std::vector<std::string> argv,
        std::vector<std::pair<std::string, std::string>> env = {}) {
    Process p(name, std::move(argv), dir.path(), std::move(env));
    auto code = p.wait_exit(20s);
    REQUIRE_MESSAGE(code, name << " did not exit\n" << p.logs());
    return {*code, p.out(), p.err()};
}

// The value of `key` in a dump ("heartbeat = '3s'" -> "'3s'"), or "" when absent.
std::string value_of(const std::string& dump, const std::string& key) {
    auto at = dump.find("\n" + key + " = ");
    if (at == std::string::npos) return "";
    at += key.size() + 4;
    return dump.substr(at, dump.find('\n', at) - at);
}

}  // namespace

TEST_CASE("config: broker --dump-config shows the defaults as TOML") {
    TempDir dir;
    auto r = run(dir, "dump", {broker_bin(), "--dump-config"});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "heartbeat") == "'1s'");
    CHECK(value_of(r.out, "listen") == "'tcp://127.0.0.1:7744'");
    CHECK(value_of(r.out, "max-batch") == "1000");
    CHECK(value_of(r.out, "log-format") == "'text'");
    CHECK(r.out.find("# log-file =") != std::string::npos);
    CHECK(r.out.find("dump-config") == std::string::npos);
}

TEST_CASE("config: precedence is flag > environment > file > default") {
    TempDir dir;
    const auto file = dir / "broker.toml";
    write_file(file,
               "heartbeat = '3s'\nworker-timeout = '20s'\nretry-delay = '7s'\nmax-batch = 50\n");
    const std::string cfg = file.string();

    // file over default
    auto r = run(dir, "file", {broker_bin(), "--config", cfg, "--dump-config"});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "heartbeat") == "'3s'");
    CHECK(value_of(r.out, "retry-delay") == "'7s'");
    CHECK(value_of(r.out, "max-batch") == "50");
    CHECK(value_of(r.out, "retry-cap") == "'10m'");

    // environment over file (CLI11 alone would let the file win)
    r = run(dir, "env", {broker_bin(), "--config", cfg, "--dump-config"},
            {{"ERRAND_HEARTBEAT", "2s"}, {"ERRAND_MAX_BATCH", "60"}});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "heartbeat") == "'2s'");
    CHECK(value_of(r.out, "max-batch") == "60");
    CHECK(value_of(r.out, "retry-delay") == "'7s'");

    // flag over environment, in both spellings
    r = run(dir, "flag",
            {broker_bin(), "--config", cfg, "--heartbeat", "4s", "--max-batch=70", "--dump-config"},
            {{"ERRAND_HEARTBEAT", "2s"}, {"ERRAND_MAX_BATCH", "60"}});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "heartbeat") == "'4s'");
    CHECK(value_of(r.out, "max-batch") == "70");

    // the config file itself can come from the environment
    r = run(dir, "env-config", {broker_bin(), "--dump-config"}, {{"ERRAND_CONFIG", cfg}});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "retry-delay") == "'7s'");
}

TEST_CASE("config: the dump reads back to the same configuration (broker and worker)") {
    TempDir dir;
    auto first = run(dir, "dump1",
                     {broker_bin(), "--heartbeat", "250ms", "--worker-timeout", "2s", "--db",
                      (dir / "x.db").string(), "--synchronous", "normal", "--log-format", "json",
                      "--dump-config"});
    REQUIRE_MESSAGE(first.code == 0, first.err);
    write_file(dir / "round.toml", first.out);
    auto second = run(dir, "dump2",
                      {broker_bin(), "--config", (dir / "round.toml").string(), "--dump-config"});
    REQUIRE_MESSAGE(second.code == 0, second.err);
    CHECK(second.out == first.out);
    CHECK(value_of(second.out, "synchronous") == "'normal'");

    // The worker: repeated --queue (an array, commands with quotes and '=') and a flag.
    auto w1 =
        run(dir, "wdump1",
            {worker_bin(), "--queue", "emails:3=send-mail --to \"ops\"", "--queue", "reports",
             "--allow-commands", "--concurrency", "4", "--drain-timeout", "45s", "--dump-config"});
    REQUIRE_MESSAGE(w1.code == 0, w1.err);
    CHECK(value_of(w1.out, "queue") == "[ 'emails:3=send-mail --to \"ops\"', 'reports' ]");
    CHECK(value_of(w1.out, "allow-commands") == "true");
    CHECK(value_of(w1.out, "drain-timeout") == "'45s'");
    write_file(dir / "worker.toml", w1.out);
    auto w2 = run(dir, "wdump2",
                  {worker_bin(), "--config", (dir / "worker.toml").string(), "--dump-config"});
    REQUIRE_MESSAGE(w2.code == 0, w2.err);
    CHECK(w2.out == w1.out);
}

TEST_CASE("config: bad values from any source are usage errors (exit 2) that name the setting") {
    TempDir dir;
    write_file(dir / "bad.toml", "heartbeat = 'soon'\n");
    auto r = run(dir, "badfile",
                 {broker_bin(), "--config", (dir / "bad.toml").string(), "--dump-config"});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("heartbeat") != std::string::npos, r.err);

    r = run(dir, "badenv", {broker_bin(), "--dump-config"}, {{"ERRAND_SYNCHRONOUS", "sometimes"}});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("synchronous") != std::string::npos, r.err);

    r = run(dir, "missing",
            {broker_bin(), "--config", (dir / "nope.toml").string(), "--dump-config"});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("nope.toml") != std::string::npos, r.err);

    write_file(dir / "unknown.toml", "hartbeat = '1s'\n");
    r = run(dir, "unknown",
            {broker_bin(), "--config", (dir / "unknown.toml").string(), "--dump-config"});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("hartbeat") != std::string::npos, r.err);

    // 0 would refuse every wait: out of range, like --max-waits 0.
    r = run(dir, "nowaits", {broker_bin(), "--max-waits-total", "0", "--dump-config"});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("max-waits-total") != std::string::npos, r.err);

    // 0 would delete every failure as it happens; not a duration at all is refused too.
    for (const char* bad : {"0", "0s", "soon"}) {
        r = run(dir, "nodead", {broker_bin(), "--dead-retention", bad, "--dump-config"});
        CHECK(r.code == 2);
        CHECK_MESSAGE(r.err.find("dead-retention") != std::string::npos, r.err);
    }
    for (const char* bad : {"0", "0ms"}) {
        r = run(dir, "noretention", {broker_bin(), "--retention", bad, "--dump-config"});
        CHECK(r.code == 2);
        CHECK_MESSAGE(r.err.find("--retention must be more than 0") != std::string::npos, r.err);
    }
    r = run(dir, "dead30", {broker_bin(), "--dead-retention", "30d", "--dump-config"});
    CHECK_MESSAGE(r.code == 0, r.err);
    CHECK_MESSAGE(r.out.find("dead-retention = ") != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find("30d") != std::string::npos, r.out);

    r = run(dir, "wbad", {worker_bin(), "--queue", "q", "--dump-config"},
            {{"ERRAND_DRAIN_TIMEOUT", "forever"}});
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("drain-timeout") != std::string::npos, r.err);
    // --prefetch: auto (the default) or a number up to 10000.
    r = run(dir, "wprefetch", {worker_bin(), "--queue", "q", "--dump-config"});
    CHECK_MESSAGE(value_of(r.out, "prefetch") == "'auto'", r.out);
    for (const char* bad : {"x", "-1", "10001", "4k", ""}) {
        r = run(dir, "wbadprefetch",
                {worker_bin(), "--queue", "q", "--prefetch", bad, "--dump-config"});
        CHECK(r.code == 2);
        CHECK_MESSAGE(
            r.err.find("--prefetch: must be auto or a number from 0 to 10000") != std::string::npos,
            r.err);
    }
}

TEST_CASE("config: a broker and a worker started from files and the environment serve for real") {
    TempDir dir;
    const int port = free_port();
    const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(port);
    write_file(dir / "broker.toml",
               "listen = '" + endpoint + "'\ndb = '" + (dir / "from-file.db").string() + "'\n");
    Process broker("broker", {broker_bin(), "--config", (dir / "broker.toml").string()},
                   dir.path());
    write_file(dir / "worker.toml", "queue = ['cfg=echo configured']\nname = 'from-file'\n");
    Process worker("worker", {worker_bin(), "--config", (dir / "worker.toml").string()}, dir.path(),
                   {{"ERRAND_BROKER", endpoint}});

    errand::ClientOptions opt;
    opt.endpoint = endpoint;
    opt.timeout = 10s;
    errand::Client client(opt);
    auto id = client.submit(job_spec("cfg")).id;
    auto job = client.wait(id, 15s);
    REQUIRE_MESSAGE(job, broker.logs() << worker.logs());
    CHECK(job->result == std::optional<std::string>("configured\n"));
    CHECK(job->worker == std::optional<std::string>("from-file"));
    CHECK(std::filesystem::exists(dir / "from-file.db"));
}

TEST_CASE("config: the example configs in examples/ are valid") {
    const char* examples = std::getenv("ERRAND_EXAMPLES_DIR");
    REQUIRE_MESSAGE(examples, "ERRAND_EXAMPLES_DIR is not set");
    TempDir dir;
    const std::filesystem::path ex(examples);
    auto b = run(dir, "ex-broker",
                 {broker_bin(), "--config", (ex / "broker.toml").string(), "--dump-config"});
    CHECK_MESSAGE(b.code == 0, b.err);
    CHECK(value_of(b.out, "db") == "'errand.db'");
    auto w = run(dir, "ex-worker",
                 {worker_bin(), "--config", (ex / "worker.toml").string(), "--dump-config"});
    CHECK_MESSAGE(w.code == 0, w.err);
    CHECK(value_of(w.out, "drain-timeout") == "'30s'");
    CHECK(value_of(w.out, "concurrency") == "4");
}

TEST_CASE("config: a config file's errors name the file, the line and the key") {
    TempDir dir;
    auto broker_with = [&](const std::string& name, const std::string& text) {
        const auto file = dir / name;
        write_file(file, text);
        auto r = run(dir, name, {broker_bin(), "--config", file.string(), "--dump-config"});
        CHECK_MESSAGE(r.code == 2, name << ": " << r.err);
        return std::make_pair(file.string(), r.err);
    };
    // Two unknown keys: the first in the file is the one reported (toml++ sorts its keys).
    auto [typo, typo_err] =
        broker_with("broker.toml",
                    "# comment\nheartbeat = '1s'\nworker-timout = '5s'\nmax-batch = 10\naaa = 1\n");
    CHECK_MESSAGE(typo_err.find(typo + ":3: unknown key 'worker-timout' (did you mean "
                                       "'worker-timeout'?)") != std::string::npos,
                  typo_err);

    auto [bad, bad_err] = broker_with("value.toml", "max-batch = 10\nheartbeat = 'soon'\n");
    CHECK_MESSAGE(bad_err.find(bad + ":2: 'heartbeat': ") != std::string::npos, bad_err);

    auto [syntax, syntax_err] = broker_with("syntax.toml", "max-batch = 10\nheartbeat = '1s\n");
    CHECK_MESSAGE(syntax_err.find(syntax + ":2: ") != std::string::npos, syntax_err);

    auto [table, table_err] =
        broker_with("table.toml", "max-batch = 10\n[broker]\nheartbeat = '1s'\n");
    const bool names_table =
        table_err.find(table + ":2: 'broker' is a table") != std::string::npos ||
        table_err.find(table + ":3: 'broker' is a table") != std::string::npos;
    CHECK_MESSAGE(names_table, table_err);

    auto [list, list_err] = broker_with("list.toml", "heartbeat = ['1s', '2s']\n");
    CHECK_MESSAGE(
        list_err.find(list + ":1: 'heartbeat' takes one value, not an array") != std::string::npos,
        list_err);

    auto [date, date_err] = broker_with("date.toml", "\n\nretention = 1979-05-27\n");
    CHECK_MESSAGE(
        date_err.find(date + ":3: 'retention' must be a string, a number or true/false") !=
            std::string::npos,
        date_err);

    // The worker's --config too, and --config given through the environment.
    write_file(dir / "worker.toml", "queue = ['q']\nconcurency = 4\n");
    auto w = run(dir, "wtypo", {worker_bin(), "--dump-config"},
                 {{"ERRAND_CONFIG", (dir / "worker.toml").string()}});
    CHECK(w.code == 2);
    CHECK_MESSAGE(w.err.find((dir / "worker.toml").string() +
                             ":2: unknown key 'concurency' (did you mean 'concurrency'?)") !=
                      std::string::npos,
                  w.err);
}

TEST_CASE("config: TOML's own forms are read: numbers, booleans, arrays over lines, comments") {
    TempDir dir;
    write_file(dir / "w.toml",
               "queue = [\n  'a',  # the first\n  \"b=tr a-z A-Z\",\n]\nconcurrency = 3\n"
               "allow-commands = true\nprefetch = 0  # none\n\"drain-timeout\" = \"1m\"\n");
    auto r =
        run(dir, "wforms", {worker_bin(), "--config", (dir / "w.toml").string(), "--dump-config"});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(value_of(r.out, "concurrency") == "3");
    CHECK(value_of(r.out, "allow-commands") == "true");
    CHECK(value_of(r.out, "drain-timeout") == "'1m'");
    CHECK_MESSAGE(r.out.find("'a'") != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find("'b=tr a-z A-Z'") != std::string::npos, r.out);

    // A flag set false in the file stays false; on the command line it wins over the file.
    write_file(dir / "off.toml", "queue = ['a']\nallow-commands = false\n");
    auto off =
        run(dir, "woff", {worker_bin(), "--config", (dir / "off.toml").string(), "--dump-config"});
    REQUIRE_MESSAGE(off.code == 0, off.err);
    CHECK(value_of(off.out, "allow-commands") == "false");
    auto on = run(dir, "won",
                  {worker_bin(), "--config", (dir / "off.toml").string(), "--allow-commands",
                   "--dump-config"});
    REQUIRE_MESSAGE(on.code == 0, on.err);
    CHECK(value_of(on.out, "allow-commands") == "true");
}
