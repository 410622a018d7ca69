// ServiceNotifier over sd_notify(3) and sd_watchdog_enabled(3).
#include "notify.hpp"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace errand::daemon {

ServiceNotifier::ServiceNotifier() {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    enabled_ = socket != nullptr && *socket != '\0';
    std::uint64_t usec = 0;
    // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID is unset or names this process.
    if (enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        interval_ = std::max<Millis>(1, static_cast<Millis>(usec / 2000));
}

void ServiceNotifier::ready(std::string_view status) const {
    if (!enabled_) return;
    std::string msg = "READY=1\nSTATUS=" + std::string(status);
    sd_notify(0, msg.c_str());
}

void ServiceNotifier::status(std::string_view status) const {
    if (!enabled_) return;
    std::string msg = "STATUS=" + std::string(status);
    sd_notify(0, msg.c_str());
}

void ServiceNotifier::stopping() const {
    if (enabled_) sd_notify(0, "STOPPING=1");
}

void ServiceNotifier::watchdog(Millis steady_now) {
    if (!interval_ || steady_now < next_ping_) return;
    sd_notify(0, "WATCHDOG=1");
    next_ping_ = steady_now + *interval_;
}

}  // namespace errand::daemon
