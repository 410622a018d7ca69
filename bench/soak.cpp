// Scenario `soak`: a steady load for --seconds on PostgreSQL (--pg or --db), --brokers N (default
// 1), with a queue retention (QUEUE_SET, --retention, default 10 s) short enough that finished
// jobs are deleted while it runs, so the tables churn as they would in a long-lived deployment.
//
// One producer thread submits --rate jobs/s, paced against the clock: whenever jobs are due it
// submits them in one SUBMIT (one job, or up to kMaxPerSubmit when it fell behind), taking the
// brokers round-robin. --workers library workers (worker w on broker w mod N, --concurrency
// handler threads each, no prefetch: the library's default) run them. Each job's payload starts
// with its index; the figure per job is the time from its SUBMIT's acknowledgement reaching the
// producer to the start of its handler, both read on this process's steady clock (below 0 when a
// worker had the job before the producer saw the reply). Beside it, from the SUBMIT being sent
// to the handler start (the commit included). Per minute of the run, by the time each job was
// due (job i at i / --rate s): count, p50, p99 and max of the first, p99 of the second and of
// the SUBMIT round trip.
//
// Before the load, at each whole minute inside it and after the drain, from PostgreSQL's
// pg_stat_user_tables for jobs and job_events: live and dead tuples, rows deleted, autovacuum
// count and last autovacuum, and pg_total_relation_size. Every acknowledged job must start
// exactly once (a handler start count per index); a job started twice or never is a note.
// The run is bounded by --seconds plus --max-seconds for the drain.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "brokers.hpp"
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

using namespace std::chrono_literals;

// Most jobs in one SUBMIT when the producer is behind: small batches, so that the figure is
// still about single jobs.
constexpr std::uint64_t kMaxPerSubmit = 50;
constexpr auto kMinute = std::chrono::seconds(60);

std::int64_t ns_since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

std::string loadavg() {
    std::ifstream in("/proc/loadavg");
    std::string one, five, fifteen;
    in >> one >> five >> fifteen;
    return one + " " + five + " " + fifteen;
}

// One reading of pg_stat_user_tables for the two tables retention churns.
struct TableStats {
    std::string table;
    double live = 0, dead = 0, deleted = 0, autovacuums = 0, bytes = 0;
    std::string last_autovacuum;
};

std::vector<TableStats> table_stats(const Brokers& brokers) {
    const auto rows = brokers.query(
        "SELECT relname, n_live_tup, n_dead_tup, n_tup_del, autovacuum_count, "
        "coalesce(to_char(last_autovacuum AT TIME ZONE 'UTC', 'HH24:MI:SS'), 'never'), "
        "pg_total_relation_size(relid) FROM pg_stat_user_tables "
        "WHERE relname IN ('jobs', 'job_events') ORDER BY relname DESC");
    std::vector<TableStats> out;
    for (const auto& row : rows)
        out.push_back({row[0], std::stod(row[1]), std::stod(row[2]), std::stod(row[3]),
                       std::stod(row[4]), std::stod(row[6]), row[5]});
    if (out.size() != 2) throw std::runtime_error("pg_stat_user_tables: no jobs or job_events");
    return out;
}

std::string describe(const std::vector<TableStats>& stats) {
    std::string s;
    for (const auto& t : stats)
        s += fmt::format(
            "{}{} live {:.0f} dead {:.0f} deleted {:.0f} autovacuums {:.0f} (last {}) "
            "{:.1f} MiB",
            s.empty() ? "" : "; ", t.table, t.live, t.dead, t.deleted, t.autovacuums,
            t.last_autovacuum, t.bytes / (1024 * 1024));
    return s;
}

void add_stats(Result& r, const std::string& when, const std::vector<TableStats>& stats) {
    for (const auto& t : stats) {
        const std::string k = t.table + "_" + when;
        r.add(k + "_live_tup", t.live, "rows (pg_stat_user_tables)");
        r.add(k + "_dead_tup", t.dead, "rows");
        r.add(k + "_tup_del", t.deleted, "rows deleted so far");
        r.add(k + "_autovacuum_count", t.autovacuums, "");
        r.add(k + "_total_bytes", t.bytes, "bytes (pg_total_relation_size)");
        r.config[k + "_last_autovacuum"] = t.last_autovacuum + (t.autovacuums ? " UTC" : "");
    }
}

// The p-quantiles of `values` in ms (values in ns), sorting them.
double quantile_ms(std::vector<std::int64_t>& values, double q) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
    return static_cast<double>(values[std::clamp<std::size_t>(rank, 1, values.size()) - 1]) / 1e6;
}

}  // namespace

Result run_soak(const Options& opt) {
    if (!opt.pg && opt.db.empty())
        throw std::invalid_argument("soak needs brokers on PostgreSQL: --pg or --db");
    if (!(opt.rate > 0) || !(opt.seconds > 0) || !(opt.retention > 0))
        throw std::invalid_argument("soak needs --rate, --seconds and --retention above 0");
    const auto total = static_cast<std::uint64_t>(std::ceil(opt.rate * opt.seconds));
    if (total > 50'000'000) throw std::invalid_argument("soak: --rate x --seconds above 50M jobs");
    const std::size_t pad = opt.payload_size ? opt.payload_size : 16;

    const std::string load_before = loadavg();
    Brokers brokers(opt);
    const std::string queue = unique_queue("soak");
    std::vector<std::string> endpoints;
    std::vector<std::unique_ptr<Client>> clients;
    for (std::size_t i = 0; i < brokers.size(); ++i) {
        endpoints.push_back(brokers.endpoint(i));
        clients.push_back(std::make_unique<Client>(client_options(endpoints.back())));
        QueueSettings s;
        s.queue = queue;
        s.retention = std::chrono::milliseconds(std::llround(opt.retention * 1000));
        clients.back()->queue_set(s);  // the setting is shared; each broker is told anyway
    }

    // Per job index, ns since `origin`: the acknowledgement seen, the SUBMIT sent, the handler
    // start (the first, if a job ran twice).
    std::vector<std::atomic<std::int64_t>> acked_ns(total), sent_ns(total), start_ns(total);
    std::vector<std::atomic<std::uint32_t>> starts(total);
    const Clock::time_point origin = Clock::now();
    WorkerPool pool(endpoints, queue, opt.workers, opt.concurrency, 0, [&](const Job& job) {
        const std::int64_t now = ns_since(origin);
        std::uint64_t index = 0;
        const char* end = job.payload.data() + job.payload.size();
        if (std::from_chars(job.payload.data(), end, index).ec != std::errc{} || index >= total)
            return;
        if (starts[index].fetch_add(1, std::memory_order_relaxed) == 0)
            start_ns[index].store(now, std::memory_order_relaxed);
    });

    const auto before = table_stats(brokers);
    const Deadline deadline(opt.seconds + opt.max_seconds);
    FirstFailure failure;
    std::vector<std::string> minute_stats;  // the tables at each whole minute
    std::atomic<std::uint64_t> sent{0};
    const Clock::time_point t0 = Clock::now();
    {
        // At each whole minute before --seconds, the tables once more (the end is `after`).
        std::jthread monitor(failure.guard([&] {
            for (unsigned m = 1; m * 60.0 < opt.seconds && !failure.stop; ++m) {
                while (Clock::now() < t0 + m * kMinute && !failure.stop && !deadline.passed())
                    std::this_thread::sleep_for(100ms);
                if (failure.stop || deadline.passed()) return;
                minute_stats.push_back(fmt::format("minute {} ({} submitted): {}", m, sent.load(),
                                                   describe(table_stats(brokers))));
            }
        }));
        std::jthread producer(failure.guard([&] {
            std::size_t next_client = 0;
            const std::string padding(pad, 'x');
            while (sent < total && !failure.stop) {
                deadline.check("submitting");
                const double elapsed = seconds_since(t0);
                const auto due = std::min<std::uint64_t>(
                    total, static_cast<std::uint64_t>(elapsed * opt.rate) + 1);
                if (due <= sent) {
                    const auto next =
                        t0 +
                        std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(static_cast<double>(sent) / opt.rate));
                    std::this_thread::sleep_until(std::min(next, Clock::now() + 10ms));
                    continue;
                }
                const std::uint64_t first = sent, k = std::min(due - first, kMaxPerSubmit);
                std::vector<JobSpec> jobs;
                for (std::uint64_t i = first; i < first + k; ++i) {
                    std::string payload = std::to_string(i) + " ";
                    payload += padding.substr(0, pad > payload.size() ? pad - payload.size() : 0);
                    jobs.push_back(noop_job(queue, payload));
                }
                Client& client = *clients[next_client++ % clients.size()];
                const std::int64_t at = ns_since(origin);
                if (k == 1)
                    client.submit(std::move(jobs.front()));
                else if (client.submit_batch(std::move(jobs)).size() != k)
                    throw std::runtime_error("a SUBMIT acknowledged fewer jobs than it carried");
                const std::int64_t ack = ns_since(origin);
                for (std::uint64_t i = first; i < first + k; ++i) {
                    sent_ns[i].store(at, std::memory_order_relaxed);
                    acked_ns[i].store(ack, std::memory_order_relaxed);
                }
                sent = first + k;
            }
            failure.stop = true;  // the monitor's cue
        }));
    }
    failure.rethrow();
    const double submit_seconds = seconds_since(t0);
    // The drain: every job started (or the deadline, then the shortfall is a note).
    bool drained = true;
    try {
        pool.wait_handled(total, deadline);
    } catch (const OutOfTime&) {
        drained = false;
    }
    const auto after = table_stats(brokers);
    const std::string load_after = loadavg();

    // Per minute in which the jobs were due: ack -> handler start, SUBMIT sent -> handler start,
    // and the SUBMIT round trip.
    const auto buckets = static_cast<std::size_t>(std::ceil(opt.seconds / 60));
    std::vector<std::vector<std::int64_t>> latency(buckets), from_send(buckets),
        round_trip(buckets);
    std::vector<std::int64_t> all, all_from_send;
    std::uint64_t never = 0, twice = 0;
    for (std::uint64_t i = 0; i < total; ++i) {
        const auto n = starts[i].load();
        if (n == 0) ++never;
        if (n > 1) ++twice;
        if (n == 0) continue;
        const std::int64_t ack = acked_ns[i].load(), start = start_ns[i].load();
        const auto b =
            std::min(static_cast<std::size_t>(static_cast<double>(i) / opt.rate / 60), buckets - 1);
        latency[b].push_back(start - ack);
        from_send[b].push_back(start - sent_ns[i].load());
        round_trip[b].push_back(ack - sent_ns[i].load());
        all.push_back(start - ack);
        all_from_send.push_back(start - sent_ns[i].load());
    }

    Result r;
    r.scenario = "soak";
    r.config["database"] = "postgresql";
    r.config["brokers"] = brokers.label();
    r.config["postgresql"] = brokers.durability();
    r.config["rate"] = opt.rate;
    r.config["seconds"] = opt.seconds;
    r.config["retention_s"] = opt.retention;
    r.config["workers"] = fmt::format("{} library workers, concurrency {}, no prefetch",
                                      opt.workers, opt.concurrency);
    r.config["payload_bytes"] = pad;
    r.config["loadavg_before"] = load_before;
    r.config["loadavg_after"] = load_after;
    r.add("jobs", static_cast<double>(total), "jobs submitted and acknowledged");
    r.add("submit_jobs_per_s", static_cast<double>(total) / submit_seconds,
          "jobs/s (achieved; --rate asked)");
    r.add("ack_to_start_p50_ms", quantile_ms(all, 0.5),
          "ms (SUBMIT acknowledged -> handler start)");
    r.add("ack_to_start_p99_ms", quantile_ms(all, 0.99), "ms");
    r.add("ack_to_start_max_ms", quantile_ms(all, 1.0), "ms");
    r.add("send_to_start_p50_ms", quantile_ms(all_from_send, 0.5),
          "ms (SUBMIT sent -> handler start)");
    r.add("send_to_start_p99_ms", quantile_ms(all_from_send, 0.99), "ms");
    r.add("send_to_start_max_ms", quantile_ms(all_from_send, 1.0), "ms");
    for (std::size_t b = 0; b < buckets; ++b) {
        if (latency[b].empty()) continue;
        const std::string m = fmt::format("m{}_", b + 1);
        r.add(m + "jobs", static_cast<double>(latency[b].size()),
              fmt::format("jobs due in minute {}", b + 1));
        r.add(m + "p50_ms", quantile_ms(latency[b], 0.5), "ms (ack -> handler start)");
        r.add(m + "p99_ms", quantile_ms(latency[b], 0.99), "ms");
        r.add(m + "max_ms", quantile_ms(latency[b], 1.0), "ms");
        r.add(m + "send_p99_ms", quantile_ms(from_send[b], 0.99), "ms (sent -> handler start)");
        r.add(m + "submit_p99_ms", quantile_ms(round_trip[b], 0.99), "ms (SUBMIT round trip)");
    }
    add_stats(r, "before", before);
    add_stats(r, "after", after);
    for (std::size_t m = 0; m < minute_stats.size(); ++m)
        r.config[fmt::format("tables_minute_{}", m + 1)] = minute_stats[m];
    if (!drained)
        r.notes.push_back(fmt::format("stopped at the deadline with {} jobs not started", never));
    else if (never)
        r.notes.push_back(fmt::format("MISMATCH: {} acknowledged jobs never started", never));
    if (twice) r.notes.push_back(fmt::format("MISMATCH: {} jobs started more than once", twice));
    return r;
}

}  // namespace errand::bench
