// The in-memory index of ready jobs: per queue, highest priority first, FIFO within a priority.
// Dispatch pops from it and never scans the jobs table. Jobs that carry their own argv are kept
// apart so a worker that does not run job-supplied commands is never offered one.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "errand/protocol.hpp"

namespace errand::broker {

class ReadyIndex {
  public:
    void push(const std::string& queue, JobId id, std::int32_t priority, bool has_argv);
    // The next job for a worker; jobs with argv only when accept_argv.
    std::optional<JobId> pop(const std::string& queue, bool accept_argv);
    bool has_ready(const std::string& queue, bool accept_argv) const;
    std::size_t size(const std::string& queue) const;
    std::size_t size() const { return total_; }
    // The first job of each priority lane of `queue` (the oldest candidates), in no order.
    std::vector<JobId> heads(const std::string& queue) const;
    void clear();
    // Drops every entry of `queue` (stale ones included).
    void erase(const std::string& queue);

  private:
    using Lane = std::map<std::int32_t, std::deque<JobId>, std::greater<>>;
    struct Queue {
        Lane plain;
        Lane argv;
        std::size_t count = 0;
    };
    static std::optional<std::pair<std::int32_t, JobId>> head(const Lane& lane);
    static JobId pop_head(Lane& lane);

    std::unordered_map<std::string, Queue> queues_;
    std::size_t total_ = 0;
};

}  // namespace errand::broker
