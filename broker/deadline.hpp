// A min-heap of deadlines (timers, leases, waits): entries are never removed early; whoever pops
// one checks that it still matches what it guards, and skips it otherwise (a stale entry).
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "errand/protocol.hpp"

namespace errand::broker {

struct Deadline {
    Millis at = 0;
    JobId id = 0;
    std::uint32_t attempt = 0;  // lease deadlines: the attempt they guard
    bool operator>(const Deadline& o) const { return at > o.at || (at == o.at && id > o.id); }
};
using DeadlineHeap = std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>>;

}  // namespace errand::broker
