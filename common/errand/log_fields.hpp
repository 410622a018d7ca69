// The one spelling of a job in log lines, "job=12 queue=emails attempt=2", put at the start of
// the message and followed by ": ". The daemons' JSON log format (daemon/logging.hpp) turns it
// into the fields job, queue and attempt.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand {

// Formatted only when the line is logged: a disabled debug line on the broker's loop costs no
// string building. `queue` must outlive the log call (it always does: an argument).
struct JobFields {
    JobId id = 0;
    std::string_view queue;
    std::uint32_t attempt = 0;
    std::string str() const {
        return fmt::format("job={} queue={} attempt={}", id, queue, attempt);
    }
};

inline JobFields job_fields(JobId id, std::string_view queue, std::uint32_t attempt) {
    return {id, queue, attempt};
}

}  // namespace errand

template <>
struct fmt::formatter<errand::JobFields> : fmt::formatter<std::string_view> {
    template <typename Context>
    auto format(const errand::JobFields& f, Context& ctx) const {
        return fmt::format_to(ctx.out(), "job={} queue={} attempt={}", f.id, f.queue, f.attempt);
    }
};
