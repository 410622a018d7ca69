// Multipart send/receive helpers shared by broker, client and worker.
#include "errand/transport.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>

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

EndpointList parse_endpoints(std::string_view list) {
    EndpointList out;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string_view::npos) comma = list.size();
        std::string_view item = list.substr(start, comma - start);
        while (!item.empty() && item.front() == ' ')
            item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ')
            item.remove_suffix(1);
        if (item.empty()) {
            out.error = "an empty endpoint in the list (endpoints are separated by one comma)";
            return out;
        }
        if (auto why = endpoint_error(item)) {
            // In a list, say which one (the caller quotes the whole list).
            bool list_of_many = list.find(',') != std::string_view::npos;
            out.error = list_of_many ? fmt::format("'{}': {}", item, *why) : *why;
            return out;
        }
        out.endpoints.emplace_back(item);
        start = comma + 1;
    }
    return out;
}

namespace {
constexpr int kLinkEvents = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                            ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
std::atomic<std::uint64_t> monitor_counter{0};
}  // namespace

LinkWatch::LinkWatch(zmq::context_t& ctx, zmq::socket_t& socket, Millis now)
    : watched_(socket), monitor_(ctx, zmq::socket_type::pair), down_since_(now) {
    // The monitor's address is unique in the process (a context may hold several watches).
    auto address = fmt::format("inproc://errand-link-{}-{}", static_cast<void*>(&socket),
                               monitor_counter.fetch_add(1));
    if (zmq_socket_monitor(socket.handle(), address.c_str(), kLinkEvents) != 0)
        throw zmq::error_t();
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(address);
}

LinkWatch::~LinkWatch() {
    zmq_socket_monitor(watched_.handle(), nullptr, 0);
}

void LinkWatch::update(Millis now) {
    for (;;) {
        zmq::message_t event;
        if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
        std::uint16_t id = 0;
        if (event.size() >= sizeof id) std::memcpy(&id, event.data(), sizeof id);
        while (event.more()) {  // the second frame: the peer's address
            zmq::message_t rest;
            if (!monitor_.recv(rest, zmq::recv_flags::dontwait)) break;
            event = std::move(rest);
        }
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            up_ = true;
        } else if (up_) {
            up_ = false;
            down_since_ = now;
            ++drops_;
        }
    }
}

zmq::context_t& process_context() {
    static zmq::context_t* ctx = new zmq::context_t(1);
    return *ctx;
}

std::vector<std::string> broker_list(const std::string& endpoint,
                                     const std::vector<std::string>& endpoints) {
    std::vector<std::string> out = endpoints;
    if (out.empty()) {
        auto list = parse_endpoints(endpoint);
        if (list.error)
            throw std::invalid_argument(
                fmt::format("bad broker endpoint '{}': {}", endpoint, *list.error));
        out = std::move(list.endpoints);
    }
    for (const auto& b : out)
        if (auto why = endpoint_error(b))
            throw std::invalid_argument(fmt::format("bad broker endpoint '{}': {}", b, *why));
    return out;
}

BrokerLink::BrokerLink(zmq::context_t& ctx, const std::string& endpoint,
                       const std::optional<CurveClient>& curve, int hwm, Millis now)
    : socket(ctx, zmq::socket_type::dealer), watch(ctx, socket, now) {
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, hwm);
    socket.set(zmq::sockopt::rcvhwm, hwm);
    set_link_heartbeats(socket);
    apply_curve(socket, curve);
    socket.connect(endpoint);
}

void set_link_heartbeats(zmq::socket_t& socket) {
    socket.set(zmq::sockopt::heartbeat_ivl, 1000);
    socket.set(zmq::sockopt::heartbeat_timeout, 3000);
}

}  // namespace errand
