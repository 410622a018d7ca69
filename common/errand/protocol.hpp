// The vocabulary of errand's wire protocol: version, commands, error codes, job states and limits.
// docs/PROTOCOL.md is the contract; every name here is spelled exactly as it travels on the wire.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace errand {

inline constexpr std::string_view kProtocolVersion = "errand/1";
inline constexpr std::string_view kDefaultEndpoint = "tcp://127.0.0.1:7744";

using JobId = std::uint64_t;
using Millis = std::int64_t;  // milliseconds since the Unix epoch, or a duration in ms
// The library API's times (the structs of errand/messages.hpp): ms since the Unix epoch, as on the
// wire. Its durations are std::chrono::milliseconds.
using Timestamp = std::chrono::sys_time<std::chrono::milliseconds>;

// Defaults and hard limits shared by the broker and the clients.
namespace limits {
inline constexpr std::size_t kMaxQueueName = 64;
inline constexpr std::size_t kMaxToken = 128;
inline constexpr std::size_t kMaxBatch = 1000;
inline constexpr std::size_t kMaxArgv = 256;
inline constexpr std::size_t kMaxArgvBytes = 64 * 1024;
inline constexpr std::size_t kMaxError = 64 * 1024;
inline constexpr std::size_t kDefaultMaxPayload = 1024 * 1024;
inline constexpr std::size_t kDefaultMaxResult = 1024 * 1024;
inline constexpr std::size_t kDefaultMaxMessage = 64 * 1024 * 1024;
inline constexpr std::uint32_t kDefaultMaxAttempts = 3;
inline constexpr std::uint32_t kMaxMaxAttempts = 1000;
inline constexpr std::uint32_t kMaxConcurrency = 1024;
// Queues one worker serves (REGISTER's `queues`).
inline constexpr std::size_t kMaxWorkerQueues = 1024;
inline constexpr std::uint32_t kMaxPrefetch = 10000;
inline constexpr std::uint32_t kDefaultListLimit = 100;
inline constexpr std::uint32_t kMaxListLimit = 10000;
inline constexpr Millis kDefaultWaitMs = 30000;
inline constexpr Millis kMaxWaitMs = 86400000;
// A client waiting for a job (WAIT, SUBMIT with wait_ms) resends its WAIT at least this often;
// the broker drops a waiter not refreshed for three times as long (--wait-idle).
inline constexpr Millis kWaitResendMs = 5000;
inline constexpr std::int32_t kMinPriority = -1000;
inline constexpr std::int32_t kMaxPriority = 1000;
inline constexpr std::size_t kMaxUniqueKey = 256;
inline constexpr std::size_t kMaxProgressMessage = 256;
inline constexpr std::uint32_t kMaxQueueWeight = 1000;
inline constexpr Millis kMaxDelayMs = 10LL * 365 * 86400000;  // ten years
// SUBMIT run_at: 1970 to the end of the year 9999, in ms since the Unix epoch.
inline constexpr Millis kMaxRunAt = 253402300799999;
inline constexpr Millis kMaxTimeoutMs = 7LL * 86400000;  // a week
// Queue settings (QUEUE_SET): max_running 1-kMaxMaxRunning; a rate of 1-kMaxRate starts per
// window of 1 ms to kMaxRatePerMs.
inline constexpr std::uint32_t kMaxMaxRunning = 1'000'000;
inline constexpr std::uint32_t kMaxRate = 100'000;
inline constexpr Millis kMaxRatePerMs = 86400000;  // a day
// Cron schedules stored at once (SCHEDULE_ADD of one more: too_large); the HTTP side reads them
// all with this bound.
inline constexpr std::size_t kMaxSchedules = 1000;
// Job dependencies (SUBMIT `after`): the parents one job may wait for.
inline constexpr std::size_t kMaxParents = 100;
// Batches: a description's bytes; the failed members a callback's summary names (the rest it
// counts); BATCH_LIST's most.
inline constexpr std::size_t kMaxBatchDescription = 1024;
inline constexpr std::size_t kMaxBatchSummaryIds = 1000;
inline constexpr std::uint32_t kMaxBatchList = 1000;
}  // namespace limits

// Error codes that travel in ERROR replies. to_string gives the wire spelling.
enum class ErrorCode {
    bad_frame,
    bad_version,
    unknown_command,
    bad_request,
    too_large,
    not_found,
    timeout,
    stale,
    not_registered,
    storage,
    internal,
    invalid_state,
    forbidden,
    shutting_down,
};

std::string_view to_string(ErrorCode code);
std::optional<ErrorCode> parse_error_code(std::string_view text);

// Thrown by the codec and by request handlers; the dispatch boundary turns it into an ERROR reply.
class ProtocolError : public std::runtime_error {
  public:
    ProtocolError(ErrorCode code, const std::string& message)
        : std::runtime_error(message), code_(code) {}
    ErrorCode code() const { return code_; }

  private:
    ErrorCode code_;
};

// The one vocabulary of job states (code, protocol, CLI, JSON, docs, database CHECK constraint).
// Everything that lists the states, counts them or sizes an array by them uses kAllStates and
// kStateCount; to_string gives each one's wire name (protocol.cpp).
// expired: not started (dispatched) by its expires_at, so never run (appended: the numbering of the
// others stays).
// blocked: waiting for its parents (SUBMIT `after`) to finish; not terminal (appended too).
enum class JobState {
    scheduled,
    ready,
    running,
    retrying,
    succeeded,
    dead,
    cancelled,
    expired,
    blocked
};

inline constexpr std::size_t kStateCount = static_cast<std::size_t>(JobState::blocked) + 1;
// Every state in life-cycle (enum) order: kAllStates[i] == JobState(i).
inline constexpr std::array<JobState, kStateCount> kAllStates = [] {
    std::array<JobState, kStateCount> all{};
    for (std::size_t i = 0; i < kStateCount; ++i)
        all[i] = static_cast<JobState>(i);
    return all;
}();

std::string_view to_string(JobState state);
std::optional<JobState> parse_job_state(std::string_view text);
inline bool is_terminal(JobState s) {
    return s == JobState::succeeded || s == JobState::dead || s == JobState::cancelled ||
           s == JobState::expired;
}

// Command names (frame 1).
namespace cmd {
// client -> broker
inline constexpr std::string_view kSubmit = "SUBMIT";
inline constexpr std::string_view kStatus = "STATUS";
inline constexpr std::string_view kWait = "WAIT";
inline constexpr std::string_view kList = "LIST";
inline constexpr std::string_view kPing = "PING";
inline constexpr std::string_view kCancel = "CANCEL";
inline constexpr std::string_view kRetry = "RETRY";
inline constexpr std::string_view kPause = "PAUSE";
inline constexpr std::string_view kResume = "RESUME";
inline constexpr std::string_view kPurge = "PURGE";
inline constexpr std::string_view kQueues = "QUEUES";
inline constexpr std::string_view kHistory = "HISTORY";
inline constexpr std::string_view kStats = "STATS";                     // -> STATS
inline constexpr std::string_view kWorkers = "WORKERS";                 // -> WORKERS
inline constexpr std::string_view kFeed = "FEED";                       // recent job events -> FEED
inline constexpr std::string_view kScheduleAdd = "SCHEDULE_ADD";        // -> SCHEDULE
inline constexpr std::string_view kScheduleList = "SCHEDULE_LIST";      // -> SCHEDULES
inline constexpr std::string_view kScheduleShow = "SCHEDULE_SHOW";      // -> SCHEDULE
inline constexpr std::string_view kScheduleRemove = "SCHEDULE_REMOVE";  // -> OK
inline constexpr std::string_view kSchedulePause = "SCHEDULE_PAUSE";    // -> SCHEDULE
inline constexpr std::string_view kScheduleResume = "SCHEDULE_RESUME";  // -> SCHEDULE
inline constexpr std::string_view kWorkerControl = "WORKER_CONTROL";    // -> WORKERS
inline constexpr std::string_view kRunNow = "RUN_NOW";                  // -> JOB
inline constexpr std::string_view kDelete = "DELETE";                   // -> OK
inline constexpr std::string_view kQueueSet = "QUEUE_SET";              // -> QUEUE
inline constexpr std::string_view kQueueUnset = "QUEUE_UNSET";          // -> QUEUE
inline constexpr std::string_view kQueueShow = "QUEUE_SHOW";            // -> QUEUE
inline constexpr std::string_view kBatchOpen = "BATCH_OPEN";            // -> BATCH
inline constexpr std::string_view kBatchSeal = "BATCH_SEAL";            // -> BATCH
inline constexpr std::string_view kBatchShow = "BATCH_SHOW";            // -> BATCH
inline constexpr std::string_view kBatchList = "BATCH_LIST";            // -> BATCHES
// worker -> broker
inline constexpr std::string_view kRegister = "REGISTER";
inline constexpr std::string_view kCredit = "CREDIT";
inline constexpr std::string_view kHeartbeat = "HEARTBEAT";
inline constexpr std::string_view kDone = "DONE";
inline constexpr std::string_view kFail = "FAIL";
inline constexpr std::string_view kResults = "RESULTS";  // several DONE/FAIL -> ACKS
inline constexpr std::string_view kProgress = "PROGRESS";
inline constexpr std::string_view kDrain = "DRAIN";
inline constexpr std::string_view kRelease = "RELEASE";
// broker -> client/worker
inline constexpr std::string_view kSubmitted = "SUBMITTED";
inline constexpr std::string_view kJob = "JOB";
inline constexpr std::string_view kJobs = "JOBS";
inline constexpr std::string_view kPong = "PONG";
inline constexpr std::string_view kRegistered = "REGISTERED";
inline constexpr std::string_view kDispatch = "DISPATCH";
inline constexpr std::string_view kAbort = "ABORT";
inline constexpr std::string_view kShutdown = "SHUTDOWN";
inline constexpr std::string_view kRetried = "RETRIED";
inline constexpr std::string_view kOk = "OK";
inline constexpr std::string_view kPurged = "PURGED";
inline constexpr std::string_view kEvents = "EVENTS";
inline constexpr std::string_view kSchedule = "SCHEDULE";
inline constexpr std::string_view kSchedules = "SCHEDULES";
inline constexpr std::string_view kAck = "ACK";
inline constexpr std::string_view kAcks = "ACKS";
inline constexpr std::string_view kError = "ERROR";
inline constexpr std::string_view kControl = "CONTROL";  // broker -> worker: quiet, stop, slots
inline constexpr std::string_view kQueue = "QUEUE";      // a queue's settings
inline constexpr std::string_view kBatch = "BATCH";
inline constexpr std::string_view kBatches = "BATCHES";
}  // namespace cmd

// What a worker does with new jobs (WORKERS `state`, CONTROL, REGISTER): `active` takes them,
// `quiet` takes none and finishes those it holds, `stopping` drains and exits (DRAIN, SIGTERM,
// `errand worker stop`).
inline constexpr std::string_view kWorkerActive = "active";
inline constexpr std::string_view kWorkerQuiet = "quiet";
inline constexpr std::string_view kWorkerStopping = "stopping";
// WORKER_CONTROL's actions.
inline constexpr std::array<std::string_view, 4> kWorkerActions = {"quiet", "stop", "resume",
                                                                   "concurrency"};
// QUEUE_UNSET's names of the settings it removes.
inline constexpr std::array<std::string_view, 7> kQueueSettingNames = {
    "max_running", "rate", "max_attempts", "timeout", "priority", "retention", "expires_in"};
// Why a queue's ready jobs wait (QUEUES and QUEUE `held`).
inline constexpr std::string_view kHeldMaxRunning = "at max-running";
inline constexpr std::string_view kHeldRate = "rate limited";

// True when `name` is a valid queue name: 1-64 bytes of [A-Za-z0-9_.-].
bool valid_queue_name(std::string_view name);

}  // namespace errand
