// The job state machine: which transitions exist. JobEngine::transition() (engine.cpp) is the one
// place that performs them; docs/LIFECYCLE.md names the engine function of each edge.
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
//   running ──timeout (no result by timeout + grace)──► retrying / dead
//   dead ──retry──► ready (attempts start again)
//   scheduled, retrying ──run now──► ready
//   ready, scheduled, retrying ──expires_at passed (not dispatched by then)──► expired
//   succeeded, dead, cancelled, expired ──delete──► (no row: not a state, Store::remove_job)
//   (submit with parents) ──► blocked ──last parent succeeded (or, after_any, finished)──► ready,
//   or scheduled while its delay still runs; blocked ──a parent dead/cancelled/expired──►
//   cancelled; blocked ──cancel──► cancelled; blocked ──expires_at passed──► expired
//
// succeeded, dead, cancelled and expired are terminal (dead only until someone retries it). A
// running job is never expired: once dispatched it finishes as any other.
#pragma once

#include <stdexcept>

#include "errand/protocol.hpp"

namespace errand::broker {

constexpr bool transition_allowed(JobState from, JobState to) {
    using S = JobState;
    switch (from) {
        case S::scheduled:
            return to == S::ready || to == S::cancelled || to == S::expired;
        case S::ready:
            return to == S::running || to == S::cancelled || to == S::expired;
        case S::running:
            return to == S::succeeded || to == S::retrying || to == S::ready || to == S::dead ||
                   to == S::cancelled;
        case S::retrying:
            return to == S::ready || to == S::cancelled || to == S::expired;
        case S::dead:
            return to == S::ready;  // errand retry
        case S::blocked:
            return to == S::ready || to == S::scheduled || to == S::cancelled || to == S::expired;
        case S::succeeded:
        case S::cancelled:
        case S::expired:
            return false;
    }
    return false;
}

}  // namespace errand::broker

namespace errand::broker {

// Throws std::invalid_argument("job state cannot go from dead to running") for an illegal edge.
void check_transition(JobState from, JobState to);

}  // namespace errand::broker
