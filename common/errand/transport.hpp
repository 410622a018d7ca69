// Framing on ZeroMQ sockets: [identity]? + version + command + body (docs/PROTOCOL.md, Transport).
#pragma once

#include <zmq.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errand/clock.hpp"
#include "errand/curve.hpp"
#include "errand/protocol.hpp"

namespace errand {

struct Envelope {
    std::string identity;  // ROUTER side only
    std::string version;
    std::string command;
    std::string body;
    std::size_t frames = 0;  // frames after the identity, as received
    std::string user_id;     // ROUTER side with CURVE: the name the ZAP handler gave the key
};

// Why `endpoint` is not one ZeroMQ can use (tcp://HOST:PORT with a port of 1-65535, or `*` for
// HOST/PORT when binding; ipc://PATH; inproc://NAME), or nullopt when it is. Programs check their
// endpoints with it before they start anything, so a typo is a usage error, not an abort.
std::optional<std::string> endpoint_error(std::string_view endpoint, bool bind = false);

// Splits a comma-separated list of endpoints ("tcp://a:7744,tcp://b:7744"): the brokers a client
// or worker fails over between, in order of preference. Each is checked by endpoint_error; the
// first bad one is the error. Spaces around commas are ignored; an empty item is an error.
struct EndpointList {
    std::vector<std::string> endpoints;
    // Why not: "tcp:// needs a port after the ':'" (prefixed with the bad item in a list).
    std::optional<std::string> error;
};
EndpointList parse_endpoints(std::string_view list);

// Sends version, command and body (preceded by identity when not empty). Never blocks: returns
// false when ZeroMQ could not queue the message (peer gone or its queue full).
bool send_message(zmq::socket_t& socket, std::string_view identity, std::string_view command,
                  std::string_view body);

// Receives one whole multipart message without blocking; nullopt when none is waiting. A
// message with the wrong number of frames is returned with `frames` set so the caller can reply.
std::optional<Envelope> recv_message(zmq::socket_t& socket, bool with_identity);

// Sets the CURVE client options on a socket before it connects (no-op for nullopt; curve.cpp).
void apply_curve(zmq::socket_t& socket, const std::optional<CurveClient>& curve);

// Whether a connecting socket's link to its peer is up, from ZeroMQ's socket monitor: up after a
// completed handshake; down from the start, after a disconnect and after a failed handshake. It
// lets a client tell a slow broker (link up, no reply yet) from a gone one (connection refused or
// dropped; a hung or unreachable host shows as a drop once ZMTP heartbeats time out, see
// set_link_heartbeats). Destroy it before its socket.
class LinkWatch {
  public:
    LinkWatch(zmq::context_t& ctx, zmq::socket_t& socket, Millis now);
    ~LinkWatch();
    LinkWatch(const LinkWatch&) = delete;
    LinkWatch& operator=(const LinkWatch&) = delete;

    // Reads the monitor's queued events (never blocks).
    void update(Millis now);
    bool up() const { return up_; }
    // How long the link has been down as of `now` (0 while up).
    Millis down_for(Millis now) const { return up_ ? 0 : now - down_since_; }
    // Times the link went down after having been up.
    std::uint64_t drops() const { return drops_; }
    // The monitor socket, readable when events are waiting (for zmq::poll).
    zmq::socket_t& events() { return monitor_; }

  private:
    zmq::socket_t& watched_;
    zmq::socket_t monitor_;
    bool up_ = false;
    Millis down_since_ = 0;
    std::uint64_t drops_ = 0;
};

// The ZeroMQ context of every Client, AsyncClient and Worker of this process: one I/O thread for
// all their connections, as ZeroMQ's guide advises (a context each would be a thread each, and
// every message a wake-up of its own). Made on first use and never destroyed: its I/O thread
// ends with the process, so no client can outlive it.
zmq::context_t& process_context();

// The brokers a client or worker is given: `endpoints` when not empty, else the comma-separated
// list in `endpoint`; each one checked. Throws std::invalid_argument ("bad broker endpoint '…':
// why").
std::vector<std::string> broker_list(const std::string& endpoint,
                                     const std::vector<std::string>& endpoints);

// A DEALER connected to one broker (linger 0, `hwm` both ways, ZMTP heartbeats, CURVE when
// given) with the watch on its link: what the client, the async client and the worker hold,
// and replace with a fresh one to fail over. Throws zmq::error_t when ZeroMQ refuses the
// endpoint.
struct BrokerLink {
    BrokerLink(zmq::context_t& ctx, const std::string& endpoint,
               const std::optional<CurveClient>& curve, int hwm, Millis now);
    zmq::socket_t socket;
    LinkWatch watch;  // after `socket`: destroyed before it
};

// ZMTP heartbeats on a connecting socket: a PING every second, the link dropped after 3 s without
// traffic, so a broker that hangs (SIGSTOP) or whose host vanishes shows as a drop.
void set_link_heartbeats(zmq::socket_t& socket);

}  // namespace errand
