// Time sources. The broker reads time only through Clock so tests can drive it. And the
// conversions between the integers of ms that the broker and the wire count in (Millis) and the
// chrono types of the library's structs (Timestamp, std::chrono::milliseconds).
#pragma once

#include <chrono>
#include <optional>

#include "errand/protocol.hpp"

namespace errand {

class Clock {
  public:
    virtual ~Clock() = default;
    virtual Millis now_ms() const = 0;  // wall clock, ms since the Unix epoch
    // A clock that only moves forward, for durations (worker expiry, job timeouts, waits): a
    // step of the wall clock must not expire anything. Its zero means nothing. A clock that
    // only fakes wall time uses wall time for both.
    virtual Millis monotonic_ms() const { return now_ms(); }
};

class SystemClock final : public Clock {
  public:
    Millis now_ms() const override {
        using namespace std::chrono;
        return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    }
    Millis monotonic_ms() const override {
        using namespace std::chrono;
        return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
    }
};

// Monotonic milliseconds, for timeouts that must not jump with the wall clock.
inline Millis steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

inline constexpr Millis to_ms(Timestamp t) {
    return t.time_since_epoch().count();
}
inline constexpr Millis to_ms(std::chrono::milliseconds d) {
    return d.count();
}
template <class T>
constexpr std::optional<Millis> to_ms(const std::optional<T>& v) {
    if (!v) return std::nullopt;
    return to_ms(*v);
}
inline constexpr Timestamp to_time(Millis epoch_ms) {
    return Timestamp{std::chrono::milliseconds{epoch_ms}};
}
inline constexpr std::optional<Timestamp> to_time(const std::optional<Millis>& epoch_ms) {
    if (!epoch_ms) return std::nullopt;
    return to_time(*epoch_ms);
}
inline constexpr std::optional<std::chrono::milliseconds> to_duration(
    const std::optional<Millis>& ms) {
    if (!ms) return std::nullopt;
    return std::chrono::milliseconds{*ms};
}

}  // namespace errand
