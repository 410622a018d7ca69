// The scenarios of errand-bench. Each runs once with the given options and returns its figures;
// errand_bench.cpp repeats it and reports the medians. Each scenario's file says what it measures.
#pragma once

#include "load.hpp"
#include "options.hpp"
#include "report.hpp"

namespace errand::bench {

Result run_submit(const Options& opt);      // submit.cpp
Result run_e2e(const Options& opt);         // e2e.cpp
Result run_latency(const Options& opt);     // latency.cpp
Result run_depth(const Options& opt);       // depth.cpp
Result run_recovery(const Options& opt);    // recovery.cpp
Result run_restart(const Options& opt);     // restart.cpp
Result run_daemon(const Options& opt);      // daemon.cpp
Result run_fsync(const Options& opt);       // fsync.cpp
Result run_beanstalkd(const Options& opt);  // beanstalkd.cpp
Result run_ping(const Options& opt);        // ping.cpp
Result run_redis(const Options& opt);       // redis.cpp
Result run_failover(const Options& opt);    // failover.cpp
Result run_due(const Options& opt);         // due.cpp
Result run_stats(const Options& opt);       // stats.cpp
Result run_bytes(const Options& opt);       // growth.cpp
Result run_history(const Options& opt);     // growth.cpp
Result run_purge(const Options& opt);       // growth.cpp
Result run_soak(const Options& opt);        // soak.cpp

// SQLite WAL commits per second at one row per transaction in the database file `path` (created
// if missing): the one-fsync-per-submit limit with synchronous=full (fsync.cpp).
double sqlite_commit_rate(const std::string& path, const std::string& synchronous, std::uint64_t n,
                          const Deadline& deadline);

// The payload of the scenario's jobs: --payload-size bytes, or `fallback` when not given.
std::string payload_for(const Options& opt, std::size_t fallback);
// "own (synchronous=full)" or the --broker endpoint, for the config block.
std::string broker_label(const Options& opt);

}  // namespace errand::bench
