// A throwaway PostgreSQL server, for the tests and for errand-bench --pg: initdb into a temp dir,
// postgres on a Unix socket in that dir (no TCP), stopped by PID, the dir removed afterwards.
// PostgreSQL refuses to run as root, so as root (CI) it runs as the `postgres` system user through
// setuid. Binaries from /usr/lib/postgresql/15/bin, or ERRAND_PG_BIN.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace errand::pgserver {

struct PgServerOptions {
    // false (the tests): fsync=off and full_page_writes=off, fast and still crash-safe as long as
    // the machine stays up. true (the benchmark): PostgreSQL's defaults, commits on disk.
    bool durable = false;
    std::string parent;  // where the temp dir goes; empty: std::filesystem::temp_directory_path()
    bool keep = false;   // leave the dir (data, log) behind
    std::vector<std::string> settings;  // more `-c NAME=VALUE` for postgres
};

class PgServer {
  public:
    // Starts the server and waits (bounded) until it accepts connections; throws on failure.
    explicit PgServer(PgServerOptions options = {});
    ~PgServer();
    PgServer(const PgServer&) = delete;
    PgServer& operator=(const PgServer&) = delete;

    // A libpq connection string for database `errand` as user `errand` (trust auth).
    std::string conninfo() const;
    // The same as a postgresql:// URI (what errand-broker --db takes).
    std::string uri() const;
    std::string socket_dir() const { return dir_; }
    // `pg_ctl restart -m immediate`: every session is cut off mid-transaction, the server
    // recovers from its WAL and accepts connections again (this returns once it does).
    void restart_immediate();
    int port() const { return port_; }
    pid_t pid() const { return pid_; }  // the postmaster's; its children are the backends
    std::string log_path() const { return dir_ + "/log"; }

  private:
    void start();
    void stop();
    PgServerOptions options_;
    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace errand::pgserver
