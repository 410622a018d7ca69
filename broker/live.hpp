// The engine's in-memory entry for a job that is not finished (Live) and its compact fields.
// A million queued jobs live in memory at once, so Live is kept small (96 bytes instead of 184):
// names repeat across jobs and are shared, optional durations use a sentinel, the rare unique key
// sits behind a pointer. Terminal jobs live only in the store.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "errand/protocol.hpp"
#include "store.hpp"

namespace errand::broker {

// A queue name, interned in the engine's name pool: one copy per queue, 8 bytes per job.
class Name {
  public:
    Name() = default;
    explicit Name(const std::string* s) : s_(s) {}
    const std::string& str() const { return *s_; }
    operator const std::string&() const { return *s_; }  // NOLINT: reads like the string
    bool empty() const { return s_ == nullptr; }

  private:
    const std::string* s_ = nullptr;
};

// Who holds a running attempt: one worker registration. The sessions own it (one per registered
// worker, updated when it registers again) and the engine keeps a reference in each Live it holds,
// so the engine can fence by registration and name the worker in events without knowing sessions.
struct Holder {
    std::string instance;  // the registration's instance id (stable across reconnects)
    std::string name;      // the worker's name, for events
};
using HolderRef = std::shared_ptr<Holder>;

// An optional duration in 8 bytes (std::optional<Millis> takes 16).
class OptMillis {
  public:
    OptMillis() = default;
    OptMillis(std::optional<Millis> v) : v_(v.value_or(kNone)) {}  // NOLINT
    explicit operator bool() const { return v_ != kNone; }
    Millis operator*() const { return v_; }
    Millis value_or(Millis d) const { return v_ == kNone ? d : v_; }
    operator std::optional<Millis>() const {  // NOLINT
        return v_ == kNone ? std::nullopt : std::optional<Millis>(v_);
    }

  private:
    static constexpr Millis kNone = std::numeric_limits<Millis>::min();
    Millis v_ = kNone;
};

// A unique key, rare: 8 bytes when absent.
class UniqueKey {
  public:
    UniqueKey() = default;
    explicit UniqueKey(const std::optional<std::string>& s)
        : s_(s && !s->empty() ? std::make_unique<std::string>(*s) : nullptr) {}
    bool empty() const { return !s_; }
    operator const std::string&() const { return *s_; }  // NOLINT: only when !empty()

  private:
    std::unique_ptr<std::string> s_;
};

// A job that is not finished, as the engine keeps it between passes.
struct Live {
    Name queue;
    HolderRef holder;  // running: the registration that holds it; null = orphan
    UniqueKey unique;
    Millis run_at = 0;  // scheduled/retrying: when due; ready/running: see since()
    Millis created_at = 0;
    OptMillis timeout_ms;
    OptMillis backoff_ms;
    OptMillis backoff_cap_ms;
    JobId batch = 0;  // the batch it is a member of; 0: none
    std::uint32_t attempts = 0;
    std::uint32_t max_attempts = 0;
    std::int16_t priority = 0;  // limits::kMinPriority..kMaxPriority
    bool has_argv = false;
    JobState state = JobState::ready;

    bool held_by(const Holder* h) const { return holder && holder.get() == h; }

    static Live from(const LiveJob& j, Name queue) {
        Live l;
        l.queue = queue;
        l.unique = UniqueKey(j.unique);
        l.run_at = j.run_at.value_or(0);
        l.created_at = j.created_at;
        l.timeout_ms = j.timeout_ms;
        l.backoff_ms = j.backoff_ms;
        l.backoff_cap_ms = j.backoff_cap_ms;
        l.attempts = j.attempts;
        l.max_attempts = j.max_attempts;
        l.priority = static_cast<std::int16_t>(j.priority);
        l.state = j.state;
        l.has_argv = j.has_argv;
        l.batch = j.batch;
        return l;
    }
};
static_assert(sizeof(Live) <= 96, "Live is per queued job: keep it small");

}  // namespace errand::broker
