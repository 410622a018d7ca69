// Metric updates and the Prometheus text rendering (docs/OPERATIONS.md lists every family).
#include "metrics.hpp"

#include <fmt/format.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace errand::broker {
namespace {

// Seconds: 5 ms to 1 h, for queue wait and run time.
const std::vector<double> kJobSeconds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,    2.5,
                                         5,     10,   30,    60,   120, 300,  600, 1800, 3600};
// Seconds: 50 µs to 2.5 s, for commits (an fsync is typically 0.1–10 ms).
const std::vector<double> kCommitSeconds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                            0.0025,  0.005,  0.01,    0.025,  0.05,
                                            0.1,     0.25,   0.5,     1,      2.5};
const std::vector<double> kCommitJobs = {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};

std::string number(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v);
}

// A label value with \, " and newline escaped as the format requires.
std::string label(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void histogram(std::string& out, const char* name, const std::string& labels, const Histogram& h) {
    std::uint64_t cumulative = 0;
    std::string sep = labels.empty() ? "" : ",";
    for (std::size_t i = 0; i < h.buckets.size(); ++i) {
        cumulative += h.buckets[i];
        double le = i < h.bounds.size() ? h.bounds[i] : INFINITY;
        out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, number(le),
                           cumulative);
    }
    std::string braces = labels.empty() ? "" : "{" + labels + "}";
    out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, number(h.sum), name, braces,
                       h.count);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds(std::move(upper_bounds)), buckets(bounds.size() + 1, 0) {}

void Histogram::observe(double v) {
    std::size_t i = 0;
    while (i < bounds.size() && v > bounds[i])
        ++i;
    ++buckets[i];
    sum += v;
    ++count;
}

void RateWindow::add(Millis now, std::uint64_t n) {
    std::int64_t sec = now / 1000;
    auto i = static_cast<std::size_t>(sec % 60);
    if (second_[i] != sec) {
        second_[i] = sec;
        counts_[i] = 0;
    }
    counts_[i] += n;
}

double RateWindow::per_second(Millis now) const {
    std::int64_t sec = now / 1000;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < 60; ++i)
        if (second_[i] > sec - 60 && second_[i] <= sec) total += counts_[i];
    return static_cast<double>(total) / 60.0;
}

void MinuteSeries::add(Millis at, Kind kind) {
    std::int64_t minute = at / 60000;
    auto& m = ring_[static_cast<std::size_t>(minute) % kMinutes];
    if (m.minute != minute) m = Minute{minute, 0, 0, 0, 0};
    switch (kind) {
        case Kind::submitted:
            ++m.submitted;
            break;
        case Kind::succeeded:
            ++m.succeeded;
            break;
        case Kind::failed:
            ++m.failed;
            break;
        case Kind::dead:
            ++m.dead;
            break;
    }
}

std::vector<MinuteSeries::Minute> MinuteSeries::last(Millis now, std::size_t minutes) const {
    minutes = std::min(minutes, kMinutes);
    std::int64_t newest = now / 60000;
    std::vector<Minute> out;
    out.reserve(minutes);
    for (auto m = newest - static_cast<std::int64_t>(minutes) + 1; m <= newest; ++m) {
        if (m < 0) continue;
        const auto& slot = ring_[static_cast<std::size_t>(m) % kMinutes];
        out.push_back(slot.minute == m ? slot : Minute{m, 0, 0, 0, 0});
    }
    return out;
}

FailureClass failure_class(std::string_view reason) {
    if (reason.starts_with("failed permanently")) return FailureClass::permanent;
    if (reason.starts_with("failed") || reason.starts_with("no attempts left"))
        return FailureClass::failed;
    if (reason.starts_with("timed out")) return FailureClass::timeout;
    return FailureClass::lost;  // worker lost, dispatch lost, the worker's session ended
}

std::string_view to_string(FailureClass c) {
    switch (c) {
        case FailureClass::failed:
            return "failed";
        case FailureClass::permanent:
            return "permanent";
        case FailureClass::timeout:
            return "timeout";
        case FailureClass::lost:
            return "lost";
    }
    return "lost";
}

std::optional<ProcessStats> read_process_stats() {
    // /proc/self/stat: fields after the command's closing parenthesis; utime and stime are the
    // 12th and 13th of them (fields 14 and 15), starttime the 20th (field 22), in clock ticks;
    // vsize the 21st in bytes, rss the 22nd in pages.
    std::ifstream stat("/proc/self/stat");
    std::string line;
    if (!stat || !std::getline(stat, line)) return std::nullopt;
    auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream in(line.substr(close + 2));
    std::vector<std::string> f;
    for (std::string x; in >> x;)
        f.push_back(x);
    if (f.size() < 22) return std::nullopt;
    double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    long page = ::sysconf(_SC_PAGESIZE);
    ProcessStats p;
    try {
        p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
        p.virtual_bytes = std::stoull(f[20]);
        p.resident_bytes = std::stoull(f[21]) * static_cast<std::uint64_t>(page);
        double boot = 0;
        std::ifstream st("/proc/stat");
        for (std::string l; std::getline(st, l);)
            if (l.starts_with("btime ")) boot = std::stod(l.substr(6));
        p.start_time_seconds = boot + std::stod(f[19]) / ticks;
    } catch (const std::exception&) {
        return std::nullopt;
    }
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        ++p.open_fds;
    if (p.open_fds > 0) --p.open_fds;  // the iterator's own descriptor
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) p.max_fds = lim.rlim_cur;
    return p;
}

QueueMetrics::QueueMetrics() : wait_seconds(kJobSeconds), run_seconds(kJobSeconds) {}

Metrics::Metrics() : commit_seconds(kCommitSeconds), commit_jobs(kCommitJobs) {}

void Metrics::on_event(const MetricEvent& e) {
    auto& q = queues[e.queue];
    if (!e.from) {
        ++q.submitted;
        q.submitted_rate.add(e.at);
        minutes.add(e.at, MinuteSeries::Kind::submitted);
    }
    if (e.waited_ms) q.wait_seconds.observe(static_cast<double>(*e.waited_ms) / 1000.0);
    if (e.ran_ms) q.run_seconds.observe(static_cast<double>(*e.ran_ms) / 1000.0);
    if (e.failed_attempt) {
        ++q.failed;
        ++q.failed_by_class[static_cast<std::size_t>(failure_class(e.reason))];
        minutes.add(e.at, MinuteSeries::Kind::failed);
    }
    if (e.from == JobState::dead && e.to == JobState::ready) ++q.retried;
    switch (e.to) {
        case JobState::succeeded:
            ++q.succeeded;
            q.finished.add(e.at);
            minutes.add(e.at, MinuteSeries::Kind::succeeded);
            break;
        case JobState::dead:
            ++q.dead;
            q.finished.add(e.at);
            minutes.add(e.at, MinuteSeries::Kind::dead);
            break;
        case JobState::cancelled:
            ++q.cancelled;
            q.finished.add(e.at);
            break;
        case JobState::expired:
            ++q.expired;
            q.finished.add(e.at);
            break;
        default:
            break;
    }
}

void Metrics::on_commit(double seconds, std::size_t jobs) {
    commit_seconds.observe(seconds);
    commit_jobs.observe(static_cast<double>(jobs));
}

std::string render_prometheus(const Metrics& m, const Gauges& g,
                              const std::optional<ProcessStats>& process) {
    std::string out;
    out.reserve(16384);
    family(out, "errand_build_info", "gauge", "Always 1; the broker's version as a label.");
    out += fmt::format("errand_build_info{{version=\"{}\"}} 1\n", label(g.version));
    family(out, "errand_jobs", "gauge", "Jobs in the database by queue and state.");
    for (const auto& [q, counts] : g.jobs)
        for (JobState s : kAllStates)
            out += fmt::format("errand_jobs{{queue=\"{}\",state=\"{}\"}} {}\n", label(q),
                               to_string(s), counts[static_cast<std::size_t>(s)]);
    family(out, "errand_queue_paused", "gauge", "1 when the queue is paused.");
    for (const auto& [q, p] : g.paused)
        out += fmt::format("errand_queue_paused{{queue=\"{}\"}} {}\n", label(q), p ? 1 : 0);
    family(
        out, "errand_queue_oldest_ready_age_seconds", "gauge",
        "Age of the queue's oldest ready job since its creation (0: none ready), served or not.");
    for (const auto& [q, age] : g.oldest_ready_age)
        out += fmt::format("errand_queue_oldest_ready_age_seconds{{queue=\"{}\"}} {}\n", label(q),
                           number(age));
    family(out, "errand_queue_worker_slots", "gauge",
           "Concurrency of the registered workers that take the queue (0: nobody serves it).");
    for (const auto& [q, n] : g.queue_slots)
        out += fmt::format("errand_queue_worker_slots{{queue=\"{}\"}} {}\n", label(q), n);

    // Schedules: a schedule label is bounded by the broker's limit on schedules (1000).
    std::uint64_t paused_schedules = 0;
    for (const auto& [name, s] : g.schedules)
        paused_schedules += s.paused ? 1 : 0;
    family(out, "errand_schedules", "gauge", "Cron schedules, by whether they are paused.");
    out += fmt::format("errand_schedules{{paused=\"false\"}} {}\n",
                       g.schedules.size() - paused_schedules);
    out += fmt::format("errand_schedules{{paused=\"true\"}} {}\n", paused_schedules);
    family(out, "errand_schedule_paused", "gauge", "1 when the schedule is paused.");
    for (const auto& [name, s] : g.schedules)
        out += fmt::format("errand_schedule_paused{{schedule=\"{}\"}} {}\n", label(name),
                           s.paused ? 1 : 0);
    family(out, "errand_schedule_next_fire_timestamp_seconds", "gauge",
           "Unix time of the schedule's next tick (absent: paused, or no tick to come).");
    for (const auto& [name, s] : g.schedules)
        if (s.next_at && !s.paused)
            out +=
                fmt::format("errand_schedule_next_fire_timestamp_seconds{{schedule=\"{}\"}} {}\n",
                            label(name), number(static_cast<double>(*s.next_at) / 1000.0));
    family(out, "errand_schedule_last_fire_timestamp_seconds", "gauge",
           "Unix time of the last tick that submitted a job (absent: none yet).");
    for (const auto& [name, s] : g.schedules)
        if (s.last_at)
            out +=
                fmt::format("errand_schedule_last_fire_timestamp_seconds{{schedule=\"{}\"}} {}\n",
                            label(name), number(static_cast<double>(*s.last_at) / 1000.0));

    struct Counter {
        const char* name;
        const char* help;
        std::uint64_t QueueMetrics::*field;
    };
    const Counter counters[] = {
        {"errand_jobs_submitted_total", "Jobs submitted (created) since the broker started.",
         &QueueMetrics::submitted},
        {"errand_jobs_succeeded_total", "Jobs that succeeded since the broker started.",
         &QueueMetrics::succeeded},
        {"errand_job_attempts_failed_total",
         "Attempts that failed (FAIL, timed out, worker lost) since the broker started.",
         &QueueMetrics::failed},
        {"errand_jobs_dead_total", "Jobs that went dead since the broker started.",
         &QueueMetrics::dead},
        {"errand_jobs_cancelled_total", "Jobs cancelled since the broker started.",
         &QueueMetrics::cancelled},
        {"errand_jobs_retried_total", "Dead jobs retried by request since the broker started.",
         &QueueMetrics::retried},
        {"errand_jobs_expired_total",
         "Jobs expired (not dispatched by their expiry) since the broker started.",
         &QueueMetrics::expired},
    };
    for (const auto& c : counters) {
        family(out, c.name, "counter", c.help);
        for (const auto& [q, qm] : m.queues)
            out += fmt::format("{}{{queue=\"{}\"}} {}\n", c.name, label(q), qm.*(c.field));
    }
    family(out, "errand_job_attempts_failed_by_reason_total", "counter",
           "Failed attempts by class of reason: failed (the job failed), permanent (its "
           "permanent exit code), timeout (no result in time), lost (worker or dispatch lost).");
    for (const auto& [q, qm] : m.queues)
        for (std::size_t c = 0; c < kFailureClasses; ++c)
            out += fmt::format(
                "errand_job_attempts_failed_by_reason_total{{queue=\"{}\",reason=\"{}\"}} {}\n",
                label(q), to_string(static_cast<FailureClass>(c)), qm.failed_by_class[c]);
    family(out, "errand_job_queue_wait_seconds", "histogram",
           "Time jobs spent ready before a worker got them (ready to running).");
    for (const auto& [q, qm] : m.queues)
        histogram(out, "errand_job_queue_wait_seconds", fmt::format("queue=\"{}\"", label(q)),
                  qm.wait_seconds);
    family(out, "errand_job_run_seconds", "histogram",
           "Run time of attempts (running to finished, failed or lost).");
    for (const auto& [q, qm] : m.queues)
        histogram(out, "errand_job_run_seconds", fmt::format("queue=\"{}\"", label(q)),
                  qm.run_seconds);

    family(out, "errand_workers_connected", "gauge", "Registered workers.");
    out += fmt::format("errand_workers_connected {}\n", g.workers);
    family(out, "errand_worker_reconnects_total", "counter",
           "Registrations of workers that had been registered before (broker restarts, dropped "
           "connections, failovers).");
    out += fmt::format("errand_worker_reconnects_total {}\n", m.worker_reconnects);
    family(out, "errand_worker_slots", "gauge", "Sum of the registered workers' concurrency.");
    out += fmt::format("errand_worker_slots {}\n", g.worker_slots);
    family(out, "errand_worker_jobs", "gauge", "Jobs held by registered workers.");
    out += fmt::format("errand_worker_jobs {}\n", g.running);

    family(out, "errand_commit_duration_seconds", "histogram",
           "Latency of the broker's group commits (one per loop pass that wrote).");
    histogram(out, "errand_commit_duration_seconds", "", m.commit_seconds);
    family(out, "errand_commit_batch_jobs", "histogram",
           "Job state changes written by one group commit.");
    histogram(out, "errand_commit_batch_jobs", "", m.commit_jobs);
    family(out, "errand_commit_failures_total", "counter",
           "Commits that failed and were rolled back.");
    out += fmt::format("errand_commit_failures_total {}\n", m.commit_failures);
    family(out, "errand_messages_received_total", "counter",
           "Messages the broker read, by command (unknown: any other, or a malformed one).");
    for (const auto& [command, n] : m.messages_received)
        out += fmt::format("errand_messages_received_total{{command=\"{}\"}} {}\n", command, n);

    if (g.db_bytes) {
        family(out, "errand_database_size_bytes", "gauge",
               "Size of the SQLite database including its WAL file.");
        out += fmt::format("errand_database_size_bytes {}\n", *g.db_bytes);
    }
    family(out, "errand_uptime_seconds", "gauge", "Seconds since the broker started.");
    out += fmt::format("errand_uptime_seconds {}\n", number(g.uptime_seconds));
    family(out, "errand_loop_last_pass_timestamp_seconds", "gauge",
           "Unix time of the broker loop's latest published snapshot (liveness).");
    out += fmt::format("errand_loop_last_pass_timestamp_seconds {}\n", number(g.last_loop_seconds));
    if (process) {
        family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
        out += fmt::format("process_cpu_seconds_total {}\n", number(process->cpu_seconds));
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        out += fmt::format("process_resident_memory_bytes {}\n", process->resident_bytes);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        out += fmt::format("process_virtual_memory_bytes {}\n", process->virtual_bytes);
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        out += fmt::format("process_open_fds {}\n", process->open_fds);
        family(out, "process_max_fds", "gauge", "Limit of open file descriptors.");
        out += fmt::format("process_max_fds {}\n", process->max_fds);
        family(out, "process_start_time_seconds", "gauge",
               "Start time of the process since the unix epoch in seconds.");
        out += fmt::format("process_start_time_seconds {}\n", number(process->start_time_seconds));
    }
    return out;
}

}  // namespace errand::broker
