// The broker's live picture for readers on other threads (HTTP): the loop builds a Snapshot a
// few times a second and swaps it into a SnapshotHub; readers take the shared_ptr and never
// touch the loop's state. The mutex only guards the pointer swap, so the loop never waits on a
// reader for longer than that.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "errand/codec.hpp"
#include "errand/protocol.hpp"
#include "metrics.hpp"
#include "store.hpp"

namespace errand::broker {

struct QueueView {
    std::string name;
    bool paused = false;
    std::array<std::uint64_t, kStateCount> counts{};  // index = JobState
    std::optional<Millis> oldest_ready_at;
    std::optional<Millis> paused_until;  // a timed pause's end
    QueueLimits limits;                  // QUEUE_SET
    std::optional<std::string> held;     // why its ready jobs wait (a limit)
    double finished_per_second = 0;      // over the last minute
    double submitted_per_second = 0;
    std::uint64_t submitted = 0, succeeded = 0, failed = 0, dead = 0, cancelled = 0;  // totals
};

// A worker with the jobs it runs: the protocol's WORKERS item.
using WorkerView = WorkerInfo;

// One committed state change (the protocol's job event: PUB body, FEED item).
using EventView = JobEvent;

struct Snapshot {
    Millis at = 0;  // broker clock when it was built
    Millis started_at = 0;
    std::vector<QueueView> queues;    // by name
    std::vector<WorkerView> workers;  // by name
    Metrics metrics;
    std::vector<EventView> recent;  // newest last, at most a few hundred
};

class SnapshotHub {
  public:
    void publish(std::shared_ptr<const Snapshot> s) {
        std::lock_guard lock(mu_);
        latest_.swap(s);
        // the previous snapshot (now in `s`) is released after the lock is dropped
    }
    std::shared_ptr<const Snapshot> latest() const {
        std::lock_guard lock(mu_);
        return latest_;
    }

  private:
    mutable std::mutex mu_;
    std::shared_ptr<const Snapshot> latest_;
};

}  // namespace errand::broker
