// errand-worker: serves queues by running each job as a process (worker/process.hpp) on the
// errand::Worker library. This file only parses flags, sets up logging and signals, and runs.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/protocol.hpp"
#include "errand/worker.hpp"
#include "process.hpp"

namespace {

// Exit codes: 0 after a clean stop; 2 for a bad --queue or duration; CLI11's own codes for
// other malformed flags.
constexpr int kExitBadFlag = 2;
constexpr int kExitFailed = 1;

// A duration flag's value: nullopt (after a message) unless it parses and lies in [min, max].
std::optional<errand::Millis> duration_flag(const char* flag, const std::string& text,
                                            errand::Millis min) {
    std::optional<errand::Millis> ms = errand::parse_duration(text);
    if (!ms || *ms < min || *ms > errand::limits::kMaxTimeoutMs) {
        std::fprintf(stderr,
                     "errand-worker: bad %s '%s': expected a duration from %s to %s, like 250ms, "
                     "30s, 5m or 2h\n",
                     flag, text.c_str(), errand::format_duration(min).c_str(),
                     errand::format_duration(errand::limits::kMaxTimeoutMs).c_str());
        return std::nullopt;
    }
    return ms;
}

std::string default_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
    return fmt::format("{}:{}", host, ::getpid());
}

std::string first_line(const std::string& text) {
    std::string line = text.substr(0, text.find('\n'));
    return line.size() > 200 ? line.substr(0, 200) + "..." : line;
}

// Takes the (blocked) stop signals on a thread of its own: the first stops the worker, any
// further one also terminates the running jobs. The destructor ends the thread.
class StopSignals {
  public:
    StopSignals(const sigset_t& signals, errand::Worker& worker, std::atomic<bool>& cancel_jobs)
        : signals_(signals), thread_([this, &worker, &cancel_jobs] {
              for (int count = 0;; ++count) {
                  int sig = 0;
                  if (::sigwait(&signals_, &sig) != 0 || done_.load()) return;
                  if (count == 0) {
                      spdlog::info("SIG{}: stopping after the running jobs", ::sigabbrev_np(sig));
                      worker.stop();
                  } else {
                      spdlog::warn("SIG{}: terminating the running jobs", ::sigabbrev_np(sig));
                      cancel_jobs.store(true);
                  }
              }
          }) {}
    ~StopSignals() {
        done_.store(true);
        ::pthread_kill(thread_.native_handle(), SIGTERM);
        thread_.join();
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

  private:
    sigset_t signals_;
    std::atomic<bool> done_{false};
    std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
    std::string endpoint(errand::kDefaultEndpoint);
    std::vector<std::string> queue_args;
    std::uint32_t concurrency = 1;
    bool allow_commands = false;
    std::string default_timeout_arg;
    std::string kill_grace_arg = "5s";
    int permanent_exit_code = 99;
    std::string name;
    std::string log_level = "info";

    CLI::App app{"errand-worker: runs the jobs of errand queues as processes"};
    app.footer(
        "QUEUES: without weights, queues are served strictly in the order given: a queue gets\n"
        "a job only when those before it have none ready. With a WEIGHT (1-1000) on any queue,\n"
        "the broker picks among queues with ready jobs in proportion to their weights (queues\n"
        "without one weigh 1), so none starves.\n\n"
        "Each job's payload is written to its stdin; its stdout is the result. The job sees\n"
        "ERRAND_JOB_ID, ERRAND_QUEUE, ERRAND_ATTEMPT and ERRAND_PROGRESS_FD=3 in its environment.\n"
        "Progress: each line the job writes to fd 3, 'PERCENT[%] [MESSAGE]' (PERCENT 0-100,\n"
        "MESSAGE up to 256 bytes), is reported to the broker, e.g. echo '40% resizing' >&3.\n"
        "A job that times out or is cancelled gets SIGTERM (its whole process group), then\n"
        "SIGKILL after --kill-grace. A timeout is a failure that is retried; an exit with\n"
        "--permanent-exit-code is one that is not (the job goes straight to dead).\n"
        "SIGINT/SIGTERM: stop taking jobs, finish the running ones, report them and exit.\n"
        "A second SIGINT/SIGTERM also terminates the running jobs (SIGTERM, then SIGKILL after\n"
        "--kill-grace).");
    app.add_option("--broker", endpoint, "broker endpoint")
        ->envname("ERRAND_BROKER")
        ->capture_default_str();
    app.add_option("--queue", queue_args,
                   "a queue to serve (repeatable), e.g. emails:3='send-mail' or reports:1;\n"
                   "COMMAND runs with /bin/sh -c. See QUEUES below")
        ->type_name("NAME[:WEIGHT][=COMMAND]")
        ->required()
        ->allow_extra_args(false);
    app.add_option("--concurrency", concurrency, "jobs run at once")
        ->check(CLI::Range(1u, errand::limits::kMaxConcurrency))
        ->capture_default_str();
    app.add_flag("--allow-commands", allow_commands,
                 "run jobs that carry their own command line (argv)");
    app.add_option("--default-timeout", default_timeout_arg,
                   "timeout of jobs submitted without one, e.g. 10m (default: none)")
        ->type_name("DURATION");
    app.add_option("--kill-grace", kill_grace_arg, "time between SIGTERM and SIGKILL")
        ->type_name("DURATION")
        ->capture_default_str();
    app.add_option("--permanent-exit-code", permanent_exit_code,
                   "jobs exiting with this code fail permanently (0: none)")
        ->type_name("N")
        ->check(CLI::Range(0, 255))
        ->capture_default_str();
    app.add_option("--name", name, "worker name shown by the broker (default: host:pid)");
    std::string curve_server_key, curve_key;
    unsigned prefetch = 0;
    auto* server_key_opt =
        app.add_option("--curve-server-key", curve_server_key,
                       "encrypt with CURVE: the broker's public key file (needs --curve-key)")
            ->envname("ERRAND_CURVE_SERVER_KEY");
    auto* key_opt =
        app.add_option("--curve-key", curve_key, "our secret key file, authorised on the broker")
            ->envname("ERRAND_CURVE_KEY");
    server_key_opt->needs(key_opt);
    key_opt->needs(server_key_opt);
    app.add_option("--prefetch", prefetch,
                   "jobs held waiting beyond --concurrency (for many short jobs; their timeouts "
                   "run from dispatch)")
        ->check(CLI::Range(0u, errand::limits::kMaxPrefetch))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "log level")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::vector<errand::workerd::QueueSpec> queues;
    for (const std::string& arg : queue_args) {
        errand::workerd::QueueSpec queue;
        try {
            queue = errand::workerd::parse_queue_spec(arg);
        } catch (const std::invalid_argument& e) {
            std::fprintf(stderr,
                         "errand-worker: bad --queue '%s': %s (expected NAME[:WEIGHT][=COMMAND])\n",
                         arg.c_str(), e.what());
            return kExitBadFlag;
        }
        for (const auto& seen : queues) {
            if (seen.name == queue.name) {
                std::fprintf(stderr, "errand-worker: queue '%s' is given twice\n",
                             seen.name.c_str());
                return kExitBadFlag;
            }
        }
        queues.push_back(std::move(queue));
    }
    std::optional<errand::Millis> default_timeout;
    if (!default_timeout_arg.empty()) {
        default_timeout = duration_flag("--default-timeout", default_timeout_arg, 1);
        if (!default_timeout) return kExitBadFlag;
    }
    std::optional<errand::Millis> kill_grace = duration_flag("--kill-grace", kill_grace_arg, 0);
    if (!kill_grace) return kExitBadFlag;
    if (name.empty()) name = default_name();

    spdlog::set_default_logger(spdlog::stderr_color_mt("errand-worker"));
    spdlog::set_level(spdlog::level::from_str(log_level));

    // SIGINT/SIGTERM are blocked in every thread (the Worker's threads inherit this mask) and
    // taken by sigwait on one thread of ours, so no library call ever sees EINTR from them.
    // Jobs get a clean mask (process.cpp). SIGPIPE: a peer or job gone is an error return.
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    std::optional<errand::CurveClient> curve;
    if (!curve_server_key.empty()) {
        try {
            curve = errand::load_curve_client(curve_server_key, curve_key);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "errand-worker: %s\n", e.what());
            return kExitBadFlag;
        }
    }

    std::atomic<bool> cancel_jobs{false};
    try {
        errand::Worker worker({.endpoint = endpoint,
                               .name = name,
                               .concurrency = concurrency,
                               .prefetch = prefetch,
                               .accept_commands = allow_commands,
                               .curve = curve});
        std::vector<std::string> queue_names;
        for (const auto& queue : queues) {
            errand::workerd::JobPolicy policy{
                .command = queue.command,
                .allow_commands = allow_commands,
                .default_timeout = default_timeout,
                .kill_grace_ms = *kill_grace,
                .permanent_exit_code = permanent_exit_code > 0
                                           ? std::optional<int>(permanent_exit_code)
                                           : std::nullopt,
                .terminate = &cancel_jobs};
            worker.handle(
                queue.name,
                [policy](const errand::Job& job) {
                    spdlog::debug("job {} ({}, attempt {}): started", job.id, job.queue,
                                  job.attempt);
                    const errand::Millis start = errand::steady_ms();
                    errand::Outcome outcome = errand::workerd::run_job(job, policy);
                    const errand::Millis took = errand::steady_ms() - start;
                    if (outcome.ok)
                        spdlog::info("job {} ({}, attempt {}): succeeded in {} ms", job.id,
                                     job.queue, job.attempt, took);
                    else
                        spdlog::info("job {} ({}, attempt {}): failed{} in {} ms: {}", job.id,
                                     job.queue, job.attempt,
                                     outcome.permanent ? " permanently" : "", took,
                                     first_line(outcome.error));
                    return outcome;
                },
                queue.weight);
            std::string shown = queue.name;
            if (queue.weight > 0) shown += fmt::format(":{}", queue.weight);
            if (queue.command) shown += "=" + *queue.command;
            queue_names.push_back(std::move(shown));
        }

        StopSignals signal_thread(stop_signals, worker, cancel_jobs);
        spdlog::info("errand-worker {} serving {} on {} with concurrency {}{}", name,
                     fmt::join(queue_names, ", "), endpoint, concurrency,
                     allow_commands ? ", running job-supplied commands" : "");
        worker.run();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return kExitFailed;
    }
    spdlog::info("stopped");
    return 0;
}
