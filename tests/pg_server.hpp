// A real PostgreSQL server for tests: initdb into a temp dir, postgres on a Unix socket in that
// dir (no TCP), stopped by PID. PostgreSQL refuses to run as root, so as root (CI) it runs as the
// `postgres` system user through runuser. Binaries from /usr/lib/postgresql/15/bin, or
// ERRAND_PG_BIN.
#pragma once

#include <sys/types.h>

#include <string>

namespace errand::test {

class PgServer {
  public:
    // Starts the server and waits (bounded) until it accepts connections; throws on failure.
    PgServer();
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

  private:
    void start();
    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace errand::test
