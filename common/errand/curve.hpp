// ZeroMQ CURVE keys: generation, key files, and the client side of an encrypted connection.
// Keys travel and are stored as Z85 text (40 characters for 32 bytes).
#pragma once

#include <optional>
#include <string>

namespace errand {

struct CurveKeyPair {
    std::string public_key;  // Z85
    std::string secret_key;  // Z85
};

CurveKeyPair generate_keypair();
// The public key that belongs to a secret key (throws std::invalid_argument if it is not one).
std::string public_from_secret(const std::string& secret_z85);
// True when `text` is a 40-character Z85 key.
bool valid_z85_key(const std::string& text);

// Reads a key file: its first whitespace-separated word must be a Z85 key. Throws
// std::runtime_error naming the file when it cannot be read or holds no key.
std::string read_key_file(const std::string& path);

// Writes NAME.key (secret, mode 0600) and NAME.pub (public, 0644) in `dir`; refuses to
// overwrite. Returns the pair.
CurveKeyPair write_keypair(const std::string& dir, const std::string& name);

// What a client or worker needs for an encrypted connection to the broker.
struct CurveClient {
    std::string server_public_key;  // the broker's public key (Z85)
    std::string public_key;         // ours
    std::string secret_key;         // ours
};

// Loads the broker's public key file and our secret key file (our public key is derived).
CurveClient load_curve_client(const std::string& server_public_file,
                              const std::string& secret_file);

}  // namespace errand
