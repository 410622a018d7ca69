// Authorised keys and the ZAP handler thread.
#include "auth.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "errand/curve.hpp"

namespace errand::broker {

AuthorizedKeys AuthorizedKeys::load(const std::string& dir) {
    namespace fs = std::filesystem;
    AuthorizedKeys out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw std::runtime_error(fmt::format("--authorized-keys {}: not a directory", dir));
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (!entry.is_regular_file()) continue;
        std::ifstream in(entry.path());
        std::string line;
        std::getline(in, line);
        std::istringstream words(line);
        std::string key, role_word;
        words >> key >> role_word;
        if (!valid_z85_key(key))
            throw std::runtime_error(fmt::format(
                "authorized key file {} does not start with a 40-character Z85 public key",
                entry.path().string()));
        Role role = Role::any;
        if (role_word == "client")
            role = Role::client;
        else if (role_word == "worker")
            role = Role::worker;
        else if (!role_word.empty() && role_word != "any")
            throw std::runtime_error(
                fmt::format("authorized key file {}: unknown role '{}' (any, client or worker)",
                            entry.path().string(), role_word));
        std::string name = entry.path().stem().string();
        if (out.roles_.count(name))
            throw std::runtime_error(fmt::format("two authorized key files are named {}", name));
        out.keys_[key] = {name, role};
        out.roles_[name] = role;
    }
    return out;
}

const AuthorizedKey* AuthorizedKeys::find(const std::string& z85) const {
    auto it = keys_.find(z85);
    return it == keys_.end() ? nullptr : &it->second;
}

std::optional<Role> AuthorizedKeys::role_of(const std::string& name) const {
    auto it = roles_.find(name);
    if (it == roles_.end()) return std::nullopt;
    return it->second;
}

ZapHandler::ZapHandler(zmq::context_t& ctx, std::shared_ptr<const AuthorizedKeys> keys)
    : ctx_(ctx), keys_(std::move(keys)), control_(ctx, zmq::socket_type::pair) {
    // Bind before the broker's socket exists, so no handshake can happen without us.
    auto rep = std::make_shared<zmq::socket_t>(ctx_, zmq::socket_type::rep);
    rep->set(zmq::sockopt::linger, 0);
    rep->bind("inproc://zeromq.zap.01");
    control_.set(zmq::sockopt::linger, 0);
    control_.bind("inproc://errand-zap-control");
    auto stop = std::make_shared<zmq::socket_t>(ctx_, zmq::socket_type::pair);
    stop->set(zmq::sockopt::linger, 0);
    stop->connect("inproc://errand-zap-control");
    thread_ = std::thread([this, rep, stop] { serve(*rep, *stop); });
}

ZapHandler::~ZapHandler() {
    control_.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    thread_.join();
}

void ZapHandler::serve(zmq::socket_t& rep, zmq::socket_t& control) {
    zmq::pollitem_t items[] = {{rep.handle(), 0, ZMQ_POLLIN, 0},
                               {control.handle(), 0, ZMQ_POLLIN, 0}};
    while (true) {
        zmq::poll(items, 2, std::chrono::milliseconds(-1));
        if (items[1].revents & ZMQ_POLLIN) return;
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        // Request: version, request id, domain, address, identity, mechanism, credentials…
        std::vector<zmq::message_t> req;
        while (true) {
            zmq::message_t part;
            if (!rep.recv(part, zmq::recv_flags::none)) break;
            bool more = part.more();
            req.push_back(std::move(part));
            if (!more) break;
        }
        std::string status = "400", text = "refused", user;
        if (req.size() >= 7 && req[0].to_string() == "1.0" && req[5].to_string() == "CURVE" &&
            req[6].size() == 32) {
            char z85[41] = {};
            zmq_z85_encode(z85, static_cast<const std::uint8_t*>(req[6].data()), 32);
            if (const auto* key = keys_->find(z85)) {
                status = "200";
                text = "OK";
                user = key->name;
            } else {
                spdlog::warn("refused a connection from {}: key {} is not authorised",
                             req[3].to_string(), z85);
            }
        }
        std::string request_id = req.size() > 1 ? req[1].to_string() : "";
        rep.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(status), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(text), zmq::send_flags::sndmore);
        rep.send(zmq::buffer(user), zmq::send_flags::sndmore);
        rep.send(zmq::str_buffer(""), zmq::send_flags::none);
    }
}

}  // namespace errand::broker
