// Framing on ZeroMQ sockets: [identity]? + version + command + body (docs/PROTOCOL.md, Transport).
#pragma once

#include <zmq.hpp>

#include <optional>
#include <string>
#include <string_view>

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

// Sends version, command and body (preceded by identity when not empty). Never blocks: returns
// false when ZeroMQ could not queue the message (peer gone or its queue full).
bool send_message(zmq::socket_t& socket, std::string_view identity, std::string_view command,
                  std::string_view body);

// Receives one whole multipart message without blocking; nullopt when none is waiting. A
// message with the wrong number of frames is returned with `frames` set so the caller can reply.
std::optional<Envelope> recv_message(zmq::socket_t& socket, bool with_identity);

// Sets the CURVE client options on a socket before it connects (no-op for nullopt; curve.cpp).
void apply_curve(zmq::socket_t& socket, const std::optional<CurveClient>& curve);

}  // namespace errand
