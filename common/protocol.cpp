// Wire spellings of error codes and job states.
#include "errand/protocol.hpp"

#include <array>

namespace errand {
namespace {

constexpr std::array<std::string_view, 14> kErrorNames = {
    "bad_frame", "bad_version",   "unknown_command", "bad_request",    "too_large",
    "not_found", "timeout",       "stale",           "not_registered", "storage",
    "internal",  "invalid_state", "forbidden",       "shutting_down",
};

// Indexed by JobState (kAllStates order).
constexpr std::array<std::string_view, kStateCount> kStateNames = {
    "scheduled", "ready",     "running", "retrying", "succeeded",
    "dead",      "cancelled", "expired", "blocked",
};

}  // namespace

std::string_view to_string(ErrorCode code) {
    return kErrorNames.at(static_cast<std::size_t>(code));
}

std::optional<ErrorCode> parse_error_code(std::string_view text) {
    for (std::size_t i = 0; i < kErrorNames.size(); ++i)
        if (kErrorNames[i] == text) return static_cast<ErrorCode>(i);
    return std::nullopt;
}

std::string_view to_string(JobState state) {
    return kStateNames.at(static_cast<std::size_t>(state));
}

std::optional<JobState> parse_job_state(std::string_view text) {
    for (JobState s : kAllStates)
        if (to_string(s) == text) return s;
    return std::nullopt;
}

bool valid_queue_name(std::string_view name) {
    if (name.empty() || name.size() > limits::kMaxQueueName) return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

}  // namespace errand
