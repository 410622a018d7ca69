// How the `errand` CLI prints jobs, queues and histories: aligned text for people, JSON for
// programs, RFC 3339 UTC times (and parses them back). Everything here is pure (no I/O, no clock):
// callers pass `now` so output can be tested.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/protocol.hpp"

namespace errand::cli {

// Every job state in its wire spelling, in life-cycle order, e.g. for "valid states: …" messages.
std::span<const JobState> all_states();
// "scheduled, ready, running, retrying, succeeded, dead, cancelled, expired"
std::string state_names();

// RFC 3339 times (errand/duration.hpp).
using errand::format_time;
using errand::parse_time;
// How far `then` lies from `now`: "3.2s ago", "in 2.0s".
std::string format_age(Timestamp then, Timestamp now);
// One line for a result: the text itself when it is a single printable line, its first line and
// size when it has several, "N bytes" when it is binary.
std::string summarize_result(std::string_view result);
// The argv as a person would type it in a POSIX shell ('single quotes' where needed).
std::string shell_join(const std::vector<std::string>& argv);

// `errand status`: aligned "key: value" lines, each ending in '\n'; absent fields are left out
// (priority when 0; "runs at" unless the job is scheduled or retrying).
std::string job_text(const JobInfo& job, Timestamp now,
                     const std::optional<std::string>& held = std::nullopt);
// `errand list`: a table with a header row (ID QUEUE STATE ATTEMPTS WORKER AGE), one job a line.
std::string jobs_table(const std::vector<JobInfo>& jobs, Timestamp now);
// `errand queues`: a table with a header row (QUEUE PAUSED, a count per state, OLDEST-READY as an
// age or "-"), one queue a line, sorted by name.
std::string queues_table(const std::vector<QueueInfo>& queues, Timestamp now);
// `errand history`: one aligned line per event, oldest first: time, "from → to" ("(new)" when
// there is no from), "attempt N", worker or "-", reason (its first line).
std::string events_text(const std::vector<Event>& events);

// `--json`: the job's JSON form (errand/json.hpp): every key of the protocol's job object
// (docs/PROTOCOL.md), in its order. Absent values are null; times are RFC 3339 strings; bytes
// that are not UTF-8 become U+FFFD. No trailing newline.
std::string job_json(const JobInfo& job);
// `list --json`: an array of job_json objects.
std::string jobs_json(const std::vector<JobInfo>& jobs);
// `queues --json`: an array, sorted by name, of {name, paused, counts: {STATE: n, …} with every
// state, oldest_ready_at: time or null}.
std::string queues_json(const std::vector<QueueInfo>& queues);
// `history --json`: an array of {at, from (null for the first), to, attempt, worker (or null),
// reason}.
std::string events_json(const std::vector<Event>& events);

}  // namespace errand::cli
