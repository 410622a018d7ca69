// The daemons' logs, for real: --log-format json gives one parseable object per line with ts,
// level, logger and msg, and a job's lines (dispatch, finish) carry job, queue and attempt, as
// fields in JSON and as "job=N queue=Q attempt=A" in text.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& text) {
    std::vector<json> out;
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        auto line = text.substr(start, end - start);
        json j = json::parse(line, nullptr, false);
        CHECK_MESSAGE(!j.is_discarded(), "not JSON: " << line);
        if (!j.is_discarded()) out.push_back(std::move(j));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

// Lines about job `id` whose msg contains `text`.
std::vector<json> job_lines(const std::vector<json>& lines, std::uint64_t id,
                            const std::string& text) {
    std::vector<json> out;
    for (const auto& j : lines)
        if (j.contains("job") && j["job"] == id &&
            j["msg"].get<std::string>().find(text) != std::string::npos)
            out.push_back(j);
    return out;
}

}  // namespace

TEST_CASE("logs: --log-format json gives parseable lines with job fields") {
    TempDir dir;
    Broker broker(dir, {"--log-format", "json", "--log-level", "debug"});
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "jsonw",
                         .queues = {"emails=printf 'quote \" backslash \\\\ tab \\t'; exit 1"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {"--log-format", "json", "--log-level", "debug"}});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("emails", "", 2)).id;
    auto job = client.wait(id, 20s);
    REQUIRE_MESSAGE(job, worker.logs());
    REQUIRE(job->state == errand::JobState::dead);

    auto broker_lines = json_lines(broker.process().err());
    auto worker_lines = json_lines(worker.process().err());
    REQUIRE(broker_lines.size() > 3);
    REQUIRE(worker_lines.size() > 3);
    const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
    for (const auto& j : broker_lines) {
        CHECK(std::regex_match(j["ts"].get<std::string>(), rfc3339));
        CHECK(j["logger"] == "errand-broker");
        CHECK(j["level"].is_string());
        CHECK(j["msg"].is_string());
    }
    for (const auto& j : worker_lines)
        CHECK(j["logger"] == "errand-worker");

    // The broker: dispatch and finish of both attempts, with id, queue and attempt as fields.
    for (std::uint32_t attempt : {1u, 2u}) {
        CAPTURE(attempt);
        auto dispatched = job_lines(broker_lines, id, "-> running");
        REQUIRE(dispatched.size() == 2);
        CHECK(dispatched[attempt - 1]["queue"] == "emails");
        CHECK(dispatched[attempt - 1]["attempt"] == attempt);
        CHECK(dispatched[attempt - 1]["msg"].get<std::string>().find("worker=jsonw") !=
              std::string::npos);
    }
    auto died = job_lines(broker_lines, id, "running -> dead");
    REQUIRE(died.size() == 1);
    CHECK(died[0]["attempt"] == 2);
    CHECK(died[0]["queue"] == "emails");

    // The worker: started and failed, each with the fields; the job's odd output stays intact.
    auto failed = job_lines(worker_lines, id, "failed");
    REQUIRE(failed.size() == 2);
    CHECK(failed[0]["queue"] == "emails");
    CHECK(failed[0]["attempt"] == 1);
    CHECK(failed[1]["attempt"] == 2);
    CHECK(job_lines(worker_lines, id, "started").size() == 2);
}

TEST_CASE("logs: text lines of a job carry job=, queue= and attempt=") {
    TempDir dir;
    Broker broker(dir, {"--log-level", "debug"});
    WorkerDaemon worker(dir, broker.endpoint(),
                        {.name = "textw",
                         .queues = {"reports=echo ok"},
                         .concurrency = 1,
                         .allow_commands = false,
                         .extra_args = {}});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("reports")).id;
    REQUIRE(client.wait(id, 20s));
    const std::string tag = "job=" + std::to_string(id) + " queue=reports attempt=1: ";
    auto err = broker.process().err();
    CHECK_MESSAGE(err.find(tag + "ready -> running") != std::string::npos, err);
    CHECK_MESSAGE(err.find(tag + "running -> succeeded") != std::string::npos, err);
    CHECK_MESSAGE(worker.process().err().find(tag + "succeeded in") != std::string::npos,
                  worker.logs());
}

TEST_CASE("logs: a bad --log-format is a usage error") {
    TempDir dir;
    Process p("badfmt", {broker_bin(), "--log-format", "xml"}, dir.path());
    auto code = p.wait_exit(10s);
    REQUIRE(code);
    CHECK(*code == 2);
    CHECK(p.err().find("log-format") != std::string::npos);
}

TEST_CASE("logs: a --log-file that cannot be opened is a usage error naming it") {
    TempDir dir;
    const auto bad = dir / "no-such-dir" / "broker.log";
    Process broker("badfile", {broker_bin(), "--log-file", bad.string()}, dir.path());
    auto code = broker.wait_exit(10s);
    REQUIRE(code);
    CHECK(*code == 2);
    CHECK_MESSAGE(broker.err().find(bad.string()) != std::string::npos, broker.logs());
    Process worker("wbadfile", {worker_bin(), "--queue", "q", "--log-file", bad.string()},
                   dir.path());
    code = worker.wait_exit(10s);
    REQUIRE(code);
    CHECK(*code == 2);
    CHECK_MESSAGE(worker.err().find(bad.string()) != std::string::npos, worker.logs());
}
