// The errand-worker daemon's job runner: run_process forks and execs one command in its own
// process group, feeds it stdin, collects bounded output and kills it on timeout or cancel;
// run_job turns a dispatched job into such a run and its result into an Outcome.
#pragma once

#include <atomic>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "errand/protocol.hpp"
#include "errand/worker.hpp"

namespace errand::workerd {

struct RunSpec {
    // Run directly: argv[0] is searched in the PATH of the child's environment, like execvp.
    // A shell command is {"/bin/sh", "-c", COMMAND}.
    std::vector<std::string> argv;
    std::string stdin_data;  // written to the child's stdin, which is then closed
    // Added to the inherited environment; a name already there is replaced.
    std::vector<std::pair<std::string, std::string>> extra_env;
    std::size_t max_output = 1 << 20;  // stdout beyond this is read and discarded
    std::size_t stderr_tail = 4096;    // only the last bytes of stderr are kept
    std::optional<Millis> timeout;     // from the start; then SIGTERM to the process group
    Millis kill_grace_ms = 5000;       // SIGKILL this long after SIGTERM
    // Polled every 50 ms; when true the group gets SIGTERM, then SIGKILL after the grace.
    const std::atomic<bool>* cancel = nullptr;
};

struct RunResult {
    int exit_code = 0;          // exit status, 128+N when killed by signal N, 127 on spawn errors
    std::optional<int> signal;  // the signal that killed the child
    std::string stdout_data;    // at most max_output bytes
    bool truncated = false;     // stdout had more than max_output bytes
    std::string stderr_tail;    // at most stderr_tail bytes, the end of stderr
    bool timed_out = false;     // killed because the timeout passed
    bool cancelled = false;     // killed because *cancel became true
    std::string spawn_error;    // non-empty when the command could not be started
    Millis elapsed_ms = 0;
};

// Runs one command to completion and returns how it ended. Failures to start it are reported in
// the result; it throws std::system_error only if poll() or fcntl() fail mid-run (the child is
// then killed and reaped before the exception leaves).
//
// Contract:
//  - The child leads its own process group (pgid == pid) and gets SIGKILL when the thread that
//    called run_process dies, so call it from a thread that lives until it returns.
//  - Signal dispositions and mask are reset to defaults in the child; it inherits no fds but 0-2.
//  - When the child exits, whatever is left of its process group is SIGKILLed, the pipes are
//    drained for at most 1 s, and run_process returns. A job that escapes its group (setsid) keeps
//    running, but cannot hold run_process up for more than that second.
//  - A child that does not read its stdin is not an error. SIGPIPE is blocked in the calling
//    thread while run_process writes, and a SIGPIPE raised by those writes is discarded, so the
//    caller need not ignore SIGPIPE process-wide (the daemon does anyway).
RunResult run_process(const RunSpec& spec);

// "SIGKILL" for 9; "signal 70" for a number without a name.
std::string signal_name(int sig);

// How the daemon runs the jobs of one queue.
struct JobPolicy {
    std::optional<std::string> command;  // the queue's command, run as /bin/sh -c COMMAND
    bool allow_commands = false;         // run jobs that carry their own argv
    std::size_t max_output = limits::kDefaultMaxResult;  // the result, marker included
    Millis kill_grace_ms = 5000;
    const std::atomic<bool>* cancel = nullptr;  // see RunSpec::cancel
};

// Runs a job: its own argv when it has one (only with allow_commands), else the queue's command.
// The payload goes to stdin; ERRAND_JOB_ID, ERRAND_QUEUE and ERRAND_ATTEMPT to the environment.
// A job that no worker configured like this can run fails permanently.
Outcome run_job(const Job& job, const JobPolicy& policy);

// Exit 0: success with stdout as the result (marked when truncated, never above max_output).
// Otherwise a retryable failure: "exit code N: <stderr tail>", "killed by signal SIGKILL (9)",
// the spawn error, with stdout as the partial result.
Outcome outcome_of(const RunResult& run, std::size_t max_output);

}  // namespace errand::workerd
