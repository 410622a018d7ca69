// Who may talk to the broker: the authorised CURVE keys and their roles, re-read while the broker
// runs (KeyRing), and the ZAP handler (ZeroMQ's authentication protocol, RFC 27) that admits or
// refuses each new connection.
#pragma once

#include <zmq.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace errand::broker {

// A key limited to "worker" cannot cancel, retry, run-now, delete, pause, resume or purge; a key
// limited to "client" cannot act as a worker. "any" (the default) may do everything.
enum class Role { any, client, worker };

struct AuthorizedKey {
    std::string name;  // the key file's name without its extension
    Role role = Role::any;
};

// Public keys (Z85) -> who they are. Loaded from a directory of files, one key per file:
// "<Z85 public key> [any|client|worker]" (the role is optional; lines after the first ignored).
class AuthorizedKeys {
  public:
    // Throws std::runtime_error naming the file for anything it cannot use. With `problems`,
    // such a file (or a directory that cannot be read) is described there instead and skipped.
    static AuthorizedKeys load(const std::string& dir,
                               std::vector<std::string>* problems = nullptr);
    const AuthorizedKey* find(const std::string& z85) const;
    std::optional<Role> role_of(const std::string& name) const;
    std::size_t size() const { return keys_.size(); }

  private:
    std::map<std::string, AuthorizedKey> keys_;  // by Z85 public key
    std::map<std::string, Role> roles_;          // by name
};

// The authorised keys in force, shared by the ZAP thread and the broker's loop. Read from the
// directory at start (strictly: a file it cannot use stops the broker), then again on SIGHUP and
// whenever the directory changes (the ZAP thread watches it). A re-read replaces the whole set:
// a key whose file was deleted is refused from then on, in new handshakes and on connections it
// opened before (the broker asks role_of for every command). A file it cannot use then is skipped
// with an error in the log; a directory it cannot read leaves no key authorised (fail closed).
// Connections are known by the key's *name* (its file's stem): a file whose key was replaced
// admits only the new key from then on, but connections the old key opened keep its name.
class KeyRing {
  public:
    explicit KeyRing(std::string dir);  // throws like AuthorizedKeys::load

    std::optional<AuthorizedKey> find(const std::string& z85) const;
    // nullopt when no key of that name is authorised (any more).
    std::optional<Role> role_of(const std::string& name) const;
    std::size_t size() const;
    const std::string& dir() const { return dir_; }
    // Reads the directory again and logs "WHY: authorized keys re-read: N keys"; returns N.
    std::size_t reload(std::string_view why);

  private:
    std::string dir_;
    mutable std::mutex mu_;
    std::shared_ptr<const AuthorizedKeys> keys_;
};

// Serves ZAP requests on inproc://zeromq.zap.01 of `ctx` on a thread of its own. A connection
// whose CURVE key is not authorised is refused during the handshake: nothing it sends reaches
// the broker. Admitted connections carry the key's name as their User-Id. The same thread
// watches the key directory (inotify) and re-reads it 100 ms after a change.
class ZapHandler {
  public:
    ZapHandler(zmq::context_t& ctx, std::shared_ptr<KeyRing> keys);
    ~ZapHandler();
    ZapHandler(const ZapHandler&) = delete;
    ZapHandler& operator=(const ZapHandler&) = delete;

  private:
    void serve(zmq::socket_t& rep, zmq::socket_t& control);
    zmq::context_t& ctx_;
    std::shared_ptr<KeyRing> keys_;
    zmq::socket_t control_;  // the owner's end of a PAIR used to stop the thread
    std::thread thread_;
};

}  // namespace errand::broker
