// errand-bench: parse flags, run one scenario --repeat times, print the medians as a table or as
// one JSON object. The scenarios live one per file (scenarios.hpp).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <functional>
#include <map>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

std::string payload_for(const Options& opt, std::size_t fallback) {
    return std::string(opt.payload_size ? opt.payload_size : fallback, 'x');
}

std::string broker_label(const Options& opt) {
    return opt.broker.empty() ? "own (synchronous=" + opt.synchronous + ")" : opt.broker;
}

}  // namespace errand::bench

namespace {

using errand::bench::Options;
using errand::bench::Result;

// Exit codes: 0 all runs done, 1 a run failed (or ran out of --max-seconds), 2 bad flags.
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

const std::map<std::string, std::function<Result(const Options&)>>& scenarios() {
    static const std::map<std::string, std::function<Result(const Options&)>> table{
        {"submit", errand::bench::run_submit},
        {"e2e", errand::bench::run_e2e},
        {"latency", errand::bench::run_latency},
        {"depth", errand::bench::run_depth},
        {"recovery", errand::bench::run_recovery},
        {"restart", errand::bench::run_restart},
        {"daemon", errand::bench::run_daemon},
        {"fsync", errand::bench::run_fsync},
        {"beanstalkd", errand::bench::run_beanstalkd},
        {"ping", errand::bench::run_ping},
        {"redis", errand::bench::run_redis},
        {"failover", errand::bench::run_failover},
        {"due", errand::bench::run_due},
        {"stats", errand::bench::run_stats},
        {"bytes", errand::bench::run_bytes},
        {"history", errand::bench::run_history},
        {"purge", errand::bench::run_purge},
        {"soak", errand::bench::run_soak},
    };
    return table;
}

std::string one_line(const Result& r) {
    std::string s;
    for (const auto& f : r.figures)
        s += fmt::format(" {}={:.6g}", f.key, f.value);
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    CLI::App app{"errand-bench: throughput and latency of errand, measured against a real broker"};
    app.footer(
        "SCENARIOS\n"
        "  submit      one client submits N jobs: --mode sync|pipelined|batch (default batch)\n"
        "  e2e         P producers + K library workers: --mode sync|pipelined|batch (default "
        "sync)\n"
        "  latency     sequential submit -> run -> result round trips on an idle broker:\n"
        "              --mode separate (SUBMIT, then WAIT; default) | submit-wait (one request)\n"
        "  depth       dispatch rate with --backlog jobs queued vs with an empty queue; RSS\n"
        "  recovery    SIGKILL + restart over --backlog queued jobs: time until PING answers\n"
        "  daemon      N /bin/true jobs through errand-worker vs xargs -P C: --mode argv|shell\n"
        "  fsync       the disk's limit: SQLite one-row commits/s and raw fdatasync/s\n"
        "  ping        sequential PING round trips: the floor under any synchronous request\n"
        "  beanstalkd  the same shapes against beanstalkd at --addr: --mode e2e|latency\n"
        "  redis       the same shapes against Redis at --addr as a reliable queue (LPUSH,\n"
        "              BRPOPLPUSH, LREM): --mode e2e|latency\n"
        "  failover    --brokers N (>= 2) on PostgreSQL, one client given all: the broker it\n"
        "              uses SIGKILLed --restarts times; time to the next acknowledged submit\n"
        "  due         N scheduled jobs due at one moment, no workers: time until all are ready,\n"
        "              and PING round trips meanwhile (p50/p99/max) against before\n"
        "  stats       -n queues with a job each; PINGs while a client asks STATS back to back\n"
        "              (--mode stats, default | queues): p50/p99/max against PINGs alone\n"
        "  bytes       bytes the broker writes per job against its payload (--payload-size,\n"
        "              default 64 KiB): --mode once | long (runs 1.5 s) | retry (fails 5 times)\n"
        "  history     CPU and bytes per state change of jobs living 5 changes against jobs\n"
        "              living --transitions (default 50)\n"
        "  purge       -n finished jobs purged: file size before, after, once space is back;\n"
        "              PING p99/max meanwhile\n"
        "  restart     --finished succeeded jobs written into the file and --live ready ones:\n"
        "              spawn to first PONG and RSS, warm and cold (page cache dropped: root),\n"
        "              --restarts rounds each\n"
        "  soak        --rate jobs/s for --seconds on PostgreSQL (--pg or --db, --brokers N,\n"
        "              default 1), the queue's retention --retention s so finished jobs are\n"
        "              deleted meanwhile: SUBMIT ack -> handler start p50/p99/max per minute;\n"
        "              jobs and job_events tuples, autovacuums and size before and after\n"
        "Unless --broker is given, each run starts its own errand-broker on a free 127.0.0.1\n"
        "port with a fresh database in --tmpdir, and kills it afterwards. e2e on PostgreSQL:\n"
        "--pg (a throwaway server per run, fsync on) or --db postgresql://… (an existing\n"
        "database: give each run an empty one), --brokers N on it, producers and workers\n"
        "spread over them round-robin.");
    std::vector<std::string> names;
    for (const auto& [name, fn] : scenarios())
        names.push_back(name);
    app.add_option("scenario", opt.scenario, "what to measure")
        ->required()
        ->check(CLI::IsMember(names));
    app.add_option("--mode", opt.mode, "scenario mode (see SCENARIOS)");
    app.add_option("-n,--jobs", opt.n,
                   "jobs or round trips (default: submit/e2e/depth/beanstalkd/redis 100000, "
                   "latency 2000, daemon 10000, fsync 2000)");
    app.add_option("--transitions", opt.transitions, "history: state changes in a long job's life")
        ->capture_default_str()
        ->check(CLI::Range(8u, 3000u));
    app.add_option("--backlog", opt.backlog, "depth/recovery: jobs queued beforehand")
        ->capture_default_str();
    app.add_option("--producers", opt.producers,
                   "e2e/beanstalkd/redis: producer threads (one connection each)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 64u));
    app.add_option("--workers", opt.workers,
                   "e2e/depth: library workers (errand::Worker, one connection each); "
                   "beanstalkd/redis: consumer connections")
        ->capture_default_str()
        ->check(CLI::Range(1u, 64u));
    app.add_option_function<std::string>(
           "--prefetch",
           [&](const std::string& v) {
               opt.prefetch = v == "auto" ? errand::bench::kLibraryPrefetch
                                          : static_cast<unsigned>(std::stoul(v));
           },
           "e2e/depth: jobs each library worker holds beyond its concurrency, or auto: the "
           "library's default, adaptive prefetch (default 256)")
        ->check([](const std::string& v) -> std::string {
            if (v == "auto" || (!v.empty() && v.size() < 6 &&
                                v.find_first_not_of("0123456789") == std::string::npos))
                return {};
            return "must be auto or a number";
        });
    app.add_option("--daemon-prefetch", opt.daemon_prefetch,
                   "daemon: errand-worker --prefetch (0 fetches a job only when a slot is "
                   "free; the daemon's own default is auto)")
        ->capture_default_str();
    app.add_option("--concurrency", opt.concurrency,
                   "handler threads per worker (daemon: errand-worker --concurrency, xargs -P)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1024u));
    app.add_option("--window", opt.window, "pipelined: one-job SUBMITs in flight")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100000u));
    app.add_option("--batch", opt.batch, "batch: jobs per SUBMIT")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000u));
    app.add_option("--batch-window", opt.batch_window, "batch: SUBMITs in flight")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000u));
    app.add_option("--payload-size", opt.payload_size,
                   "payload bytes per job (default 16; depth/recovery 100)");
    app.add_option("--restarts", opt.restarts, "recovery/failover: restarts per run")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100u));
    app.add_option("--warmup", opt.warmup, "latency: round trips before measuring")
        ->capture_default_str();
    app.add_option("--finished", opt.finished,
                   "restart: finished (succeeded) jobs written straight into the file")
        ->capture_default_str();
    app.add_option("--live", opt.live, "restart: ready jobs submitted through the broker")
        ->capture_default_str();
    app.add_option("--paced", opt.paced,
                   "e2e/submit/beanstalkd/redis, one job per request: submit RATE jobs/s in all "
                   "on a schedule (spread over --producers) and report submit -> ack latency "
                   "from each job's due moment")
        ->check(CLI::Range(1.0, 1e6));
    app.add_option("--rate", opt.rate, "soak: jobs submitted per second")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 100000.0));
    app.add_option("--seconds", opt.seconds, "soak: how long the producer submits")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 86400.0));
    app.add_option("--retention", opt.retention,
                   "soak: the queue's retention in seconds (QUEUE_SET): finished jobs are "
                   "deleted this long after")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 86400.0));
    app.add_option("--synchronous", opt.synchronous, "our broker's --synchronous")
        ->capture_default_str()
        ->check(CLI::IsMember({"full", "normal"}));
    app.add_option(
        "--broker", opt.broker,
        "endpoint of a running broker to use instead of starting one (tcp://127.0.0.1:…)");
    app.add_option(
        "--db", opt.db,
        "e2e/failover/soak: run our brokers on this PostgreSQL database (postgresql://… or "
        "postgres://…) instead of SQLite");
    app.add_flag(
        "--pg", opt.pg,
        "e2e/failover/soak: start a throwaway PostgreSQL 15 server in --tmpdir for each run "
        "(PostgreSQL's defaults: fsync on, synchronous_commit on) and use it");
    app.add_option("--brokers", opt.brokers,
                   "e2e/failover/soak: brokers on the one PostgreSQL database (--pg or --db)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 16u));
    app.add_option("--broker-bin", opt.broker_bin,
                   "errand-broker to start (default: ../broker/errand-broker from this binary)");
    app.add_option("--worker-bin", opt.worker_bin,
                   "errand-worker for `daemon` (default: ../worker/errand-worker)");
    app.add_option("--addr", opt.addr,
                   "beanstalkd/redis: HOST:PORT (default 127.0.0.1:11300 / 127.0.0.1:6379)");
    app.add_option("--tmpdir", opt.tmpdir, "where databases go (default $TMPDIR or /tmp)");
    app.add_option("--max-seconds", opt.max_seconds,
                   "bound on each run (soak: on the drain after --seconds)")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 3600.0));
    app.add_option("--repeat", opt.repeat, "runs; the figures are their medians")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100u));
    app.add_flag("--json", opt.json, "print one JSON object instead of the table");
    app.add_flag("--keep-tmp", opt.keep_tmp, "keep the temp dirs (databases, logs)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : kExitUsage;
    }
    if (!opt.broker.empty() && opt.broker.rfind("tcp://127.0.0.1:", 0) != 0) {
        std::fprintf(stderr, "errand-bench: --broker must be tcp://127.0.0.1:PORT\n");
        return kExitUsage;
    }
    const bool postgres = opt.pg || !opt.db.empty();
    const char* bad = nullptr;
    if (opt.pg && !opt.db.empty())
        bad = "--pg and --db exclude each other";
    else if (!opt.db.empty() && opt.db.rfind("postgresql://", 0) != 0 &&
             opt.db.rfind("postgres://", 0) != 0)
        bad = "--db must be a postgresql:// or postgres:// URI (SQLite is the default)";
    else if ((postgres || opt.brokers > 1) && opt.scenario != "e2e" && opt.scenario != "failover" &&
             opt.scenario != "soak")
        bad = "--pg, --db and --brokers are for the e2e, failover and soak scenarios";
    else if (opt.brokers > 1 && !postgres)
        bad = "--brokers N > 1 needs a PostgreSQL database (--pg or --db)";
    else if ((postgres || opt.brokers > 1) && !opt.broker.empty())
        bad = "--broker (someone else's broker) excludes --pg, --db and --brokers";
    if (bad) {
        std::fprintf(stderr, "errand-bench: %s\n", bad);
        return kExitUsage;
    }
    spdlog::set_level(spdlog::level::warn);  // the library's own chatter
    std::signal(SIGPIPE, SIG_IGN);

    std::vector<Result> runs;
    for (unsigned i = 0; i < opt.repeat; ++i) {
        try {
            runs.push_back(scenarios().at(opt.scenario)(opt));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "errand-bench %s: run %u failed: %s\n", opt.scenario.c_str(),
                         i + 1, e.what());
            return kExitFailed;
        }
        if (opt.repeat > 1)
            std::fprintf(stderr, "errand-bench %s: run %u/%u:%s\n", opt.scenario.c_str(), i + 1,
                         opt.repeat, one_line(runs.back()).c_str());
    }
    const Result result = errand::bench::combine(runs);
    if (opt.json)
        std::printf("%s\n", errand::bench::to_json(result, runs).dump().c_str());
    else
        errand::bench::print_table(result, runs.size());
    return 0;
}
