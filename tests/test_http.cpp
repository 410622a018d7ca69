// Integration tests of the broker's observability: the HTTP side (/metrics checked by promtool,
// /healthz, the JSON API with its pagination, job history, retry and cancel, and its errors)
// over real HTTP on 127.0.0.1, and `errand events | stats | workers` against a real broker and
// worker daemon.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "errand/codec.hpp"
#include "errand/curve.hpp"
#include "errand/duration.hpp"
#include "harness.hpp"

using namespace errand::test;
using errand::JobState;
using nlohmann::json;

namespace {

const std::string kToken = "test-token-0123456789abcdef";

// DIR/token holding kToken, for --http-token-file.
std::string token_file(const TempDir& dir) {
    write_file(dir / "token", kToken + "\n");
    return (dir / "token").string();
}

// A broker with --http and --events on free loopback ports, an HTTP client and a protocol client.
struct HttpWorld {
    TempDir dir;
    int http_port = free_port();
    int events_port = free_port();
    Broker broker{
        dir,
        {"--http", "127.0.0.1:" + std::to_string(http_port), "--http-token-file", token_file(dir),
         "--events", "tcp://127.0.0.1:" + std::to_string(events_port), "--retry-delay", "100ms"}};
    errand::Client client{broker.client_options()};

    // POSTs carry the token, as the dashboard and `curl -H 'X-Errand-Token: …'` do.
    httplib::Result request(const std::string& method, const std::string& path) {
        httplib::Client http("127.0.0.1", http_port);
        http.set_connection_timeout(5, 0);
        http.set_read_timeout(15, 0);
        if (method == "POST")
            return http.Post(path.c_str(), {{"X-Errand-Token", kToken}}, "", "application/json");
        return http.Get(path.c_str());
    }

    // The JSON body of METHOD PATH, which must answer `status`.
    json call(const std::string& method, const std::string& path, int status = 200) {
        auto res = request(method, path);
        REQUIRE_MESSAGE(res, method << " " << path << ": no response (" << res.error() << ")\n"
                                    << broker.logs());
        INFO(method, " ", path, " -> ", res->status, " ", res->body);
        REQUIRE(res->status == status);
        REQUIRE(res->get_header_value("Content-Type") == "application/json");
        json j = json::parse(res->body, nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        return j;
    }
    json get(const std::string& path, int status = 200) { return call("GET", path, status); }
    json post(const std::string& path, int status = 200) { return call("POST", path, status); }

    // POST PATH with a JSON body (the bulk actions), which must answer `status`.
    json post_json(const std::string& path, const std::string& body, int status = 200) {
        httplib::Client http("127.0.0.1", http_port);
        http.set_connection_timeout(5, 0);
        http.set_read_timeout(15, 0);
        auto res = http.Post(path.c_str(), {{"X-Errand-Token", kToken}}, body, "application/json");
        REQUIRE_MESSAGE(res, "POST " << path << ": no response\n" << broker.logs());
        INFO("POST ", path, " ", body, " -> ", res->status, " ", res->body);
        REQUIRE(res->status == status);
        json j = json::parse(res->body, nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        return j;
    }

    std::string metrics() {
        auto res = request("GET", "/metrics");
        if (!res || res->status != 200) return "";
        return res->body;
    }

    errand::JobInfo wait_job(errand::JobId id) {
        auto job = client.wait(id, 20s);
        REQUIRE_MESSAGE(job, "job " << id << " did not finish\n" << broker.logs());
        return *job;
    }
};

// Times in the API are RFC 3339 UTC strings with milliseconds, e.g. "2026-12-01T10:00:00.123Z".
bool is_rfc3339(const json& v) {
    if (!v.is_string()) return false;
    const auto s = v.get<std::string>();
    return s.size() == 24 && s[4] == '-' && s[10] == 'T' && s[19] == '.' && s.back() == 'Z' &&
           errand::parse_time(s).has_value();
}

bool has_line(const std::string& text, const std::string& line) {
    std::istringstream in(text);
    std::string l;
    while (std::getline(in, l))
        if (l == line) return true;
    return false;
}

std::vector<std::uint64_t> ids_of(const json& page) {
    std::vector<std::uint64_t> out;
    for (const auto& j : page["jobs"])
        out.push_back(j["id"].get<std::uint64_t>());
    return out;
}

bool promtool_available() {
    return std::system("command -v promtool >/dev/null 2>&1") == 0;
}

}  // namespace

TEST_CASE("http: /metrics counts submitted and finished jobs and passes promtool check") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "mw", .queues = {"m=cat"}, .concurrency = 2, .extra_args = {}});
    std::vector<errand::JobId> ids;
    for (int i = 0; i < 3; ++i)
        ids.push_back(w.client.submit(job_spec("m", "x")).id);
    for (auto id : ids)
        CHECK(w.wait_job(id).state == JobState::succeeded);

    std::string text;
    bool ok = wait_until(
        [&] {
            text = w.metrics();
            return has_line(text, "errand_jobs_succeeded_total{queue=\"m\"} 3") &&
                   has_line(text, "errand_jobs{queue=\"m\",state=\"succeeded\"} 3") &&
                   has_line(text, "errand_workers_connected 1");
        },
        10s);
    INFO(text);
    REQUIRE(ok);
    CHECK(has_line(text, "errand_jobs_submitted_total{queue=\"m\"} 3"));
    CHECK(has_line(text, "errand_jobs{queue=\"m\",state=\"ready\"} 0"));
    CHECK(has_line(text, "errand_jobs_dead_total{queue=\"m\"} 0"));
    CHECK(has_line(text, "errand_job_run_seconds_count{queue=\"m\"} 3"));
    CHECK(has_line(text, "errand_job_queue_wait_seconds_count{queue=\"m\"} 3"));
    CHECK(has_line(text, "errand_job_run_seconds_bucket{queue=\"m\",le=\"+Inf\"} 3"));
    CHECK(text.find("# TYPE errand_commit_duration_seconds histogram") != std::string::npos);
    CHECK(text.find("errand_commit_batch_jobs_count ") != std::string::npos);
    CHECK(text.find("errand_database_size_bytes ") != std::string::npos);
    CHECK(has_line(text, "errand_commit_failures_total 0"));
    // Messages by command. The worker granted credit once, at registration: the credit of each
    // finished job rode on the RESULTS that reported it (REGISTERED result_credit).
    CHECK(has_line(text, "errand_messages_received_total{command=\"SUBMIT\"} 3"));
    CHECK(has_line(text, "errand_messages_received_total{command=\"REGISTER\"} 1"));
    CHECK(has_line(text, "errand_messages_received_total{command=\"CREDIT\"} 1"));
    CHECK(text.find("errand_messages_received_total{command=\"RESULTS\"} ") != std::string::npos);
    CHECK(text.find("errand_messages_received_total{command=\"DONE\"}") == std::string::npos);

    if (!promtool_available()) {
        MESSAGE("promtool not installed (Debian package prometheus): format check skipped");
        return;
    }
    auto file = w.dir / "metrics.txt";
    write_file(file, text);
    auto out = w.dir / "promtool.out";
    int rc = std::system(
        ("promtool check metrics < '" + file.string() + "' > '" + out.string() + "' 2>&1").c_str());
    INFO("promtool: ", read_file(out));
    CHECK(rc == 0);
    CHECK(read_file(out).find("problem") == std::string::npos);
}

TEST_CASE("http: /healthz, /api/queues and /api/stats show the live picture") {
    HttpWorld w;
    REQUIRE(wait_until([&] { return w.request("GET", "/healthz")->status == 200; }, 5s));
    auto health = w.get("/healthz");
    CHECK(health["status"] == "ok");
    CHECK(health["loop_age_ms"].get<std::int64_t>() < 5000);

    for (int i = 0; i < 2; ++i)
        w.client.submit(job_spec("qa"));
    w.client.submit(job_spec("qb"));
    w.client.pause("qb");
    json queues;
    REQUIRE(wait_until(
        [&] {
            queues = w.get("/api/queues");
            return queues["queues"].size() == 2 && queues["queues"][1]["paused"] == true;
        },
        5s));
    CHECK(queues["queues"][0]["name"] == "qa");
    CHECK(queues["queues"][0]["counts"]["ready"] == 2);
    CHECK(queues["queues"][0]["counts"]["dead"] == 0);
    CHECK(queues["queues"][0]["totals"]["submitted"] == 2);
    CHECK(queues["queues"][1]["name"] == "qb");
    CHECK(queues["queues"][1]["counts"]["ready"] == 1);
    CHECK(is_rfc3339(queues["time"]));
    CHECK(is_rfc3339(queues["queues"][0]["oldest_ready_at"]));
    CHECK(queues["states"] == json::array({"scheduled", "ready", "running", "retrying", "succeeded",
                                           "dead", "cancelled", "expired", "blocked"}));
    CHECK(queues["queues"][0]["counts"]["expired"] == 0);
    CHECK(queues["queues"][0]["totals"]["expired"] == 0);

    auto stats = w.get("/api/stats");
    CHECK(stats["jobs"]["ready"] == 3);
    CHECK(stats["totals"]["submitted"] == 3);
    CHECK(stats["workers"] == 0);
    CHECK(stats["commits"]["count"].get<std::uint64_t>() >= 1);
    CHECK(is_rfc3339(stats["time"]));
    CHECK(is_rfc3339(stats["started_at"]));
}

TEST_CASE("http: /api/jobs pages newest first with a cursor and filters by queue and state") {
    HttpWorld w;
    std::vector<errand::JobId> a, b;
    for (int i = 0; i < 5; ++i) {
        a.push_back(w.client.submit(job_spec("pa")).id);
        b.push_back(w.client.submit(job_spec("pb")).id);
    }
    w.client.cancel(a[0]);

    auto p1 = w.get("/api/jobs?queue=pa&limit=2");
    CHECK(ids_of(p1) == std::vector<std::uint64_t>{a[4], a[3]});
    REQUIRE(p1["next"] == a[3]);
    auto p2 = w.get("/api/jobs?queue=pa&limit=2&after=" + std::to_string(a[3]));
    CHECK(ids_of(p2) == std::vector<std::uint64_t>{a[2], a[1]});
    auto p3 = w.get("/api/jobs?queue=pa&limit=2&after=" + p2["next"].dump());
    CHECK(ids_of(p3) == std::vector<std::uint64_t>{a[0]});
    CHECK(p3["next"].is_null());
    CHECK(p3["jobs"][0]["state"] == "cancelled");

    auto all = w.get("/api/jobs");
    CHECK(all["jobs"].size() == 10);
    CHECK(all["jobs"][0]["id"] == b[4]);
    auto cancelled = w.get("/api/jobs?state=cancelled");
    CHECK(ids_of(cancelled) == std::vector<std::uint64_t>{a[0]});
    auto ready_b = w.get("/api/jobs?state=ready&queue=pb&limit=1000");
    CHECK(ids_of(ready_b) == std::vector<std::uint64_t>{b[4], b[3], b[2], b[1], b[0]});

    // Bad parameters are 400 with a JSON error.
    for (const char* bad : {"/api/jobs?state=nope", "/api/jobs?limit=0", "/api/jobs?limit=1001",
                            "/api/jobs?limit=x", "/api/jobs?after=-1", "/api/jobs?queue=a%20b"}) {
        auto e = w.get(bad, 400);
        CHECK(e["error"]["code"] == "bad_request");
        CHECK_FALSE(e["error"]["message"].get<std::string>().empty());
    }
}

TEST_CASE("http: /api/jobs/{id} has the job and its event history; 404 and 400 otherwise") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "hw", .queues = {"h=cat"}, .concurrency = 1, .extra_args = {}});
    auto id = w.client.submit(job_spec("h", "hello")).id;
    REQUIRE(w.wait_job(id).state == JobState::succeeded);

    auto j = w.get("/api/jobs/" + std::to_string(id));
    CHECK(j["id"] == id);
    CHECK(j["queue"] == "h");
    CHECK(j["state"] == "succeeded");
    CHECK(j["result"] == "hello");
    CHECK(j["worker"] == "hw");
    CHECK(is_rfc3339(j["created_at"]));
    CHECK(is_rfc3339(j["started_at"]));
    CHECK(is_rfc3339(j["finished_at"]));
    CHECK(errand::parse_time(j["created_at"].get<std::string>()) <=
          errand::parse_time(j["finished_at"].get<std::string>()));
    CHECK(j["run_at"].is_null());
    CHECK(j["timeout_ms"].is_null());
    REQUIRE(j["events"].size() == 3);
    CHECK(is_rfc3339(j["events"][0]["at"]));
    CHECK(j["events"][0]["from"].is_null());
    CHECK(j["events"][0]["to"] == "ready");
    CHECK(j["events"][0]["reason"] == "submitted");
    CHECK(j["events"][1]["to"] == "running");
    CHECK(j["events"][1]["worker"] == "hw");
    CHECK(j["events"][2]["from"] == "running");
    CHECK(j["events"][2]["to"] == "succeeded");
    CHECK(j["events"][2]["attempt"] == 1);

    CHECK(w.get("/api/jobs/424242", 404)["error"]["code"] == "not_found");
    CHECK(w.get("/api/jobs/0", 404)["error"]["code"] == "not_found");
    CHECK(w.get("/api/jobs/abc", 400)["error"]["code"] == "bad_request");
    CHECK(w.get("/api/jobs/99999999999999999999999", 400)["error"]["code"] == "bad_request");
    CHECK(w.get("/api/nothing-here", 404)["error"]["code"] == "not_found");
    CHECK(w.post("/api/jobs/abc/retry", 400)["error"]["code"] == "bad_request");
    // The broker still serves after all that.
    CHECK(w.client.status(id).state == JobState::succeeded);
}

TEST_CASE("http: POST retry revives a dead job, POST cancel cancels; wrong states are 409") {
    HttpWorld w;
    // The job fails permanently (exit 99) until the flag file exists, then echoes its payload.
    auto flag = w.dir / "flag";
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "rw",
                         .queues = {"r=test -e '" + flag.string() + "' && cat || exit 99"},
                         .concurrency = 1,
                         .extra_args = {"--permanent-exit-code", "99"}});
    auto id = w.client.submit(job_spec("r", "again")).id;
    REQUIRE(w.wait_job(id).state == JobState::dead);
    auto path = "/api/jobs/" + std::to_string(id);
    auto dead = w.get(path);
    CHECK(dead["state"] == "dead");
    CHECK(dead["exit_code"] == 99);
    CHECK(dead["error"].is_string());

    write_file(flag, "");
    auto r = w.post(path + "/retry");
    CHECK(r["retried"] == json::array({id}));
    auto job = w.wait_job(id);
    CHECK(job.state == JobState::succeeded);
    CHECK(job.result == std::optional<std::string>("again"));
    auto history = w.get(path)["events"];
    CHECK(std::any_of(history.begin(), history.end(), [](const json& e) {
        return e["reason"] == "retried by request" && e["from"] == "dead" && e["to"] == "ready";
    }));

    // Retrying a job that is not dead, or does not exist.
    auto e = w.post(path + "/retry", 409);
    CHECK(e["error"]["code"] == "invalid_state");
    CHECK(w.post("/api/jobs/987654/retry", 404)["error"]["code"] == "not_found");

    // Cancel a job nobody serves, then again.
    auto idle = w.client.submit(job_spec("idle")).id;
    auto c = w.post("/api/jobs/" + std::to_string(idle) + "/cancel");
    CHECK(c["id"] == idle);
    CHECK(c["state"] == "cancelled");
    CHECK(w.client.status(idle).state == JobState::cancelled);
    CHECK(w.post("/api/jobs/" + std::to_string(idle) + "/cancel", 409)["error"]["code"] ==
          "invalid_state");
}

TEST_CASE("http: /api/workers shows each worker with its running jobs and their progress") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "pw",
                         .queues = {"p=echo '40% halfway' >&3; exec sleep 60"},
                         .concurrency = 2,
                         .extra_args = {}});
    auto id = w.client.submit(job_spec("p")).id;
    json workers;
    bool ok = wait_until(
        [&] {
            workers = w.get("/api/workers");
            return workers["workers"].size() == 1 && workers["workers"][0]["jobs"].size() == 1 &&
                   workers["workers"][0]["jobs"][0]["progress"] == 40;
        },
        10s, 50ms);
    INFO(workers.dump());
    REQUIRE(ok);
    const auto& x = workers["workers"][0];
    CHECK(x["name"] == "pw");
    CHECK(x["pid"] == worker.process().pid());
    CHECK(x["queues"] == json::array({"p"}));
    CHECK(x["concurrency"] == 2);
    CHECK(is_rfc3339(x["last_seen"]));
    CHECK(is_rfc3339(x["jobs"][0]["started_at"]));
    CHECK(x["jobs"][0]["id"] == id);
    CHECK(x["jobs"][0]["attempt"] == 1);
    CHECK(x["jobs"][0]["progress_message"] == "halfway");
    // Cancelling through the API stops it on the worker.
    CHECK(w.post("/api/jobs/" + std::to_string(id) + "/cancel")["state"] == "cancelled");
    REQUIRE(
        wait_until([&] { return w.get("/api/workers")["workers"][0]["jobs"].empty(); }, 10s, 50ms));
}

TEST_CASE("cli: errand events --follow streams state changes; events, stats, workers print") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "ew", .queues = {"ev=cat"}, .concurrency = 1, .extra_args = {}});
    Process follow("events",
                   {cli_bin(), "--broker", w.broker.endpoint(), "events", "--follow", "--json",
                    "-q", "ev", "-n", "1"},
                   w.dir.path());
    REQUIRE_MESSAGE(
        wait_until([&] { return follow.err().find("following events on") != std::string::npos; },
                   10s),
        follow.logs());
    // A SUB socket starts receiving a moment after it connects: submit until one job's events
    // arrive (bounded), then check that job's whole life came through in order. A job whose
    // dispatch was published before the subscription took hold shows only its end: try the next.
    std::optional<errand::JobId> seen;
    for (int i = 0; i < 20 && !seen; ++i) {
        auto id = w.client.submit(job_spec("ev", "e")).id;
        auto done = [&] {
            std::istringstream in(follow.out());
            std::string line;
            bool ran = false;
            while (std::getline(in, line)) {
                json j = json::parse(line, nullptr, false);
                if (j.is_discarded() || j["id"] != id) continue;
                if (j["to"] == "running") ran = true;
                if (ran && j["reason"] == "done") return true;
            }
            return false;
        };
        if (wait_until(done, 1s)) seen = id;
    }
    INFO(follow.logs());
    REQUIRE(seen);
    std::vector<json> mine;
    for (const auto& line : read_lines(follow.stdout_path())) {
        json j = json::parse(line, nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        CHECK(j["queue"] == "ev");
        CHECK(is_rfc3339(j["at"]));
        if (j["id"] == *seen) mine.push_back(j);
    }
    REQUIRE(mine.size() >= 2);
    CHECK(mine[mine.size() - 2]["to"] == "running");
    CHECK(mine[mine.size() - 2]["worker"] == "ew");
    CHECK(mine.back()["from"] == "running");
    CHECK(mine.back()["to"] == "succeeded");
    CHECK(mine.back()["seq"].get<std::uint64_t>() > mine.front()["seq"].get<std::uint64_t>());

    // Without --follow: the recent events, oldest first, and exit.
    auto recent =
        run_cli({"--broker", w.broker.endpoint(), "events", "--json", "-q", "ev", "-n", "3"});
    REQUIRE_MESSAGE(recent.exit_code == 0, describe(recent));
    std::istringstream in(recent.out);
    std::string line;
    std::vector<json> last3;
    while (std::getline(in, line))
        last3.push_back(json::parse(line));
    REQUIRE(last3.size() == 3);
    CHECK(last3.back()["to"] == "succeeded");
    CHECK(last3[0]["seq"].get<std::uint64_t>() < last3[2]["seq"].get<std::uint64_t>());
    auto text = run_cli({"--broker", w.broker.endpoint(), "events", "-n", "1"});
    CHECK(text.out.find("running -> succeeded") != std::string::npos);

    auto stats = run_cli({"--broker", w.broker.endpoint(), "stats", "--json"});
    REQUIRE_MESSAGE(stats.exit_code == 0, describe(stats));
    auto s = json::parse(stats.out);
    CHECK(s["workers"] == 1);
    CHECK(s["events_endpoint"] == "tcp://127.0.0.1:" + std::to_string(w.events_port));
    REQUIRE(s["queues"].size() == 1);
    CHECK(s["queues"][0]["name"] == "ev");
    CHECK(s["queues"][0]["succeeded"].get<std::uint64_t>() >= 1);
    CHECK(s["queues"][0]["counts"]["succeeded"] == s["queues"][0]["succeeded"]);
    CHECK(s["commits"].get<std::uint64_t>() >= 1);
    CHECK(is_rfc3339(s["time"]));
    CHECK_FALSE(s.contains("req"));
    auto stats_text = run_cli({"--broker", w.broker.endpoint(), "stats"});
    CHECK(stats_text.out.find("1 worker,") != std::string::npos);

    auto workers = run_cli({"--broker", w.broker.endpoint(), "workers", "--json"});
    REQUIRE_MESSAGE(workers.exit_code == 0, describe(workers));
    auto ws = json::parse(workers.out);
    REQUIRE(ws.size() == 1);
    CHECK(ws[0]["name"] == "ew");
    CHECK(ws[0]["pid"] == worker.process().pid());
    CHECK(ws[0]["queues"] == json::array({"ev"}));
    CHECK(ws[0]["jobs"].empty());
    CHECK(is_rfc3339(ws[0]["last_seen"]));
    auto workers_text = run_cli({"--broker", w.broker.endpoint(), "workers"});
    CHECK(workers_text.out.find("ew ") != std::string::npos);
}

TEST_CASE("cli: errand events --follow without a broker --events endpoint is refused") {
    TempDir dir;
    Broker broker(dir);
    auto r = run_cli({"--broker", broker.endpoint(), "events", "--follow"});
    CHECK(r.exit_code == 121);
    CHECK(r.err.find("--events") != std::string::npos);
}

TEST_CASE("codec: job events, FEED, STATS and WORKERS survive a round trip") {
    errand::JobEvent e{
        7,    42,      "q", JobState::running, JobState::dead, 3, errand::Timestamp{1000ms},
        "w1", "failed"};
    auto back = errand::decode_job_event(errand::Body(errand::encode(e)).reader());
    CHECK(back.seq == 7);
    CHECK(back.id == 42);
    CHECK(back.from == std::optional<JobState>(JobState::running));
    CHECK(back.to == JobState::dead);
    CHECK(back.worker == std::optional<std::string>("w1"));
    auto feed = errand::decode_feed_reply(errand::Body(errand::encode_feed(1, {e, e})).reader());
    CHECK(feed.size() == 2);
    CHECK_THROWS_AS(
        errand::decode_feed(
            errand::Body(errand::encode(errand::FeedRequest{1, std::nullopt, 501, 0})).reader()),
        errand::ProtocolError);
    errand::StatsReply st;
    st.req = 3;
    st.commit_seconds_sum = 0.25;
    st.queues.push_back({"q", true, {{JobState::ready, 2}}, 5, 4, 1, 1, 0, 0.5, 1.5});
    auto s2 = errand::decode_stats(errand::Body(errand::encode(st)).reader());
    CHECK(s2.commit_seconds_sum == doctest::Approx(0.25));
    REQUIRE(s2.queues.size() == 1);
    CHECK(s2.queues[0].paused);
    CHECK(s2.queues[0].counts[1].second == 2);
    CHECK(s2.queues[0].submitted_per_second == doctest::Approx(1.5));
    errand::WorkerInfo wi{"n",
                          "i",
                          "h",
                          9,
                          {"q"},
                          2,
                          0,
                          1,
                          errand::Timestamp{5ms},
                          {{1, "q", 1, errand::Timestamp{4ms}}}};
    auto ws = errand::decode_workers(errand::Body(errand::encode_workers(1, {wi})).reader());
    REQUIRE(ws.size() == 1);
    CHECK(ws[0].jobs.at(0).id == 1);
    CHECK(ws[0].pid == 9);
}

TEST_CASE("events: with CURVE the PUB socket admits authorized keys only") {
    namespace fs = std::filesystem;
    TempDir tmp;
    auto keys = tmp / "keys";
    auto authorized = tmp / "authorized";
    fs::create_directories(keys);
    fs::create_directories(authorized);
    errand::write_keypair(keys.string(), "broker");
    auto client_pair = errand::write_keypair(keys.string(), "client");
    write_file(authorized / "client.pub", client_pair.public_key + " client\n");
    errand::write_keypair(keys.string(), "intruder");
    auto key = [&](const std::string& n) { return (keys / (n + ".key")).string(); };
    auto server_pub = (keys / "broker.pub").string();
    auto curve = errand::load_curve_client(server_pub, key("client"));

    int events_port = free_port();
    auto events_ep = "tcp://127.0.0.1:" + std::to_string(events_port);
    Broker broker(tmp,
                  {"--curve-secret-key", key("broker"), "--authorized-keys", authorized.string(),
                   "--events", events_ep},
                  curve);
    errand::Client client(broker.client_options());

    // An intruder's key and a plaintext subscriber, connected before anything happens.
    zmq::context_t ctx;
    zmq::socket_t intruder(ctx, zmq::socket_type::sub), plain(ctx, zmq::socket_type::sub);
    for (auto* s : {&intruder, &plain}) {
        s->set(zmq::sockopt::linger, 0);
        s->set(zmq::sockopt::subscribe, "");
    }
    errand::apply_curve(intruder, errand::load_curve_client(server_pub, key("intruder")));
    intruder.connect(events_ep);
    plain.connect(events_ep);

    Process follow("events",
                   {cli_bin(), "--broker", broker.endpoint(), "--curve-server-key", server_pub,
                    "--curve-key", key("client"), "events", "--follow", "--json"},
                   tmp.path());
    REQUIRE_MESSAGE(
        wait_until([&] { return follow.err().find("following") != std::string::npos; }, 10s),
        follow.logs());
    bool seen = false;
    for (int i = 0; i < 20 && !seen; ++i) {
        auto id = client.submit(job_spec("sec")).id;
        auto needle = "\"id\":" + std::to_string(id) + ",";
        seen = wait_until([&] { return follow.out().find(needle) != std::string::npos; }, 1s);
    }
    INFO(follow.logs());
    CHECK(seen);
    zmq::message_t m;
    CHECK_FALSE(intruder.recv(m, zmq::recv_flags::dontwait));
    CHECK_FALSE(plain.recv(m, zmq::recv_flags::dontwait));
}

TEST_CASE("http: --http 127.0.0.1:0 binds a free port and logs it") {
    TempDir dir;
    Broker broker(dir, {"--http", "127.0.0.1:0"});
    const std::string prefix = "http listening on 127.0.0.1:";
    int port = 0;
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            auto err = broker.process().err();
                            auto at = err.find(prefix);
                            if (at == std::string::npos) return false;
                            port = std::atoi(err.c_str() + at + prefix.size());
                            return port > 0;
                        },
                        5s),
                    broker.logs());
    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(5, 0);
    REQUIRE(wait_until(
        [&] {
            auto res = http.Get("/healthz");
            return res && res->status == 200;
        },
        5s));
    CHECK(broker.process().err().find("not loopback") == std::string::npos);
}

TEST_CASE("http: a bad --http value is a usage error; a port in use fails to start") {
    TempDir dir;
    for (const char* value : {"nonsense", "127.0.0.1:", "127.0.0.1:99999", ":80"}) {
        Process p("broker-bad", {broker_bin(), "--db", (dir / "x.db").string(), "--http", value},
                  dir.path());
        auto rc = p.wait_exit(10s);
        CHECK_MESSAGE(rc == std::optional<int>(2), value << ": " << p.logs());
    }
    int port = free_port();
    Broker first(dir, {"--http", "127.0.0.1:" + std::to_string(port)});
    TempDir other;
    Process second(
        "broker-busy",
        {broker_bin(), "--listen", "tcp://127.0.0.1:" + std::to_string(free_port()), "--db",
         (other / "e.db").string(), "--http", "127.0.0.1:" + std::to_string(port)},
        other.path());
    auto rc = second.wait_exit(10s);
    CHECK_MESSAGE(rc == std::optional<int>(4), second.logs());
    CHECK(second.err().find("cannot listen for HTTP") != std::string::npos);
}

TEST_CASE("protocol: STATS, WORKERS and FEED refuse bad requests with an ERROR, never a crash") {
    TempDir dir;
    Broker broker(dir);
    RawConnection conn(broker.endpoint());
    auto error_code = [&](std::string_view command, const std::string& body) -> std::string {
        conn.send(command, body);
        auto env = conn.recv(3s);
        REQUIRE_MESSAGE(env, command << ": no reply");
        if (env->command != "ERROR") return "(" + env->command + ")";
        return errand::Body(env->body).reader().str("code", 64);
    };
    CHECK(error_code("STATS", "\xc1") == "bad_frame");
    CHECK(error_code("STATS", errand::Writer(0).take()) == "bad_request");  // no req
    CHECK(error_code("WORKERS", errand::Writer(1).str("req", "x").take()) == "bad_request");
    CHECK(error_code("FEED", errand::Writer(2).u64("req", 1).u64("limit", 0).take()) ==
          "bad_request");
    CHECK(error_code("FEED", errand::Writer(2).u64("req", 1).u64("limit", 501).take()) ==
          "bad_request");
    CHECK(error_code("FEED", errand::Writer(2).u64("req", 1).str("queue", "no spaces").take()) ==
          "bad_request");
    CHECK(error_code("FEED", errand::Writer(2).u64("req", 1).i64("after", -1).take()) ==
          "bad_request");
    // And good ones are answered.
    CHECK(error_code("STATS", errand::encode_req(7)) == "(STATS)");
    CHECK(error_code("WORKERS", errand::encode_req(8)) == "(WORKERS)");
    CHECK(error_code("FEED", errand::encode(errand::FeedRequest{9, "q", 5, 0})) == "(FEED)");
    errand::Client client(broker.client_options());
    CHECK(client.stats().queues.empty());
}

TEST_CASE("http: a drained worker's hand-back counts run time but no failed attempt") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "dw",
                         .queues = {"d=exec sleep 60"},
                         .concurrency = 1,
                         .extra_args = {"--drain-timeout", "100ms", "--kill-grace", "100ms"}});
    auto id = w.client.submit(job_spec("d")).id;
    REQUIRE(wait_until([&] { return w.client.status(id).state == JobState::running; }, 10s));
    worker.process().kill(SIGTERM);
    auto rc = worker.process().wait_exit(15s);
    REQUIRE_MESSAGE(rc == std::optional<int>(0), worker.logs());
    std::string text;
    bool ok = wait_until(
        [&] {
            text = w.metrics();
            return has_line(text, "errand_job_run_seconds_count{queue=\"d\"} 1");
        },
        10s);
    INFO(text);
    REQUIRE(ok);
    CHECK(w.client.status(id).state == JobState::ready);
    CHECK(has_line(text, "errand_job_attempts_failed_total{queue=\"d\"} 0"));
    CHECK(has_line(text, "errand_jobs{queue=\"d\",state=\"ready\"} 1"));
    auto history = w.get("/api/jobs/" + std::to_string(id))["events"];
    CHECK(history.back()["reason"] == "released by worker");
}

// ---- the HTTP side as an attacker sees it (issue 17 items 5 and 6) ----------------------------
// A web page in the operator's browser can send a cross-origin POST (a "simple" request: no
// custom header, text/plain body) and, through DNS rebinding, any request with a Host header of
// its own name. A slow client can open connections and trickle bytes. None of these may work.

namespace {

// A broker with --http on a free port and no HTTP flag beyond it: what an operator runs today.
struct PlainHttpWorld {
    TempDir dir;
    int http_port = free_port();
    Broker broker{dir, {"--http", "127.0.0.1:" + std::to_string(http_port)}};
    errand::Client client{broker.client_options()};

    httplib::Client http() {
        httplib::Client c("127.0.0.1", http_port);
        c.set_connection_timeout(5, 0);
        c.set_read_timeout(15, 0);
        return c;
    }
    // The token a broker without --http-token-file generates and logs at start.
    std::string logged_token() {
        const std::string key = "X-Errand-Token: ";
        std::string token;
        wait_until(
            [&] {
                auto err = broker.process().err();
                auto at = err.find(key);
                if (at == std::string::npos) return false;
                auto end = err.find_first_of(" \n)", at + key.size());
                token = err.substr(at + key.size(), end - at - key.size());
                return !token.empty();
            },
            5s);
        return token;
    }
};

std::string error_code_of(const httplib::Result& r) {
    if (!r) return "(no response)";
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.contains("error") || !j["error"].is_object())
        return "(not a JSON error: " + r->body + ")";
    return j["error"]["code"].get<std::string>();
}

// A raw TCP connection to 127.0.0.1:PORT (non-blocking after connect), closed on destruction.
class RawHttp {
  public:
    explicit RawHttp(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        REQUIRE(fd_ >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    }
    ~RawHttp() { ::close(fd_); }
    RawHttp(const RawHttp&) = delete;
    RawHttp& operator=(const RawHttp&) = delete;

    // False once the server has closed or reset the connection.
    bool send(std::string_view bytes) {
        return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0 ||
               errno == EAGAIN;
    }
    // True when the server closed the connection (after whatever it sent, which goes to `got`).
    bool closed_by_server() {
        char buf[4096];
        for (int i = 0; i < 64; ++i) {
            auto n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                got.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        }
        return false;
    }
    std::string got;

  private:
    int fd_;
};

}  // namespace

TEST_CASE("http: a cross-origin POST cannot cancel or retry a job (CSRF)") {
    PlainHttpWorld w;
    auto id = w.client.submit(job_spec("csrf")).id;
    auto path = "/api/jobs/" + std::to_string(id) + "/cancel";
    auto http = w.http();
    // What a form or fetch(…, {mode: 'no-cors'}) on http://evil.example sends: no token.
    auto r = http.Post(path.c_str(), {{"Origin", "http://evil.example"}}, "x", "text/plain");
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(error_code_of(r) == "forbidden");
    // A same-origin POST without the token (curl with no -H) is refused too.
    r = http.Post(path.c_str(), "", "application/json");
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(error_code_of(r) == "forbidden");
    CHECK(json::parse(r->body)["error"]["message"].get<std::string>().find("X-Errand-Token") !=
          std::string::npos);
    // Nothing changed.
    CHECK(w.client.status(id).state == JobState::ready);

    // With the token but from a foreign origin (a page that somehow has it): refused.
    auto token = w.logged_token();
    REQUIRE_MESSAGE(token.size() >= 32, w.broker.logs());
    r = http.Post(path.c_str(), {{"Origin", "http://evil.example"}, {"X-Errand-Token", token}}, "",
                  "application/json");
    REQUIRE(r);
    CHECK(r->status == 403);
    r = http.Post(path.c_str(), {{"Sec-Fetch-Site", "cross-site"}, {"X-Errand-Token", token}}, "",
                  "application/json");
    REQUIRE(r);
    CHECK(r->status == 403);
    r = http.Post(path.c_str(), {{"X-Errand-Token", token + "x"}}, "", "application/json");
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(w.client.status(id).state == JobState::ready);

    // The dashboard's own request: same origin, with the token.
    auto origin = "http://127.0.0.1:" + std::to_string(w.http_port);
    r = http.Post(path.c_str(), {{"Origin", origin}, {"X-Errand-Token", token}}, "",
                  "application/json");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    CHECK(w.client.status(id).state == JobState::cancelled);
    // curl -H 'X-Errand-Token: …' (no Origin at all) works as well.
    auto other = w.client.submit(job_spec("csrf")).id;
    r = http.Post(("/api/jobs/" + std::to_string(other) + "/cancel").c_str(),
                  {{"X-Errand-Token", token}}, "", "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
}

TEST_CASE("http: a request whose Host is not the broker's (DNS rebinding) is refused everywhere") {
    PlainHttpWorld w;
    auto id = w.client.submit(job_spec("rebind", "secret payload")).id;
    auto http = w.http();
    const auto port = ":" + std::to_string(w.http_port);
    for (const std::string& path : std::vector<std::string>{
             "/", "/app.js", "/healthz", "/metrics", "/api/queues", "/api/stats", "/api/workers",
             "/api/events", "/api/jobs", "/api/jobs/" + std::to_string(id), "/no-such-thing"}) {
        auto r = http.Get(path.c_str(), {{"Host", "evil.example" + port}});
        REQUIRE_MESSAGE(r, path);
        INFO(path, " -> ", r->status, " ", r->body);
        CHECK(r->status == 421);
        CHECK(error_code_of(r) == "misdirected");
        CHECK(r->body.find("evil.example") != std::string::npos);
        CHECK(r->body.find("secret payload") == std::string::npos);
    }
    auto r = http.Post(("/api/jobs/" + std::to_string(id) + "/cancel").c_str(),
                       {{"Host", "evil.example" + port}, {"X-Errand-Token", w.logged_token()}}, "",
                       "application/json");
    REQUIRE(r);
    CHECK(r->status == 421);
    CHECK(w.client.status(id).state == JobState::ready);

    // A request without any Host: 400.
    RawHttp raw(w.http_port);
    REQUIRE(raw.send("GET /api/jobs HTTP/1.1\r\nConnection: close\r\n\r\n"));
    REQUIRE(wait_until([&] { return raw.closed_by_server(); }, 5s));
    CHECK(raw.got.find("HTTP/1.1 400") == 0);
    CHECK(raw.got.find("Host") != std::string::npos);

    // The names it does serve: loopback ones, with or without the port.
    for (const std::string& host : std::vector<std::string>{"127.0.0.1" + port, "localhost" + port,
                                                            "LOCALHOST", "127.0.0.1"}) {
        auto ok = http.Get("/api/jobs", {{"Host", host}});
        REQUIRE(ok);
        INFO(host, " -> ", ok->body);
        CHECK(ok->status == 200);
    }
}

TEST_CASE("http: 100 trickling connections do not stop /healthz (slow clients)") {
    PlainHttpWorld w;
    auto healthz = [&] {
        httplib::Client c("127.0.0.1", w.http_port);
        c.set_connection_timeout(1, 0);
        c.set_read_timeout(1, 0);
        c.set_write_timeout(1, 0);
        return c.Get("/healthz");
    };
    REQUIRE(wait_until(
        [&] {
            auto r = healthz();
            return r && r->status == 200;
        },
        5s));
    std::vector<std::unique_ptr<RawHttp>> slow;
    for (int i = 0; i < 100; ++i) {
        slow.push_back(std::make_unique<RawHttp>(w.http_port));
        slow.back()->send("GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    }
    // Each round every connection sends one more byte of a header that never ends; between two
    // rounds, /healthz must answer 200 within 1 s. 70 rounds, about 7 s: past the broker's
    // 5 s request timeout, so connections are evicted and expire during the test.
    const auto start = std::chrono::steady_clock::now();
    int rounds = 0;
    for (; rounds < 70 && since(start) < 30s; ++rounds) {
        for (auto& s : slow)
            s->send("a");
        const auto asked = std::chrono::steady_clock::now();
        auto r = healthz();
        const auto took = since(asked);
        REQUIRE_MESSAGE(
            r, "round " << rounds << ": /healthz did not answer within 1 s (" << r.error() << ")");
        CHECK(r->status == 200);
        CHECK(took < 1s);
        // The attacker's pace (one byte per connection per 100 ms), not a wait for a condition.
        std::this_thread::sleep_for(100ms);
    }
    CHECK(rounds == 70);
    // The rest of the HTTP side serves as well.
    auto jobs = w.http().Get("/api/jobs");
    REQUIRE(jobs);
    CHECK(jobs->status == 200);
    // Every trickler has been dropped: evicted to make room (503) or timed out (408).
    std::size_t timed_out = 0;
    bool all_closed = wait_until(
        [&] {
            timed_out = 0;
            bool all = true;
            for (auto& s : slow) {
                all = s->closed_by_server() && all;
                timed_out += s->got.find("HTTP/1.1 408") == 0 ? 1 : 0;
            }
            return all;
        },
        5s, 50ms);
    CHECK(all_closed);
    CHECK(timed_out >= 1);
}

TEST_CASE("http: --http-readonly refuses every POST and still serves reads") {
    TempDir dir;
    int port = free_port();
    Broker broker(dir, {"--http", "127.0.0.1:" + std::to_string(port), "--http-readonly"});
    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("ro")).id;
    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(10, 0);
    for (const char* action : {"cancel", "retry"}) {
        auto r = http.Post(("/api/jobs/" + std::to_string(id) + "/" + action).c_str(),
                           {{"X-Errand-Token", kToken}}, "", "application/json");
        REQUIRE(r);
        CHECK(r->status == 403);
        CHECK(error_code_of(r) == "read_only");
    }
    CHECK(client.status(id).state == JobState::ready);
    for (const char* path : {"/metrics", "/api/jobs", "/healthz"}) {
        auto r = http.Get(path);
        REQUIRE(r);
        CHECK_MESSAGE(r->status == 200, path);
    }
    auto page = http.Get("/");
    REQUIRE(page);
    CHECK(page->body.find(R"(<meta name="errand-token" content="">)") != std::string::npos);
    CHECK(broker.process().err().find("X-Errand-Token") == std::string::npos);
    CHECK(broker.process().err().find("(read-only)") != std::string::npos);
}

TEST_CASE("http: --http-token-file sets the token, --http-host adds a name; bad values exit 2") {
    TempDir dir;
    int port = free_port();
    Broker broker(dir, {"--http", "127.0.0.1:" + std::to_string(port), "--http-token-file",
                        token_file(dir), "--http-host", "errand.example.com"});
    errand::Client client(broker.client_options());
    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(10, 0);
    // The dashboard page carries the token; the log does not.
    auto page = http.Get("/");
    REQUIRE(page);
    CHECK(page->get_header_value("Cache-Control") == "no-store");
    CHECK(page->get_header_value("X-Frame-Options") == "DENY");
    CHECK(page->body.find(R"(<meta name="errand-token" content=")" + kToken + "\">") !=
          std::string::npos);
    CHECK(broker.process().err().find(kToken) == std::string::npos);
    auto id = client.submit(job_spec("tok")).id;
    auto r = http.Post(("/api/jobs/" + std::to_string(id) + "/cancel").c_str(),
                       {{"X-Errand-Token", kToken},
                        {"Host", "errand.example.com"},
                        {"Origin", "http://errand.example.com"}},
                       "", "application/json");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    CHECK(client.status(id).state == JobState::cancelled);
    const auto p = ":" + std::to_string(port);
    for (const auto& [host, status] :
         std::vector<std::pair<std::string, int>>{{"errand.example.com" + p, 200},
                                                  {"Errand.Example.COM", 200},
                                                  {"other.example.com" + p, 421},
                                                  {"errand.example.com.evil.example", 421},
                                                  {"[::1]" + p, 200},
                                                  {"bad host", 421}}) {
        auto g = http.Get("/api/stats", {{"Host", host}});
        REQUIRE(g);
        CHECK_MESSAGE(g->status == status, host);
    }

    auto short_token = dir / "short";
    write_file(short_token, "tooshort\n");
    auto spaced = dir / "spaced";
    write_file(spaced, "a token with spaces in it\n");
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--http-token-file", short_token.string()},
             {"--http-token-file", spaced.string()},
             {"--http-token-file", (dir / "missing").string()},
             {"--http-token-file", token_file(dir), "--http-readonly"},
             {"--http-host", "a b"},
             {"--http-host", "name:80"}}) {
        std::vector<std::string> argv = {broker_bin(),
                                         "--listen",
                                         "tcp://127.0.0.1:" + std::to_string(free_port()),
                                         "--db",
                                         (dir / "bad.db").string(),
                                         "--http",
                                         "127.0.0.1:0"};
        argv.insert(argv.end(), args.begin(), args.end());
        Process bad("broker-bad", argv, dir.path());
        auto rc = bad.wait_exit(10s);
        CHECK_MESSAGE(rc == std::optional<int>(2), args.back() << ": " << bad.logs());
    }
}

TEST_CASE("http: one address cannot hold more than 32 idle connections") {
    PlainHttpWorld w;
    std::vector<std::unique_ptr<RawHttp>> idle;
    for (int i = 0; i < 60; ++i)
        idle.push_back(std::make_unique<RawHttp>(w.http_port));
    // The broker closes the ones past the bound (the longest-waiting first), right away.
    std::size_t closed = 0;
    bool ok = wait_until(
        [&] {
            closed = 0;
            for (auto& c : idle)
                closed += c->closed_by_server() ? 1 : 0;
            return closed >= 28;
        },
        3s, 50ms);
    INFO("closed by the broker: ", closed);
    CHECK(ok);
    auto r = w.http().Get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
}

// ---- the dashboard's management API (issue 14) ----------------------------------------------

TEST_CASE("http: /api/jobs pages with real totals and searches by id, error text and unique key") {
    HttpWorld w;
    // Jobs of queue s fail permanently with their payload in the error text.
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "sw",
                         .queues = {"s=read p; echo \"Boom-$p\" >&2; exit 99"},
                         .concurrency = 2,
                         .extra_args = {"--permanent-exit-code", "99"}});
    std::vector<errand::JobId> dead;
    for (const char* p : {"alpha", "beta", "alpha"})
        dead.push_back(w.client.submit(job_spec("s", std::string(p) + "\n")).id);
    for (auto id : dead)
        REQUIRE(w.wait_job(id).state == JobState::dead);
    // 120 ready jobs nobody serves, one of them with a unique key.
    std::vector<errand::JobId> idle;
    for (int i = 0; i < 120; ++i) {
        auto spec = job_spec("t", "x");
        if (i == 7) spec.unique = "order-42";
        idle.push_back(w.client.submit(spec).id);
    }

    // Totals are the broker's counts, not the page's length: 120 over three pages.
    json p1;
    REQUIRE(wait_until(
        [&] {
            p1 = w.get("/api/jobs?queue=t&state=ready&limit=50");
            return p1["total"] == 120;
        },
        10s));
    CHECK(p1["jobs"].size() == 50);
    CHECK(p1["total_capped"] == false);
    auto p2 = w.get("/api/jobs?queue=t&state=ready&limit=50&after=" + p1["next"].dump());
    auto p3 = w.get("/api/jobs?queue=t&state=ready&limit=50&after=" + p2["next"].dump());
    CHECK(p2["jobs"].size() == 50);
    CHECK(p3["jobs"].size() == 20);
    CHECK(p3["next"].is_null());
    CHECK(p3["total"] == 120);
    CHECK(ids_of(p3).back() == idle.front());
    CHECK(w.get("/api/jobs?state=dead")["total"] == 3);
    CHECK(w.get("/api/jobs")["total"] == 123);
    CHECK(w.get("/api/jobs?queue=s")["total"] == 3);

    // By id: that job, if it passes the other filters.
    auto by_id = w.get("/api/jobs?id=" + std::to_string(dead[1]));
    CHECK(ids_of(by_id) == std::vector<std::uint64_t>{dead[1]});
    CHECK(by_id["total"] == 1);
    CHECK(w.get("/api/jobs?id=" + std::to_string(dead[1]) + "&queue=t")["total"] == 0);
    CHECK(w.get("/api/jobs?id=987654")["jobs"].empty());
    CHECK(w.get("/api/jobs?id=" + std::to_string(dead[0]) + "&error=BOOM-alpha")["total"] == 1);
    CHECK(w.get("/api/jobs?id=" + std::to_string(dead[1]) + "&error=BOOM-alpha")["total"] == 0);

    // By error text, in any case; with a state filter too.
    auto alpha = w.get("/api/jobs?error=boom-ALPHA");
    CHECK(ids_of(alpha) == std::vector<std::uint64_t>{dead[2], dead[0]});
    CHECK(alpha["total"] == 2);
    CHECK(w.get("/api/jobs?error=boom&state=dead")["total"] == 3);
    CHECK(w.get("/api/jobs?error=boom&state=ready")["total"] == 0);
    CHECK(w.get("/api/jobs?error=no-such-text")["jobs"].empty());

    // By unique key: exactly.
    auto uniq = w.get("/api/jobs?unique=order-42");
    CHECK(ids_of(uniq) == std::vector<std::uint64_t>{idle[7]});
    CHECK(uniq["total"] == 1);
    CHECK(uniq["jobs"][0]["unique"] == "order-42");
    CHECK(w.get("/api/jobs?unique=order-4")["total"] == 0);

    for (const char* bad : {"/api/jobs?id=abc", "/api/jobs?id=-3"}) {
        CHECK(w.get(bad, 400)["error"]["code"] == "bad_request");
    }
    CHECK(w.get("/api/jobs?unique=" + std::string(300, 'k'), 400)["error"]["code"] ==
          "bad_request");
    CHECK(w.get("/api/jobs?error=" + std::string(300, 'e'), 400)["error"]["code"] == "bad_request");
}

TEST_CASE("http: /api/jobs/{id} shows the payload bounded and binary-safe; /jobs/N is the page") {
    HttpWorld w;
    auto text = w.client.submit(job_spec("pl", "héllo\nworld")).id;
    std::string bytes(
        "\x00\x01\xff\xfe"
        "abc",
        7);
    auto binary = w.client.submit(job_spec("pl", bytes)).id;
    auto big = w.client.submit(job_spec("pl", std::string(100000, 'z'))).id;

    auto t = w.get("/api/jobs/" + std::to_string(text))["payload"];
    CHECK(t["encoding"] == "utf-8");
    CHECK(t["data"] == "héllo\nworld");
    CHECK(t["size"] == 12);
    CHECK(t["truncated"] == false);

    auto b = w.get("/api/jobs/" + std::to_string(binary))["payload"];
    CHECK(b["encoding"] == "base64");
    CHECK(b["data"] == "AAH//mFiYw==");
    CHECK(b["size"] == 7);

    auto g = w.get("/api/jobs/" + std::to_string(big))["payload"];
    CHECK(g["size"] == 100000);
    CHECK(g["shown"] == 65536);
    CHECK(g["truncated"] == true);
    CHECK(g["data"].get<std::string>() == std::string(65536, 'z'));

    // The job's own link serves the dashboard page, which opens it.
    auto page = w.request("GET", "/jobs/" + std::to_string(text));
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(page->get_header_value("Content-Type").find("text/html") == 0);
    CHECK(page->body.find("<script src=\"/app.js\">") != std::string::npos);
}

TEST_CASE("http: bulk retry (selected, all dead of a queue), bulk cancel, pause and resume") {
    HttpWorld w;
    auto flag = w.dir / "flag";
    WorkerDaemon worker(
        w.dir, w.broker.endpoint(),
        {.name = "bw",
         .queues = {"bd=test -e '" + flag.string() + "' && cat || exit 99",
                    "bo=test -e '" + flag.string() + "' && cat || exit 99", "pq=cat"},
         .concurrency = 2,
         .extra_args = {"--permanent-exit-code", "99"}});
    std::vector<errand::JobId> bd;
    for (int i = 0; i < 3; ++i)
        bd.push_back(w.client.submit(job_spec("bd", "d" + std::to_string(i))).id);
    auto bo = w.client.submit(job_spec("bo", "o")).id;
    for (auto id : bd)
        REQUIRE(w.wait_job(id).state == JobState::dead);
    REQUIRE(w.wait_job(bo).state == JobState::dead);
    write_file(flag, "");

    // "All dead in queue bd": those three, not bo's.
    auto r = w.post_json("/api/jobs/retry", R"({"queue": "bd", "state": "dead"})");
    auto retried = r["retried"].get<std::vector<std::uint64_t>>();
    std::sort(retried.begin(), retried.end());
    CHECK(retried == std::vector<std::uint64_t>(bd.begin(), bd.end()));
    for (auto id : bd)
        CHECK(w.wait_job(id).state == JobState::succeeded);
    CHECK(w.client.status(bo).state == JobState::dead);

    // Selected ids: the dead one is retried, the succeeded one is refused by name.
    r = w.post_json("/api/jobs/retry", fmt::format(R"({{"ids": [{}, {}]}})", bo, bd[0]));
    CHECK(r["retried"] == json::array({bo}));
    REQUIRE(r["failed"].size() == 1);
    CHECK(r["failed"][0]["id"] == bd[0]);
    CHECK(r["failed"][0]["code"] == "invalid_state");
    CHECK(w.wait_job(bo).state == JobState::succeeded);

    // Pause: a job submitted to pq waits; resume: it runs.
    auto p = w.post("/api/queues/pq/pause");
    CHECK(p["paused"] == true);
    auto held = w.client.submit(job_spec("pq", "later")).id;
    REQUIRE(wait_until(
        [&] {
            auto all = w.get("/api/queues");
            for (const auto& q : all["queues"])
                if (q["name"] == "pq") return q["paused"] == true && q["counts"]["ready"] == 1;
            return false;
        },
        10s));
    CHECK(w.client.status(held).state == JobState::ready);
    CHECK(w.post("/api/queues/pq/resume")["paused"] == false);
    CHECK(w.wait_job(held).state == JobState::succeeded);

    // Bulk cancel of jobs nobody serves; a finished one is refused by name.
    auto c1 = w.client.submit(job_spec("nobody")).id;
    auto c2 = w.client.submit(job_spec("nobody")).id;
    r = w.post_json("/api/jobs/cancel", fmt::format(R"({{"ids": [{}, {}, {}]}})", c1, c2, held));
    CHECK(r["cancelled"] == json::array({c1, c2}));
    REQUIRE(r["failed"].size() == 1);
    CHECK(r["failed"][0]["id"] == held);
    CHECK(w.client.status(c1).state == JobState::cancelled);
    CHECK(w.client.status(c2).state == JobState::cancelled);

    // Bad bodies change nothing.
    auto idle = w.client.submit(job_spec("nobody")).id;
    for (const char* bad :
         {"nope", "[]", "{}", R"({"ids": "x"})", R"({"ids": [0]})", R"({"ids": [-1]})",
          R"({"ids": ["7"]})", R"({"state": "ready"})", R"({"state": "dead", "queue": "a b"})"}) {
        CHECK(w.post_json("/api/jobs/retry", bad, 400)["error"]["code"] == "bad_request");
    }
    CHECK(w.post_json("/api/jobs/cancel", R"({"queue": "nobody"})", 400)["error"]["code"] ==
          "bad_request");
    std::string many = "{\"ids\": [";
    for (int i = 1; i <= 1001; ++i)
        many += (i > 1 ? "," : "") + std::to_string(i);
    many += "]}";
    CHECK(w.post_json("/api/jobs/cancel", many, 400)["error"]["code"] == "bad_request");
    CHECK(w.post("/api/queues/a%20b/pause", 400)["error"]["code"] == "bad_request");
    CHECK(w.client.status(idle).state == JobState::ready);
}

TEST_CASE(
    "http: run-now and delete, one job and in bulk; wrong states are 409 and change nothing") {
    HttpWorld w;
    auto later = [&] {
        auto s = job_spec("nobody");
        s.delay = std::chrono::milliseconds(3600000);
        return w.client.submit(s).id;
    };
    auto s1 = later(), s2 = later();
    auto j = w.post("/api/jobs/" + std::to_string(s1) + "/run-now");
    CHECK(j["id"] == s1);
    CHECK(j["state"] == "ready");
    CHECK(w.post("/api/jobs/" + std::to_string(s1) + "/run-now", 409)["error"]["code"] ==
          "invalid_state");
    auto r = w.post_json("/api/jobs/run-now", fmt::format(R"({{"ids": [{}, {}]}})", s2, s1));
    CHECK(r["ready"] == json::array({s2}));
    REQUIRE(r["failed"].size() == 1);
    CHECK(r["failed"][0]["id"] == s1);
    CHECK(w.client.status(s2).state == JobState::ready);

    // One finished job; a live one only with force.
    auto c1 = w.client.submit(job_spec("nobody")).id;
    w.client.cancel(c1);
    CHECK(w.post("/api/jobs/" + std::to_string(c1) + "/delete")["deleted"] == c1);
    CHECK(w.get("/api/jobs/" + std::to_string(c1), 404)["error"]["code"] == "not_found");
    CHECK(w.post("/api/jobs/" + std::to_string(s1) + "/delete", 409)["error"]["code"] ==
          "invalid_state");
    CHECK(w.client.status(s1).state == JobState::ready);
    CHECK(w.post_json("/api/jobs/" + std::to_string(s1) + "/delete",
                      R"({"force": true})")["deleted"] == s1);
    CHECK_THROWS_AS(w.client.status(s1), errand::BrokerError);

    // Bulk: finished ones go, a live one is refused by name.
    auto c2 = w.client.submit(job_spec("nobody")).id;
    w.client.cancel(c2);
    r = w.post_json("/api/jobs/delete", fmt::format(R"({{"ids": [{}, {}]}})", c2, s2));
    CHECK(r["deleted"] == json::array({c2}));
    REQUIRE(r["failed"].size() == 1);
    CHECK(r["failed"][0]["id"] == s2);
    CHECK(r["failed"][0]["code"] == "invalid_state");
    CHECK(w.client.status(s2).state == JobState::ready);
    for (const char* bad : {"nope", "{}", R"({"ids": [0]})", R"({"ids": [1], "force": "yes"})"})
        CHECK(w.post_json("/api/jobs/delete", bad, 400)["error"]["code"] == "bad_request");
    CHECK(w.post_json("/api/jobs/run-now", R"({"ids": "x"})", 400)["error"]["code"] ==
          "bad_request");
    CHECK(w.client.status(s2).state == JobState::ready);
}

TEST_CASE("http: the new actions pass the gate: token, origin, and --http-readonly") {
    HttpWorld w;
    auto id = w.client.submit(job_spec("gate")).id;
    auto ids = fmt::format(R"({{"ids": [{}]}})", id);
    struct Action {
        std::string path, body;
    };
    const std::vector<Action> actions = {
        {"/api/jobs/cancel", ids},      {"/api/jobs/retry", R"({"state": "dead"})"},
        {"/api/queues/gate/pause", ""}, {"/api/queues/gate/resume", ""},
        {"/api/jobs/run-now", ids},     {"/api/jobs/delete", ids},
        {"/api/jobs/ID/run-now", ""},   {"/api/jobs/ID/delete", R"({"force": true})"}};
    // "ID" in a path: the job of the broker asked.
    auto path_of = [](const Action& a, errand::JobId job) {
        auto p = a.path;
        if (auto at = p.find("/ID/"); at != std::string::npos)
            p.replace(at + 1, 2, std::to_string(job));
        return p;
    };
    httplib::Client http("127.0.0.1", w.http_port);
    http.set_read_timeout(10, 0);
    for (const auto& a : actions) {
        INFO(a.path);
        const auto path = path_of(a, id);
        auto r = http.Post(path.c_str(), a.body, "application/json");  // no token
        REQUIRE(r);
        CHECK(r->status == 403);
        CHECK(json::parse(r->body)["error"]["code"] == "forbidden");
        r = http.Post(path.c_str(), {{"X-Errand-Token", kToken}, {"Origin", "http://evil.test"}},
                      a.body, "application/json");
        REQUIRE(r);
        CHECK(r->status == 403);
        r = http.Post(path.c_str(), {{"X-Errand-Token", kToken}, {"Host", "evil.test"}}, a.body,
                      "application/json");
        REQUIRE(r);
        CHECK(r->status == 421);
    }
    CHECK(w.client.status(id).state == JobState::ready);
    bool paused = false;
    for (const auto& q : w.client.queues())
        if (q.name == "gate") paused = q.paused;
    CHECK_FALSE(paused);

    TempDir dir;
    int port = free_port();
    Broker ro(dir, {"--http", "127.0.0.1:" + std::to_string(port), "--http-readonly"});
    errand::Client client(ro.client_options());
    auto rid = client.submit(job_spec("gate")).id;
    httplib::Client rhttp("127.0.0.1", port);
    rhttp.set_read_timeout(10, 0);
    for (const auto& a : actions) {
        INFO(a.path);
        auto body = a.body == ids ? fmt::format(R"({{"ids": [{}]}})", rid) : a.body;
        auto r = rhttp.Post(path_of(a, rid).c_str(), {{"X-Errand-Token", kToken}}, body,
                            "application/json");
        REQUIRE(r);
        CHECK(r->status == 403);
        CHECK(json::parse(r->body)["error"]["code"] == "read_only");
    }
    CHECK(client.status(rid).state == JobState::ready);
}

TEST_CASE("http: /api/throughput keeps per-minute counts for the chart; bad windows are 400") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "tw", .queues = {"tp=cat"}, .concurrency = 2, .extra_args = {}});
    std::vector<errand::JobId> ids;
    for (int i = 0; i < 5; ++i)
        ids.push_back(w.client.submit(job_spec("tp", "x")).id);
    for (auto id : ids)
        REQUIRE(w.wait_job(id).state == JobState::succeeded);
    json t;
    auto sum = [&](const char* key) {
        std::uint64_t n = 0;
        for (const auto& m : t["minutes"])
            n += m[key].get<std::uint64_t>();
        return n;
    };
    REQUIRE(wait_until(
        [&] {
            t = w.get("/api/throughput?minutes=5");
            return sum("succeeded") == 5;
        },
        10s));
    CHECK(t["minutes"].size() == 5);
    CHECK(sum("submitted") == 5);
    CHECK(sum("dead") == 0);
    for (const auto& m : t["minutes"])
        CHECK(is_rfc3339(m["at"]));
    // Oldest first, a minute apart.
    auto first = *errand::parse_time(t["minutes"][0]["at"].get<std::string>());
    auto last = *errand::parse_time(t["minutes"][4]["at"].get<std::string>());
    CHECK(last - first == 4 * 60000);
    CHECK(w.get("/api/throughput")["minutes"].size() == 60);
    CHECK(w.get("/api/throughput?minutes=360")["minutes"].size() == 360);
    for (const char* bad :
         {"/api/throughput?minutes=0", "/api/throughput?minutes=361", "/api/throughput?minutes=x"})
        CHECK(w.get(bad, 400)["error"]["code"] == "bad_request");
}

TEST_CASE(
    "http: /metrics has queue latency (served or not), slots per queue, failures by "
    "reason, build and process figures, and passes promtool") {
    HttpWorld w;
    WorkerDaemon worker(w.dir, w.broker.endpoint(),
                        {.name = "ow",
                         .queues = {"served=exit 99", "also=exit 3"},
                         .concurrency = 3,
                         .extra_args = {"--permanent-exit-code", "99"}});
    auto perm = w.client.submit(job_spec("served", "x", 3)).id;
    auto plain = w.client.submit(job_spec("also", "x", 1)).id;
    REQUIRE(w.wait_job(perm).state == JobState::dead);
    REQUIRE(w.wait_job(plain).state == JobState::dead);
    w.client.submit(job_spec("unserved", "waits"));

    std::string text;
    auto value = [&](const std::string& prefix) -> double {
        std::istringstream in(text);
        for (std::string l; std::getline(in, l);)
            if (l.rfind(prefix + " ", 0) == 0) return std::stod(l.substr(prefix.size() + 1));
        return -1;
    };
    // A queue nobody serves shows its waiting time, growing.
    REQUIRE(wait_until(
        [&] {
            text = w.metrics();
            return value("errand_queue_oldest_ready_age_seconds{queue=\"unserved\"}") >= 1.0;
        },
        10s));
    INFO(text);
    CHECK(value("errand_queue_oldest_ready_age_seconds{queue=\"served\"}") == 0);
    CHECK(value("errand_queue_worker_slots{queue=\"unserved\"}") == 0);
    CHECK(value("errand_queue_worker_slots{queue=\"served\"}") == 3);
    CHECK(value("errand_queue_worker_slots{queue=\"also\"}") == 3);
    CHECK(
        value(
            "errand_job_attempts_failed_by_reason_total{queue=\"served\",reason=\"permanent\"}") ==
        1);
    CHECK(value("errand_job_attempts_failed_by_reason_total{queue=\"served\",reason=\"failed\"}") ==
          0);
    CHECK(value("errand_job_attempts_failed_by_reason_total{queue=\"also\",reason=\"failed\"}") ==
          1);
    CHECK(value("errand_job_attempts_failed_by_reason_total{queue=\"also\",reason=\"timeout\"}") ==
          0);
    CHECK(text.find("errand_build_info{version=\"") != std::string::npos);
    CHECK(value("process_cpu_seconds_total") > 0);
    CHECK(value("process_resident_memory_bytes") > 1e6);
    CHECK(value("process_open_fds") > 3);
    CHECK(value("process_max_fds") >= value("process_open_fds"));
    auto start = value("process_start_time_seconds");
    auto now = static_cast<double>(std::time(nullptr));
    CHECK(start > now - 300);
    CHECK(start <= now + 1);
    // The queue table has the same latency and slots.
    auto queues = w.get("/api/queues");
    for (const auto& q : queues["queues"]) {
        if (q["name"] == "unserved") {
            CHECK(q["oldest_ready_age_seconds"].get<double>() >= 1.0);
            CHECK(q["worker_slots"] == 0);
        }
        if (q["name"] == "served") CHECK(q["worker_slots"] == 3);
    }

    REQUIRE(promtool_available());
    auto file = w.dir / "metrics.txt";
    write_file(file, text);
    auto out = w.dir / "promtool.out";
    int rc = std::system(
        ("promtool check metrics < '" + file.string() + "' > '" + out.string() + "' 2>&1").c_str());
    INFO("promtool: ", read_file(out));
    CHECK(rc == 0);
    CHECK(read_file(out).find("problem") == std::string::npos);
}

TEST_CASE("http: a worker quieted, resumed and stopped from the API; its state in /api/workers") {
    HttpWorld w;
    errand::Worker worker({.endpoint = w.broker.endpoint(), .name = "http-worker"});
    worker.handle("hq", [](const errand::Job&) { return errand::Outcome::success("ok"); });
    WorkerThread thread(worker);
    REQUIRE(wait_until([&] { return w.get("/api/workers")["workers"].size() == 1; }, 5s));
    CHECK(w.get("/api/workers")["workers"][0]["state"] == "active");

    auto q = w.post("/api/workers/http-worker/quiet");
    REQUIRE(q["workers"].size() == 1);
    CHECK(q["workers"][0]["state"] == "quiet");
    // The API reads the broker's published picture, a moment behind.
    auto api_state = [&] { return w.get("/api/workers")["workers"][0]["state"]; };
    CHECK(wait_until([&] { return api_state() == "quiet"; }, 5s));
    const std::string instance = q["workers"][0]["instance"];
    CHECK(w.post("/api/workers/" + instance + "/resume")["workers"][0]["state"] == "active");
    CHECK(w.post("/api/workers/nobody/quiet", 404)["error"]["code"] == "not_found");
    CHECK(wait_until([&] { return api_state() == "active"; }, 5s));
    // Without the token: refused, nothing changed.
    httplib::Client http("127.0.0.1", w.http_port);
    auto r = http.Post("/api/workers/http-worker/stop", "", "application/json");
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(w.client.workers().at(0).state == "active");
    CHECK(w.post("/api/workers/http-worker/stop")["workers"][0]["state"] == "stopping");
}

namespace {

// A schedule of `queue` (nobody serves it, so its jobs stay ready).
errand::Schedule schedule_of(std::string name, std::string cron, std::string queue,
                             std::string zone = "UTC") {
    errand::Schedule s;
    s.name = std::move(name);
    s.cron = std::move(cron);
    s.zone = std::move(zone);
    s.job = job_spec(std::move(queue), "tick");
    return s;
}

}  // namespace

TEST_CASE("http: /api/schedules lists each schedule with its last job; pause and resume by POST") {
    HttpWorld w;
    auto nightly =
        w.client.schedule_add(schedule_of("nightly", "0 3 * * *", "sq", "Europe/Berlin"));
    w.client.schedule_add(schedule_of("fast", "* * * * * *", "fq"));

    // The every-second schedule fires: its last job shows, with the job's state.
    json all;
    REQUIRE(wait_until(
        [&] {
            all = w.get("/api/schedules");
            return all["schedules"].size() == 2 && !all["schedules"][0]["last_job"].is_null();
        },
        10s));
    INFO(all.dump());
    CHECK(is_rfc3339(all["time"]));
    const auto& fast = all["schedules"][0];  // by name
    CHECK(fast["name"] == "fast");
    CHECK(fast["cron"] == "* * * * * *");
    CHECK(fast["zone"] == "UTC");
    CHECK(fast["queue"] == "fq");
    CHECK(fast["paused"] == false);
    CHECK(is_rfc3339(fast["last_at"]));
    CHECK(is_rfc3339(fast["next_at"]));
    auto job = w.client.status(fast["last_job"].get<errand::JobId>());
    CHECK(job.queue == "fq");
    CHECK(fast["last_state"] == "ready");
    const auto& n = all["schedules"][1];
    CHECK(n["name"] == "nightly");
    CHECK(n["cron"] == "0 3 * * *");
    CHECK(n["zone"] == "Europe/Berlin");
    CHECK(n["queue"] == "sq");
    CHECK(n["last_at"].is_null());
    CHECK(n["last_job"].is_null());
    CHECK(n["last_state"].is_null());
    CHECK(errand::parse_time(n["next_at"].get<std::string>()) == errand::to_ms(*nightly.next_at));

    // Pause and resume as `errand schedule pause|resume`: the library sees each.
    auto p = w.post("/api/schedules/nightly/pause");
    CHECK(p["name"] == "nightly");
    CHECK(p["paused"] == true);
    CHECK(w.client.schedule("nightly").paused);
    CHECK(w.post("/api/schedules/nightly/pause")["paused"] == true);  // again: no change
    auto r = w.post("/api/schedules/nightly/resume");
    CHECK(r["paused"] == false);
    CHECK_FALSE(w.client.schedule("nightly").paused);

    // Unknown and invalid names change nothing.
    CHECK(w.post("/api/schedules/nope/pause", 404)["error"]["code"] == "not_found");
    CHECK(w.post("/api/schedules/a%20b/pause", 400)["error"]["code"] == "bad_request");
    CHECK(w.post("/api/schedules/" + std::string(65, 'x') + "/resume", 400)["error"]["code"] ==
          "bad_request");

    // The gate: no token, a foreign origin, a foreign Host are refused; the schedule stays.
    httplib::Client http("127.0.0.1", w.http_port);
    http.set_read_timeout(10, 0);
    for (const char* path : {"/api/schedules/nightly/pause", "/api/schedules/nightly/resume"}) {
        INFO(path);
        auto res = http.Post(path, "", "application/json");
        REQUIRE(res);
        CHECK(res->status == 403);
        CHECK(json::parse(res->body)["error"]["code"] == "forbidden");
        res = http.Post(path, {{"X-Errand-Token", kToken}, {"Origin", "http://evil.test"}}, "",
                        "application/json");
        REQUIRE(res);
        CHECK(res->status == 403);
        res = http.Post(path, {{"X-Errand-Token", kToken}, {"Host", "evil.test"}}, "",
                        "application/json");
        REQUIRE(res);
        CHECK(res->status == 421);
    }
    CHECK_FALSE(w.client.schedule("nightly").paused);

    // --http-readonly: read, but not paused.
    TempDir dir;
    int port = free_port();
    Broker ro(dir, {"--http", "127.0.0.1:" + std::to_string(port), "--http-readonly"});
    errand::Client client(ro.client_options());
    client.schedule_add(schedule_of("ro", "@daily", "rq"));
    httplib::Client rhttp("127.0.0.1", port);
    rhttp.set_read_timeout(10, 0);
    auto res =
        rhttp.Post("/api/schedules/ro/pause", {{"X-Errand-Token", kToken}}, "", "application/json");
    REQUIRE(res);
    CHECK(res->status == 403);
    CHECK(json::parse(res->body)["error"]["code"] == "read_only");
    CHECK_FALSE(client.schedule("ro").paused);
    res = rhttp.Get("/api/schedules");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(json::parse(res->body)["schedules"][0]["name"] == "ro");
}

TEST_CASE("http: /metrics has errand_schedules and each schedule's next and last fire time") {
    HttpWorld w;
    auto nightly = w.client.schedule_add(schedule_of("nightly", "0 3 * * *", "sq"));
    w.client.schedule_add(schedule_of("fast", "* * * * * *", "fq"));
    w.client.schedule_add(schedule_of("off", "@hourly", "oq"));
    w.client.schedule_pause("off");
    REQUIRE(wait_until([&] { return w.client.schedule("fast").last_at.has_value(); }, 10s));

    auto text = w.metrics();
    INFO(text);
    CHECK(has_line(text, "# TYPE errand_schedules gauge"));
    CHECK(has_line(text, "errand_schedules{paused=\"false\"} 2"));
    CHECK(has_line(text, "errand_schedules{paused=\"true\"} 1"));
    CHECK(has_line(text, "# TYPE errand_schedule_next_fire_timestamp_seconds gauge"));
    CHECK(has_line(text, fmt::format("errand_schedule_next_fire_timestamp_seconds{{schedule="
                                     "\"nightly\"}} {}",
                                     errand::to_ms(*nightly.next_at) / 1000)));
    CHECK(text.find("errand_schedule_next_fire_timestamp_seconds{schedule=\"fast\"} ") !=
          std::string::npos);
    // Paused: no next tick.
    CHECK(text.find("errand_schedule_next_fire_timestamp_seconds{schedule=\"off\"}") ==
          std::string::npos);
    CHECK(has_line(text, "# TYPE errand_schedule_last_fire_timestamp_seconds gauge"));
    CHECK(text.find("errand_schedule_last_fire_timestamp_seconds{schedule=\"fast\"} ") !=
          std::string::npos);
    CHECK(text.find("errand_schedule_last_fire_timestamp_seconds{schedule=\"nightly\"}") ==
          std::string::npos);
    CHECK(has_line(text, "# TYPE errand_schedule_paused gauge"));
    CHECK(has_line(text, "errand_schedule_paused{schedule=\"off\"} 1"));
    CHECK(has_line(text, "errand_schedule_paused{schedule=\"nightly\"} 0"));

    if (!promtool_available()) return;
    auto file = w.dir / "metrics.txt";
    write_file(file, text);
    auto out = w.dir / "promtool.out";
    int rc = std::system(
        ("promtool check metrics < '" + file.string() + "' > '" + out.string() + "' 2>&1").c_str());
    INFO("promtool: ", read_file(out));
    CHECK(rc == 0);
}

TEST_CASE("http: /api/queues shows a timed pause's end as paused_until") {
    HttpWorld w;
    w.client.pause("timed", std::chrono::minutes(10));
    w.client.pause("forever");
    w.client.submit(job_spec("timed"));
    w.client.submit(job_spec("forever"));
    json timed, forever;
    REQUIRE(wait_until(
        [&] {
            auto all = w.get("/api/queues");
            for (const auto& q : all["queues"]) {
                if (q["name"] == "timed") timed = q;
                if (q["name"] == "forever") forever = q;
            }
            return timed.is_object() && forever.is_object();
        },
        10s));
    INFO(timed.dump(), forever.dump());
    CHECK(timed["paused"] == true);
    REQUIRE(is_rfc3339(timed["paused_until"]));
    auto until = *errand::parse_time(timed["paused_until"].get<std::string>());
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    CHECK(until > now + 9 * 60 * 1000);
    CHECK(until <= now + 10 * 60 * 1000);
    CHECK(forever["paused"] == true);
    CHECK(forever["paused_until"].is_null());
}

TEST_CASE(
    "http: /api/batches lists batches newest first with the engine's state and counts; "
    "/api/batches/{id} has the callbacks; 400 and 404 otherwise") {
    HttpWorld w;
    const auto& ep = w.broker.endpoint();
    auto cli = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"--broker", ep});
        auto r = run_cli(args);
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r), w.broker.logs());
        return r.out.substr(0, r.out.find('\n'));
    };
    auto none = w.get("/api/batches");
    CHECK(none["batches"] == json::array());
    CHECK(none["next"].is_null());

    // mixed: one member succeeds, one goes dead; all ok: both succeed; waiting: open, one
    // member nobody serves.
    auto mixed = cli({"batch", "open", "--description", "mixed <b>&\"", "--on-complete", "cb"});
    auto m1 = cli({"submit", "-q", "ok", "--batch", mixed, "--payload", "a"});
    auto m2 = cli({"submit", "-q", "bad", "--batch", mixed, "--payload", "b"});
    cli({"batch", "seal", mixed});
    auto all_ok = cli(
        {"batch", "open", "--description", "all ok", "--on-complete", "cb", "--on-success", "cb"});
    auto o1 = cli({"submit", "-q", "ok", "--batch", all_ok, "--payload", "c"});
    auto o2 = cli({"submit", "-q", "ok", "--batch", all_ok, "--payload", "d"});
    cli({"batch", "seal", all_ok});
    auto waiting = cli({"batch", "open"});
    cli({"submit", "-q", "nobody", "--batch", waiting});
    WorkerDaemon worker(w.dir, ep,
                        {.name = "bw",
                         .queues = {"ok=cat", "bad=exit 99"},
                         .concurrency = 2,
                         .extra_args = {"--permanent-exit-code", "99"}});
    CHECK(w.wait_job(std::stoull(m1)).state == JobState::succeeded);
    CHECK(w.wait_job(std::stoull(m2)).state == JobState::dead);
    CHECK(w.wait_job(std::stoull(o1)).state == JobState::succeeded);
    CHECK(w.wait_job(std::stoull(o2)).state == JobState::succeeded);

    // The HTTP side reads committed rows on its own connection: the callbacks' jobs show once
    // that connection sees the members' last pass.
    json page;
    REQUIRE(wait_until(
        [&] {
            page = w.get("/api/batches");
            return page["batches"].size() == 3 && page["batches"][1]["success_job"].is_number() &&
                   page["batches"][2]["complete_job"].is_number();
        },
        10s));
    INFO(page.dump());
    CHECK(is_rfc3339(page["time"]));
    CHECK(page["next"].is_null());
    const json& bw = page["batches"][0];
    const json& bo = page["batches"][1];
    const json& bm = page["batches"][2];
    CHECK(bw["id"] == std::stoull(waiting));
    CHECK(bo["id"] == std::stoull(all_ok));
    CHECK(bm["id"] == std::stoull(mixed));
    CHECK(bw["state"] == "open");
    CHECK(bw["total"] == 1);
    CHECK(bw["pending"] == 1);
    CHECK(bw["sealed_at"].is_null());
    CHECK(bo["state"] == "succeeded");
    CHECK(bo["description"] == "all ok");
    CHECK(bo["total"] == 2);
    CHECK(bo["succeeded"] == 2);
    CHECK(bo["pending"] == 0);
    CHECK(bo["complete_job"].is_number());
    CHECK(bm["state"] == "complete");
    CHECK(bm["description"] == "mixed <b>&\"");
    CHECK(bm["total"] == 2);
    CHECK(bm["succeeded"] == 1);
    CHECK(bm["dead"] == 1);
    CHECK(bm["pending"] == 0);
    CHECK(bm["success_job"].is_null());
    CHECK(is_rfc3339(bm["created_at"]));
    CHECK(is_rfc3339(bm["sealed_at"]));
    CHECK(is_rfc3339(bm["completed_at"]));
    // A page leaves the callbacks' specs out (absent, not null: they may exist).
    for (const auto& b : page["batches"]) {
        CHECK_FALSE(b.contains("on_complete"));
        CHECK_FALSE(b.contains("on_success"));
    }
    // What the engine says over the protocol (`errand batch status --json`), field for field.
    for (const auto& b : page["batches"]) {
        auto id = std::to_string(b["id"].get<std::uint64_t>());
        auto r = run_cli({"--broker", ep, "batch", "status", id, "--json"});
        REQUIRE_MESSAGE(r.exit_code == 0, describe(r));
        auto engine = json::parse(r.out);
        for (const char* key : {"state", "pending", "total", "succeeded", "dead", "cancelled",
                                "expired", "complete_job", "success_job", "sealed_at"})
            CHECK_MESSAGE(b[key] == engine[key], id, " ", key);
    }
    auto cb = w.client.status(bm["complete_job"].get<errand::JobId>());
    CHECK(cb.queue == "cb");

    // Sealed with a member to finish: sealed.
    cli({"batch", "seal", waiting});
    auto sealed = w.get("/api/batches/" + waiting);
    CHECK(sealed["state"] == "sealed");
    CHECK(sealed["pending"] == 1);

    // Pages: the cursor is the last id of a full page.
    auto first = w.get("/api/batches?limit=2");
    REQUIRE(first["batches"].size() == 2);
    CHECK(first["batches"][0]["id"] == std::stoull(waiting));
    CHECK(first["next"] == std::stoull(all_ok));
    auto rest = w.get("/api/batches?limit=2&before=" + all_ok);
    REQUIRE(rest["batches"].size() == 1);
    CHECK(rest["batches"][0]["id"] == std::stoull(mixed));
    CHECK(rest["next"].is_null());

    // One batch, with its callbacks as given.
    auto one = w.get("/api/batches/" + mixed);
    CHECK(one["id"] == std::stoull(mixed));
    CHECK(one["state"] == "complete");
    CHECK(one["complete_job"] == bm["complete_job"]);
    REQUIRE(one["on_complete"].is_object());
    CHECK(one["on_complete"]["queue"] == "cb");
    CHECK(one["on_success"].is_null());
    auto both = w.get("/api/batches/" + all_ok);
    CHECK(both["on_complete"]["queue"] == "cb");
    CHECK(both["on_success"]["queue"] == "cb");

    // Unknown ids are 404; malformed ones and bad pages are 400 with what is wrong.
    auto missing = w.get("/api/batches/999999", 404);
    CHECK(missing["error"]["code"] == "not_found");
    CHECK(missing["error"]["message"] == "no batch 999999");
    CHECK(w.get("/api/batches/0", 404)["error"]["code"] == "not_found");
    CHECK(w.get("/api/batches/abc", 400)["error"]["message"] ==
          "the batch id must be a positive integer");
    CHECK(w.get("/api/batches/-1", 400)["error"]["code"] == "bad_request");
    for (const char* q : {"limit=0", "limit=1001", "limit=x", "limit=-5"}) {
        INFO(q);
        auto e = w.get(std::string("/api/batches?") + q, 400);
        CHECK(e["error"]["code"] == "bad_request");
        CHECK(e["error"]["message"].get<std::string>().find("limit") == 0);
    }
    for (const char* q : {"before=0", "before=x", "before=1.5"}) {
        INFO(q);
        auto e = w.get(std::string("/api/batches?") + q, 400);
        CHECK(e["error"]["message"] == "before must be a positive integer");
    }
    CHECK(w.get("/api/batches?limit=1000")["batches"].size() == 3);
    // The broker still serves after all that.
    CHECK(w.client.batch(std::stoull(mixed)).state == "complete");
}
