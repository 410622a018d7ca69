// Clients waiting for jobs to finish (WAIT, SUBMIT with wait_ms): who waits for which job, until
// when, and how many waits each connection has outstanding (bounded by --max-waits).
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
};

class Waiters {
  public:
    Waiters(std::size_t max_per_connection, std::size_t max_total)
        : max_(max_per_connection), max_total_(max_total) {}

    // Throws ProtocolError(too_large) when `identity` has the most waits it may have, or the
    // broker has as many as it holds at all (waits of connections that went away count until
    // their deadline: ZeroMQ does not say when a peer is gone).
    void check_limit(const std::string& identity) const;
    // `identity` waits for `id` until `deadline` (answered with `req`). A resent WAIT (same
    // identity and req) keeps the first one's deadline. `check_limit` false: checked before.
    void add(const std::string& identity, std::uint64_t req, JobId id, Millis deadline,
             bool check_limit = true);
    // Removes and returns the waiters of `id` (it finished).
    std::vector<Waiter> take(JobId id);
    // Removes the waiters whose deadline is past; calls `expired(id, waiter)` for each.
    void expire(Millis now, const std::function<void(JobId, const Waiter&)>& expired);
    // Removes every waiter; calls `fn(id, waiter)` for each (shutdown).
    void drain(const std::function<void(JobId, const Waiter&)>& fn);
    // The earliest deadline, or `bound`.
    Millis next_deadline(Millis bound) const;
    std::size_t size() const;
    // The jobs waited for.
    std::vector<JobId> ids() const;

  private:
    void forget(const std::string& identity);

    std::size_t max_;
    std::size_t max_total_;
    std::size_t total_ = 0;
    std::unordered_map<JobId, std::vector<Waiter>> waiters_;
    std::unordered_map<std::string, std::size_t> waits_of_;  // identity -> outstanding waits
    DeadlineHeap deadlines_;                                 // id = the job waited for
};

}  // namespace errand::broker
