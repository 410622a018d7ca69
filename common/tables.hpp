// The field table of every message in docs/PROTOCOL.md (private to common/). Each table drives
// the message's encode, decode and JSON (fields.hpp, codec.cpp, json.cpp), and
// tests/test_protocol_doc.cpp checks that the document's tables list the same fields.
//
// Adding a field to a message: add the member to its struct (errand/codec.hpp), one line here,
// and one row to its table in docs/PROTOCOL.md.
//
// A table's order is the order fields are written in. Rules (fields.hpp): required, defaulted
// (optional, always written), omit_default, omit (an absent optional is left out), nullable (an
// absent optional is written as nil): each field keeps the choice the protocol has always made.
#pragma once

#include <fmt/format.h>

#include "fields.hpp"

namespace errand::fields {

// ---- value shorthands and shared checks ------------------------------------------------------

constexpr Str str(std::size_t max = SIZE_MAX, bool nonempty = false) {
    return Str{Limit{max}, nonempty};
}
constexpr Bin bin(std::size_t DecodeLimits::*from) {
    return Bin{Limit{SIZE_MAX, from}};
}
constexpr Bin bin() {
    return Bin{};
}
constexpr std::size_t kName = limits::kMaxQueueName * 4;  // names read back from the broker
constexpr Rule required = Rule::required;
constexpr Rule defaulted = Rule::defaulted;
constexpr Rule omit_default = Rule::omit_default;
constexpr Rule omit = Rule::omit;
constexpr Rule nullable = Rule::nullable;

inline void check_too_many(std::size_t n, std::size_t max, std::string_view what,
                           std::string_view message) {
    if (n > max)
        throw ProtocolError(
            ErrorCode::too_large,
            fmt::format("{} {} in one {}, over the limit of {}", n, what, message, max));
}

// Wrappers for replies whose body is a list (their public encoders take the pieces).
struct ReqOnly {  // PING, QUEUES, STATS, WORKERS requests; OK
    std::uint64_t req = 0;
};
struct Credit {
    std::uint32_t n = 0;
};
struct JobRef {  // JOB: written straight from the caller's JobInfo
    std::uint64_t req = 0;
    const JobInfo* job = nullptr;
};
struct JobsRef {  // JOBS
    std::uint64_t req = 0;
    std::span<const JobInfo> jobs;
};
struct AckLists {  // ACKS: two arrays of the same length
    std::vector<JobId> ids;
    std::vector<std::uint32_t> attempts;
};
struct IdsReply {  // RETRIED
    std::uint64_t req = 0;
    std::vector<JobId> ids;
};
struct CountReply {  // PURGED
    std::uint64_t req = 0;
    std::uint64_t count = 0;
};
struct QueuesReply {
    std::uint64_t req = 0;
    std::vector<QueueInfo> queues;
};
struct EventsReply {  // EVENTS (HISTORY)
    std::uint64_t req = 0;
    JobId id = 0;
    std::vector<Event> events;
};
struct FeedReply {
    std::uint64_t req = 0;
    std::vector<JobEvent> events;
};
struct ScheduleReply {  // SCHEDULE
    std::uint64_t req = 0;
    Schedule schedule;
};
struct SchedulesReply {  // SCHEDULES
    std::uint64_t req = 0;
    std::vector<Schedule> schedules;
};
struct WorkersReply {
    std::uint64_t req = 0;
    std::vector<WorkerInfo> workers;
};
struct BatchReply {  // BATCH
    std::uint64_t req = 0;
    BatchInfo batch;
};
struct BatchesReply {  // BATCHES
    std::uint64_t req = 0;
    std::vector<BatchInfo> batches;
};

// ---- client requests and replies -------------------------------------------------------------

// The broker's own keys: a schedule's tick ("schedule:NAME:TICK", token and unique key) and a
// batch's callback ("batch:ID:complete"). A client's job with one would stand in for them.
inline void check_reserved_key(const std::string& key, std::string_view what) {
    for (std::string_view prefix : {"schedule:", "batch:"})
        if (key.starts_with(prefix))
            bad(
                fmt::format("a {} starting with '{}' is the broker's own (its schedules' and "
                            "batches' jobs)",
                            what, prefix));
}

struct JobSpecT {
    static constexpr auto table = message<JobSpec>(
        "SUBMIT job",
        {.post =
             [](JobSpec& j, const Reader&, const DecodeLimits&) {
                 if (j.run_at && j.delay) bad("give either 'run_at' or 'delay_ms', not both");
                 if (j.expires_at && j.expires_in)
                     bad("give either 'expires_at' or 'expires_in_ms', not both");
                 if (j.after_any && j.after.empty())
                     bad("'after_any' needs 'after' (the parents to wait for)");
             }},
        field("queue", &JobSpec::queue, Queue{}, required),
        field("payload", &JobSpec::payload, bin(&DecodeLimits::max_payload), defaulted),
        field("max_attempts", &JobSpec::max_attempts, U32{}, omit,
              [](const std::uint32_t& v) {
                  if (v < 1 || v > limits::kMaxMaxAttempts)
                      bad(fmt::format("max_attempts must be 1-{}", limits::kMaxMaxAttempts));
              }),
        field("argv", &JobSpec::argv, StrArray{limits::kMaxArgv, limits::kMaxArgvBytes}, omit,
              [](const std::vector<std::string>& argv) {
                  if (argv.empty()) bad("field 'argv' must not be empty");
                  std::size_t total = 0;
                  for (const auto& a : argv)
                      total += a.size();
                  if (total > limits::kMaxArgvBytes)
                      bad(fmt::format("field 'argv' is longer than {} bytes in all",
                                      limits::kMaxArgvBytes));
              }),
        field("token", &JobSpec::token, str(limits::kMaxToken, true), omit,
              [](const std::string& t) { check_reserved_key(t, "token"); }),
        field("priority", &JobSpec::priority, I32{}, omit,
              [](const std::int32_t& p) {
                  if (p < limits::kMinPriority || p > limits::kMaxPriority)
                      bad(fmt::format("priority must be {} to {}", limits::kMinPriority,
                                      limits::kMaxPriority));
              }),
        field("run_at", &JobSpec::run_at, Time{}, omit,
              [](const Timestamp& t) {
                  auto ms = t.time_since_epoch().count();
                  if (ms < 0 || ms > limits::kMaxRunAt)
                      bad(fmt::format("run_at must be 0 to {} (ms since the Unix epoch)",
                                      limits::kMaxRunAt));
              }),
        field("delay_ms", &JobSpec::delay, Duration{limits::kMaxDelayMs}, omit),
        field("timeout_ms", &JobSpec::timeout, Duration{limits::kMaxTimeoutMs}, omit,
              [](const std::chrono::milliseconds& t) {
                  if (t.count() == 0) bad("field 'timeout_ms' must be positive");
              }),
        field("backoff_ms", &JobSpec::backoff, Duration{limits::kMaxDelayMs}, omit),
        field("backoff_cap_ms", &JobSpec::backoff_cap, Duration{limits::kMaxDelayMs}, omit),
        field("unique", &JobSpec::unique, str(limits::kMaxUniqueKey, true), omit,
              [](const std::string& u) { check_reserved_key(u, "unique"); }),
        field("expires_at", &JobSpec::expires_at, Time{}, omit,
              [](const Timestamp& t) {
                  auto ms = t.time_since_epoch().count();
                  if (ms < 0 || ms > limits::kMaxRunAt)
                      bad(fmt::format("expires_at must be 0 to {} (ms since the Unix epoch)",
                                      limits::kMaxRunAt));
              }),
        field("expires_in_ms", &JobSpec::expires_in, Duration{limits::kMaxDelayMs}, omit,
              [](const std::chrono::milliseconds& d) {
                  if (d.count() == 0) bad("field 'expires_in_ms' must be positive");
              }),
        field("after", &JobSpec::after, U64Array{}, omit_default,
              [](const std::vector<JobId>& ids) {
                  if (ids.size() > limits::kMaxParents) too_many("after", limits::kMaxParents);
                  for (std::size_t i = 0; i < ids.size(); ++i) {
                      if (ids[i] == 0) bad("field 'after' holds job ids (1 or more), not 0");
                      for (std::size_t k = 0; k < i; ++k)
                          if (ids[k] == ids[i])
                              bad(fmt::format("field 'after' names job {} twice", ids[i]));
                  }
              }),
        field("after_any", &JobSpec::after_any, Bool{}, omit_default),
        field("batch", &JobSpec::batch, U64{}, omit, [](const std::uint64_t& id) {
            if (id == 0) bad("field 'batch' holds a batch id (1 or more), not 0");
        }));
};

struct SubmitT {
    static constexpr auto table = message<SubmitRequest>(
        "SUBMIT",
        {.post =
             [](SubmitRequest& m, const Reader&, const DecodeLimits&) {
                 if (m.wait_ms && m.jobs.size() != 1)
                     bad("'wait_ms' needs exactly one job in 'jobs'");
             }},
        field("req", &SubmitRequest::req, U64{}, required),
        field("jobs", &SubmitRequest::jobs,
              MsgArray<JobSpecT>{[](std::size_t n, const DecodeLimits& lim) {
                  if (n == 0) bad("field 'jobs' must hold at least one job");
                  check_too_many(n, lim.max_batch, "jobs", "SUBMIT");
              }},
              required),
        field("wait_ms", &SubmitRequest::wait_ms, DurationMs{limits::kMaxWaitMs}, omit));
};

struct SubmittedT {
    static constexpr auto table =
        message<SubmitReply>("SUBMITTED", {}, field("req", &SubmitReply::req, U64{}, required),
                             field("ids", &SubmitReply::ids, U64Array{}, required),
                             field("duplicate", &SubmitReply::duplicate, BoolArray{}, required));
};

struct IdRequestT {  // STATUS, CANCEL, HISTORY
    static constexpr auto table =
        message<IdRequest>("STATUS", {}, field("req", &IdRequest::req, U64{}, required),
                           field("id", &IdRequest::id, U64{}, required));
};

struct WaitT {
    static constexpr auto table = message<WaitRequest>(
        "WAIT", {}, field("req", &WaitRequest::req, U64{}, required),
        field("id", &WaitRequest::id, U64{}, required),
        field("timeout_ms", &WaitRequest::timeout_ms, DurationMs{limits::kMaxWaitMs}, defaulted));
};

struct ListT {
    static constexpr auto table = message<ListRequest>(
        "LIST", {}, field("req", &ListRequest::req, U64{}, required),
        field("limit", &ListRequest::limit, U32{}, defaulted,
              [](const std::uint32_t& l) {
                  if (l < 1 || l > limits::kMaxListLimit)
                      bad(fmt::format("limit must be 1-{}", limits::kMaxListLimit));
              }),
        field("queue", &ListRequest::queue, Queue{}, omit),
        field("state", &ListRequest::state, State{}, omit));
};

struct JobInfoT {
    static constexpr auto table =
        message<JobInfo>("job object", {}, field("id", &JobInfo::id, U64{}, required),
                         field("queue", &JobInfo::queue, str(1024), required),
                         field("state", &JobInfo::state, State{}, required),
                         field("attempts", &JobInfo::attempts, U32{}, required),
                         field("max_attempts", &JobInfo::max_attempts, U32{}, required),
                         field("exit_code", &JobInfo::exit_code, I64{}, nullable),
                         field("result", &JobInfo::result, bin(), nullable),
                         field("error", &JobInfo::error, str(), nullable),
                         field("worker", &JobInfo::worker, str(), nullable),
                         field("argv", &JobInfo::argv, StrArray{}, nullable),
                         field("payload_size", &JobInfo::payload_size, U64{}, defaulted),
                         field("created_at", &JobInfo::created_at, Time{}, required),
                         field("started_at", &JobInfo::started_at, Time{}, nullable),
                         field("finished_at", &JobInfo::finished_at, Time{}, nullable),
                         field("run_at", &JobInfo::run_at, Time{}, nullable),
                         field("priority", &JobInfo::priority, I32{}, defaulted),
                         field("timeout_ms", &JobInfo::timeout, Duration{}, nullable),
                         field("unique", &JobInfo::unique, str(), nullable),
                         field("progress", &JobInfo::progress, U32{}, nullable),
                         field("progress_message", &JobInfo::progress_message, str(), nullable),
                         field("expires_at", &JobInfo::expires_at, Time{}, omit),
                         field("batch", &JobInfo::batch, U64{}, omit));
};

struct JobT {
    static constexpr auto table =
        message<JobRef>("JOB", {}, field("req", &JobRef::req, U64{}, required),
                        field("job", &JobRef::job, MsgRef<JobInfoT>{}, required));
};

struct JobsT {
    static constexpr auto table =
        message<JobsRef>("JOBS", {}, field("req", &JobsRef::req, U64{}, required),
                         field("jobs", &JobsRef::jobs, MsgSpan<JobInfoT>{}, required));
};

struct ReqOnlyT {  // PING, QUEUES, STATS, WORKERS; OK
    static constexpr auto table =
        message<ReqOnly>("PING", {}, field("req", &ReqOnly::req, U64{}, required));
};

struct PongT {
    static constexpr auto table =
        message<Pong>("PONG", {}, field("req", &Pong::req, U64{}, required),
                      field("version", &Pong::version, str(64), defaulted),
                      field("time", &Pong::time, Time{}, defaulted));
};

struct QueueRequestT {  // RESUME (and PAUSE without for_ms: PauseT)
    static constexpr auto table =
        message<QueueRequest>("RESUME", {}, field("req", &QueueRequest::req, U64{}, required),
                              field("queue", &QueueRequest::queue, Queue{}, required));
};

struct RetryT {
    static constexpr auto table =
        message<RetryRequest>("RETRY",
                              {.post =
                                   [](RetryRequest& m, const Reader&, const DecodeLimits&) {
                                       if (m.id.has_value() == m.dead)
                                           bad("give either 'id' or 'dead': true");
                                       if (m.id && m.queue)
                                           bad("'queue' goes with 'dead', not with 'id'");
                                   }},
                              field("req", &RetryRequest::req, U64{}, required),
                              field("dead", &RetryRequest::dead, Bool{}, defaulted),
                              field("id", &RetryRequest::id, U64{}, omit),
                              field("queue", &RetryRequest::queue, Queue{}, omit));
};

struct RetriedT {
    static constexpr auto table =
        message<IdsReply>("RETRIED", {}, field("req", &IdsReply::req, U64{}, required),
                          field("ids", &IdsReply::ids, U64Array{}, required));
};

struct PurgeT {
    static constexpr auto table = message<PurgeRequest>(
        "PURGE", {}, field("req", &PurgeRequest::req, U64{}, required),
        field("state", &PurgeRequest::state, State{}, required,
              [](const JobState& s) {
                  if (!is_terminal(s))
                      bad(
                          fmt::format("only finished jobs can be purged (succeeded, dead, "
                                      "cancelled, expired), not {}",
                                      to_string(s)));
              }),
        field("queue", &PurgeRequest::queue, Queue{}, omit),
        field("older_than_ms", &PurgeRequest::older_than_ms, DurationMs{limits::kMaxDelayMs},
              omit));
};

struct PurgedT {
    static constexpr auto table =
        message<CountReply>("PURGED", {}, field("req", &CountReply::req, U64{}, required),
                            field("count", &CountReply::count, U64{}, required));
};

struct QueueInfoT {
    static constexpr auto table =
        message<QueueInfo>("queue", {}, field("name", &QueueInfo::name, str(), required),
                           field("paused", &QueueInfo::paused, Bool{}, defaulted),
                           field("counts", &QueueInfo::counts, Counts{}, required),
                           field("oldest_ready_at", &QueueInfo::oldest_ready_at, Time{}, nullable),
                           field("paused_until", &QueueInfo::paused_until, Time{}, omit),
                           field("max_running", &QueueInfo::max_running, U32{}, omit),
                           field("rate", &QueueInfo::rate, U32{}, omit),
                           field("rate_per_ms", &QueueInfo::rate_per, Duration{}, omit),
                           field("held", &QueueInfo::held, str(64), omit),
                           field("max_attempts", &QueueInfo::max_attempts, U32{}, omit),
                           field("timeout_ms", &QueueInfo::timeout, Duration{}, omit),
                           field("priority", &QueueInfo::priority, I32{}, omit),
                           field("retention_ms", &QueueInfo::retention, Duration{}, omit),
                           field("expires_in_ms", &QueueInfo::expires_in, Duration{}, omit));
};

struct QueuesT {
    static constexpr auto table = message<QueuesReply>(
        "QUEUES reply", {}, field("req", &QueuesReply::req, U64{}, required),
        field("queues", &QueuesReply::queues, MsgArray<QueueInfoT>{}, required));
};

struct EventT {
    static constexpr auto table = message<Event>(
        "event", {}, field("at", &Event::at, Time{}, required),
        field("from", &Event::from, State{}, nullable), field("to", &Event::to, State{}, required),
        field("attempt", &Event::attempt, U32{}, required),
        field("worker", &Event::worker, str(), nullable),
        field("reason", &Event::reason, str(), defaulted));
};

struct EventsT {
    static constexpr auto table =
        message<EventsReply>("EVENTS", {}, field("req", &EventsReply::req, U64{}, required),
                             field("id", &EventsReply::id, U64{}, required),
                             field("events", &EventsReply::events, MsgArray<EventT>{}, required));
};

// ---- schedules -------------------------------------------------------------------------------

inline void check_schedule_name(const std::string& name) {
    if (!valid_queue_name(name))
        bad(fmt::format("invalid schedule name '{}': use 1-{} of A-Z a-z 0-9 _ . -", name,
                        limits::kMaxQueueName));
}

struct ScheduleT {
    static constexpr auto table = message<Schedule>(
        "schedule object",
        {.post =
             [](Schedule& s, const Reader&, const DecodeLimits&) {
                 if (s.job.token || s.job.unique || s.job.run_at || s.job.delay)
                     bad("a schedule's job takes no 'token', 'unique', 'run_at' or 'delay_ms' "
                         "(each tick's job gets its own token)");
                 if (s.job.expires_at)
                     bad("a schedule's job takes no 'expires_at' (one time for every tick); "
                         "give 'expires_in_ms', counted from each tick");
             }},
        field("name", &Schedule::name, str(kName), required,
              [](const std::string& n) { check_schedule_name(n); }),
        field("cron", &Schedule::cron, str(256, true), required),
        field("zone", &Schedule::zone, str(64, true), defaulted),
        field("catch_up", &Schedule::catch_up, str(16), defaulted,
              [](const std::string& c) {
                  if (c != "none" && c != "latest" && c != "all")
                      bad(fmt::format("catch_up must be none, latest or all, not '{}'", c));
              }),
        field("job", &Schedule::job, Msg<JobSpecT>{}, required),
        field("paused", &Schedule::paused, Bool{}, defaulted),
        field("created_at", &Schedule::created_at, Time{}, defaulted),
        field("next_at", &Schedule::next_at, Time{}, nullable),
        field("last_at", &Schedule::last_at, Time{}, nullable),
        field("last_job", &Schedule::last_job, U64{}, nullable),
        field("last_state", &Schedule::last_state, State{}, nullable));
};

struct ScheduleAddT {
    static constexpr auto table = message<ScheduleAddRequest>(
        "SCHEDULE_ADD", {}, field("req", &ScheduleAddRequest::req, U64{}, required),
        field("schedule", &ScheduleAddRequest::schedule, Msg<ScheduleT>{}, required));
};

struct ScheduleRequestT {  // SCHEDULE_SHOW, SCHEDULE_REMOVE, SCHEDULE_PAUSE, SCHEDULE_RESUME
    static constexpr auto table = message<ScheduleRequest>(
        "SCHEDULE_SHOW", {}, field("req", &ScheduleRequest::req, U64{}, required),
        field("name", &ScheduleRequest::name, str(kName), required,
              [](const std::string& n) { check_schedule_name(n); }));
};

struct ScheduleReplyT {
    static constexpr auto table = message<ScheduleReply>(
        "SCHEDULE", {}, field("req", &ScheduleReply::req, U64{}, required),
        field("schedule", &ScheduleReply::schedule, Msg<ScheduleT>{}, required));
};

struct SchedulesT {
    static constexpr auto table = message<SchedulesReply>(
        "SCHEDULES", {}, field("req", &SchedulesReply::req, U64{}, required),
        field("schedules", &SchedulesReply::schedules, MsgArray<ScheduleT>{}, required));
};

// ---- observability ---------------------------------------------------------------------------

struct JobEventT {
    static constexpr auto table =
        message<JobEvent>("job event", {}, field("seq", &JobEvent::seq, U64{}, required),
                          field("id", &JobEvent::id, U64{}, required),
                          field("queue", &JobEvent::queue, str(kName), required),
                          field("from", &JobEvent::from, State{}, nullable),
                          field("to", &JobEvent::to, State{}, required),
                          field("attempt", &JobEvent::attempt, U32{}, required),
                          field("at", &JobEvent::at, Time{}, required),
                          field("worker", &JobEvent::worker, str(1024), nullable),
                          field("reason", &JobEvent::reason, str(64 * 1024), defaulted));
};

struct FeedT {
    static constexpr auto table =
        message<FeedRequest>("FEED", {}, field("req", &FeedRequest::req, U64{}, required),
                             field("limit", &FeedRequest::limit, U32{}, defaulted,
                                   [](const std::uint32_t& l) {
                                       if (l < 1 || l > kMaxFeed)
                                           bad(fmt::format("limit must be 1-{}", kMaxFeed));
                                   }),
                             field("after", &FeedRequest::after, U64{}, defaulted),
                             field("queue", &FeedRequest::queue, Queue{}, omit));
};

struct FeedReplyT {
    static constexpr auto table =
        message<FeedReply>("FEED reply", {}, field("req", &FeedReply::req, U64{}, required),
                           field("events", &FeedReply::events, MsgArray<JobEventT>{}, required));
};

struct QueueStatsT {
    static constexpr auto table = message<QueueStats>(
        "queue stats", {}, field("name", &QueueStats::name, str(kName), required),
        field("paused", &QueueStats::paused, Bool{}, defaulted),
        field("counts", &QueueStats::counts, Counts{}, required),
        field("submitted", &QueueStats::submitted, U64{}, required),
        field("succeeded", &QueueStats::succeeded, U64{}, required),
        field("failed", &QueueStats::failed, U64{}, required),
        field("dead", &QueueStats::dead, U64{}, required),
        field("cancelled", &QueueStats::cancelled, U64{}, required),
        field("finished_per_second", &QueueStats::finished_per_second, F64{}, required),
        field("submitted_per_second", &QueueStats::submitted_per_second, F64{}, required));
};

struct BrokerInfoT {
    static constexpr auto table =
        message<BrokerInfo>("cluster broker", {}, field("id", &BrokerInfo::id, str(1024), required),
                            field("host", &BrokerInfo::host, str(1024), required),
                            field("pid", &BrokerInfo::pid, U64{}, required),
                            field("seen_at", &BrokerInfo::seen_at, Time{}, required),
                            field("leader", &BrokerInfo::leader, Bool{}, required));
};

struct StatsT {
    static constexpr auto table = message<StatsReply>(
        "STATS reply", {}, field("req", &StatsReply::req, U64{}, required),
        field("time", &StatsReply::time, Time{}, required),
        field("started_at", &StatsReply::started_at, Time{}, required),
        field("workers", &StatsReply::workers, U64{}, required),
        field("running", &StatsReply::running, U64{}, required),
        field("commits", &StatsReply::commits, U64{}, required),
        field("commit_failures", &StatsReply::commit_failures, U64{}, required),
        field("commit_jobs_sum", &StatsReply::commit_jobs_sum, U64{}, required),
        field("events_endpoint", &StatsReply::events_endpoint, str(1024), nullable),
        field("commit_seconds_sum", &StatsReply::commit_seconds_sum, F64{}, required),
        field("queues", &StatsReply::queues, MsgArray<QueueStatsT>{}, required),
        field("broker", &StatsReply::broker, str(1024), omit),
        field("brokers", &StatsReply::brokers, MsgArray<BrokerInfoT>{}, omit_default),
        field("waits", &StatsReply::waits, U64{}, omit_default));
};

struct WorkerJobT {
    static constexpr auto table =
        message<WorkerJob>("worker job", {}, field("id", &WorkerJob::id, U64{}, required),
                           field("queue", &WorkerJob::queue, str(kName), required),
                           field("attempt", &WorkerJob::attempt, U32{}, required),
                           field("started_at", &WorkerJob::started_at, Time{}, required));
};

struct WorkerInfoT {
    static constexpr auto table =
        message<WorkerInfo>("worker", {}, field("name", &WorkerInfo::name, str(1024), required),
                            field("instance", &WorkerInfo::instance, str(1024), required),
                            field("host", &WorkerInfo::host, str(1024), required),
                            field("pid", &WorkerInfo::pid, U64{}, required),
                            field("queues", &WorkerInfo::queues, StrArray{4096, kName}, required),
                            field("concurrency", &WorkerInfo::concurrency, U32{}, required),
                            field("prefetch", &WorkerInfo::prefetch, U32{}, required),
                            field("credit", &WorkerInfo::credit, U32{}, required),
                            field("last_seen", &WorkerInfo::last_seen, Time{}, required),
                            field("jobs", &WorkerInfo::jobs, MsgArray<WorkerJobT>{}, required),
                            field("reconnects", &WorkerInfo::reconnects, U64{}, omit_default),
                            field("state", &WorkerInfo::state, str(32), defaulted));
};

struct WorkersT {
    static constexpr auto table = message<WorkersReply>(
        "WORKERS reply", {}, field("req", &WorkersReply::req, U64{}, required),
        field("workers", &WorkersReply::workers, MsgArray<WorkerInfoT>{}, required));
};

// ---- worker commands -------------------------------------------------------------------------

struct RegisterT {
    static constexpr auto table = message<RegisterRequest>(
        "REGISTER",
        {.post =
             [](RegisterRequest& m, const Reader&, const DecodeLimits&) {
                 if (!m.weights.empty() && m.weights.size() != m.queues.size())
                     bad("field 'weights' must have one weight per queue");
             }},
        field("req", &RegisterRequest::req, U64{}, required),
        field("prefetch", &RegisterRequest::prefetch, U32{}, defaulted,
              [](const std::uint32_t& p) {
                  if (p > limits::kMaxPrefetch)
                      bad(fmt::format("prefetch must be at most {}", limits::kMaxPrefetch));
              }),
        field("weights", &RegisterRequest::weights, U32Array{}, defaulted,
              [](const std::vector<std::uint32_t>& weights) {
                  for (auto x : weights)
                      if (x < 1 || x > limits::kMaxQueueWeight)
                          bad(fmt::format("queue weights must be 1-{}", limits::kMaxQueueWeight));
              }),
        field("commands", &RegisterRequest::commands, Bool{}, defaulted),
        field("instance", &RegisterRequest::instance, str(128, true), required),
        field("name", &RegisterRequest::name, str(256), required),
        field("host", &RegisterRequest::host, str(256), defaulted),
        field("pid", &RegisterRequest::pid, U64{}, defaulted),
        field("queues", &RegisterRequest::queues, StrArray{limits::kMaxWorkerQueues, kName},
              required,
              [](const std::vector<std::string>& queues) {
                  if (queues.empty()) bad("field 'queues' must name at least one queue");
                  for (const auto& q : queues)
                      if (!valid_queue_name(q)) bad(fmt::format("invalid queue name '{}'", q));
              }),
        field("concurrency", &RegisterRequest::concurrency, U32{}, required,
              [](const std::uint32_t& c) {
                  if (c < 1 || c > limits::kMaxConcurrency)
                      bad(fmt::format("concurrency must be 1-{}", limits::kMaxConcurrency));
              }),
        field("held", &RegisterRequest::held, HeldPairs{}, defaulted),
        field("reconnects", &RegisterRequest::reconnects, U64{}, omit_default),
        field("state", &RegisterRequest::state, str(32), omit_default, [](const std::string& s) {
            if (s != kWorkerActive && s != kWorkerQuiet)
                bad(fmt::format("field 'state' must be {} or {}", kWorkerActive, kWorkerQuiet));
        }));
};

struct RegisteredT {
    static constexpr auto table = message<RegisteredReply>(
        "REGISTERED", {}, field("req", &RegisteredReply::req, U64{}, required),
        field("heartbeat_ms", &RegisteredReply::heartbeat_ms, DurationMs{}, required),
        field("expiry_ms", &RegisteredReply::expiry_ms, DurationMs{}, required),
        field("held_ok", &RegisteredReply::held_ok, U64Array{}, required),
        field("held_rejected", &RegisteredReply::held_rejected, U64Array{}, required),
        field("max_result", &RegisteredReply::max_result, U64{}, defaulted),
        field("max_message", &RegisteredReply::max_message, U64{}, defaulted),
        field("max_batch", &RegisteredReply::max_batch, U64{}, defaulted),
        field("result_credit", &RegisteredReply::result_credit, Bool{}, defaulted));
};

inline void check_credit(const std::uint32_t& n) {
    if (n > limits::kMaxConcurrency)
        bad(fmt::format("credit must be at most {}", limits::kMaxConcurrency));
}

struct CreditT {
    static constexpr auto table = message<Credit>(
        "CREDIT", {},
        field("n", &Credit::n, U32{}, required, [](const std::uint32_t& n) { check_credit(n); }));
};

struct DispatchT {
    static constexpr auto table =
        message<Dispatch>("DISPATCH", {}, field("id", &Dispatch::id, U64{}, required),
                          field("queue", &Dispatch::queue, str(1024), required),
                          field("attempt", &Dispatch::attempt, U32{}, required),
                          field("payload", &Dispatch::payload, bin(), defaulted),
                          field("argv", &Dispatch::argv, StrArray{}, nullable),
                          field("seq", &Dispatch::seq, U64{}, defaulted),
                          field("timeout_ms", &Dispatch::timeout_ms, DurationMs{}, nullable),
                          field("epoch", &Dispatch::epoch, U32{}, omit_default));
};

struct HeartbeatT {  // worker -> broker
    static constexpr auto table = message<WorkerHeartbeat>(
        "HEARTBEAT", {}, field("seq", &WorkerHeartbeat::seq, U64{}, defaulted),
        field("running", &WorkerHeartbeat::running, U64Array{}, defaulted));
};

// DONE and FAIL: one struct, two tables. "ok" is written so that a body can be an element of
// RESULTS as it is; the command (or, in RESULTS, "ok" itself) decides which table reads it.
struct DoneT {
    static constexpr auto table = message<JobResult>(
        "DONE",
        {.post =
             [](JobResult& m, const Reader&, const DecodeLimits&) {
                 if (!m.result) m.result.emplace();  // no result: an empty one
             }},
        field("ok", &JobResult::ok, Bool{}, defaulted),
        field("id", &JobResult::id, U64{}, required),
        field("attempt", &JobResult::attempt, U32{}, required),
        field("result", &JobResult::result, bin(&DecodeLimits::max_result), defaulted),
        field("exit_code", &JobResult::exit_code, I64{}, defaulted),
        field("epoch", &JobResult::epoch, U32{}, omit_default));
};

struct FailT {
    static constexpr auto table = message<JobResult>(
        "FAIL", {.init = [](JobResult& m) { m.exit_code = -1; }},
        field("ok", &JobResult::ok, Bool{}, defaulted),
        field("id", &JobResult::id, U64{}, required),
        field("attempt", &JobResult::attempt, U32{}, required),
        field("error", &JobResult::error, str(limits::kMaxError), required),
        field("exit_code", &JobResult::exit_code, I64{}, defaulted),
        field("result", &JobResult::result, bin(&DecodeLimits::max_result), nullable),
        field("permanent", &JobResult::permanent, Bool{}, defaulted),
        field("epoch", &JobResult::epoch, U32{}, omit_default));
};

inline JobResult unpack_result(const msgpack::object& o, bool ok, const DecodeLimits& lim) {
    JobResult m = ok ? unpack<DoneT>(o, lim) : unpack<FailT>(o, lim);
    m.ok = ok;
    return m;
}

// RESULTS' elements: DONE or FAIL bodies, each with a required "ok" that says which.
struct ResultList {
    using value_type = std::vector<JobResult>;
    static constexpr std::string_view wire = "[map]";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (const auto& r : v)
            r.ok ? pack<DoneT>(pk, r) : pack<FailT>(pk, r);
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        const auto& a = as_array(k, o);
        if (a.size == 0) bad("field 'results' must hold at least one result");
        check_too_many(a.size, l.max_batch, "results", "RESULTS");
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i) {
            Reader item(a.ptr[i]);
            auto ok = item.opt_bool("ok");
            if (!ok) bad(fmt::format("result {} has no boolean 'ok'", i));
            out.push_back(unpack_result(a.ptr[i], *ok, l));
        }
        return out;
    }
};

// "credit" comes before "results": encode_results writes the map's last value, the results,
// by appending their bodies as they are.
struct ResultsT {
    static constexpr auto table =
        message<ResultsMessage>("RESULTS", {},
                                field("credit", &ResultsMessage::credit, U32{}, omit_default,
                                      [](const std::uint32_t& n) { check_credit(n); }),
                                field("results", &ResultsMessage::results, ResultList{}, required));
};

struct AckT {  // ACK; RELEASE
    static constexpr auto table = message<Ack>("ACK", {}, field("id", &Ack::id, U64{}, required),
                                               field("attempt", &Ack::attempt, U32{}, required));
};

struct AcksT {
    static constexpr auto table =
        message<AckLists>("ACKS",
                          {.post =
                               [](AckLists& m, const Reader&, const DecodeLimits&) {
                                   if (m.ids.size() != m.attempts.size())
                                       bad("'ids' and 'attempts' differ in length");
                               }},
                          field("ids", &AckLists::ids, U64Array{}, required),
                          field("attempts", &AckLists::attempts, U32Array{}, required));
};

struct ErrorT {
    static constexpr auto table = message<ErrorReply>(
        "ERROR",
        {.post =
             [](ErrorReply& m, const Reader& r, const DecodeLimits&) {
                 // Without a message, the code's own text (also when this side does not know it).
                 if (!r.has("message")) m.message = r.str("code", 64);
             }},
        field("code", &ErrorReply::code, Code{}, required),
        field("message", &ErrorReply::message, str(), defaulted),
        field("req", &ErrorReply::req, U64{}, omit), field("id", &ErrorReply::id, U64{}, omit),
        field("attempt", &ErrorReply::attempt, U32{}, omit));
};

struct ProgressT {
    static constexpr auto table = message<Progress>(
        "PROGRESS", {}, field("id", &Progress::id, U64{}, required),
        field("attempt", &Progress::attempt, U32{}, required),
        field("percent", &Progress::percent, U32{}, required,
              [](const std::uint32_t& p) {
                  if (p > 100) bad("percent must be 0-100");
              }),
        field("message", &Progress::message, str(limits::kMaxProgressMessage), defaulted));
};

struct AbortT {
    static constexpr auto table =
        message<Abort>("ABORT", {}, field("id", &Abort::id, U64{}, required),
                       field("attempt", &Abort::attempt, U32{}, required),
                       field("reason", &Abort::reason, str(), defaulted));
};

// ---- control of running workers --------------------------------------------------------------

struct WorkerControlRequestT {
    static constexpr auto table = message<WorkerControlRequest>(
        "WORKER_CONTROL",
        {.post =
             [](WorkerControlRequest& m, const Reader&, const DecodeLimits&) {
                 if (m.action == "concurrency") {
                     if (m.concurrency < 1 || m.concurrency > limits::kMaxConcurrency)
                         bad(fmt::format("concurrency must be 1-{}", limits::kMaxConcurrency));
                 } else if (m.concurrency != 0) {
                     bad(
                         fmt::format("field 'concurrency' goes with action 'concurrency' only, "
                                     "not '{}'",
                                     m.action));
                 }
             }},
        field("req", &WorkerControlRequest::req, U64{}, required),
        field("worker", &WorkerControlRequest::worker, str(256, true), required),
        field("action", &WorkerControlRequest::action, str(32), required,
              [](const std::string& a) {
                  for (auto known : kWorkerActions)
                      if (a == known) return;
                  bad(
                      fmt::format("unknown action '{}': expected quiet, stop, resume or "
                                  "concurrency",
                                  a));
              }),
        field("concurrency", &WorkerControlRequest::concurrency, U32{}, omit_default));
};

struct WorkerControlT {  // CONTROL, broker -> worker
    static constexpr auto table = message<WorkerControl>(
        "CONTROL", {},
        field("state", &WorkerControl::state, str(32), required,
              [](const std::string& s) {
                  if (s != kWorkerActive && s != kWorkerQuiet && s != kWorkerStopping)
                      bad(fmt::format("unknown worker state '{}'", s));
              }),
        field("concurrency", &WorkerControl::concurrency, U32{}, required,
              [](const std::uint32_t& c) {
                  if (c < 1 || c > limits::kMaxConcurrency)
                      bad(fmt::format("concurrency must be 1-{}", limits::kMaxConcurrency));
              }));
};

struct DeleteT {
    static constexpr auto table =
        message<DeleteRequest>("DELETE", {}, field("req", &DeleteRequest::req, U64{}, required),
                               field("id", &DeleteRequest::id, U64{}, required),
                               field("force", &DeleteRequest::force, Bool{}, defaulted));
};

struct PauseT {
    static constexpr auto table =
        message<PauseRequest>("PAUSE", {}, field("req", &PauseRequest::req, U64{}, required),
                              field("queue", &PauseRequest::queue, Queue{}, required),
                              field("for_ms", &PauseRequest::for_ms,
                                    DurationMs{limits::kMaxDelayMs}, omit, [](const Millis& ms) {
                                        if (ms <= 0) bad("for_ms must be more than 0");
                                    }));
};

// ---- queue settings ---------------------------------------------------------------------------

inline void check_max_running(const std::uint32_t& n) {
    if (n < 1 || n > limits::kMaxMaxRunning)
        bad(fmt::format("max_running must be 1-{}", limits::kMaxMaxRunning));
}
inline void check_rate(const std::uint32_t& n) {
    if (n < 1 || n > limits::kMaxRate) bad(fmt::format("rate must be 1-{}", limits::kMaxRate));
}
inline void check_rate_per(const Millis& ms) {
    if (ms < 1) bad("rate_per_ms must be more than 0");
}

struct QueueSetT {
    static constexpr auto table = message<QueueSetRequest>(
        "QUEUE_SET",
        {.post =
             [](QueueSetRequest& m, const Reader&, const DecodeLimits&) {
                 if (m.rate.has_value() != m.rate_per_ms.has_value())
                     bad("'rate' and 'rate_per_ms' go together");
                 if (!m.max_running && !m.rate && !m.max_attempts && !m.timeout_ms && !m.priority &&
                     !m.retention_ms && !m.expires_in_ms)
                     bad("give at least one setting: 'max_running', 'rate' with 'rate_per_ms', "
                         "'max_attempts', 'timeout_ms', 'priority', 'retention_ms' or "
                         "'expires_in_ms'");
             }},
        field("req", &QueueSetRequest::req, U64{}, required),
        field("queue", &QueueSetRequest::queue, Queue{}, required),
        field("max_running", &QueueSetRequest::max_running, U32{}, omit,
              [](const std::uint32_t& n) { check_max_running(n); }),
        field("rate", &QueueSetRequest::rate, U32{}, omit,
              [](const std::uint32_t& n) { check_rate(n); }),
        field("rate_per_ms", &QueueSetRequest::rate_per_ms, DurationMs{limits::kMaxRatePerMs}, omit,
              [](const Millis& ms) { check_rate_per(ms); }),
        field("max_attempts", &QueueSetRequest::max_attempts, U32{}, omit,
              [](const std::uint32_t& v) {
                  if (v < 1 || v > limits::kMaxMaxAttempts)
                      bad(fmt::format("max_attempts must be 1-{}", limits::kMaxMaxAttempts));
              }),
        field("timeout_ms", &QueueSetRequest::timeout_ms, DurationMs{limits::kMaxTimeoutMs}, omit,
              [](const Millis& ms) {
                  if (ms <= 0) bad("timeout_ms must be more than 0");
              }),
        field("priority", &QueueSetRequest::priority, I32{}, omit,
              [](const std::int32_t& p) {
                  if (p < limits::kMinPriority || p > limits::kMaxPriority)
                      bad(fmt::format("priority must be {} to {}", limits::kMinPriority,
                                      limits::kMaxPriority));
              }),
        field("retention_ms", &QueueSetRequest::retention_ms, DurationMs{limits::kMaxDelayMs}, omit,
              [](const Millis& ms) {
                  if (ms <= 0) bad("retention_ms must be more than 0");
              }),
        field("expires_in_ms", &QueueSetRequest::expires_in_ms, DurationMs{limits::kMaxDelayMs},
              omit, [](const Millis& ms) {
                  if (ms <= 0) bad("expires_in_ms must be more than 0");
              }));
};

struct QueueUnsetT {
    static constexpr auto table = message<QueueUnsetRequest>(
        "QUEUE_UNSET",
        {.post =
             [](QueueUnsetRequest& m, const Reader&, const DecodeLimits&) {
                 if (m.unset.empty()) bad("field 'unset' must name at least one setting");
                 for (const auto& name : m.unset) {
                     bool known = false;
                     for (auto k : kQueueSettingNames)
                         known = known || name == k;
                     if (!known)
                         bad(
                             fmt::format("unknown setting '{}': expected max_running, rate, "
                                         "max_attempts, timeout, priority, retention or "
                                         "expires_in",
                                         name.substr(0, 64)));
                 }
             }},
        field("req", &QueueUnsetRequest::req, U64{}, required),
        field("queue", &QueueUnsetRequest::queue, Queue{}, required),
        field("unset", &QueueUnsetRequest::unset, StrArray{kQueueSettingNames.size() * 4, 64},
              required));
};

struct QueueReply {  // QUEUE: a queue's settings (QueueSettings and the request's req)
    std::uint64_t req = 0;
    std::string queue;
    std::optional<std::uint32_t> max_running;
    std::optional<std::uint32_t> rate;
    std::optional<std::chrono::milliseconds> rate_per;
    std::optional<std::string> held;
    std::optional<std::uint32_t> max_attempts;
    std::optional<std::chrono::milliseconds> timeout;
    std::optional<std::int32_t> priority;
    std::optional<std::chrono::milliseconds> retention;
    std::optional<std::chrono::milliseconds> expires_in;
};

struct QueueT {
    static constexpr auto table =
        message<QueueReply>("QUEUE", {}, field("req", &QueueReply::req, U64{}, required),
                            field("queue", &QueueReply::queue, str(kName), required),
                            field("max_running", &QueueReply::max_running, U32{}, omit),
                            field("rate", &QueueReply::rate, U32{}, omit),
                            field("rate_per_ms", &QueueReply::rate_per, Duration{}, omit),
                            field("held", &QueueReply::held, str(64), omit),
                            field("max_attempts", &QueueReply::max_attempts, U32{}, omit),
                            field("timeout_ms", &QueueReply::timeout, Duration{}, omit),
                            field("priority", &QueueReply::priority, I32{}, omit),
                            field("retention_ms", &QueueReply::retention, Duration{}, omit),
                            field("expires_in_ms", &QueueReply::expires_in, Duration{}, omit));
};

// ---- batches -----------------------------------------------------------------------------------

// A callback's job: submitted by the broker once, with the batch's summary as its payload and a
// token of its own, so what SUBMIT would decide of those is not the client's.
inline void check_callback(const std::optional<JobSpec>& j, std::string_view which) {
    if (!j) return;
    if (!j->payload.empty())
        bad(fmt::format("'{}' takes no payload: the broker gives it the batch's summary", which));
    if (j->token || j->unique || j->run_at || j->expires_at || !j->after.empty() || j->batch)
        bad(fmt::format(
            "'{}' takes no 'token', 'unique', 'run_at', 'expires_at', 'after' or 'batch' (the "
            "broker submits it once; 'delay_ms' and 'expires_in_ms' count from then)",
            which));
}

struct BatchOpenT {
    static constexpr auto table = message<BatchOpenRequest>(
        "BATCH_OPEN",
        {.post =
             [](BatchOpenRequest& m, const Reader&, const DecodeLimits&) {
                 check_callback(m.on_complete, "on_complete");
                 check_callback(m.on_success, "on_success");
             }},
        field("req", &BatchOpenRequest::req, U64{}, required),
        field("description", &BatchOpenRequest::description, str(limits::kMaxBatchDescription),
              defaulted),
        field("on_complete", &BatchOpenRequest::on_complete, Msg<JobSpecT>{}, omit),
        field("on_success", &BatchOpenRequest::on_success, Msg<JobSpecT>{}, omit),
        field("token", &BatchOpenRequest::token, str(limits::kMaxToken, true), omit));
};

struct BatchRequestT {  // BATCH_SEAL, BATCH_SHOW
    static constexpr auto table =
        message<BatchRequest>("BATCH_SEAL", {}, field("req", &BatchRequest::req, U64{}, required),
                              field("id", &BatchRequest::id, U64{}, required));
};

struct BatchListT {
    static constexpr auto table = message<BatchListRequest>(
        "BATCH_LIST", {}, field("req", &BatchListRequest::req, U64{}, required),
        field("limit", &BatchListRequest::limit, U32{}, defaulted,
              [](const std::uint32_t& l) {
                  if (l < 1 || l > limits::kMaxBatchList)
                      bad(fmt::format("limit must be 1-{}", limits::kMaxBatchList));
              }),
        field("before", &BatchListRequest::before, U64{}, omit));
};

struct BatchInfoT {
    static constexpr auto table =
        message<BatchInfo>("batch object", {}, field("id", &BatchInfo::id, U64{}, required),
                           field("state", &BatchInfo::state, str(32), required),
                           field("description", &BatchInfo::description, str(), defaulted),
                           field("total", &BatchInfo::total, U64{}, required),
                           field("pending", &BatchInfo::pending, U64{}, required),
                           field("succeeded", &BatchInfo::succeeded, U64{}, required),
                           field("dead", &BatchInfo::dead, U64{}, required),
                           field("cancelled", &BatchInfo::cancelled, U64{}, required),
                           field("expired", &BatchInfo::expired, U64{}, required),
                           field("created_at", &BatchInfo::created_at, Time{}, required),
                           field("sealed_at", &BatchInfo::sealed_at, Time{}, nullable),
                           field("completed_at", &BatchInfo::completed_at, Time{}, nullable),
                           field("succeeded_at", &BatchInfo::succeeded_at, Time{}, nullable),
                           field("on_complete", &BatchInfo::on_complete, Msg<JobSpecT>{}, omit),
                           field("on_success", &BatchInfo::on_success, Msg<JobSpecT>{}, omit),
                           field("complete_job", &BatchInfo::complete_job, U64{}, nullable),
                           field("success_job", &BatchInfo::success_job, U64{}, nullable));
};

struct BatchReplyT {
    static constexpr auto table =
        message<BatchReply>("BATCH", {}, field("req", &BatchReply::req, U64{}, required),
                            field("batch", &BatchReply::batch, Msg<BatchInfoT>{}, required));
};

struct BatchesT {
    static constexpr auto table = message<BatchesReply>(
        "BATCHES", {}, field("req", &BatchesReply::req, U64{}, required),
        field("batches", &BatchesReply::batches, MsgArray<BatchInfoT>{}, required));
};

// Every table, for tests/test_protocol_doc.cpp (through errand::message_tables()).
using AllTables =
    std::tuple<SubmitT, JobSpecT, SubmittedT, IdRequestT, WaitT, ListT, JobT, JobsT, JobInfoT,
               ReqOnlyT, PongT, QueueRequestT, RetryT, RetriedT, PurgeT, PurgedT, QueuesT,
               QueueInfoT, EventsT, EventT, ScheduleAddT, ScheduleT, ScheduleRequestT,
               ScheduleReplyT, SchedulesT, StatsT, QueueStatsT, BrokerInfoT, WorkersT, WorkerInfoT,
               WorkerJobT, FeedT, FeedReplyT, JobEventT, RegisterT, RegisteredT, CreditT, DispatchT,
               DoneT, FailT, ResultsT, AckT, AcksT, ErrorT, ProgressT, AbortT, HeartbeatT,
               WorkerControlRequestT, WorkerControlT, DeleteT, PauseT, QueueSetT, QueueUnsetT,
               QueueT, BatchOpenT, BatchRequestT, BatchListT, BatchInfoT, BatchReplyT, BatchesT>;

}  // namespace errand::fields
