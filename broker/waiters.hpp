// Clients waiting for jobs to finish (WAIT, SUBMIT with wait_ms): who waits for which job, until
// when, and how many waits each connection has outstanding (bounded by --max-waits). ZeroMQ's
// ROUTER does not say when a peer is gone, so a waiter also lapses when its client has not
// resent its WAIT for `idle` (a client resends at least every limits::kWaitResendMs; PROTOCOL.md).
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "deadline.hpp"
#include "errand/protocol.hpp"

namespace errand::broker {

struct Waiter {
    std::string identity;
    std::uint64_t req = 0;
    Millis deadline = 0;
    Millis seen = 0;  // the WAIT (or SUBMIT) that registered or last refreshed it
};

class Waiters {
  public:
    // `idle`: a waiter not refreshed for this long is dropped (its client is presumed gone).
    Waiters(std::size_t max_per_connection, std::size_t max_total, Millis idle)
        : max_(max_per_connection), max_total_(max_total), idle_(idle) {}

    // Throws ProtocolError(too_large) when `identity` has the most waits it may have, or the
    // broker has as many as it holds at all (waits of connections that went away count until
    // they lapse, at most `idle` after their last WAIT).
    void check_limit(const std::string& identity) const;
    // `identity` waits for `id` until `deadline` (answered with `req`), seen at `now`. A resent
    // WAIT (same identity and req) keeps the first one's deadline and only refreshes it.
    // `check_limit` false: checked before.
    void add(const std::string& identity, std::uint64_t req, JobId id, Millis deadline, Millis now,
             bool check_limit = true);
    // Removes and returns the waiters of `id` (it finished).
    std::vector<Waiter> take(JobId id);
    // Removes the waiters whose deadline is past, calling `expired(id, waiter)` for each (they
    // are answered `timeout`), and those not refreshed for `idle`, silently: their client is gone,
    // or, if it is not, its next WAIT registers it again. Returns how many lapsed so.
    std::size_t expire(Millis now, const std::function<void(JobId, const Waiter&)>& expired);
    // Removes every waiter; calls `fn(id, waiter)` for each (shutdown).
    void drain(const std::function<void(JobId, const Waiter&)>& fn);
    // The earliest deadline, or `bound`.
    Millis next_deadline(Millis bound) const;
    std::size_t size() const { return total_; }
    // The jobs waited for.
    std::vector<JobId> ids() const;

  private:
    void forget(const std::string& identity);

    std::size_t max_;
    std::size_t max_total_;
    Millis idle_;
    std::size_t total_ = 0;
    // The waiters of a job and the time of its one live heap entry (the earliest deadline or
    // lapse among them); other entries for the job are stale and skipped when popped.
    struct Job {
        std::vector<Waiter> list;
        Millis at = 0;
    };
    Millis due(const Waiter& w) const { return std::min(w.deadline, w.seen + idle_); }
    std::unordered_map<JobId, Job> waiters_;
    std::unordered_map<std::string, std::size_t> waits_of_;  // identity -> outstanding waits
    DeadlineHeap deadlines_;                                 // id = the job waited for
};

}  // namespace errand::broker
