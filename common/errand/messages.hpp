// The objects the client API exchanges with the broker: a job to submit (JobSpec), a job as the
// broker reports it (JobInfo), its history, queues, stats and workers. Plain structs, spelled as on
// the wire (docs/PROTOCOL.md); their MessagePack encoding lives in errand/codec.hpp (not
// installed). Every member has a default, so designated initializers may name only the ones they
// set.
#pragma once

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
    std::uint32_t max_attempts = limits::kDefaultMaxAttempts;
    std::optional<std::string> token{};
    std::int32_t priority = 0;               // higher runs first
    std::optional<Millis> run_at{};          // scheduled: not before this time (ms since epoch)
    std::optional<Millis> delay_ms{};        // scheduled: not before now + delay
    std::optional<Millis> timeout_ms{};      // an attempt running longer is stopped and failed
    std::optional<Millis> backoff_ms{};      // retry backoff base (broker default otherwise)
    std::optional<Millis> backoff_cap_ms{};  // retry backoff cap
    std::optional<std::string> unique{};     // at most one unfinished job per unique key
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
    Millis created_at = 0;
    std::optional<Millis> started_at{};
    std::optional<Millis> finished_at{};
    std::optional<Millis> run_at{};
    std::int32_t priority = 0;
    std::optional<Millis> timeout_ms{};
    std::optional<std::string> unique{};
    std::optional<std::uint32_t> progress{};  // percent, 0-100, of the running attempt
    std::optional<std::string> progress_message{};
};

struct QueueInfo {
    std::string name{};
    bool paused = false;
    std::vector<std::pair<JobState, std::uint64_t>> counts{};  // every state, in enum order
    std::optional<Millis> oldest_ready_at{};                   // created_at of the oldest ready job
    std::optional<Millis> paused_until{};  // a timed pause (PAUSE for_ms): resumed then
};

struct Event {
    Millis at = 0;
    std::optional<JobState> from{};
    JobState to = JobState::ready;
    std::uint32_t attempt = 0;
    std::optional<std::string> worker{};
    std::string reason{};
};

struct Pong {
    std::uint64_t req = 0;
    std::string version{};
    Millis time = 0;
};

// One committed job state change: the body of an events PUB message and an item of FEED.
struct JobEvent {
    std::uint64_t seq = 0;  // increasing within one broker run
    JobId id = 0;
    std::string queue{};
    std::optional<JobState> from{};  // nullopt: created
    JobState to = JobState::ready;
    std::uint32_t attempt = 0;
    Millis at = 0;
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
    Millis seen_at = 0;  // last renewal of its row (the database's clock)
    bool leader = false;
};

struct StatsReply {
    std::uint64_t req = 0;
    Millis time = 0;
    Millis started_at = 0;
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
    Millis started_at = 0;
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
    Millis last_seen = 0;
    std::vector<WorkerJob> jobs{};
    std::uint64_t reconnects = 0;  // times the worker registered again since it started
};

// A cron schedule (SCHEDULE_ADD, SCHEDULE_LIST): each tick of `cron` in `zone` submits `job`.
// The job's token and unique key are the broker's: "schedule:NAME:TICK" (the tick in ms since
// the epoch), so each tick makes one job however many brokers or restarts see it.
struct Schedule {
    std::string name{};               // 1-64 bytes of A-Z a-z 0-9 _ . -
    std::string cron{};               // 5 or 6 fields, or @hourly/@daily/@weekly/@monthly/@yearly
    std::string zone = "UTC";         // IANA time zone the fields are read in
    std::string catch_up = "latest";  // ticks missed while no broker ran: none | latest | all
    JobSpec job{};                    // token, unique, run_at and delay_ms are not used
    bool paused = false;
    Millis created_at = 0;            // the rest: set by the broker
    std::optional<Millis> next_at{};  // the next tick (nullopt: the expression never fires)
    std::optional<Millis> last_at{};  // the last tick that submitted a job
    std::optional<JobId> last_job{};  // that job, and its state when read
    std::optional<JobState> last_state{};
};

}  // namespace errand
