// Authorised keys and the ZAP handler thread.
#include "auth.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "errand/clock.hpp"
#include "errand/curve.hpp"
#include "errand/fd.hpp"

namespace errand::broker {

namespace {

// One authorised-key file: its key and role. Throws std::runtime_error naming the file.
std::pair<std::string, Role> read_authorized_file(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    std::istringstream words(line);
    std::string key, role_word;
    words >> key >> role_word;
    if (!valid_z85_key(key))
        throw std::runtime_error(
            fmt::format("authorized key file {} does not start with a 40-character Z85 public key",
                        file.string()));
    Role role = Role::any;
    if (role_word == "client")
        role = Role::client;
    else if (role_word == "worker")
        role = Role::worker;
    else if (!role_word.empty() && role_word != "any")
        throw std::runtime_error(
            fmt::format("authorized key file {}: unknown role '{}' (any, client or worker)",
                        file.string(), role_word));
    return {key, role};
}

}  // namespace

AuthorizedKeys AuthorizedKeys::load(const std::string& dir, std::vector<std::string>* problems) {
    namespace fs = std::filesystem;
    AuthorizedKeys out;
    auto problem = [&](const std::string& what) {
        if (problems == nullptr) throw std::runtime_error(what);
        problems->push_back(what);
    };
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        problem(fmt::format("--authorized-keys {}: not a directory", dir));
        return out;
    }
    fs::directory_iterator it(dir, ec);
    if (ec) {
        problem(fmt::format("--authorized-keys {}: {}", dir, ec.message()));
        return out;
    }
    for (; it != fs::directory_iterator(); it.increment(ec)) {
        const auto& entry = *it;
        if (!entry.is_regular_file(ec)) continue;
        std::string name = entry.path().stem().string();
        try {
            auto [key, role] = read_authorized_file(entry.path());
            if (out.roles_.count(name))
                throw std::runtime_error(
                    fmt::format("two authorized key files are named {}", name));
            out.keys_[key] = {name, role};
            out.roles_[name] = role;
        } catch (const std::runtime_error& e) {
            problem(e.what());
        }
    }
    if (ec) problem(fmt::format("--authorized-keys {}: {}", dir, ec.message()));
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

KeyRing::KeyRing(std::string dir)
    : dir_(std::move(dir)),
      keys_(std::make_shared<const AuthorizedKeys>(AuthorizedKeys::load(dir_))) {}

std::optional<AuthorizedKey> KeyRing::find(const std::string& z85) const {
    std::lock_guard lock(mu_);
    const AuthorizedKey* key = keys_->find(z85);
    if (key == nullptr) return std::nullopt;
    return *key;
}

std::optional<Role> KeyRing::role_of(const std::string& name) const {
    std::lock_guard lock(mu_);
    return keys_->role_of(name);
}

std::size_t KeyRing::size() const {
    std::lock_guard lock(mu_);
    return keys_->size();
}

std::size_t KeyRing::reload(std::string_view why) {
    // Read outside the lock: handshakes and commands go on with the old set meanwhile.
    std::vector<std::string> problems;
    auto fresh = std::make_shared<const AuthorizedKeys>(AuthorizedKeys::load(dir_, &problems));
    for (const auto& p : problems)
        spdlog::error("{}: {} (skipped: it authorises no key)", why, p);
    const std::size_t count = fresh->size();
    {
        std::lock_guard lock(mu_);
        keys_ = std::move(fresh);
    }
    spdlog::info("{}: authorized keys re-read: {} keys", why, count);
    return count;
}

ZapHandler::ZapHandler(zmq::context_t& ctx, std::shared_ptr<KeyRing> keys)
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
    // The key directory's changes: a file added, removed, renamed or written. Without inotify
    // (or a watch), only SIGHUP re-reads it.
    Fd watch(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!watch ||
        ::inotify_add_watch(watch.get(), keys_->dir().c_str(),
                            IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE |
                                IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
        spdlog::warn("cannot watch --authorized-keys {} ({}): changes take effect on SIGHUP",
                     keys_->dir(), std::strerror(errno));
        watch.reset();
    }
    // Changes come in bursts (an editor's temporary file, a create then a write): the directory
    // is re-read kSettleMs after the first change of a burst, and again after any later one, so
    // a directory that keeps changing is still re-read every kSettleMs.
    constexpr Millis kSettleMs = 100;
    Millis reload_at = -1;  // steady ms; -1: no change waiting
    zmq::pollitem_t items[] = {{rep.handle(), 0, ZMQ_POLLIN, 0},
                               {control.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, watch ? watch.get() : -1, ZMQ_POLLIN, 0}};
    while (true) {
        const Millis wait = reload_at >= 0 ? std::max<Millis>(reload_at - steady_ms(), 0) : -1;
        zmq::poll(items, watch ? 3 : 2, std::chrono::milliseconds(wait));
        if (items[1].revents & ZMQ_POLLIN) return;
        if (watch && (items[2].revents & ZMQ_POLLIN)) {
            std::array<char, 4096> events{};
            while (::read(watch.get(), events.data(), events.size()) > 0) {
            }
            if (reload_at < 0) reload_at = steady_ms() + kSettleMs;
        }
        if (reload_at >= 0 && steady_ms() >= reload_at) {
            reload_at = -1;
            keys_->reload("--authorized-keys changed");
        }
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
            if (const auto key = keys_->find(z85)) {
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
