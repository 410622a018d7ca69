// HttpServer on its own (real sockets, a real SQLite file, no broker loop): /healthz follows the
// age of the latest snapshot, answers before the first snapshot, admin actions without an admin
// endpoint, and junk on the socket.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>

#include "http_server.hpp"
#include "store_sqlite.hpp"

using namespace errand;
using namespace errand::broker;
using nlohmann::json;

namespace {

Millis wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct ServerWorld {
    std::filesystem::path dir;
    std::shared_ptr<SnapshotHub> hub = std::make_shared<SnapshotHub>();
    std::unique_ptr<HttpServer> server;

    ServerWorld() {
        dir = std::filesystem::temp_directory_path() /
              ("errand-http-" + std::to_string(::getpid()) + "-" + std::to_string(wall_ms()));
        std::filesystem::create_directories(dir);
        auto db = (dir / "e.db").string();
        SqliteStore store(db);  // creates the schema
        HttpOptions o;
        o.snapshots = hub;
        o.queries = std::make_unique<SqliteQueryStore>(db);
        o.token = "unit-test-token-0123456789";
        server = std::make_unique<HttpServer>(std::move(o));
    }
    ~ServerWorld() {
        server.reset();
        std::filesystem::remove_all(dir);
    }
    httplib::Result get(const char* path) {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(5, 0);
        return c.Get(path);
    }
    void publish(Millis at) {
        auto s = std::make_shared<Snapshot>();
        s->at = at;
        s->started_at = at - 1000;
        hub->publish(s);
    }
};

}  // namespace

TEST_CASE("http server: /healthz is 503 without a snapshot, 200 with a fresh one, 503 when stale") {
    ServerWorld w;
    REQUIRE(w.server->port() > 0);
    auto r = w.get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(json::parse(r->body)["status"] == "stalled");
    auto q = w.get("/api/queues");
    REQUIRE(q);
    CHECK(q->status == 503);
    CHECK(json::parse(q->body)["error"]["code"] == "starting");

    w.publish(wall_ms());
    r = w.get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(json::parse(r->body)["status"] == "ok");

    w.publish(wall_ms() - 60'000);  // the loop has not published for a minute
    r = w.get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(json::parse(r->body)["loop_age_ms"].get<Millis>() >= 60'000);
}

TEST_CASE("http server: empty lists, the dashboard, no admin endpoint, and junk requests") {
    ServerWorld w;
    w.publish(wall_ms());
    auto jobs = w.get("/api/jobs");
    REQUIRE(jobs);
    CHECK(jobs->status == 200);
    CHECK(json::parse(jobs->body)["jobs"].empty());
    auto page = w.get("/");
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(page->get_header_value("Content-Type").find("text/html") == 0);
    CHECK(page->body.find("errand") != std::string::npos);
    auto js = w.get("/app.js");
    REQUIRE(js);
    CHECK(js->get_header_value("Content-Type").find("text/javascript") == 0);
    auto metrics = w.get("/metrics");
    REQUIRE(metrics);
    CHECK(metrics->status == 200);
    CHECK(metrics->body.find("errand_workers_connected 0\n") != std::string::npos);

    httplib::Client c("127.0.0.1", w.server->port());
    auto retry = c.Post("/api/jobs/1/retry", {{"X-Errand-Token", "unit-test-token-0123456789"}}, "",
                        "application/json");
    REQUIRE(retry);
    CHECK(retry->status == 503);

    // Junk on the socket: an error response (or a closed connection), and the server lives on.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(w.server->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    std::string junk = "\x01\x02 NOT HTTP AT ALL\r\n\xff\xfe\r\n\r\n";
    CHECK(::send(fd, junk.data(), junk.size(), 0) == static_cast<ssize_t>(junk.size()));
    char buf[512];
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) CHECK(std::string(buf, static_cast<std::size_t>(n)).find("HTTP/1.1 400") == 0);
    ::close(fd);
    auto again = w.get("/healthz");
    REQUIRE(again);
    CHECK(again->status == 200);
}
