// Multipart send/receive helpers shared by broker, client and worker.
#include "errand/transport.hpp"

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

}  // namespace errand
