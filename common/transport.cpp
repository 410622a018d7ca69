// Multipart send/receive helpers shared by broker, client and worker.
#include "errand/transport.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace errand {

bool send_message(zmq::socket_t& socket, std::string_view identity, std::string_view command,
                  std::string_view body) {
    try {
        const auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
        if (!identity.empty() && !socket.send(zmq::buffer(identity), more)) return false;
        if (!socket.send(zmq::buffer(kProtocolVersion), more)) return false;
        if (!socket.send(zmq::buffer(command), more)) return false;
        return socket.send(zmq::buffer(body), zmq::send_flags::dontwait).has_value();
    } catch (const zmq::error_t&) {
        return false;  // EHOSTUNREACH with ROUTER_MANDATORY, or the context is closing
    }
}

std::optional<Envelope> recv_message(zmq::socket_t& socket, bool with_identity) {
    Envelope env;
    zmq::message_t part;
    std::size_t index = 0;
    bool more = true;
    bool first = true;
    while (more) {
        auto got = socket.recv(part, first ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
        if (!got) return std::nullopt;
        first = false;
        more = part.more();
        if (with_identity && index == 0) {
            env.identity = part.to_string();
        } else if (with_identity && index == 1) {
            if (const char* user = zmq_msg_gets(part.handle(), "User-Id")) env.user_id = user;
            env.version = part.to_string();
            ++env.frames;
        } else {
            switch (env.frames++) {
                case 0:
                    env.version = part.to_string();
                    break;
                case 1:
                    env.command = part.to_string();
                    break;
                case 2:
                    env.body = part.to_string();
                    break;
                default:
                    break;  // extra frames are counted and dropped
            }
        }
        ++index;
    }
    return env;
}

std::optional<std::string> endpoint_error(std::string_view ep, bool bind) {
    auto scheme = ep.find("://");
    if (scheme == std::string_view::npos)
        return "an endpoint is tcp://HOST:PORT, ipc://PATH or inproc://NAME";
    auto kind = ep.substr(0, scheme);
    auto rest = ep.substr(scheme + 3);
    if (kind == "ipc" || kind == "inproc") {
        if (rest.empty())
            return fmt::format("{}:// needs a {}", kind, kind == "ipc" ? "path" : "name");
        return std::nullopt;
    }
    if (kind != "tcp") return fmt::format("unknown transport '{}' (tcp, ipc or inproc)", kind);
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return "tcp:// needs HOST:PORT";
    auto host = rest.substr(0, colon);
    auto port = rest.substr(colon + 1);
    if (host.empty() || host == "[]") return "tcp:// needs a host before the ':'";
    if (bind && port == "*") return std::nullopt;
    if (port.empty()) return "tcp:// needs a port after the ':'";
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fmt::format("the port '{}' is not a number of 1-65535", port);
    int n = std::stoi(std::string(port));
    if (n < 1 || n > 65535) {
        if (!(bind && n == 0)) return fmt::format("the port {} is not 1-65535", n);
    }
    return std::nullopt;
}

}  // namespace errand
