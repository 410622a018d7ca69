// The errand-worker daemon's job runner: run_process forks and execs one command in its own
// process group, feeds it stdin, collects bounded output and progress lines and kills it on
// timeout or cancel; run_job turns a dispatched job into such a run and its result into an
// Outcome; parse_queue_spec reads the daemon's --queue flags.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
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
    // Both polled every 50 ms; when one is true the group gets SIGTERM, then SIGKILL after the
    // grace. `cancel`: the job's attempt was cancelled (errand::Job::cancel_flag()).
    // `terminate`: the daemon is shutting down and takes its jobs with it.
    const std::atomic<bool>* cancel = nullptr;
    const std::atomic<bool>* terminate = nullptr;
    // When set, the child gets the write end of a pipe on fd 3 and ERRAND_PROGRESS_FD=3 in its
    // environment. Each line it writes there (cut at kMaxProgressLine bytes; a last line without
    // '\n' counts too) that parse_progress_line accepts is passed here, in order, on the thread
    // that called run_process; other lines are dropped with a debug log.
    std::function<void(std::uint32_t percent, std::string_view message)> on_progress;
    // The job reaper's socket (reaper.hpp), or -1. With one, the child's process group is
    // registered with the reaper before exec and unregistered before the child is reaped, so
    // the whole group dies with the daemon, not only the leader.
    int reaper_fd = -1;
    // A cgroup v2 directory (job_cgroup.hpp), or empty. With one, the child runs in a cgroup of
    // its own below it, and every signal to its process group also goes to every process in
    // that cgroup: what left the group (setsid) is stopped and killed with the rest.
    std::string cgroup_root{};
};

// The longest progress line read from fd 3; the rest of a longer line is discarded.
inline constexpr std::size_t kMaxProgressLine = 1024;
inline constexpr int kProgressFd = 3;

struct RunResult {
    int exit_code = 0;          // exit status, 128+N when killed by signal N, 127 on spawn errors
    std::optional<int> signal;  // the signal that killed the child
    std::string stdout_data;    // at most max_output bytes
    bool truncated = false;     // stdout had more than max_output bytes
    std::string stderr_tail;    // at most stderr_tail bytes, the end of stderr
    // Why the runner stopped the child; at most one of the three is set.
    bool timed_out = false;   // killed because the timeout passed
    bool cancelled = false;   // killed because *cancel became true
    bool terminated = false;  // killed because *terminate became true
    Millis timeout_ms = 0;    // when timed_out: the timeout that passed
    std::string spawn_error;  // non-empty when the command could not be started
    Millis elapsed_ms = 0;
};

// Runs one command to completion and returns how it ended. Failures to start it are reported in
// the result; it throws std::system_error only if poll() or fcntl() fail mid-run, and passes on
// what on_progress throws (the child is then killed and reaped before the exception leaves).
//
// Contract:
//  - The child leads its own process group (pgid == pid) and gets SIGKILL when the thread that
//    called run_process dies (PR_SET_PDEATHSIG follows the forking *thread*), so call it from a
//    thread that lives until it returns (errand::Worker's pool threads live as long as run()).
//    The rest of the group dies with the daemon only through the reaper (RunSpec::reaper_fd).
//  - With RunSpec::cgroup_root, the child joins a new cgroup below it before exec, and "the
//    group" below means the group and everything in that cgroup; the cgroup is removed before
//    run_process returns. If it cannot be made, the run goes on with the process group alone.
//  - Signal dispositions and mask are reset to defaults in the child; it inherits no fds but 0-2
//    (and 3, the progress pipe, with on_progress).
//  - When the child exits, whatever is left of its process group is SIGKILLed, the pipes
//    (progress included) are drained for at most 1 s, and run_process returns. Without a cgroup,
//    a job that escapes its group (setsid) keeps running, but cannot hold run_process up for
//    more than that second.
//  - A child that does not read its stdin is not an error. SIGPIPE is blocked in the calling
//    thread while run_process writes, and a SIGPIPE raised by those writes is discarded, so the
//    caller need not ignore SIGPIPE process-wide (the daemon does anyway).
RunResult run_process(const RunSpec& spec);

// "SIGKILL" for 9; "signal 70" for a number without a name.
std::string signal_name(int sig);

// A line a job writes to its progress fd: "PERCENT[%] [MESSAGE]", PERCENT an integer 0-100
// (at most three digits), then the end of the line or whitespace and a message, all between
// optional surrounding whitespace. The message is
// trimmed of surrounding whitespace and cut to limits::kMaxProgressMessage bytes (never inside
// a UTF-8 sequence). nullopt for anything else ("junk", "101", "50x", "").
struct ProgressLine {
    std::uint32_t percent = 0;
    std::string message;
};
std::optional<ProgressLine> parse_progress_line(std::string_view line);

// One --queue flag of the daemon: NAME[:WEIGHT][=COMMAND].
struct QueueSpec {
    std::string name;
    std::uint32_t weight = 0;            // 1-kMaxQueueWeight; 0 when none was given
    std::optional<std::string> command;  // everything after the first '=', ':' and '=' included
};
// Throws std::invalid_argument with a message for a person when NAME is not a valid queue name,
// WEIGHT is not an integer 1-1000, or COMMAND is empty.
QueueSpec parse_queue_spec(std::string_view text);

// How the daemon runs the jobs of one queue.
struct JobPolicy {
    std::optional<std::string> command;  // the queue's command, run as /bin/sh -c COMMAND
    bool allow_commands = false;         // run jobs that carry their own argv
    std::size_t max_output = limits::kDefaultMaxResult;  // the result, marker included
    std::optional<Millis> default_timeout;               // for jobs without a timeout of their own
    Millis kill_grace_ms = 5000;
    std::optional<int> permanent_exit_code = 99;   // this exit code fails the job permanently
    const std::atomic<bool>* terminate = nullptr;  // see RunSpec::terminate
    int reaper_fd = -1;                            // see RunSpec::reaper_fd
    std::string cgroup_root{};                     // see RunSpec::cgroup_root
};

// Runs a job: its own argv when it has one (only with allow_commands), else the queue's command.
// The payload goes to stdin; ERRAND_JOB_ID, ERRAND_QUEUE, ERRAND_ATTEMPT and ERRAND_PROGRESS_FD
// to the environment; progress lines to job.progress(). The job's timeout_ms (else the default
// timeout) bounds the run, and job.cancel_flag() stops it. A job that no worker configured like
// this can run fails permanently.
Outcome run_job(const Job& job, const JobPolicy& policy);

// Exit 0: success with stdout as the result (marked when truncated, never above max_output).
// Otherwise a failure, with stdout as the partial result:
//   "cancelled"                                  the attempt was cancelled (*cancel)
//   "timed out after 1s, killed by signal SIGTERM (15)[: <stderr tail>]"
//   "terminated, the worker is stopping, killed by signal ..."
//   "exit code N[: <stderr tail>]"               permanent when N == permanent_exit_code
//   "killed by signal SIGKILL (9)[: <stderr tail>]", or the spawn error.
Outcome outcome_of(const RunResult& run, std::size_t max_output,
                   std::optional<int> permanent_exit_code = std::nullopt);

}  // namespace errand::workerd
