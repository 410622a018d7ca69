// The state machine's error for illegal transitions.
#include "lifecycle.hpp"

#include <fmt/format.h>

namespace errand::broker {

void check_transition(JobState from, JobState to) {
    if (!transition_allowed(from, to))
        throw std::invalid_argument(
            fmt::format("job state cannot go from {} to {}", to_string(from), to_string(to)));
}

}  // namespace errand::broker
