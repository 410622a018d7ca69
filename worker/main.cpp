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
#include "errand/protocol.hpp"
#include "errand/worker.hpp"
#include "process.hpp"

namespace {

// Exit codes: 0 after a clean stop; CLI11's own codes for malformed flags.
constexpr int kExitBadQueue = 2;
constexpr int kExitFailed = 1;

struct QueueSpec {
    std::string name;
    std::optional<std::string> command;
};

// "NAME" or "NAME=COMMAND"; nullopt when NAME is not a valid queue name or COMMAND is empty.
std::optional<QueueSpec> parse_queue(const std::string& text) {
    std::size_t eq = text.find('=');
    QueueSpec spec{text.substr(0, eq), std::nullopt};
    if (eq != std::string::npos) spec.command = text.substr(eq + 1);
    if (!errand::valid_queue_name(spec.name) || (spec.command && spec.command->empty()))
        return std::nullopt;
    return spec;
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
    std::string name;
    std::string log_level = "info";

    CLI::App app{"errand-worker: runs the jobs of errand queues as processes"};
    app.footer(
        "Each job's payload is written to its stdin; its stdout is the result. The job sees\n"
        "ERRAND_JOB_ID, ERRAND_QUEUE and ERRAND_ATTEMPT in its environment.\n"
        "SIGINT/SIGTERM: stop taking jobs, finish the running ones, report them and exit.\n"
        "A second SIGINT/SIGTERM also terminates the running jobs (SIGTERM, SIGKILL 5 s later).");
    app.add_option("--broker", endpoint, "broker endpoint")
        ->envname("ERRAND_BROKER")
        ->capture_default_str();
    app.add_option("--queue", queue_args,
                   "queue to serve, NAME or NAME=COMMAND (COMMAND runs with /bin/sh -c); "
                   "repeat for more queues, earlier ones are preferred")
        ->required()
        ->allow_extra_args(false);
    app.add_option("--concurrency", concurrency, "jobs run at once")
        ->check(CLI::Range(1u, errand::limits::kMaxConcurrency))
        ->capture_default_str();
    app.add_flag("--allow-commands", allow_commands,
                 "run jobs that carry their own command line (argv)");
    app.add_option("--name", name, "worker name shown by the broker (default: host:pid)");
    app.add_option("--log-level", log_level, "log level")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::vector<QueueSpec> queues;
    for (const std::string& arg : queue_args) {
        std::optional<QueueSpec> queue = parse_queue(arg);
        if (!queue) {
            std::fprintf(stderr,
                         "errand-worker: bad --queue '%s': expected NAME or NAME=COMMAND, NAME "
                         "being 1-64 characters of A-Z a-z 0-9 _ . - and COMMAND not empty\n",
                         arg.c_str());
            return kExitBadQueue;
        }
        for (const QueueSpec& seen : queues) {
            if (seen.name == queue->name) {
                std::fprintf(stderr, "errand-worker: queue '%s' is given twice\n",
                             seen.name.c_str());
                return kExitBadQueue;
            }
        }
        queues.push_back(std::move(*queue));
    }
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

    std::atomic<bool> cancel_jobs{false};
    try {
        errand::Worker worker({.endpoint = endpoint,
                               .name = name,
                               .concurrency = concurrency,
                               .accept_commands = allow_commands});
        std::vector<std::string> queue_names;
        for (const QueueSpec& queue : queues) {
            errand::workerd::JobPolicy policy{
                .command = queue.command, .allow_commands = allow_commands, .cancel = &cancel_jobs};
            worker.handle(queue.name, [policy](const errand::Job& job) {
                spdlog::debug("job {} ({}, attempt {}): started", job.id, job.queue, job.attempt);
                const errand::Millis start = errand::steady_ms();
                errand::Outcome outcome = errand::workerd::run_job(job, policy);
                const errand::Millis took = errand::steady_ms() - start;
                if (outcome.ok)
                    spdlog::info("job {} ({}, attempt {}): succeeded in {} ms", job.id, job.queue,
                                 job.attempt, took);
                else
                    spdlog::info("job {} ({}, attempt {}): failed in {} ms: {}", job.id, job.queue,
                                 job.attempt, took, first_line(outcome.error));
                return outcome;
            });
            queue_names.push_back(queue.command ? queue.name + "=" + *queue.command : queue.name);
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
