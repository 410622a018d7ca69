// Who may talk to the broker: the authorised CURVE keys and their roles, and the ZAP handler
// (ZeroMQ's authentication protocol, RFC 27) that admits or refuses each new connection.
#pragma once

#include <zmq.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace errand::broker {

// A key limited to "worker" cannot cancel, retry, pause, resume or purge; a key limited to
// "client" cannot act as a worker. "any" (the default) may do everything.
enum class Role { any, client, worker };

struct AuthorizedKey {
    std::string name;  // the key file's name without its extension
    Role role = Role::any;
};

// Public keys (Z85) -> who they are. Loaded from a directory of files, one key per file:
// "<Z85 public key> [any|client|worker]" (the role is optional; lines after the first ignored).
class AuthorizedKeys {
  public:
    // Throws std::runtime_error naming the file for anything it cannot use.
    static AuthorizedKeys load(const std::string& dir);
    const AuthorizedKey* find(const std::string& z85) const;
    std::optional<Role> role_of(const std::string& name) const;
    std::size_t size() const { return keys_.size(); }

  private:
    std::map<std::string, AuthorizedKey> keys_;  // by Z85 public key
    std::map<std::string, Role> roles_;          // by name
};

// Serves ZAP requests on inproc://zeromq.zap.01 of `ctx` on a thread of its own. A connection
// whose CURVE key is not authorised is refused during the handshake: nothing it sends reaches
// the broker. Admitted connections carry the key's name as their User-Id.
class ZapHandler {
  public:
    ZapHandler(zmq::context_t& ctx, std::shared_ptr<const AuthorizedKeys> keys);
    ~ZapHandler();
    ZapHandler(const ZapHandler&) = delete;
    ZapHandler& operator=(const ZapHandler&) = delete;

  private:
    void serve(zmq::socket_t& rep, zmq::socket_t& control);
    zmq::context_t& ctx_;
    std::shared_ptr<const AuthorizedKeys> keys_;
    zmq::socket_t control_;  // the owner's end of a PAIR used to stop the thread
    std::thread thread_;
};

}  // namespace errand::broker
