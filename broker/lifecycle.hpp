// The job state machine: which transitions exist. Broker::transition() is the one place that
// performs them (memory, index, timers and the store, with an event row each).
//
//   (submit) ──► ready ◄──────────── retrying ◄─┐
//      │          │  ▲  (retry delay due)         │ FAIL, attempts left
//      ▼          │  └─ worker lost, attempts left│
//   scheduled ────┘     (or result never arrived) │
//   (due)       dispatch ▼                        │
//              running ──────────────────────────┘
//                 │ DONE ──► succeeded
//                 │ FAIL permanent / attempts used up / worker lost on the last attempt ──► dead
//   ready, scheduled, retrying, running ──cancel──► cancelled
//
// succeeded, dead and cancelled are terminal.
#pragma once

#include "errand/protocol.hpp"

namespace errand::broker {

constexpr bool transition_allowed(JobState from, JobState to) {
    using S = JobState;
    switch (from) {
        case S::scheduled: return to == S::ready || to == S::cancelled;
        case S::ready: return to == S::running || to == S::cancelled;
        case S::running:
            return to == S::succeeded || to == S::retrying || to == S::ready || to == S::dead ||
                   to == S::cancelled;
        case S::retrying: return to == S::ready || to == S::cancelled;
        case S::succeeded:
        case S::dead:
        case S::cancelled: return false;
    }
    return false;
}

}  // namespace errand::broker
