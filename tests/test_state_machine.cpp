// The job state machine (broker/lifecycle.hpp): every (from, to) pair of the seven states against
// an expected table written out here independently, and check_transition's error for the rest.
#include <doctest/doctest.h>

#include <array>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include "lifecycle.hpp"

using errand::JobState;
using errand::broker::check_transition;
using errand::broker::transition_allowed;

namespace {

constexpr const auto& kStates = errand::kAllStates;

// The edges of the diagram, one line each, with the event that takes them.
const std::set<std::pair<JobState, JobState>>& expected_edges() {
    using S = JobState;
    static const std::set<std::pair<S, S>> kEdges = {
        {S::scheduled, S::ready},      // run_at / delay due
        {S::scheduled, S::cancelled},  // cancel
        {S::ready, S::running},        // dispatch
        {S::ready, S::cancelled},      // cancel
        {S::running, S::succeeded},    // DONE
        {S::running, S::retrying},     // FAIL or timeout, attempts left
        {S::running, S::ready},        // worker lost, attempts left
        {S::running, S::dead},         // permanent FAIL, attempts used up, lost on the last one
        {S::running, S::cancelled},    // cancel (the worker kills the job)
        {S::retrying, S::ready},       // backoff over
        {S::retrying, S::cancelled},   // cancel
        {S::dead, S::ready},           // errand retry
        {S::scheduled, S::expired},    // expires_at passed before it was dispatched
        {S::ready, S::expired},        // expires_at passed before it was dispatched
        {S::retrying, S::expired},     // expires_at passed before the next attempt
        {S::blocked, S::ready},        // the last parent succeeded (after_any: finished)
        {S::blocked, S::scheduled},    // the same, its delay still to run
        {S::blocked, S::cancelled},    // a parent ended otherwise, or cancel
        {S::blocked, S::expired},      // expires_at passed while it waited for its parents
    };
    return kEdges;
}

std::string name(JobState s) {
    return std::string(errand::to_string(s));
}

}  // namespace

// The table is usable at compile time (the broker may rely on that).
static_assert(transition_allowed(JobState::ready, JobState::running));
static_assert(!transition_allowed(JobState::succeeded, JobState::ready));

TEST_CASE("state machine: exactly the edges of the diagram are allowed, all 64 pairs") {
    int allowed = 0;
    for (JobState from : kStates) {
        for (JobState to : kStates) {
            const bool expected = expected_edges().count({from, to}) == 1;
            CAPTURE(name(from));
            CAPTURE(name(to));
            CHECK(transition_allowed(from, to) == expected);
            if (transition_allowed(from, to)) ++allowed;
        }
    }
    CHECK(allowed == 19);
}

TEST_CASE("state machine: no state goes to itself; succeeded, cancelled, expired go nowhere") {
    for (JobState s : kStates) {
        CAPTURE(name(s));
        CHECK_FALSE(transition_allowed(s, s));
        CHECK_FALSE(transition_allowed(JobState::succeeded, s));
        CHECK_FALSE(transition_allowed(JobState::cancelled, s));
        CHECK_FALSE(transition_allowed(JobState::expired, s));
        // A dispatched job is never expired: it finishes as any other.
        CHECK_FALSE(transition_allowed(JobState::running, JobState::expired));
        // Nothing enters `scheduled` after submit but an unblocked job, and `running` only
        // from `ready`.
        CHECK(transition_allowed(s, JobState::scheduled) == (s == JobState::blocked));
        CHECK(transition_allowed(s, JobState::running) == (s == JobState::ready));
    }
}

TEST_CASE("state machine: check_transition accepts the allowed edges and names both states") {
    for (JobState from : kStates) {
        for (JobState to : kStates) {
            CAPTURE(name(from));
            CAPTURE(name(to));
            if (expected_edges().count({from, to}) == 1) {
                CHECK_NOTHROW(check_transition(from, to));
                continue;
            }
            std::string message;
            try {
                check_transition(from, to);
                FAIL_CHECK("no exception for an illegal edge");
            } catch (const std::invalid_argument& e) {
                message = e.what();
            } catch (const std::exception& e) {
                FAIL_CHECK("not std::invalid_argument: " << e.what());
            }
            CAPTURE(message);
            // Both names, in order: "... from <from> to <to>".
            CHECK(message.find("from " + name(from) + " to " + name(to)) != std::string::npos);
        }
    }
}

TEST_CASE("state machine: the documented example message") {
    CHECK_THROWS_WITH_AS(check_transition(JobState::dead, JobState::running),
                         "job state cannot go from dead to running", std::invalid_argument);
}
