// Scenario `fsync`: the disk's own limit, for reading the other figures. In the temp dir: SQLite
// in WAL mode with --synchronous, one row per transaction (the one-fsync-per-submit limit), and
// raw write + fdatasync loops (appending, and overwriting a preallocated file).
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <stdexcept>
#include <system_error>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

struct Db {
    sqlite3* db = nullptr;
    explicit Db(const std::string& path) {
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK)
            throw std::runtime_error("sqlite3_open " + path);
    }
    ~Db() { sqlite3_close(db); }
};

struct Stmt {
    sqlite3_stmt* st = nullptr;
    Stmt(sqlite3* db, const char* sql) {
        if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK)
            throw std::runtime_error(std::string("prepare: ") + sql);
    }
    ~Stmt() { sqlite3_finalize(st); }
};

struct Fd {
    int fd;
    explicit Fd(const std::string& path) : fd(::open(path.c_str(), O_WRONLY | O_CREAT, 0644)) {
        if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
    }
    ~Fd() { ::close(fd); }
};

}  // namespace

double sqlite_commit_rate(const std::string& path, const std::string& synchronous, std::uint64_t n,
                          const Deadline& deadline) {
    Db db(path);
    sqlite_exec(db.db, "PRAGMA journal_mode = WAL");
    sqlite_exec(
        db.db, synchronous == "full" ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    sqlite_exec(db.db, "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload BLOB)");
    Stmt insert(db.db, "INSERT INTO t (payload) VALUES (zeroblob(16))");
    const auto t0 = Clock::now();
    std::uint64_t i = 0;
    for (; i < n && !deadline.passed(); ++i) {
        sqlite_exec(db.db, "BEGIN IMMEDIATE");
        if (sqlite3_step(insert.st) != SQLITE_DONE) throw std::runtime_error("insert failed");
        sqlite3_reset(insert.st);
        sqlite_exec(db.db, "COMMIT");
    }
    return static_cast<double>(i) / seconds_since(t0);
}

Result run_fsync(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 2000;
    const Deadline deadline(opt.max_seconds);
    TempDir dir(opt.tmpdir, opt.keep_tmp);

    const double sqlite_rate =
        sqlite_commit_rate((dir.path() / "fsync.db").string(), opt.synchronous, n, deadline);
    // Appending changes the file size (a journal commit on most filesystems); overwriting a
    // preallocated file is the cheapest durable write the disk offers.
    auto fsync_loop = [&](bool overwrite) {
        Fd f((dir.path() / (overwrite ? "overwrite.bin" : "append.bin")).string());
        const char block[64] = {};
        if (overwrite) {
            for (std::uint64_t i = 0; i < n; ++i)
                if (::pwrite(f.fd, block, sizeof block, static_cast<off_t>(i * sizeof block)) < 0)
                    throw std::system_error(errno, std::generic_category(), "pwrite");
            if (::fsync(f.fd) != 0)
                throw std::system_error(errno, std::generic_category(), "fsync");
        }
        const auto t0 = Clock::now();
        std::uint64_t i = 0;
        for (; i < n && !deadline.passed(); ++i) {
            if (::pwrite(f.fd, block, sizeof block, static_cast<off_t>(i * sizeof block)) < 0 ||
                ::fdatasync(f.fd) != 0)
                throw std::system_error(errno, std::generic_category(), "write/fdatasync");
        }
        return static_cast<double>(i) / seconds_since(t0);
    };
    const double append_rate = fsync_loop(false);
    const double overwrite_rate = fsync_loop(true);

    Result r;
    r.scenario = "fsync";
    r.config["commits"] = n;
    r.config["synchronous"] = opt.synchronous;
    r.config["dir"] = dir.path().parent_path().string();
    r.add("sqlite_commits_per_s", sqlite_rate, "commits/s (WAL, one row per transaction)");
    r.add("sqlite_us_per_commit", 1e6 / sqlite_rate, "us");
    r.add("fdatasync_append_per_s", append_rate, "fdatasync/s (64-byte append each)");
    r.add("fdatasync_overwrite_per_s", overwrite_rate,
          "fdatasync/s (64-byte overwrite in a preallocated file)");
    return r;
}

}  // namespace errand::bench
