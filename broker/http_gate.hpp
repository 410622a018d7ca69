// The HTTP side's front door: accepts connections and reads each request on one I/O thread,
// under deadlines and per-address bounds, and hands only complete requests to a bounded pool of
// threads. A slow or idle client costs a file descriptor and a buffer, never a thread.
#pragma once

#include <httplib.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand::broker {

// Every bound of the front door; the defaults are the broker's (docs/SECURITY.md lists them).
struct GateLimits {
    std::size_t max_connections = 512;  // open at once, all addresses together
    std::size_t max_per_address = 32;   // open at once from one client address
    std::size_t threads = 4;            // serving complete requests
    std::size_t queue = 64;             // complete requests waiting for a thread; past it: 503
    Millis request_timeout_ms = 5000;   // a request's first byte to its last, else 408
    Millis idle_timeout_ms = 5000;      // a connection with no request under way is closed
    Millis write_timeout_ms = 5000;     // a client that does not read its response is dropped
    std::size_t max_head = 16 * 1024;   // request line and headers, else 431
    std::size_t max_body = 64 * 1024;   // Content-Length, else 413
    std::size_t max_requests_per_connection = 100;
};

class HttpGate {
  public:
    // Serves one complete request read from `stream` (httplib::Server::process_request's
    // contract): writes the response, sets `connection_closed` when the client asked to close.
    using Serve = std::function<bool(httplib::Stream& stream, bool close_connection,
                                     bool& connection_closed)>;
    // True for a request served on the I/O thread itself, ahead of the pool (/healthz): it must
    // be cheap and never block. Gets the request line, e.g. "GET /healthz HTTP/1.1".
    using Inline = std::function<bool(std::string_view request_line)>;

    // Binds HOST:PORT (port 0: any free port; throws std::runtime_error when it cannot) and
    // starts the I/O thread and the pool.
    HttpGate(const std::string& host, int port, GateLimits limits, Serve serve, Inline is_inline);
    // Stops accepting, lets requests being served finish, closes every connection, joins.
    ~HttpGate();
    HttpGate(const HttpGate&) = delete;
    HttpGate& operator=(const HttpGate&) = delete;

    int port() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace errand::broker
