// Scenario `e2e`: P producer threads submit N no-op jobs (sync: one at a time; pipelined; batch)
// while K library workers (errand::Worker, concurrency C each) run them. Time from the first
// submit until all N have succeeded: the workers' handler count reaching N is waited for first,
// then the count of succeeded jobs, from QUEUES on SQLite or from the database itself on
// PostgreSQL, where QUEUES through one broker lags behind the others by up to a second. Every
// job must have run exactly once (handler calls = N = succeeded = jobs of the queue).
//
// With --brokers N on PostgreSQL (--pg or --db), producer p and worker w connect to brokers
// p mod N and w mod N; the CPU of the brokers, of the --pg server and of this process (the
// producers and workers) is read from /proc around the timed part.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "brokers.hpp"
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_e2e(const Options& opt) {
    const std::string mode_name = opt.mode.empty() ? "sync" : opt.mode;
    const SubmitMode mode = parse_submit_mode(mode_name);
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const unsigned producers = std::max(1u, opt.producers);
    const std::string payload = payload_for(opt, 16);

    Brokers brokers(opt);
    const std::string queue = unique_queue("e2e");
    const Deadline deadline(opt.max_seconds);
    std::vector<std::string> endpoints;
    for (std::size_t i = 0; i < brokers.size(); ++i)
        endpoints.push_back(brokers.endpoint(i));
    WorkerPool pool(endpoints, queue, opt.workers, opt.concurrency, opt.prefetch);

    std::atomic<std::uint64_t> submitted{0};
    std::exception_ptr failure;
    std::mutex failure_mu;
    std::atomic<double> submit_seconds{0};
    const double broker_cpu0 = brokers.broker_cpu_seconds();
    const std::uint64_t written0 = brokers.broker_write_bytes();
    const auto pg_cpu0 = brokers.postgres_cpu();
    const double self_cpu0 = cpu_seconds(::getpid());
    Pacer pacer(opt.paced, producers);
    const auto t0 = Clock::now();
    {
        std::vector<std::jthread> threads;
        for (unsigned p = 0; p < producers; ++p) {
            const std::uint64_t share = n / producers + (p < n % producers ? 1 : 0);
            threads.emplace_back([&, share, p] {
                try {
                    submitted += submit_jobs(brokers.endpoint(p), noop_job(queue, payload), share,
                                             mode, opt, deadline, nullptr, &pacer, p);
                } catch (...) {
                    std::lock_guard lock(failure_mu);
                    failure = std::current_exception();
                }
            });
        }
    }
    submit_seconds = seconds_since(t0);
    if (failure) std::rethrow_exception(failure);
    if (submitted < n) deadline.check("submitting");
    pool.wait_handled(n, deadline);
    Brokers::Counts counts;
    if (brokers.postgres()) {
        while ((counts = brokers.counts(queue)).succeeded < n) {
            deadline.check("waiting for the jobs to succeed");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    } else {
        Client client(client_options(brokers.endpoint(0)));
        wait_succeeded(client, queue, n, deadline);
    }
    const double seconds = seconds_since(t0);
    const double broker_cpu = brokers.broker_cpu_seconds() - broker_cpu0;
    const double written = static_cast<double>(brokers.broker_write_bytes() - written0);
    const double pg_cpu = cpu_between(pg_cpu0, brokers.postgres_cpu());
    const double self_cpu = cpu_seconds(::getpid()) - self_cpu0;
    if (pool.handled() != n)
        throw std::runtime_error(fmt::format("{} jobs ran {} times", n, pool.handled()));
    if (brokers.postgres() && (counts.total != n || counts.succeeded != n))
        throw std::runtime_error(
            fmt::format("{} jobs submitted, the database has {} ({} succeeded)", n, counts.total,
                        counts.succeeded));

    Result r;
    r.scenario = "e2e";
    r.config["mode"] = mode_name;
    r.config["jobs"] = n;
    r.config["producers"] = producers;
    r.config["workers"] = opt.workers;
    r.config["concurrency"] = opt.concurrency;
    if (opt.prefetch == kLibraryPrefetch)
        r.config["prefetch"] = "auto";
    else
        r.config["prefetch"] = opt.prefetch;
    r.config["payload_bytes"] = payload.size();
    if (mode == SubmitMode::pipelined) r.config["window"] = opt.window;
    if (mode == SubmitMode::batch) {
        r.config["batch"] = opt.batch;
        r.config["batch_window"] = opt.batch_window;
    }
    r.config["database"] = brokers.postgres() ? "postgresql" : "sqlite";
    r.config["brokers"] = brokers.size();
    r.config["broker"] = brokers.label();
    if (brokers.postgres()) {
        r.config["postgresql"] = brokers.durability();
        r.config["jobs_run_per_broker"] = counts.by_broker;
    }
    const double per_job = 1e6 / static_cast<double>(n);
    r.add("jobs_per_s", static_cast<double>(n) / seconds, "jobs/s");
    r.add("seconds", seconds, "s");
    r.add("submit_seconds", submit_seconds.load(), "s (until the last submit was acknowledged)");
    r.add("broker_cpu_us_per_job", broker_cpu * per_job, "us (all our brokers, /proc)");
    if (!brokers.postgres())
        r.add("broker_written_bytes_per_job", written / static_cast<double>(n),
              "bytes (/proc/PID/io write_bytes: WAL and checkpoints, until the last success)");
    if (opt.pg) r.add("postgres_cpu_us_per_job", pg_cpu * per_job, "us (server and backends)");
    r.add("bench_cpu_us_per_job", self_cpu * per_job, "us (producers and workers)");
    if (pacer.on()) pacer.report(r, "submit -> ack");
    return r;
}

}  // namespace errand::bench
