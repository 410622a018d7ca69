// The `errand` CLI's exit codes, one scheme for every subcommand (printed once, by `errand
// --help`). A job's own exit code is passed through by `submit --wait` and `wait`; errand's own
// outcomes use 120-125, which it never passes through, so a script can tell them apart (the way
// timeout(1) keeps 124-127 for itself).
#pragma once

#include <cstdint>
#include <optional>

namespace errand::cli {

enum Exit : int {
    kOk = 0,
    kJobFailed = 1,  // a failed job without a code of its own, or with one of errand's 120-125
    kUsage = 120,
    kRefused = 121,      // the broker answered ERROR (BrokerError)
    kUnreachable = 122,  // no answer in time (ConnectionError)
    kWaitTimedOut = 124,
    kInternal = 125,  // errand itself failed (an unexpected error)
};

inline constexpr int kFirstReserved = 120, kLastReserved = 125;

constexpr const char* kExitCodesHelp = R"(Exit codes (the same for every subcommand):
  0        success
  1-119,   submit --wait, wait: the job failed and exited with this code (128+S: killed by
  126-255  signal S)
  1        also: the job failed without an exit code of its own (e.g. cancelled, timed out,
           an error from its handler) or with one of 120-125 (errand status shows it)
  120      usage error (bad option, bad --jsonl line: nothing of that batch was submitted)
  121      the broker refused the request (e.g. no such job, or cancel/retry of a job in the
           wrong state)
  122      cannot reach the broker
  124      submit --wait-timeout, wait --timeout: the job did not finish in time
  125      errand itself failed)";

// The exit code that reports a failed job's own exit code (none: it had none).
constexpr int failed_job_exit(std::optional<std::int64_t> code) {
    if (!code || *code < 1 || *code > 255) return kJobFailed;
    if (*code >= kFirstReserved && *code <= kLastReserved) return kJobFailed;
    return static_cast<int>(*code);
}

}  // namespace errand::cli
