// The vocabulary of fuzz_broker's input scripts, shared by the target (broker_entry.cpp) and the
// seed generator (make_corpus.cpp). Changing a value here changes what every saved input means:
// regenerate the seed corpus and re-check fuzz/regressions/ after doing so.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "errand/protocol.hpp"

namespace errand::fuzz::script {

// The op byte of a step, modulo Op::kOps.
enum class Op : std::uint8_t {
    kSubmit = 0,
    kStatus,
    kWait,
    kList,
    kPing,
    kCancel,
    kRetry,
    kPause,
    kResume,
    kPurge,
    kQueues,
    kHistory,
    kRegister,
    kCredit,
    kHeartbeat,
    kDone,
    kFail,
    kProgress,
    kRaw,          // command name from kCommandNames, body: up to kMaxRawBody raw bytes
    kRawEnvelope,  // any version, command, body and frame count
    kRestart,      // a new Broker over the same database (state rebuilt from the store)
    kFault,        // the next step's n-th store write, or its commit, fails
    kSubmit2,      // SUBMIT again: the most useful command gets more of the op space
    kSubmit3,
    // Appended (issue 17), so that op bytes 0-23 still mean what they meant before.
    kResults,  // several DONE/FAIL in one message (RESULTS)
    kDrain,    // the worker stops taking jobs
    kRelease,  // a handed-out attempt given back
    kStats,    // STATS, WORKERS, FEED: answered from memory
    kWorkers,
    kFeed,
    // Appended (issue 13, cron schedules).
    kScheduleAdd,  // a name of kSchedules, a cron of kCrons (or fuzz bytes), zone, catch-up
    kScheduleList,
    kScheduleShow,
    kScheduleRemove,
    kSchedulePause,
    kScheduleResume,
    // Appended (issue 13, control of running workers).
    kWorkerControl,  // quiet/stop/resume/concurrency of an instance or name of kInstances, or none
    // Appended (issue 13, run-now and delete).
    kRunNow,  // RUN_NOW of a handed-out id
    kDelete,  // DELETE of a handed-out id, with or without force
    // Appended (issue 13, queue limits).
    kQueueSet,    // max_running and/or rate of a queue of kQueues (fuzz values, 0 included)
    kQueueUnset,  // names of kQueueSettingNames, or a bad one
    kQueueShow,
    // Appended (issue 13, batches). Once a script has sent one of these (or a raw BATCH_*
    // body), each SUBMIT step reads one byte more: whether its jobs name a batch (below).
    kBatchOpen,  // a description (now and then over kMaxBatchDescription), callbacks on a queue
                 // of kQueues, now and then a bad one (a payload or a token: bad_request)
    kBatchSeal,  // of a handed-out batch id, or a made-up one
    kBatchShow,
    kBatchList,  // limit 1-4, now and then 0-1200 (0 and over kMaxBatchList: bad_request), before
    kOps
};

inline constexpr std::size_t kMaxSteps = 48;
inline constexpr std::size_t kMaxRawBody = 255;

inline constexpr std::array<std::string_view, 4> kIdentities = {"client-a", "client-b", "worker-a",
                                                                "worker-b"};
inline constexpr std::array<std::string_view, 3> kInstances = {"inst-0", "inst-1", "inst-2"};
inline constexpr std::array<std::string_view, 3> kQueues = {"q0", "q1", "q2"};
inline constexpr std::array<std::string_view, 3> kSchedules = {"s0", "s1", "s 2"};
// Every-second, every-minute, DST-crossing, never, and bad expressions.
inline constexpr std::array<std::string_view, 8> kCrons = {
    "* * * * * *", "*/7 * * * * *", "* * * * *",  "30 2 * * *",
    "@hourly",     "0 0 30 2 *",    "61 * * * *", "* * *"};
inline constexpr std::array<std::string_view, 4> kZones = {"UTC", "Europe/Berlin",
                                                           "America/New_York", "Nope/Zone"};
inline constexpr std::array<std::string_view, 4> kCatchUps = {"none", "latest", "all", "some"};

// Every name the broker might see in frame 1, including its own replies and near misses.
// Appended at the end only: a raw step's name byte below 47 reads as it did before issue 13's
// batches.
inline constexpr std::array<std::string_view, 53> kCommandNames = {
    cmd::kSubmit,    cmd::kStatus,  cmd::kWait,       cmd::kList,      cmd::kPing,
    cmd::kCancel,    cmd::kRetry,   cmd::kPause,      cmd::kResume,    cmd::kPurge,
    cmd::kQueues,    cmd::kHistory, cmd::kRegister,   cmd::kCredit,    cmd::kHeartbeat,
    cmd::kDone,      cmd::kFail,    cmd::kProgress,   cmd::kSubmitted, cmd::kJob,
    cmd::kJobs,      cmd::kPong,    cmd::kRegistered, cmd::kDispatch,  cmd::kAbort,
    cmd::kRetried,   cmd::kAck,     cmd::kError,      "submit",        "",
    cmd::kStats,     cmd::kWorkers, cmd::kFeed,       cmd::kResults,   cmd::kDrain,
    cmd::kRelease,   cmd::kAcks,    cmd::kShutdown,   cmd::kOk,        cmd::kPurged,
    cmd::kEvents,    cmd::kRunNow,  cmd::kDelete,     cmd::kQueueSet,  cmd::kQueueUnset,
    cmd::kQueueShow, cmd::kQueue,   cmd::kBatchOpen,  cmd::kBatchSeal, cmd::kBatchShow,
    cmd::kBatchList, cmd::kBatch,   cmd::kBatches};

constexpr std::size_t command_index(std::string_view name) {
    for (std::size_t i = 0; i < kCommandNames.size(); ++i)
        if (kCommandNames[i] == name) return i;
    return kCommandNames.size();
}

// The script starts with the broker's configuration, read in this order with Input::range:
//   heartbeat_ms [1, 2000], worker_timeout_ms [1, 10000], retry_delay_ms [0, 5000],
//   retry_cap_ms [0, 60000], timeout_grace_ms [0, 5000], retention_ms [0, 600000],
//   retention_batch [1, 4], then a byte of tight limits: bit 0 max_payload and max_result 16
//   bytes, bit 1 max_waits 1, bit 2 max_batch 2 (else the broker's defaults).
// Each step then reads: advance (1 byte: < 0x80 that many ms, else (b & 0x7f) seconds),
// identity (Input::pick over kIdentities), op (1 byte, modulo kOps), and the op's own fields.
// A SUBMIT step, once the script has sent a batch command, ends with one byte more: bit 0 its
// jobs name a batch (bit 1: a made-up id 0-4, which reads a byte, else one handed out by a
// BATCH reply), bit 2 only the first job does.

}  // namespace errand::fuzz::script
