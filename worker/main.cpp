// errand-worker: serves queues by running each job as a process (worker/process.hpp) on the
// errand::Worker library. This file only parses flags, sets up logging and signals, and runs.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "config.hpp"
#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/log_fields.hpp"
#include "errand/protocol.hpp"
#include "errand/transport.hpp"
#include "errand/version.hpp"
#include "errand/worker.hpp"
#include "job_cgroup.hpp"
#include "logging.hpp"
#include "notify.hpp"
#include "process.hpp"
#include "reaper.hpp"
#include "signals.hpp"

namespace {

// Exit codes: 0 after a clean stop; 2 for bad flags (or a config file or environment variable
// that sets one); 1 when serving fails.
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

// The library's log lines join the daemon's own (its format, level and file: daemon/logging.hpp).
void log_to_spdlog(errand::LogLevel level, std::string_view message) {
    switch (level) {
        case errand::LogLevel::debug:
            spdlog::debug("{}", message);
            break;
        case errand::LogLevel::info:
            spdlog::info("{}", message);
            break;
        case errand::LogLevel::warn:
            spdlog::warn("{}", message);
            break;
        case errand::LogLevel::error:
            spdlog::error("{}", message);
            break;
    }
}

std::string first_line(const std::string& text) {
    std::string line = text.substr(0, text.find('\n'));
    return line.size() > 200 ? line.substr(0, 200) + "..." : line;
}

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
    std::string log_format = "text";
    std::string log_file;
    std::string drain_timeout_arg = "30s";
    std::string job_cgroups = "auto";
    bool dump = false;

    CLI::App app{"errand-worker: runs the jobs of errand queues as processes"};
    app.set_version_flag("--version", "errand-worker " ERRAND_VERSION,
                         "print the version and exit");
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
        "SIGINT/SIGTERM drain the worker: it takes no more jobs, hands jobs that have not\n"
        "started back to the broker, lets running jobs finish for up to --drain-timeout, then\n"
        "stops them (SIGTERM, then SIGKILL after --kill-grace) and hands them back too, without\n"
        "counting the attempt, and exits 0. A second SIGINT/SIGTERM ends the drain at once.\n"
        "SIGHUP reopens --log-file.\n\n"
        "Every flag can also come from a TOML file (--config) or an ERRAND_* environment\n"
        "variable (--kill-grace: ERRAND_KILL_GRACE). Precedence: flag > environment > file.");
    app.add_option("--broker", endpoint,
                   "broker endpoint; or several brokers sharing one PostgreSQL database, "
                   "comma-separated, to fail over between")
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
    std::string prefetch = "auto";
    auto* server_key_opt =
        app.add_option("--curve-server-key", curve_server_key,
                       "encrypt with CURVE: the broker's public key file (needs --curve-key)");
    auto* key_opt =
        app.add_option("--curve-key", curve_key, "our secret key file, authorised on the broker");
    server_key_opt->needs(key_opt);
    key_opt->needs(server_key_opt);
    app.add_option("--prefetch", prefetch,
                   fmt::format("jobs held waiting beyond --concurrency, their timeouts running "
                               "from dispatch: a number, or auto (up to {} while jobs run under "
                               "5 ms on average, none once they run over 50 ms); 0: a job is "
                               "fetched only when a slot is free",
                               errand::kAdaptivePrefetch))
        ->check([](const std::string& v) -> std::string {
            if (v == "auto") return {};
            unsigned n = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec != std::errc() || end != v.data() + v.size() || n > errand::limits::kMaxPrefetch)
                return fmt::format("must be auto or a number from 0 to {}, not '{}'",
                                   errand::limits::kMaxPrefetch, v);
            return {};
        })
        ->capture_default_str();
    app.add_option("--log-level", log_level, "log level")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
        ->capture_default_str();
    app.add_option("--log-format", log_format, "text, or json (one object per line)")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    app.add_option("--log-file", log_file, "log to this file instead of stderr (SIGHUP reopens it)")
        ->type_name("PATH");
    app.add_option("--drain-timeout", drain_timeout_arg,
                   "on SIGTERM, how long running jobs may take before they are stopped and handed "
                   "back")
        ->type_name("DURATION")
        ->capture_default_str();
    app.add_option("--job-cgroups", job_cgroups,
                   "auto: run each job in a cgroup of its own when the worker can make one (so "
                   "what a job daemonises dies with it), off: its process group only")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "off"}));
    errand::daemon::add_config_options(app, dump);
    try {
        errand::daemon::parse_settings(app, argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : kExitBadFlag;
    }
    auto brokers = errand::parse_endpoints(endpoint);
    if (brokers.error) {
        std::fprintf(stderr, "errand-worker: bad --broker '%s': %s\n", endpoint.c_str(),
                     brokers.error->c_str());
        return kExitBadFlag;
    }

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
    std::optional<errand::Millis> drain_timeout =
        duration_flag("--drain-timeout", drain_timeout_arg, 0);
    if (!drain_timeout) return kExitBadFlag;
    if (name.empty()) name = default_name();
    if (dump) {
        std::fputs(errand::daemon::dump_config(app, "errand-worker").c_str(), stdout);
        return 0;
    }

    // Each job in a cgroup of its own when there is a writable cgroup v2 tree (the unit's
    // Delegate=yes), so a job that daemonises still dies on cancel, timeout and drain (and,
    // through the reaper, with this daemon). Looked for before the reaper, which needs it.
    std::string cgroup_why = "--job-cgroups off";
    const auto cgroup_root =
        job_cgroups == "auto" ? errand::workerd::find_job_cgroup_root(&cgroup_why) : std::nullopt;

    // Forked while this process has one thread (reaper.hpp): it kills what jobs leave running
    // should this daemon die without stopping them, SIGKILL included.
    errand::workerd::Reaper reaper;
    try {
        reaper = errand::workerd::Reaper::start(cgroup_root.value_or(""));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "errand-worker: cannot start the job reaper: %s\n", e.what());
        return kExitFailed;
    }

    try {
        errand::daemon::setup_logging({.name = "errand-worker",
                                       .level = log_level,
                                       .format = *errand::daemon::parse_log_format(log_format),
                                       .file = log_file});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "errand-worker: %s\n", e.what());
        return kExitBadFlag;
    }

    // SIGINT/SIGTERM/SIGHUP are blocked in every thread (the Worker's threads inherit this
    // mask) and taken by sigwait on one thread of ours, so no library call ever sees EINTR from
    // them. Jobs get a clean mask (process.cpp). SIGPIPE: a peer or job gone is an error return.
    ::signal(SIGPIPE, SIG_IGN);
    errand::daemon::SignalThread::block();
    errand::daemon::ServiceNotifier notifier;

    std::optional<errand::CurveClient> curve;
    if (!curve_server_key.empty()) {
        try {
            curve = errand::load_curve_client(curve_server_key, curve_key);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "errand-worker: %s\n", e.what());
            return kExitBadFlag;
        }
    }

    // systemd: STATUS= and WATCHDOG=1 come from the worker's network thread, so a hung
    // worker stops pinging.
    bool ready_sent = false;
    bool stopping_seen = false;  // a drain the broker asked for (`errand worker stop`) too
    auto on_status = [&](const errand::WorkerStatus& st) {
        if (st.draining && !stopping_seen) notifier.stopping();
        stopping_seen = st.draining;
        std::string line = fmt::format("{}/{} slots busy", st.busy, st.slots);
        if (st.unacknowledged > 0)
            line += fmt::format(", {} results unacknowledged", st.unacknowledged);
        if (!st.connected) line += fmt::format(", not connected to the broker ({})", st.broker);
        if (st.reconnects > 0) line += fmt::format(", {} reconnects", st.reconnects);
        if (st.draining) line += ", draining";
        if (st.quiet && !st.draining) line += ", quiet (errand worker resume)";
        if (!ready_sent) {
            notifier.ready(line);
            ready_sent = true;
        } else {
            notifier.status(line);
        }
        notifier.watchdog(errand::steady_ms());
    };
    errand::Millis status_interval = 1000;
    if (auto wd = notifier.watchdog_interval()) status_interval = std::min(status_interval, *wd);

    try {
        errand::Worker worker(
            {.endpoint = endpoint,
             .endpoints = brokers.endpoints,
             .name = name,
             .concurrency = concurrency,
             .prefetch = prefetch == "auto" ? 0u : static_cast<std::uint32_t>(std::stoul(prefetch)),
             .adaptive_prefetch = prefetch == "auto",
             .accept_commands = allow_commands,
             .curve = curve,
             .drain_timeout = std::chrono::milliseconds(*drain_timeout),
             .on_status = on_status,
             .status_interval = std::chrono::milliseconds(status_interval),
             .log = log_to_spdlog});
        if (cgroup_root)
            spdlog::info("each job runs in a cgroup of its own under {}", *cgroup_root);
        else
            spdlog::info("jobs run in their own process group only ({})", cgroup_why);
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
                .reaper_fd = reaper.fd(),
                .cgroup_root = cgroup_root.value_or("")};
            worker.handle(
                queue.name,
                [policy](const errand::Job& job) {
                    const std::string tag =
                        errand::job_fields(job.id, job.queue, job.attempt).str();
                    spdlog::debug("{}: started", tag);
                    const errand::Millis start = errand::steady_ms();
                    errand::Outcome outcome = errand::workerd::run_job(job, policy);
                    const errand::Millis took = errand::steady_ms() - start;
                    if (outcome.ok)
                        spdlog::info("{}: succeeded in {} ms", tag, took);
                    else if (job.cancelled())
                        // Aborted by the broker, or stopped at the end of a drain (then the
                        // Worker hands it back and says so).
                        spdlog::info("{}: stopped after {} ms: {}", tag, took,
                                     first_line(outcome.error));
                    else
                        spdlog::info("{}: failed{} in {} ms: {}", tag,
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

        errand::daemon::SignalThread signal_thread([&worker, &notifier](int sig) {
            if (sig == SIGHUP) {
                try {
                    errand::daemon::reopen_logs();
                    spdlog::info("SIGHUP: log file reopened");
                } catch (const std::exception& e) {
                    spdlog::error("SIGHUP: {}", e.what());
                }
                return;
            }
            spdlog::info("SIG{}: draining", ::sigabbrev_np(sig));
            notifier.stopping();
            worker.stop();
        });
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
