// systemd's notify protocol through libsystemd's sd_notify: readiness, status lines, watchdog
// pings and stopping. Every call is a no-op unless the process was started with NOTIFY_SOCKET
// (by systemd with Type=notify, or by a test listening on a socket of its own).
#pragma once

#include <optional>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand::daemon {

class ServiceNotifier {
  public:
    // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID once.
    ServiceNotifier();

    bool enabled() const { return enabled_; }
    // How often to ping: half of WATCHDOG_USEC, when the watchdog is on for this process.
    std::optional<Millis> watchdog_interval() const { return interval_; }

    void ready(std::string_view status) const;   // READY=1 and STATUS=…
    void status(std::string_view status) const;  // STATUS=…
    void stopping() const;                       // STOPPING=1
    // WATCHDOG=1 once at least watchdog_interval() has passed since the last ping (steady ms).
    // Thread-compatible: call it from one thread.
    void watchdog(Millis steady_now);

  private:
    bool enabled_ = false;
    std::optional<Millis> interval_;
    Millis next_ping_ = 0;
};

}  // namespace errand::daemon
