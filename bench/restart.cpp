// Scenario `restart` (docs/PERFORMANCE.md, "How cost grows"): a database with --finished
// succeeded jobs (100-byte payloads, finished within the last day so retention keeps them, each
// with its first event in the row and two events rows, as the broker writes them) and --live
// ready jobs submitted through the broker; then --restarts rounds of: a start with the file in
// the page cache (warm) and one with the page cache dropped first (cold, needs root), each timed
// from spawn to the first PONG, with the broker's RSS then. What a start costs should depend on
// the live jobs, not on the finished ones.
#include <fmt/format.h>
#include <sqlite3.h>

#include <chrono>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

// Writes `n` finished jobs into the broker's (stopped) file, in batches of 100,000 rows.
void load_finished(const std::string& path, std::uint64_t n) {
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
        sqlite3_close(db);
        throw std::runtime_error("restart: cannot open " + path);
    }
    try {
        sqlite_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF");
        const long long since =
            std::chrono::duration_cast<std::chrono::milliseconds>(
                (std::chrono::system_clock::now() - std::chrono::hours(24)).time_since_epoch())
                .count();
        constexpr long long kBase = 10'000'000'000LL;      // ids far above the live jobs'
        constexpr long long kEventBase = 1099511627776LL;  // kEventIdBase of the store
        for (std::uint64_t from = 0; from < n; from += 100'000) {
            const std::uint64_t to = std::min<std::uint64_t>(n, from + 100'000);
            sqlite_exec(
                db,
                fmt::format(
                    "BEGIN;"
                    "WITH RECURSIVE k(i) AS (SELECT {0} UNION ALL SELECT i + 1 FROM k "
                    "WHERE i < {1}) "
                    "INSERT INTO jobs (id, queue, state, payload, attempts, max_attempts, "
                    "created_at, started_at, finished_at, worker, exit_code, result, "
                    "history) "
                    "SELECT {2} + i, 'done', 'succeeded', randomblob(100), 1, 3, {3} + i / "
                    "100, {3} + i / 100 + 1, {3} + i / 100 + 2, 'bench-worker', 0, x'6f6b', "
                    "randomblob(40) FROM k;"
                    "INSERT INTO events (job_id, id, at, from_state, to_state, attempt, "
                    "worker, reason) "
                    "SELECT id, {4} + 2 * (id - {2}) + e, created_at + e + 1, "
                    "CASE e WHEN 0 THEN 'ready' ELSE 'running' END, "
                    "CASE e WHEN 0 THEN 'running' ELSE 'succeeded' END, 1, 'bench-worker', "
                    "CASE e WHEN 0 THEN 'dispatched' ELSE 'done' END "
                    "FROM jobs, (SELECT 0 AS e UNION ALL SELECT 1) "
                    "WHERE id BETWEEN {2} + {0} AND {2} + {1};"
                    "COMMIT;",
                    from + 1, to, kBase, since, kEventBase),
                "loading the finished jobs");
        }
        sqlite_exec(db,
                    fmt::format("UPDATE event_seq SET n = {} + 2 * {} + 2;"
                                "INSERT INTO job_counts VALUES ('done', 'succeeded', {});"
                                "PRAGMA wal_checkpoint(TRUNCATE);",
                                kEventBase, n, n),
                    "counting the finished jobs");
    } catch (...) {
        sqlite3_close(db);
        throw;
    }
    sqlite3_close(db);
}

// Drops the page cache (needs root); false when it cannot.
bool drop_page_cache() {
    ::sync();
    std::ofstream f("/proc/sys/vm/drop_caches");
    if (!f) return false;
    f << "3\n";
    return static_cast<bool>(f.flush());
}

}  // namespace

Result run_restart(const Options& opt) {
    if (!opt.broker.empty())
        throw std::invalid_argument("restart starts and stops its own broker: drop --broker");
    const Deadline deadline(opt.max_seconds);
    BrokerProcess broker(opt);
    const std::string queue = unique_queue("live");
    const std::uint64_t live =
        submit_jobs(broker.endpoint(), noop_job(queue, std::string(100, 'x')), opt.live,
                    SubmitMode::batch, opt, deadline);
    if (live < opt.live) deadline.check("submitting the live jobs");
    broker.stop();
    const auto t_load = Clock::now();
    load_finished(broker.db_path(), opt.finished);
    const double load_s = seconds_since(t_load);
    const double db_mb = static_cast<double>(broker.db_bytes()) / (1 << 20);

    std::vector<double> warm_ms, cold_ms, warm_rss, cold_rss;
    for (unsigned i = 0; i < std::max(1u, opt.restarts); ++i) {
        deadline.check("restarting");
        warm_ms.push_back(broker.start() * 1000);
        warm_rss.push_back(static_cast<double>(broker.rss_kib()) / 1024);
        broker.stop();
        if (drop_page_cache()) {
            cold_ms.push_back(broker.start() * 1000);
            cold_rss.push_back(static_cast<double>(broker.rss_kib()) / 1024);
            broker.stop();
        }
    }
    broker.start();
    Client client(client_options(broker.endpoint()));
    const std::uint64_t ready = count_in_state(client, queue, JobState::ready);

    Result r;
    r.scenario = "restart";
    r.config["finished"] = opt.finished;
    r.config["live"] = opt.live;
    r.config["rounds"] = warm_ms.size();
    r.config["broker"] = broker_label(opt);
    r.add("warm_first_pong_ms", median(warm_ms), "ms (spawn to first PONG, median of rounds)");
    r.add("warm_rss_mib", median(warm_rss), "MiB (then)");
    if (!cold_ms.empty()) {
        r.add("cold_first_pong_ms", median(cold_ms), "ms (page cache dropped first)");
        r.add("cold_rss_mib", median(cold_rss), "MiB");
    } else {
        r.notes.push_back("cold starts not measured: dropping the page cache needs root");
    }
    r.add("db_mib", db_mb, "MiB (database and WAL after the load)");
    r.add("load_s", load_s, "s (writing the finished jobs)");
    if (ready != opt.live)
        r.notes.push_back(
            fmt::format("{} live jobs submitted, {} ready after the restarts", opt.live, ready));
    return r;
}

}  // namespace errand::bench
