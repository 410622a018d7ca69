// StartWindow: the recent starts of one queue with a rate limit (QUEUE_SET rate / rate_per_ms),
// kept so that no window of rate_per_ms ever holds more than `rate` starts (a sliding log, not
// a token bucket: a bucket of `rate` tokens refilled over rate_per_ms lets up to twice `rate`
// start in one window). The engine keeps one per queue in memory (SQLite); a shared store keeps
// it in the queue's row (PostgreSQL, rate_log), read and written under the row's lock.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "errand/protocol.hpp"

namespace errand::broker {

class StartWindow {
  public:
    // How many may start at `now` so that (now - per, now] holds at most `rate` starts.
    std::uint32_t room(Millis now, std::uint32_t rate, Millis per) const;
    // `n` started at `now` (not before the last start recorded); starts older than a window
    // are forgotten.
    void started(Millis now, std::uint32_t n, Millis per);
    // When room() grows again: the oldest start still in the window leaves it (nullopt: empty).
    std::optional<Millis> frees_at(Millis per) const;
    // "TIME:N,TIME:N…" (the row's rate_log); decode() of anything else gives an empty window.
    std::string encode() const;
    static StartWindow decode(std::string_view text);

  private:
    std::deque<std::pair<Millis, std::uint32_t>> starts_;  // (time, how many), oldest first
};

}  // namespace errand::broker
