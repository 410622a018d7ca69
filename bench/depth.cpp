// Scenario `depth`: does a deep queue slow dispatch down? Twice, on a fresh broker each time:
// jobs are submitted in batches into a paused queue, K library workers connect, the queue is
// resumed and the time for the workers to run the first N jobs is taken. "empty" preloads just
// the N jobs; "backlog" preloads --backlog jobs (1M by default, 100-byte payloads) and drains
// the first N of them. Also the broker's RSS with the backlog queued.
#include <thread>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

using namespace std::chrono_literals;

struct Drain {
    double jobs_per_s = 0;
    double preload_jobs_per_s = 0;
    std::uint64_t rss_kib_before = 0;
    std::uint64_t rss_kib_queued = 0;
    std::uint64_t db_bytes = 0;
};

// Preloads `queued` jobs into a paused queue, then measures how fast the workers run `n`.
Drain drain(const Options& opt, std::uint64_t queued, std::uint64_t n, const std::string& payload,
            const Deadline& deadline) {
    BrokerProcess broker(opt);
    Client client(client_options(broker.endpoint()));
    const std::string queue = unique_queue("depth");
    Drain d;
    d.rss_kib_before = broker.rss_kib();
    client.pause(queue);
    const auto t_load = Clock::now();
    const std::uint64_t loaded = submit_jobs(broker.endpoint(), noop_job(queue, payload), queued,
                                             SubmitMode::batch, opt, deadline);
    if (loaded < queued) deadline.check("preloading the backlog");
    d.preload_jobs_per_s = static_cast<double>(loaded) / seconds_since(t_load);
    d.rss_kib_queued = broker.rss_kib();
    d.db_bytes = broker.db_bytes();

    WorkerPool pool(broker.endpoint(), queue, opt.workers, opt.concurrency, opt.prefetch);
    std::this_thread::sleep_for(300ms);  // let the workers register and grant their credit
    const auto t0 = Clock::now();
    client.resume(queue);
    pool.wait_handled(n, deadline);
    d.jobs_per_s = static_cast<double>(n) / seconds_since(t0);
    return d;
}

}  // namespace

Result run_depth(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const std::uint64_t backlog = std::max(opt.backlog, n);
    const std::string payload = payload_for(opt, 100);
    const Deadline deadline(opt.max_seconds);

    const Drain empty = drain(opt, n, n, payload, deadline);
    const Drain deep = drain(opt, backlog, n, payload, deadline);

    Result r;
    r.scenario = "depth";
    r.config["drained_jobs"] = n;
    r.config["backlog"] = backlog;
    r.config["workers"] = opt.workers;
    r.config["concurrency"] = opt.concurrency;
    r.config["payload_bytes"] = payload.size();
    r.config["batch"] = opt.batch;
    r.config["broker"] = broker_label(opt);
    r.add("empty_jobs_per_s", empty.jobs_per_s, "jobs/s (drain with only the N jobs queued)");
    r.add("backlog_jobs_per_s", deep.jobs_per_s, "jobs/s (drain with the backlog queued)");
    r.add("backlog_vs_empty", deep.jobs_per_s / empty.jobs_per_s, "x");
    r.add("rss_mb_idle", static_cast<double>(deep.rss_kib_before) / 1024, "MiB");
    r.add("rss_mb_backlog", static_cast<double>(deep.rss_kib_queued) / 1024,
          "MiB (broker VmRSS with the backlog queued)");
    r.add("db_mb_backlog", static_cast<double>(deep.db_bytes) / 1e6, "MB (db + wal + shm)");
    r.add("preload_jobs_per_s", deep.preload_jobs_per_s, "jobs/s (batch submit into the backlog)");
    if (opt.broker.size()) r.notes.push_back("external broker: RSS and db size are not measured");
    return r;
}

}  // namespace errand::bench
