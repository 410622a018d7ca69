// errand on PostgreSQL end to end: the real broker with --db postgresql://…, a real worker and
// the CLI, against a PostgreSQL server started for the test. A job runs and its result comes
// back; after the broker is SIGKILLed and restarted, committed jobs and their histories are all
// there and the unfinished one still runs.
#include <doctest/doctest.h>

#include "harness.hpp"
#include "pg_server.hpp"

using namespace errand;
using namespace errand::test;

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
