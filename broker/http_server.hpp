// The broker's HTTP side (docs/OPERATIONS.md): /metrics, /healthz, the JSON API and the embedded
// dashboard, served by cpp-httplib on threads of its own. It never touches the broker loop's
// state: live data comes from the loop's published Snapshot, job queries from a read-only SQLite
// connection, and retry/cancel go to the loop as ordinary protocol commands over inproc.
//
// Who may ask what (docs/SECURITY.md): every request must name the broker in its Host header
// (loopback names, the --http address, each --http-host), which defeats DNS rebinding; a request
// that changes something (POST) must also carry the token in X-Errand-Token and, when it comes
// from a browser, be same-origin, which defeats cross-site request forgery.
#pragma once

#include <zmq.hpp>

#include <memory>
#include <string>
#include <vector>

#include "errand/protocol.hpp"
#include "http_gate.hpp"
#include "snapshot.hpp"
#include "store.hpp"

namespace errand::broker {

struct HttpOptions {
    std::string host = "127.0.0.1";
    int port = 0;  // 0: any free port (see HttpServer::port)
    std::shared_ptr<SnapshotHub> snapshots;
    std::unique_ptr<QueryStore> queries;
    zmq::context_t* context = nullptr;  // the broker's: inproc peers must share it
    std::string admin_endpoint;         // the broker's BrokerConfig::admin_endpoint
    Millis stale_after_ms = 5000;       // /healthz is 503 when the loop is quiet this long
    Millis admin_timeout_ms = 10000;    // a retry/cancel the loop does not answer in time: 504
    // Names the Host header may carry besides loopback ones and `host` (--http-host), any case.
    std::vector<std::string> hosts;
    // What a POST must carry as X-Errand-Token; the dashboard page carries it. At least 16
    // characters, unless read_only.
    std::string token;
    bool read_only = false;  // every POST is refused (--http-readonly)
    GateLimits limits;       // connections, timeouts, threads (http_gate.hpp)
};

class HttpServer {
  public:
    // Binds (throws std::runtime_error when it cannot) and starts serving on its own thread.
    explicit HttpServer(HttpOptions options);
    // Stops accepting, finishes requests in flight and joins.
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    int port() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and localhost.
bool is_loopback_host(const std::string& host);

// The name in a Host header, lowercased, without its port or an IPv6 literal's brackets
// ("LocalHost:7780" -> "localhost", "[::1]:80" -> "::1"); empty when it is not a valid one.
std::string host_header_name(std::string_view header);

// A random token for X-Errand-Token: 64 hex digits from getrandom(2).
std::string generate_http_token();

}  // namespace errand::broker
