// The brokers of one e2e run and the database they share: one broker on a SQLite file of its own
// (the default), or --brokers N on one PostgreSQL database, given with --db or started for the
// run with --pg (a throwaway server with PostgreSQL's durable defaults: fsync on,
// synchronous_commit on). Producers and workers take the brokers round-robin (endpoint(i)).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "options.hpp"
#include "pg_server.hpp"
#include "processes.hpp"

namespace errand::bench {

class Brokers {
  public:
    // Starts the server (--pg), then the brokers; each answers PING before this returns.
    explicit Brokers(const Options& opt);
    ~Brokers();  // the brokers first, then the server
    Brokers(const Brokers&) = delete;
    Brokers& operator=(const Brokers&) = delete;

    std::size_t size() const { return brokers_.size(); }
    // The broker the i-th producer or worker connects to (i mod size()).
    const std::string& endpoint(std::size_t i) const;
    // The i-th broker's process (to kill and start again).
    BrokerProcess& at(std::size_t i) { return *brokers_.at(i); }
    bool postgres() const { return !db_.empty(); }
    std::string label() const;  // for the config block

    // PostgreSQL only: the queue's jobs as the database has them (no broker's cached counts,
    // which lag by up to a second for work done through another broker).
    struct Counts {
        std::uint64_t total = 0;
        std::uint64_t succeeded = 0;
        std::vector<std::uint64_t> by_broker;  // jobs of the queue per broker that ran them
    };
    Counts counts(const std::string& queue) const;
    // PostgreSQL only: the server's durability settings, as it reports them ("fsync=on
    // synchronous_commit=on full_page_writes=on"), for the config block.
    std::string durability() const;
    // PostgreSQL only: the rows of `sql` (no parameters) as text, NULL as "", on a connection of
    // its own (for the server's statistics views: a new connection sees their latest values).
    std::vector<std::vector<std::string>> query(const std::string& sql) const;

    // CPU seconds so far: of our brokers together; of the --pg server (the postmaster and its
    // live children, by pid: diff two snapshots), empty without --pg.
    double broker_cpu_seconds() const;
    std::uint64_t broker_write_bytes() const;  // /proc/PID/io write_bytes, all our brokers
    std::map<pid_t, double> postgres_cpu() const;

  private:
    Options opt_;
    std::string db_;  // the URI every broker gets; empty: SQLite
    std::unique_ptr<pgserver::PgServer> pg_;
    std::vector<std::unique_ptr<BrokerProcess>> brokers_;
};

// CPU seconds spent between two snapshots of cpu_of_children() (a process born in between
// counts from zero; one gone by `after` is not counted).
double cpu_between(const std::map<pid_t, double>& before, const std::map<pid_t, double>& after);

}  // namespace errand::bench
