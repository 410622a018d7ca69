// A job's argv as both engines store it: one MessagePack array of strings in a blob column.
#pragma once

#include <msgpack.hpp>

#include <optional>
#include <string>
#include <vector>

namespace errand::broker {

inline std::string pack_argv(const std::vector<std::string>& argv) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, argv);
    return {buf.data(), buf.size()};
}

// nullopt for a null column (`data` null).
inline std::optional<std::vector<std::string>> unpack_argv(const void* data, std::size_t size) {
    if (!data) return std::nullopt;
    auto h = msgpack::unpack(static_cast<const char*>(data), size);
    return h.get().as<std::vector<std::string>>();
}

}  // namespace errand::broker
