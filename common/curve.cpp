// CURVE key handling on top of libzmq's zmq_curve_keypair / zmq_curve_public.
#include "errand/curve.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "errand/transport.hpp"

namespace errand {

CurveKeyPair generate_keypair() {
    char pub[41] = {}, sec[41] = {};
    if (zmq_curve_keypair(pub, sec) != 0)
        throw std::runtime_error(
            fmt::format("cannot make a CURVE key pair: {}", zmq_strerror(zmq_errno())));
    return {pub, sec};
}

bool valid_z85_key(const std::string& text) {
    if (text.size() != 40) return false;
    std::uint8_t raw[32];
    return zmq_z85_decode(raw, text.c_str()) != nullptr;
}

std::string public_from_secret(const std::string& secret_z85) {
    if (!valid_z85_key(secret_z85)) throw std::invalid_argument("not a Z85 CURVE key");
    char pub[41] = {};
    if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
        throw std::invalid_argument(
            fmt::format("not a CURVE secret key: {}", zmq_strerror(zmq_errno())));
    return pub;
}

std::string read_key_file(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error(
            fmt::format("cannot read key file {}: {}", path, std::strerror(errno)));
    std::string word;
    in >> word;
    if (!valid_z85_key(word))
        throw std::runtime_error(
            fmt::format("key file {} does not start with a 40-character Z85 key", path));
    return word;
}

CurveKeyPair write_keypair(const std::string& dir, const std::string& name) {
    namespace fs = std::filesystem;
    fs::path sec = fs::path(dir) / (name + ".key");
    fs::path pub = fs::path(dir) / (name + ".pub");
    for (const auto& p : {sec, pub})
        if (fs::exists(p))
            throw std::runtime_error(
                fmt::format("{} exists already; not overwriting it", p.string()));
    auto keys = generate_keypair();
    // The secret key file is created 0600 before anything is written to it.
    mode_t old = umask(077);
    {
        std::ofstream out(sec);
        out << keys.secret_key << "\n";
        if (!out) {
            umask(old);
            throw std::runtime_error(fmt::format("cannot write {}", sec.string()));
        }
    }
    umask(old);
    fs::permissions(sec, fs::perms::owner_read | fs::perms::owner_write);
    {
        std::ofstream out(pub);
        out << keys.public_key << "\n";
        if (!out) throw std::runtime_error(fmt::format("cannot write {}", pub.string()));
    }
    fs::permissions(pub, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                             fs::perms::others_read);
    return keys;
}

CurveClient load_curve_client(const std::string& server_public_file,
                              const std::string& secret_file) {
    CurveClient c;
    c.server_public_key = read_key_file(server_public_file);
    c.secret_key = read_key_file(secret_file);
    c.public_key = public_from_secret(c.secret_key);
    return c;
}

void apply_curve(zmq::socket_t& socket, const std::optional<CurveClient>& curve) {
    if (!curve) return;
    socket.set(zmq::sockopt::curve_serverkey, curve->server_public_key);
    socket.set(zmq::sockopt::curve_publickey, curve->public_key);
    socket.set(zmq::sockopt::curve_secretkey, curve->secret_key);
}

}  // namespace errand
