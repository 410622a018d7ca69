// The columns both engines read a job with, and the one reading of each row shape: `Row` is an
// engine's row (SQLite's statement, a PostgreSQL result row) with i64, opt_i64, text, opt_text,
// opt_blob and argv by column number.
#pragma once

#include <string>
#include <string_view>

#include "errand/clock.hpp"
#include "errand/codec.hpp"
#include "store.hpp"

namespace errand::broker {

// A state read from the database. The schema's CHECK makes anything else impossible short of
// damage, which is refused like any damage (StoreError), never guessed.
inline JobState stored_state(const std::string& text) {
    auto s = parse_job_state(text);
    if (!s) throw StoreError("the database holds an unknown job state '" + text + "'", false);
    return *s;
}

// The columns read_job reads, with `payload_length` the expression of the payload's length (an
// engine may keep payloads apart from the row).
inline std::string job_columns(std::string_view payload_length) {
    std::string out =
        "id, queue, state, attempts, max_attempts, exit_code, result, error, worker, argv, ";
    out += payload_length;
    out +=
        ", created_at, started_at, finished_at, run_at, priority, timeout_ms, unique_key, "
        "progress, progress_message, expires_at, batch_id";
    return out;
}
inline const std::string kJobColumns = job_columns("length(payload)");

inline constexpr const char* kLiveColumns =
    "id, queue, state, attempts, max_attempts, priority, argv IS NOT NULL, run_at, worker, "
    "created_at, started_at, timeout_ms, backoff_ms, backoff_cap_ms, unique_key, "
    "COALESCE(attempt_budget, max_attempts), expires_at, batch_id";
inline constexpr int kLiveColumnCount = 18;  // read_live reads columns 0..17

template <class Row>
JobInfo read_job(const Row& s) {
    JobInfo j;
    j.id = static_cast<JobId>(s.i64(0));
    j.queue = s.text(1);
    j.state = stored_state(s.text(2));
    j.attempts = static_cast<std::uint32_t>(s.i64(3));
    j.max_attempts = static_cast<std::uint32_t>(s.i64(4));
    j.exit_code = s.opt_i64(5);
    j.result = s.opt_blob(6);
    j.error = s.opt_text(7);
    j.worker = s.opt_text(8);
    j.argv = s.argv(9);
    j.payload_size = static_cast<std::uint64_t>(s.i64(10));
    j.created_at = to_time(s.i64(11));
    j.started_at = to_time(s.opt_i64(12));
    j.finished_at = to_time(s.opt_i64(13));
    j.run_at = to_time(s.opt_i64(14));
    j.priority = static_cast<std::int32_t>(s.i64(15));
    j.timeout = to_duration(s.opt_i64(16));
    j.unique = s.opt_text(17);
    if (auto p = s.opt_i64(18)) j.progress = static_cast<std::uint32_t>(*p);
    j.progress_message = s.opt_text(19);
    j.expires_at = to_time(s.opt_i64(20));
    if (auto b = s.opt_i64(21)) j.batch = static_cast<JobId>(*b);
    return j;
}

template <class Row>
LiveJob read_live(const Row& s) {
    LiveJob j;
    j.id = static_cast<JobId>(s.i64(0));
    j.queue = s.text(1);
    j.state = stored_state(s.text(2));
    j.attempts = static_cast<std::uint32_t>(s.i64(3));
    j.max_attempts = static_cast<std::uint32_t>(s.i64(4));
    j.priority = static_cast<std::int32_t>(s.i64(5));
    j.has_argv = s.i64(6) != 0;
    j.run_at = s.opt_i64(7);
    j.worker = s.opt_text(8);
    j.created_at = s.i64(9);
    j.started_at = s.opt_i64(10);
    j.timeout_ms = s.opt_i64(11);
    j.backoff_ms = s.opt_i64(12);
    j.backoff_cap_ms = s.opt_i64(13);
    j.unique = s.opt_text(14);
    j.attempt_budget = static_cast<std::uint32_t>(s.i64(15));
    j.expires_at = s.opt_i64(16);
    j.batch = static_cast<JobId>(s.opt_i64(17).value_or(0));
    return j;
}

// A batch's columns: its counters and times (kBatchColumns), then its callbacks' jobs
// (kBatchSpecColumns, as encode(JobSpec) writes them).
inline constexpr const char* kBatchColumns =
    "id, description, created_at, sealed_at, completed_at, succeeded_at, total, succeeded, dead, "
    "cancelled, expired, complete_job, success_job";
inline constexpr const char* kBatchSpecColumns = "on_complete, on_success";

// Reads kBatchColumns (and, with `specs`, kBatchSpecColumns after them).
template <class Row>
BatchInfo read_batch(const Row& s, bool specs) {
    BatchInfo b;
    b.id = static_cast<JobId>(s.i64(0));
    b.description = s.text(1);
    b.created_at = to_time(s.i64(2));
    b.sealed_at = to_time(s.opt_i64(3));
    b.completed_at = to_time(s.opt_i64(4));
    b.succeeded_at = to_time(s.opt_i64(5));
    b.total = static_cast<std::uint64_t>(s.i64(6));
    b.succeeded = static_cast<std::uint64_t>(s.i64(7));
    b.dead = static_cast<std::uint64_t>(s.i64(8));
    b.cancelled = static_cast<std::uint64_t>(s.i64(9));
    b.expired = static_cast<std::uint64_t>(s.i64(10));
    if (auto j = s.opt_i64(11)) b.complete_job = static_cast<JobId>(*j);
    if (auto j = s.opt_i64(12)) b.success_job = static_cast<JobId>(*j);
    if (specs) {
        auto spec = [&](int col) -> std::optional<JobSpec> {
            auto blob = s.opt_blob(col);
            if (!blob) return std::nullopt;
            Body body(*blob);
            return decode_job_spec(body.reader());
        };
        b.on_complete = spec(13);
        b.on_success = spec(14);
    }
    return b;
}

}  // namespace errand::broker
