// The objects the client API exchanges with the broker: a job to submit (JobSpec), a job as the
// broker reports it (JobInfo), its history, queues, stats and workers. Plain structs, spelled as on
// the wire (docs/PROTOCOL.md) except that times are errand::Timestamp and durations
// std::chrono::milliseconds, named without the wire's `_ms` suffix (`timeout` is `timeout_ms`);
// their MessagePack encoding lives in errand/codec.hpp (not installed). Every member has a
// default, so designated initializers may name only the ones they set.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "errand/protocol.hpp"

namespace errand {

struct JobSpec {
    std::string queue{};
    std::string payload{};
    std::optional<std::vector<std::string>> argv{};
    // Unset: the queue's default (QUEUE_SET), else kDefaultMaxAttempts.
    std::optional<std::uint32_t> max_attempts{};
    std::optional<std::string> token{};
    std::optional<std::int32_t> priority{};  // higher runs first; unset: the queue's, else 0
    std::optional<Timestamp> run_at{};       // scheduled: not before this time
    std::optional<std::chrono::milliseconds> delay{};        // scheduled: not before now + delay
    std::optional<std::chrono::milliseconds> timeout{};      // an attempt running longer is failed
                                                             // (unset: the queue's default)
    std::optional<std::chrono::milliseconds> backoff{};      // retry backoff base (broker default)
    std::optional<std::chrono::milliseconds> backoff_cap{};  // retry backoff cap
    std::optional<std::string> unique{};                     // at most one unfinished job per key
    // Not dispatched by then: the job ends `expired` instead of running late. At most one of the
    // two; expires_in counts from when the broker receives the job (not from run_at or delay).
    std::optional<Timestamp> expires_at{};
    std::optional<std::chrono::milliseconds> expires_in{};
    // Parents: the job is `blocked` until every one has succeeded (a parent ending otherwise
    // cancels it), or with after_any until every one has finished, whatever its outcome.
    std::vector<JobId> after{};
    bool after_any = false;
    // A member of this batch (BATCH_OPEN), which must be open (not yet sealed).
    std::optional<JobId> batch{};
};

// The job object of STATUS / WAIT / LIST replies.
struct JobInfo {
    JobId id = 0;
    std::string queue{};
    JobState state = JobState::ready;
    std::uint32_t attempts = 0;
    std::uint32_t max_attempts = 0;
    std::optional<std::int64_t> exit_code{};
    std::optional<std::string> result{};
    std::optional<std::string> error{};
    std::optional<std::string> worker{};
    std::optional<std::vector<std::string>> argv{};
    std::uint64_t payload_size = 0;
    Timestamp created_at{};
    std::optional<Timestamp> started_at{};
    std::optional<Timestamp> finished_at{};
    std::optional<Timestamp> run_at{};
    std::int32_t priority = 0;
    std::optional<std::chrono::milliseconds> timeout{};
    std::optional<std::string> unique{};
    std::optional<std::uint32_t> progress{};  // percent, 0-100, of the running attempt
    std::optional<std::string> progress_message{};
    std::optional<Timestamp> expires_at{};  // not dispatched by then: expired
    std::optional<JobId> batch{};           // the batch it is a member of
};

struct QueueInfo {
    std::string name{};
    bool paused = false;
    std::vector<std::pair<JobState, std::uint64_t>> counts{};  // every state, in enum order
    std::optional<Timestamp> oldest_ready_at{};                // created_at of the oldest ready job
    std::optional<Timestamp> paused_until{};     // a timed pause (PAUSE for_ms): resumed then
    std::optional<std::uint32_t> max_running{};  // its limits (QUEUE_SET), when set
    std::optional<std::uint32_t> rate{};
    std::optional<std::chrono::milliseconds> rate_per{};
    std::optional<std::string> held{};  // why its ready jobs wait: "at max-running", "rate limited"
    std::optional<std::uint32_t> max_attempts{};  // its defaults for jobs without their own
    std::optional<std::chrono::milliseconds> timeout{};
    std::optional<std::int32_t> priority{};
    std::optional<std::chrono::milliseconds> retention{};  // its finished jobs are kept this long
    std::optional<std::chrono::milliseconds>
        expires_in{};  // its jobs expire this long after submit
};

struct Event {
    Timestamp at{};
    std::optional<JobState> from{};
    JobState to = JobState::ready;
    std::uint32_t attempt = 0;
    std::optional<std::string> worker{};
    std::string reason{};
};

struct Pong {
    std::uint64_t req = 0;
    std::string version{};
    Timestamp time{};
};

// One committed job state change: the body of an events PUB message and an item of FEED.
struct JobEvent {
    std::uint64_t seq = 0;  // increasing within one broker run
    JobId id = 0;
    std::string queue{};
    std::optional<JobState> from{};  // nullopt: created
    JobState to = JobState::ready;
    std::uint32_t attempt = 0;
    Timestamp at{};
    std::optional<std::string> worker{};
    std::string reason{};
};

struct QueueStats {
    std::string name{};
    bool paused = false;
    std::vector<std::pair<JobState, std::uint64_t>> counts{};  // every state, in enum order
    std::uint64_t submitted = 0;                               // totals since the broker started
    std::uint64_t succeeded = 0;
    std::uint64_t failed = 0;  // failed attempts
    std::uint64_t dead = 0;
    std::uint64_t cancelled = 0;
    double finished_per_second = 0;  // over the last minute
    double submitted_per_second = 0;
};

// A broker of the cluster (several brokers on one PostgreSQL database), as STATS lists it.
struct BrokerInfo {
    std::string id{};
    std::string host{};
    std::uint64_t pid = 0;
    Timestamp seen_at{};  // last renewal of its row (the database's clock)
    bool leader = false;
};

struct StatsReply {
    std::uint64_t req = 0;
    Timestamp time{};
    Timestamp started_at{};
    std::uint64_t workers = 0;
    std::uint64_t running = 0;  // jobs held by workers
    std::uint64_t waits = 0;    // outstanding WAITs (and SUBMITs with wait_ms) of all clients
    std::uint64_t commits = 0;
    std::uint64_t commit_failures = 0;
    double commit_seconds_sum = 0;
    std::uint64_t commit_jobs_sum = 0;
    std::optional<std::string> events_endpoint{};
    std::vector<QueueStats> queues{};
    // On a shared database: the broker that answered, and the live brokers of the cluster.
    std::optional<std::string> broker{};
    std::vector<BrokerInfo> brokers{};
};

struct WorkerJob {
    JobId id = 0;
    std::string queue{};
    std::uint32_t attempt = 0;
    Timestamp started_at{};
};

struct WorkerInfo {
    std::string name{};
    std::string instance{};
    std::string host{};
    std::uint64_t pid = 0;
    std::vector<std::string> queues{};
    std::uint32_t concurrency = 0;
    std::uint32_t prefetch = 0;
    std::uint32_t credit = 0;
    Timestamp last_seen{};
    std::vector<WorkerJob> jobs{};
    std::uint64_t reconnects = 0;  // times the worker registered again since it started
    std::string state = std::string(kWorkerActive);  // active | quiet | stopping
};

// A cron schedule (SCHEDULE_ADD, SCHEDULE_LIST): each tick of `cron` in `zone` submits `job`.
// The job's token and unique key are the broker's: "schedule:NAME:TICK" (the tick in ms since
// the epoch), so each tick makes one job however many brokers or restarts see it.
struct Schedule {
    std::string name{};               // 1-64 bytes of A-Z a-z 0-9 _ . -
    std::string cron{};               // 5 or 6 fields, or @hourly/@daily/@weekly/@monthly/@yearly
    std::string zone = "UTC";         // IANA time zone the fields are read in
    std::string catch_up = "latest";  // ticks missed while no broker ran: none | latest | all
    JobSpec job{};                    // token, unique, run_at and delay are not used
    bool paused = false;
    Timestamp created_at{};              // the rest: set by the broker
    std::optional<Timestamp> next_at{};  // the next tick (nullopt: the expression never fires)
    std::optional<Timestamp> last_at{};  // the last tick that submitted a job
    std::optional<JobId> last_job{};     // that job, and its state when read
    std::optional<JobState> last_state{};
};

// A queue's settings (QUEUE_SET, QUEUE_SHOW): limits on how its jobs start, the same on every
// broker of a cluster. An unset limit is no limit.
struct QueueSettings {
    std::string queue{};
    std::optional<std::uint32_t> max_running{};  // at most this many running at once
    std::optional<std::uint32_t> rate{};  // at most this many started in any window of rate_per
    std::optional<std::chrono::milliseconds> rate_per{};
    std::optional<std::string> held{};  // read only: why ready jobs wait ("at max-running", …)
    // Defaults for the queue's jobs that do not set their own (SUBMIT, schedules): the job's
    // own value, else the queue's, else the broker's (3 attempts, no timeout, priority 0).
    std::optional<std::uint32_t> max_attempts{};
    std::optional<std::chrono::milliseconds> timeout{};
    std::optional<std::int32_t> priority{};
    // Its finished jobs (not dead ones: --dead-retention) are deleted after this long instead
    // of the broker's --retention.
    std::optional<std::chrono::milliseconds> retention{};
    // A job submitted without an expiry of its own expires this long after its submission.
    std::optional<std::chrono::milliseconds> expires_in{};
};

// A batch (BATCH_OPEN, BATCH_SHOW): jobs submitted with its id, and the callback jobs submitted
// once, when every member has finished. Counters, kept with each member's change: a batch of any
// size costs nothing per member beyond them.
struct BatchInfo {
    JobId id = 0;
    // open (takes members) | sealed (takes none; members still to finish) | complete (every
    // member finished, some not succeeded) | succeeded (every member succeeded). A member of a
    // complete batch that is retried (dead -> ready) makes it sealed again until it finishes.
    std::string state = "open";
    std::string description{};
    std::uint64_t total = 0;    // members
    std::uint64_t pending = 0;  // members not finished
    std::uint64_t succeeded = 0;
    std::uint64_t dead = 0;
    std::uint64_t cancelled = 0;
    std::uint64_t expired = 0;
    Timestamp created_at{};
    std::optional<Timestamp> sealed_at{};
    std::optional<Timestamp> completed_at{};  // when every member had finished, the first time
    std::optional<Timestamp> succeeded_at{};  // when every member had succeeded, the first time
    // The callbacks' jobs, as given (queue, argv, attempts, …; the payload is the broker's: the
    // batch's summary as JSON), and the jobs they made.
    std::optional<JobSpec> on_complete{};  // once every member has finished, whatever the outcome
    std::optional<JobSpec> on_success{};   // once every member has succeeded
    std::optional<JobId> complete_job{};
    std::optional<JobId> success_job{};
};

}  // namespace errand
