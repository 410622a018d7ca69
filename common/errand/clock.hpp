// Time sources. The broker reads time only through Clock so tests can drive it.
#pragma once

#include <chrono>

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

}  // namespace errand
