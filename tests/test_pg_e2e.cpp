// errand on PostgreSQL end to end: the real broker with --db postgresql://…, a real worker and
// the CLI, against a PostgreSQL server started for the test. A job runs and its result comes
// back; after the broker is SIGKILLed and restarted, committed jobs and their histories are all
// there and the unfinished one still runs.
#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "pg.hpp"
#include "pg_server.hpp"

using namespace errand;
using namespace errand::test;
using errand::pgserver::PgServer;

TEST_CASE("a broker on PostgreSQL runs jobs, and keeps them across a crash") {
    PgServer pg;
    TempDir dir;
    Broker broker(dir, {"--db", pg.uri()});
    WorkerDaemon worker(dir, broker.endpoint(), {"w1", {"upper=tr a-z A-Z"}, 2});
    const auto& ep = broker.endpoint();

    auto r = run_cli({"--broker", ep, "submit", "-q", "upper", "--payload", "hello", "--wait"});
    REQUIRE_MESSAGE(r.exit_code == 0, describe(r), broker.logs());
    CHECK(r.out == "HELLO");

    // A job for a queue nobody serves stays ready across the crash.
    auto later = run_cli({"--broker", ep, "submit", "-q", "nobody", "--payload", "x"});
    REQUIRE_MESSAGE(later.exit_code == 0, describe(later));
    auto later_id = later.out.substr(0, later.out.find('\n'));

    broker.restart();  // SIGKILL, then start on the same database
    auto first = run_cli({"--broker", ep, "status", "1", "--json"});
    REQUIRE_MESSAGE(first.exit_code == 0, describe(first), broker.logs());
    CHECK(first.out.find("\"succeeded\"") != std::string::npos);
    CHECK(first.out.find("\"worker\":\"w1\"") != std::string::npos);
    auto history = run_cli({"--broker", ep, "history", "1"});
    REQUIRE_MESSAGE(history.exit_code == 0, describe(history));
    CHECK(history.out.find("dispatched") != std::string::npos);
    CHECK(history.out.find("done") != std::string::npos);
    auto queued = run_cli({"--broker", ep, "status", later_id, "--json"});
    REQUIRE_MESSAGE(queued.exit_code == 0, describe(queued));
    CHECK(queued.out.find("\"ready\"") != std::string::npos);

    // After the restart the worker reconnects and new work still flows.
    auto again =
        run_cli({"--broker", ep, "submit", "-q", "upper", "--payload", "again", "--wait"}, {}, 30s);
    REQUIRE_MESSAGE(again.exit_code == 0, describe(again), broker.logs(), worker.logs());
    CHECK(again.out == "AGAIN");
}

namespace {

// errand-broker --db DB: how it exits and what it says.
struct Start {
    int exit_code;
    std::string err;
};
Start start_broker(const TempDir& dir, const std::string& db) {
    Process p(
        "broker",
        {broker_bin(), "--listen", "tcp://127.0.0.1:" + std::to_string(free_port()), "--db", db},
        dir.path());
    auto rc = p.wait_exit(30s);
    REQUIRE_MESSAGE(rc.has_value(), "the broker did not exit: ", p.logs());
    return {*rc, p.err()};
}

}  // namespace

TEST_CASE("a PostgreSQL database the broker cannot use: a clear error and exit 3") {
    PgServer pg;
    TempDir dir;

    // Nothing listens there (the server is gone, or not started yet).
    auto gone =
        start_broker(dir, "postgresql:///errand?host=" + dir.path().string() + "&user=errand");
    CHECK(gone.exit_code == 3);
    CHECK_MESSAGE(gone.err.find("cannot connect to PostgreSQL") != std::string::npos, gone.err);

    // A database or a user that does not exist; a URI libpq cannot parse; a password in the URI
    // is never printed.
    auto nodb = start_broker(dir, "postgresql:///nosuchdb?host=" + pg.socket_dir() +
                                      "&port=" + std::to_string(pg.port()) + "&user=errand");
    CHECK(nodb.exit_code == 3);
    CHECK_MESSAGE(nodb.err.find("\"nosuchdb\" does not exist") != std::string::npos, nodb.err);
    auto bad = start_broker(dir, "postgresql://errand:s3cret@[::1/errand");
    CHECK(bad.exit_code == 3);
    CHECK_MESSAGE(bad.err.find("cannot connect to PostgreSQL") != std::string::npos, bad.err);
    CHECK(bad.err.find("s3cret") == std::string::npos);

    // A database that belongs to another application.
    broker::pg::Connection(pg.conninfo()).exec("CREATE TABLE jobs (id int)");
    auto theirs = start_broker(dir, pg.uri());
    CHECK(theirs.exit_code == 3);
    CHECK_MESSAGE(theirs.err.find("this database is not errand's") != std::string::npos,
                  theirs.err);
    broker::pg::Connection(pg.conninfo()).exec("DROP TABLE jobs");

    // A schema newer than this errand.
    { Broker ok(dir, {"--db", pg.uri()}); }
    broker::pg::Connection(pg.conninfo()).exec("UPDATE errand_schema SET version = version + 1");
    auto newer = start_broker(dir, pg.uri());
    CHECK(newer.exit_code == 3);
    CHECK_MESSAGE(newer.err.find("newer than this errand") != std::string::npos, newer.err);
}

TEST_CASE("a broker on PostgreSQL serves /api/schedules and the schedule metrics; pause by POST") {
    PgServer pg;
    TempDir dir;
    const std::string token = "pg-http-token-0123456789";
    write_file(dir / "token", token + "\n");
    const int port = free_port();
    Broker broker(dir, {"--db", pg.uri(), "--http", "127.0.0.1:" + std::to_string(port),
                        "--http-token-file", (dir / "token").string()});
    errand::Client client(broker.client_options());
    Schedule s;
    s.name = "nightly";
    s.cron = "0 3 * * *";
    s.zone = "Europe/Berlin";
    s.job = job_spec("sq", "tick");
    client.schedule_add(s);

    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(10, 0);
    auto res = http.Get("/api/schedules");
    REQUIRE_MESSAGE(res, broker.logs());
    REQUIRE(res->status == 200);
    auto all = nlohmann::json::parse(res->body);
    REQUIRE(all["schedules"].size() == 1);
    CHECK(all["schedules"][0]["name"] == "nightly");
    CHECK(all["schedules"][0]["zone"] == "Europe/Berlin");
    CHECK(all["schedules"][0]["queue"] == "sq");
    CHECK(all["schedules"][0]["paused"] == false);

    res = http.Post("/api/schedules/nightly/pause", {{"X-Errand-Token", token}}, "",
                    "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(client.schedule("nightly").paused);

    res = http.Get("/metrics");
    REQUIRE(res);
    CHECK(res->body.find("errand_schedules{paused=\"true\"} 1\n") != std::string::npos);
    CHECK(res->body.find("errand_schedule_paused{schedule=\"nightly\"} 1\n") != std::string::npos);
}

TEST_CASE("a broker on PostgreSQL serves /api/batches and /api/batches/{id}; 400 and 404") {
    PgServer pg;
    TempDir dir;
    const int port = free_port();
    Broker broker(dir, {"--db", pg.uri(), "--http", "127.0.0.1:" + std::to_string(port)});
    errand::Client client(broker.client_options());
    // A batch whose one member is cancelled, then sealed: complete, its callback submitted.
    auto done = client.batch_open("pg <batch>", job_spec("cb"));
    auto member = job_spec("work", "m");
    member.batch = done.id;
    client.cancel(client.submit(member).id);
    auto sealed = client.batch_seal(done.id);
    REQUIRE(sealed.state == "complete");
    REQUIRE(sealed.complete_job);
    auto open = client.batch_open();

    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(10, 0);
    auto get = [&](const std::string& path, int status) {
        auto res = http.Get(path.c_str());
        REQUIRE_MESSAGE(res, path, broker.logs());
        INFO(path, " -> ", res->status, " ", res->body);
        REQUIRE(res->status == status);
        return nlohmann::json::parse(res->body);
    };
    auto page = get("/api/batches", 200);
    INFO(page.dump());
    REQUIRE(page["batches"].size() == 2);
    const auto& first = page["batches"][0];
    const auto& second = page["batches"][1];
    CHECK(first["id"] == open.id);
    CHECK(first["state"] == "open");
    CHECK(second["id"] == done.id);
    CHECK(second["state"] == "complete");
    CHECK(second["description"] == "pg <batch>");
    CHECK(second["total"] == 1);
    CHECK(second["cancelled"] == 1);
    CHECK(second["pending"] == 0);
    CHECK(second["complete_job"] == *sealed.complete_job);
    CHECK_FALSE(second.contains("on_complete"));
    CHECK(page["next"].is_null());
    auto paged = get("/api/batches?limit=1", 200);
    CHECK(paged["next"] == open.id);
    CHECK(get("/api/batches?limit=1&before=" + std::to_string(open.id), 200)["batches"][0]["id"] ==
          done.id);

    auto one = get("/api/batches/" + std::to_string(done.id), 200);
    CHECK(one["state"] == "complete");
    CHECK(one["on_complete"]["queue"] == "cb");
    CHECK(one["on_success"].is_null());
    CHECK(get("/api/batches/999999", 404)["error"]["message"] == "no batch 999999");
    CHECK(get("/api/batches?limit=0", 400)["error"]["code"] == "bad_request");
}
