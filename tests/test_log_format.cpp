// The daemons' JSON log formatter (daemon/logging.cpp) on its own: every line parses, whatever
// bytes the message holds, and the job prefix of errand/log_fields.hpp becomes fields.
#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <sstream>
#include <string>

#include "errand/log_fields.hpp"
#include "logging.hpp"

using nlohmann::json;

namespace {

// One message through a logger with the JSON formatter, parsed back.
json log_one(const std::string& message, spdlog::level::level_enum level = spdlog::level::info) {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
    spdlog::logger logger("unit", sink);
    logger.set_formatter(errand::daemon::make_json_formatter());
    logger.log(level, "{}", message);
    const std::string line = out.str();
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);  // one line per message
    json j = json::parse(line, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << line);
    return j;
}

}  // namespace

TEST_CASE("log format: plain messages get ts, level, logger and msg") {
    auto j = log_one("hello", spdlog::level::warn);
    CHECK(j["level"] == "warning");
    CHECK(j["logger"] == "unit");
    CHECK(j["msg"] == "hello");
    CHECK(j["ts"].get<std::string>().size() == 24);  // 2026-11-28T22:41:07.123Z
    CHECK(!j.contains("job"));
}

TEST_CASE("log format: the job prefix becomes job, queue and attempt fields") {
    auto j = log_one(errand::job_fields(12, "emails", 2).str() + ": dispatched to w1");
    CHECK(j["job"] == 12);
    CHECK(j["queue"] == "emails");
    CHECK(j["attempt"] == 2);
    CHECK(j["msg"] == "dispatched to w1");

    // Something that merely looks like it stays a message.
    auto k = log_one("job=twelve queue=emails attempt=2: nope");
    CHECK(!k.contains("job"));
    CHECK(k["msg"] == "job=twelve queue=emails attempt=2: nope");
}

TEST_CASE("log format: quotes, control characters and invalid UTF-8 still make one JSON line") {
    const std::string odd =
        std::string("say \"hi\"\\ \t\nnext line \x01 caf\xc3\xa9 bad \xff\xfe end");
    auto j = log_one(errand::job_fields(3, "q", 1).str() + ": " + odd);
    CHECK(j["job"] == 3);
    CHECK(j["msg"] ==
          "say \"hi\"\\ \t\nnext line \x01 caf\xc3\xa9 bad \xef\xbf\xbd\xef\xbf\xbd end");
}

TEST_CASE("log format: parse_log_format accepts text and json only") {
    CHECK(errand::daemon::parse_log_format("text") == errand::daemon::LogFormat::text);
    CHECK(errand::daemon::parse_log_format("json") == errand::daemon::LogFormat::json);
    CHECK(!errand::daemon::parse_log_format("xml").has_value());
}
