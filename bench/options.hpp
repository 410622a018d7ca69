// The flags of errand-bench, shared by every scenario (bench/errand_bench.cpp parses them).
#pragma once

#include <cstdint>
#include <string>

namespace errand::bench {

struct Options {
    std::string scenario;
    std::string mode;     // scenario-specific: submit sync|pipelined|batch, e2e sync|batch…
    std::uint64_t n = 0;  // 0: the scenario's default count
    std::uint64_t backlog = 1'000'000;
    unsigned producers = 1;
    unsigned workers = 2;
    unsigned concurrency = 8;
    std::uint64_t finished = 1'000'000;  // restart: finished jobs written into the file
    std::uint64_t live = 1000;           // restart: ready jobs submitted through the broker
    double paced = 0;              // e2e/submit/beanstalkd/redis sync: jobs/s in all, on a schedule
    unsigned prefetch = 256;       // e2e/depth: jobs a library worker holds beyond its concurrency
    unsigned daemon_prefetch = 0;  // daemon: errand-worker --prefetch (0 is the daemon's default)
    unsigned window = 64;          // pipelined: requests in flight
    unsigned batch = 1000;         // jobs per SUBMIT in batch mode
    unsigned batch_window = 4;     // batch mode: SUBMITs in flight
    std::size_t payload_size = 0;  // 0: the scenario's default (16 bytes; 100 for depth/recovery)
    unsigned restarts = 3;         // recovery: restarts measured per run
    unsigned transitions = 50;     // history: state changes in a long job's life
    unsigned warmup = 200;         // latency: round trips before measuring
    double rate = 500;             // soak: jobs submitted per second
    double seconds = 300;          // soak: how long the producer submits
    double retention = 10;         // soak: the queue's retention in seconds (QUEUE_SET)
    std::string synchronous = "full";
    std::string broker;      // endpoint of a running broker; empty: start our own
    std::string db;          // e2e: postgresql:// URI our brokers share; empty: SQLite (or --pg)
    bool pg = false;         // e2e: start a throwaway PostgreSQL server (fsync on) for the run
    unsigned brokers = 1;    // e2e: brokers on the one PostgreSQL database
    std::string broker_bin;  // empty: ../broker/errand-broker next to this binary
    std::string worker_bin;  // empty: ../worker/errand-worker next to this binary
    std::string addr;        // beanstalkd/redis: HOST:PORT; empty: 127.0.0.1:11300 / 127.0.0.1:6379
    std::string tmpdir;      // where brokers put their databases; empty: $TMPDIR or /tmp
    double max_seconds = 120;  // bound on each run of a scenario
    unsigned repeat = 1;
    bool json = false;
    bool keep_tmp = false;
};

}  // namespace errand::bench
