// The processes a benchmark runs besides itself: its own broker on a free loopback port and a
// temp database, errand-worker daemons, shell baselines. Every child is killed and reaped by its
// destructor; every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "options.hpp"

namespace errand::bench {

using Clock = std::chrono::steady_clock;

// Seconds since `start`, as a double.
double seconds_since(Clock::time_point start);

// A fresh directory under `parent` (or $TMPDIR, or /tmp), removed with its contents on
// destruction unless `keep`.
class TempDir {
  public:
    TempDir(const std::string& parent, bool keep);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
    bool keep_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// The directory holding this executable (from /proc/self/exe).
std::filesystem::path self_dir();

// Resident set size of `pid` in KiB (VmRSS of /proc/PID/status); 0 when unknown.
std::uint64_t rss_kib(pid_t pid);

// CPU time (user + system) of `pid` so far, in seconds (/proc/PID/stat); 0 when it is gone.
double cpu_seconds(pid_t pid);
// write_bytes of /proc/PID/io: what the process made the block layer write (counted when it
// dirties the pages); 0 when unknown.
std::uint64_t write_bytes(pid_t pid);
// CPU seconds of `parent` and of each of its children now alive, by pid (a PostgreSQL postmaster
// and its backends).
std::map<pid_t, double> cpu_of_children(pid_t parent);

// One child process: stdin /dev/null, stdout and stderr appended to `log`. It leads its own
// process group; the destructor SIGKILLs the group and reaps the child.
class Child {
  public:
    Child(const std::vector<std::string>& argv, const std::filesystem::path& log);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    void kill9();  // SIGKILL the group and reap
    // Exit status (128 + signal when killed), or nullopt if still running after `timeout`.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    bool running();

  private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// Sends PING on a fresh connection (reconnecting every few ms) until PONG arrives or `timeout`
// passes; returns whether it did.
bool ping(const std::string& endpoint, std::chrono::milliseconds timeout);

// The broker a scenario talks to: our own errand-broker on a free port, on a SQLite database in a
// temp dir (with --synchronous from the options) or on the database `db` (a postgresql:// URI),
// or the one given with --broker.
class BrokerProcess {
  public:
    explicit BrokerProcess(const Options& opt, std::string db = {});
    ~BrokerProcess();

    const std::string& endpoint() const { return endpoint_; }
    bool external() const { return !child_; }
    pid_t pid() const { return child_ ? child_->pid() : -1; }
    std::uint64_t rss_kib() const;
    double cpu_seconds() const;      // 0 for an external broker
    std::uint64_t db_bytes() const;  // SQLite database + WAL on disk; 0 for an external broker
    std::string log_tail(std::size_t lines = 20) const;

    // Spawns the broker; returns the seconds from spawn until its first PONG. Throws when it
    // does not answer within 60 s.
    double start();
    void kill9();
    // SIGTERM, and waits for the exit (SIGKILL after 60 s).
    void stop();
    // The SQLite file of a broker this process started; empty otherwise.
    std::string db_path() const;

  private:
    Options opt_;
    std::string db_;  // empty: errand.db in dir_
    std::unique_ptr<TempDir> dir_;
    std::string endpoint_;
    std::unique_ptr<Child> child_;
};

std::string default_broker_bin();
std::string default_worker_bin();

}  // namespace errand::bench
