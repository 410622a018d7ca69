// HttpServer on its own (real sockets, a real SQLite file, no broker loop): /healthz follows the
// age of the latest snapshot, answers before the first snapshot, admin actions without an admin
// endpoint, and junk on the socket; the front door (http_gate.cpp) with small limits: request
// timeout, oversized and chunked requests, pipelining, a half-closed client, and a full pool.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <string_view>

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

const std::string kToken = "unit-test-token-0123456789";

// A raw connection to 127.0.0.1:PORT for what no HTTP client sends.
class Raw {
  public:
    explicit Raw(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
        REQUIRE(fd_ >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        timeval tv{0, 100'000};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~Raw() { ::close(fd_); }
    Raw(const Raw&) = delete;
    Raw& operator=(const Raw&) = delete;

    void send(std::string_view bytes) {
        CHECK(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
              static_cast<ssize_t>(bytes.size()));
    }
    void shut_write() { ::shutdown(fd_, SHUT_WR); }
    // Everything the server sends until it closes the connection, or `timeout` passes.
    std::string read_all(std::chrono::milliseconds timeout) {
        std::string out;
        char buf[4096];
        auto end = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < end) {
            auto n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0)
                out.append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                break;
        }
        return out;
    }

  private:
    int fd_;
};

std::size_t count(const std::string& text, std::string_view needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

struct ServerWorld {
    std::filesystem::path dir;
    std::shared_ptr<SnapshotHub> hub = std::make_shared<SnapshotHub>();
    std::unique_ptr<HttpServer> server;

    explicit ServerWorld(const std::function<void(HttpOptions&)>& tweak = {}) {
        dir = std::filesystem::temp_directory_path() /
              ("errand-http-" + std::to_string(::getpid()) + "-" + std::to_string(wall_ms()));
        std::filesystem::create_directories(dir);
        auto db = (dir / "e.db").string();
        SqliteStore store(db);  // creates the schema
        HttpOptions o;
        o.snapshots = hub;
        o.queries = std::make_unique<SqliteQueryStore>(db);
        o.token = kToken;
        if (tweak) tweak(o);
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
    auto retry = c.Post("/api/jobs/1/retry", {{"X-Errand-Token", kToken}}, "", "application/json");
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

TEST_CASE(
    "http gate: late, oversized and chunked requests are refused; pipelined and half-closed "
    "ones answered") {
    ServerWorld w([](HttpOptions& o) { o.limits.request_timeout_ms = 300; });
    w.publish(wall_ms());
    using namespace std::chrono_literals;
    {
        Raw slow(w.server->port());
        slow.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");  // and nothing more
        auto start = std::chrono::steady_clock::now();
        auto got = slow.read_all(5s);
        CHECK(got.find("HTTP/1.1 408") == 0);
        CHECK(got.find(R"("code":"timeout")") != std::string::npos);
        CHECK(std::chrono::steady_clock::now() - start < 3s);
    }
    {
        Raw big(w.server->port());
        big.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(17000, 'a'));
        CHECK(big.read_all(5s).find("HTTP/1.1 431") == 0);
    }
    {
        Raw body(w.server->port());
        body.send(
            "POST /api/jobs/1/retry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 70000\r\n\r\n");
        CHECK(body.read_all(5s).find("HTTP/1.1 413") == 0);
    }
    {
        Raw chunked(w.server->port());
        chunked.send(
            "POST /api/jobs/1/retry HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: "
            "chunked\r\n\r\n0\r\n\r\n");
        CHECK(chunked.read_all(5s).find("HTTP/1.1 501") == 0);
    }
    {
        Raw pipelined(w.server->port());
        pipelined.send(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\r\n"  // a stray CRLF between
            "GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        auto got = pipelined.read_all(5s);
        CHECK(count(got, "HTTP/1.1 200") == 2);
        CHECK(got.find(R"({"jobs":[])") != std::string::npos);
    }
    {
        Raw half(w.server->port());  // printf 'GET …' | nc
        half.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        half.shut_write();
        CHECK(half.read_all(5s).find("HTTP/1.1 200") == 0);
    }
}

TEST_CASE("http gate: with its thread and queue full the API answers 503; /healthz still 200") {
    using namespace std::chrono_literals;
    // An admin socket that never answers: each retry holds the one thread for admin_timeout_ms.
    zmq::context_t ctx;
    zmq::socket_t admin(ctx, zmq::socket_type::router);
    admin.set(zmq::sockopt::linger, 0);
    admin.bind("inproc://stalled-admin");
    ServerWorld w([&ctx](HttpOptions& o) {
        o.context = &ctx;
        o.admin_endpoint = "inproc://stalled-admin";
        o.admin_timeout_ms = 1500;
        o.limits.threads = 1;
        o.limits.queue = 1;
    });
    w.publish(wall_ms());
    auto retry = [port = w.server->port()] {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(10, 0);
        auto r = c.Post("/api/jobs/1/retry", {{"X-Errand-Token", kToken}}, "", "application/json");
        return r ? r->status : -1;
    };
    auto first = std::async(std::launch::async, retry);
    zmq::pollitem_t item{admin.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&item, 1, 5s) == 1);  // the thread is now inside the first retry
    auto second = std::async(std::launch::async, retry);
    auto third = std::async(std::launch::async, retry);
    // One of them waits in the queue, the other is refused at once.
    std::future<int>* refused = nullptr;
    for (int i = 0; i < 50 && !refused; ++i)
        for (auto* f : {&second, &third})
            if (!refused && f->wait_for(100ms) == std::future_status::ready) refused = f;
    REQUIRE(refused);
    CHECK(refused->get() == 503);
    // /healthz is answered on the I/O thread: busy API or not.
    auto start = std::chrono::steady_clock::now();
    auto health = w.get("/healthz");
    REQUIRE(health);
    CHECK(health->status == 200);
    CHECK(std::chrono::steady_clock::now() - start < 1s);
    CHECK(first.get() == 504);
    CHECK((refused == &second ? third : second).get() == 504);
}
