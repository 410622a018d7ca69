// Broker metrics: counters and histograms that the broker loop updates (it is their only
// writer) from committed job events, copied into every published Snapshot, and rendered in the
// Prometheus text exposition format by the HTTP side (which only ever reads a copy).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errand/protocol.hpp"

namespace errand::broker {

// A Prometheus histogram: fixed upper bounds, counts per bucket (not cumulative; the last
// bucket is +Inf), sum and count.
struct Histogram {
    std::vector<double> bounds;
    std::vector<std::uint64_t> buckets;  // bounds.size() + 1
    double sum = 0;
    std::uint64_t count = 0;

    Histogram() = default;
    explicit Histogram(std::vector<double> upper_bounds);
    void observe(double v);
};

// Events per second over the last minute, in one-second buckets indexed by second mod 60.
class RateWindow {
  public:
    void add(Millis now, std::uint64_t n = 1);
    double per_second(Millis now) const;

  private:
    std::array<std::uint64_t, 60> counts_{};
    std::array<std::int64_t, 60> second_{};  // which second each bucket holds
};

// Job counts per minute for the last kMinutes minutes, all queues together, for the dashboard's
// chart (so it survives a reload): a ring indexed by minute mod kMinutes. Fixed size: 6 h of
// four counters, ~17 KiB, copied into each Snapshot.
class MinuteSeries {
  public:
    static constexpr std::size_t kMinutes = 360;
    struct Minute {
        std::int64_t minute = -1;  // unix minute this slot holds; -1: never used
        std::uint64_t submitted = 0, succeeded = 0, failed = 0, dead = 0;
    };
    enum class Kind { submitted, succeeded, failed, dead };
    void add(Millis at, Kind kind);
    // The last `minutes` minutes up to and including the one holding `now`, oldest first, with
    // zeros for minutes nothing happened in.
    std::vector<Minute> last(Millis now, std::size_t minutes) const;

  private:
    std::array<Minute, kMinutes> ring_{};
};

// Why an attempt failed, for errand_job_attempts_failed_by_reason_total: the class of the
// event's reason, a closed set so the label cannot grow. failed: the job failed (FAIL, also on
// its last attempt); permanent: it failed with the permanent exit code; timeout: no result in
// its timeout; lost: the worker went away or the dispatch was lost.
enum class FailureClass { failed, permanent, timeout, lost };
inline constexpr std::size_t kFailureClasses = 4;
FailureClass failure_class(std::string_view reason);
std::string_view to_string(FailureClass c);

struct QueueMetrics {
    std::uint64_t submitted = 0;
    std::uint64_t succeeded = 0;
    std::uint64_t failed = 0;  // failed attempts (FAIL, timed out, worker lost)
    std::uint64_t dead = 0;
    std::uint64_t cancelled = 0;
    std::uint64_t retried = 0;  // dead jobs revived by request
    std::uint64_t expired = 0;  // not dispatched by their expires_at
    Histogram wait_seconds;     // ready -> running
    Histogram run_seconds;      // running -> any next state
    RateWindow finished;        // jobs reaching a terminal state
    RateWindow submitted_rate;
    std::array<std::uint64_t, kFailureClasses> failed_by_class{};  // index = FailureClass
    QueueMetrics();
};

// One committed state change as the metrics see it.
struct MetricEvent {
    std::string queue;
    std::optional<JobState> from;  // nullopt: created
    JobState to = JobState::ready;
    Millis at = 0;
    std::optional<Millis> waited_ms;  // ready -> running: time spent ready
    std::optional<Millis> ran_ms;     // from running: time since dispatch
    bool failed_attempt = false;      // the attempt failed (not a drained worker's hand-back)
    std::string_view reason{};        // the event's reason (failure_class)
};

struct Metrics {
    std::map<std::string, QueueMetrics> queues;  // ordered: stable output
    Histogram commit_seconds;
    Histogram commit_jobs;  // job state changes per commit (group commit batch size)
    std::uint64_t commit_failures = 0;
    // Registrations of workers that had been registered before (with this broker or another):
    // restarts of a broker, dropped connections, failovers.
    std::uint64_t worker_reconnects = 0;
    // Messages read from the broker's socket, per command: the names of its command table, and
    // "unknown" for anything else (malformed envelopes included), so the label set is closed.
    std::map<std::string_view, std::uint64_t> messages_received;
    MinuteSeries minutes;

    Metrics();
    void on_event(const MetricEvent& e);
    void on_commit(double seconds, std::size_t jobs);
};

// What /metrics shows besides Metrics: gauges read from the live state.
struct Gauges {
    // queue -> jobs per state (index = JobState)
    std::map<std::string, std::array<std::uint64_t, kStateCount>> jobs;
    std::map<std::string, bool> paused;
    // queue -> seconds its oldest ready job has waited (0 when none is ready): every queue with
    // jobs, served or not.
    std::map<std::string, double> oldest_ready_age;
    // queue -> slots of the registered workers that take it (a worker's whole concurrency counts
    // for each of its queues); every queue with jobs or workers, 0 when nobody serves it.
    std::map<std::string, std::uint64_t> queue_slots;
    std::uint64_t workers = 0;
    std::uint64_t worker_slots = 0;  // sum of concurrency
    std::uint64_t running = 0;       // jobs held by workers
    std::optional<std::uint64_t> db_bytes;
    double uptime_seconds = 0;
    double last_loop_seconds = 0;  // unix time of the broker loop's last published snapshot
    std::string version;           // errand_build_info
    // Cron schedules by name: at most the engine's max_schedules (1000), so the name can be a
    // label. Times in ms since the epoch; nullopt: none (paused, never fired).
    struct ScheduleGauge {
        bool paused = false;
        std::optional<Millis> next_at;
        std::optional<Millis> last_at;
    };
    std::map<std::string, ScheduleGauge> schedules;
};

// The process_* families of Prometheus' client libraries, read from /proc/self when rendered.
struct ProcessStats {
    double cpu_seconds = 0;  // user + system
    std::uint64_t resident_bytes = 0;
    std::uint64_t virtual_bytes = 0;
    std::uint64_t open_fds = 0;
    std::uint64_t max_fds = 0;
    double start_time_seconds = 0;  // unix time
};
// This process's figures; nullopt when /proc cannot be read (they are then left out).
std::optional<ProcessStats> read_process_stats();

// The Prometheus text format (version 0.0.4), every family with HELP and TYPE.
std::string render_prometheus(const Metrics& m, const Gauges& g,
                              const std::optional<ProcessStats>& process = std::nullopt);

}  // namespace errand::broker
