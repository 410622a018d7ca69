// A broker on its own database for a CLI-driven test: a SQLite file in the test's directory, or
// (built with ERRAND_TEST_PG) a PostgreSQL server started for the case; and the CLI calls such a
// test makes most (submit for an id, status as JSON). Header-only: ERRAND_TEST_PG is the test
// binary's own.
#pragma once

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "errand/duration.hpp"
#include "harness.hpp"
#ifdef ERRAND_TEST_PG
#include "pg_server.hpp"
#endif

namespace errand::test {

struct Env {
    TempDir dir;
#ifdef ERRAND_TEST_PG
    errand::pgserver::PgServer pg;
    Broker broker{dir, {"--db", pg.uri()}};
#else
    Broker broker{dir};
#endif

    CliResult cli(std::vector<std::string> args) const {
        args.insert(args.begin(), {"--broker", broker.endpoint()});
        return run_cli(args);
    }
    std::string submit(std::vector<std::string> args) const {
        args.insert(args.begin(), "submit");
        auto r = cli(args);
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r), broker.logs());
        std::string id = r.out.substr(0, r.out.find('\n'));
        REQUIRE_MESSAGE(!id.empty(), describe(r));
        REQUIRE(std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; }));
        return id;
    }
    nlohmann::json status(const std::string& id) const {
        auto r = cli({"status", id, "--json"});
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
        nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
        REQUIRE_MESSAGE(!j.is_discarded(), describe(r));
        if (j.is_array()) j = j.at(0);
        return j;
    }
};

inline errand::Millis ms_of(const nlohmann::json& time) {
    auto t = errand::parse_time(time.get<std::string>());
    REQUIRE(t.has_value());
    return *t;
}

}  // namespace errand::test
