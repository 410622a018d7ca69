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

inline std::string job_fields(JobId id, std::string_view queue, std::uint32_t attempt) {
    return fmt::format("job={} queue={} attempt={}", id, queue, attempt);
}

}  // namespace errand
