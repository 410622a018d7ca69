// The broker's HTTP side (docs/OPERATIONS.md): /metrics, /healthz, the JSON API and the embedded
// dashboard, served by cpp-httplib on threads of its own. It never touches the broker loop's
// state: live data comes from the loop's published Snapshot, job queries from a read-only SQLite
// connection, and retry/cancel go to the loop as ordinary protocol commands over inproc.
#pragma once

#include <zmq.hpp>

#include <memory>
#include <string>

#include "errand/protocol.hpp"
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

}  // namespace errand::broker
