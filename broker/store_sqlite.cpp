// SQLite storage: schema and migrations, prepared statements, job rows and their events.
//
// Schema (version 1):
//   jobs(id, token UNIQUE, queue, state CHECK(...), payload, argv (msgpack array or NULL),
//        priority, attempts, max_attempts, run_at, worker, exit_code, result, error,
//        created_at, started_at, finished_at)           -- times: ms since the Unix epoch
//   events(id, job_id, at, from_state, to_state, attempt, worker, reason)  -- one per transition
//   schema_version(version)                              -- one row
#include "store_sqlite.hpp"

#include <fmt/format.h>

#include <msgpack.hpp>

namespace errand::broker {
namespace {

bool is_disk_error(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_READONLY ||
           primary == SQLITE_CANTOPEN || primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

[[noreturn]] void fail(sqlite3* db, int rc, const char* what) {
    throw StoreError(fmt::format("{}: {}", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)),
                     is_disk_error(rc));
}

// The migrations, in order; migration i brings the schema to version i+1.
const char* const kMigrations[] = {
    R"sql(
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        token        TEXT UNIQUE,
        queue        TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('scheduled','ready','running','retrying',
                                                    'succeeded','dead','cancelled')),
        payload      BLOB NOT NULL,
        argv         BLOB,
        priority     INTEGER NOT NULL DEFAULT 0,
        attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        run_at       INTEGER,
        worker       TEXT,
        exit_code    INTEGER,
        result       BLOB,
        error        TEXT,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER
    );
    CREATE INDEX jobs_live ON jobs(state) WHERE state NOT IN ('succeeded','dead','cancelled');
    CREATE INDEX jobs_queue ON jobs(queue, id);
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY,
        job_id     INTEGER NOT NULL,
        at         INTEGER NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        worker     TEXT,
        reason     TEXT NOT NULL
    );
    CREATE INDEX events_job ON events(job_id, id);
    )sql",
};

std::string pack_argv(const std::vector<std::string>& argv) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, argv);
    return {buf.data(), buf.size()};
}

std::optional<std::vector<std::string>> unpack_argv(const void* data, int size) {
    if (!data) return std::nullopt;
    auto h = msgpack::unpack(static_cast<const char*>(data), static_cast<std::size_t>(size));
    return h.get().as<std::vector<std::string>>();
}

// RAII prepared statement; bind indexes are 1-based as in SQLite.
class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) : db_(db) {
        int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
        if (rc != SQLITE_OK) fail(db, rc, "prepare");
    }
    ~Stmt() { sqlite3_finalize(s_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& reset() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
        return *this;
    }
    Stmt& bind(int i, std::int64_t v) {
        sqlite3_bind_int64(s_, i, v);
        return *this;
    }
    Stmt& bind(int i, std::string_view v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind_blob(int i, std::string_view v) {
        sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind_null(int i) {
        sqlite3_bind_null(s_, i);
        return *this;
    }
    template <typename T>
    Stmt& bind_opt(int i, const std::optional<T>& v) {
        if (!v) return bind_null(i);
        if constexpr (std::is_same_v<T, std::string>)
            return bind(i, std::string_view(*v));
        else
            return bind(i, static_cast<std::int64_t>(*v));
    }
    Stmt& bind_opt_blob(int i, const std::optional<std::string>& v) {
        return v ? bind_blob(i, *v) : bind_null(i);
    }
    // SQLITE_ROW → true, SQLITE_DONE → false, anything else throws.
    bool step() {
        int rc = sqlite3_step(s_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        sqlite3_reset(s_);
        fail(db_, rc, "step");
    }
    void run() {
        step();
        sqlite3_reset(s_);
    }

    bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
    std::int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
    std::string text(int col) const {
        auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : "";
    }
    std::string blob(int col) const {
        auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : "";
    }
    std::optional<std::int64_t> opt_i64(int col) const {
        return is_null(col) ? std::nullopt : std::optional<std::int64_t>(i64(col));
    }
    std::optional<std::string> opt_text(int col) const {
        return is_null(col) ? std::nullopt : std::optional<std::string>(text(col));
    }
    std::optional<std::string> opt_blob(int col) const {
        return is_null(col) ? std::nullopt : std::optional<std::string>(blob(col));
    }
    std::optional<std::vector<std::string>> argv(int col) const {
        return unpack_argv(sqlite3_column_blob(s_, col), sqlite3_column_bytes(s_, col));
    }

private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
};

constexpr const char* kJobColumns =
    "id, queue, state, attempts, max_attempts, exit_code, result, error, worker, argv, "
    "length(payload), created_at, started_at, finished_at, run_at";

JobInfo read_job(const Stmt& s) {
    JobInfo j;
    j.id = static_cast<JobId>(s.i64(0));
    j.queue = s.text(1);
    j.state = parse_job_state(s.text(2)).value_or(JobState::dead);
    j.attempts = static_cast<std::uint32_t>(s.i64(3));
    j.max_attempts = static_cast<std::uint32_t>(s.i64(4));
    j.exit_code = s.opt_i64(5);
    j.result = s.opt_blob(6);
    j.error = s.opt_text(7);
    j.worker = s.opt_text(8);
    j.argv = s.argv(9);
    j.payload_size = static_cast<std::uint64_t>(s.i64(10));
    j.created_at = s.i64(11);
    j.started_at = s.opt_i64(12);
    j.finished_at = s.opt_i64(13);
    j.run_at = s.opt_i64(14);
    return j;
}

}  // namespace

struct SqliteStore::Statements {
    explicit Statements(sqlite3* db)
        : begin(db, "BEGIN IMMEDIATE"),
          commit(db, "COMMIT"),
          rollback(db, "ROLLBACK"),
          insert(db,
                 "INSERT INTO jobs (id, token, queue, state, payload, argv, priority, attempts, "
                 "max_attempts, run_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, "
                 "?9, ?10)"),
          update(db,
                 "UPDATE jobs SET state = ?2, attempts = ?3, worker = COALESCE(?4, worker), "
                 "run_at = ?5, started_at = COALESCE(?6, started_at), finished_at = ?7, "
                 "exit_code = CASE WHEN ?8 THEN ?9 ELSE exit_code END, "
                 "result = CASE WHEN ?8 THEN ?10 ELSE result END, "
                 "error = CASE WHEN ?8 THEN ?11 ELSE error END WHERE id = ?1"),
          event(db,
                "INSERT INTO events (job_id, at, from_state, to_state, attempt, worker, reason) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
          token(db, "SELECT id FROM jobs WHERE token = ?1"),
          get(db, fmt::format("SELECT {} FROM jobs WHERE id = ?1", kJobColumns).c_str()),
          dispatch(db, "SELECT payload, argv FROM jobs WHERE id = ?1"),
          live(db,
               "SELECT id, queue, state, attempts, max_attempts, priority, argv IS NOT NULL, "
               "run_at, worker FROM jobs WHERE state NOT IN ('succeeded','dead','cancelled') "
               "ORDER BY id"),
          max_id(db, "SELECT COALESCE(MAX(id), 0) FROM jobs"),
          list(db, fmt::format("SELECT {} FROM jobs WHERE (?1 IS NULL OR queue = ?1) AND "
                               "(?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3",
                               kJobColumns)
                       .c_str()) {}
    Stmt begin, commit, rollback, insert, update, event, token, get, dispatch, live, max_id, list;
};

SqliteStore::SqliteStore(const std::string& path, SqliteOptions options) {
    int rc = sqlite3_open_v2(path.c_str(), &db_,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("cannot open database {}: {}", path, msg), true);
    }
    try {
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, 5000);
        // The first statement reads the header: a corrupt or foreign file fails here.
        exec("PRAGMA journal_mode = WAL");
        exec(options.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        exec("PRAGMA foreign_keys = ON");
        migrate();
        st_ = std::make_unique<Statements>(db_);
    } catch (const StoreError& e) {
        st_.reset();
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("database {}: {}", path, e.what()), e.disk());
    }
}

SqliteStore::~SqliteStore() {
    st_.reset();
    if (db_) sqlite3_close(db_);
}

void SqliteStore::exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        throw StoreError(msg, is_disk_error(rc));
    }
}

int SqliteStore::schema_version() {
    Stmt s(db_, "SELECT version FROM schema_version");
    return s.step() ? static_cast<int>(s.i64(0)) : 0;
}

void SqliteStore::migrate() {
    exec("BEGIN IMMEDIATE");
    try {
        bool has_version = false;
        int tables = 0;
        {
            Stmt s(db_, "SELECT name FROM sqlite_master WHERE type = 'table'");
            while (s.step()) {
                ++tables;
                if (s.text(0) == "schema_version") has_version = true;
            }
        }
        if (!has_version && tables > 0)
            throw StoreError("not an errand database (it has tables but no schema_version)", false);
        if (!has_version) {
            exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
            exec("INSERT INTO schema_version VALUES (0)");
        }
        int version = schema_version();
        constexpr int known = static_cast<int>(std::size(kMigrations));
        if (version > known)
            throw StoreError(fmt::format("database schema version {} is newer than this errand "
                                         "understands ({}); upgrade errand",
                                         version, known),
                             false);
        for (int v = version; v < known; ++v) exec(kMigrations[v]);
        if (version != known)
            exec(fmt::format("UPDATE schema_version SET version = {}", known).c_str());
        exec("COMMIT");
    } catch (...) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

void SqliteStore::begin() { st_->begin.run(); }

void SqliteStore::commit() {
    try {
        st_->commit.run();
    } catch (const StoreError&) {
        // A failed COMMIT may leave the transaction open; make sure it is gone.
        if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

void SqliteStore::rollback() {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void SqliteStore::insert_job(const NewJob& job, const std::string& reason) {
    auto& s = st_->insert.reset();
    s.bind(1, static_cast<std::int64_t>(job.id))
        .bind_opt(2, job.token)
        .bind(3, std::string_view(job.queue))
        .bind(4, to_string(job.state))
        .bind_blob(5, job.payload);
    if (job.argv)
        s.bind_blob(6, pack_argv(*job.argv));
    else
        s.bind_null(6);
    s.bind(7, static_cast<std::int64_t>(job.priority))
        .bind(8, static_cast<std::int64_t>(job.max_attempts))
        .bind_opt(9, job.run_at)
        .bind(10, job.created_at)
        .run();
    auto& e = st_->event.reset();
    e.bind(1, static_cast<std::int64_t>(job.id))
        .bind(2, job.created_at)
        .bind_null(3)
        .bind(4, to_string(job.state))
        .bind(5, std::int64_t{0})
        .bind_null(6)
        .bind(7, std::string_view(reason))
        .run();
}

void SqliteStore::apply(const Transition& t) {
    auto& s = st_->update.reset();
    s.bind(1, static_cast<std::int64_t>(t.id))
        .bind(2, to_string(t.to))
        .bind(3, static_cast<std::int64_t>(t.attempts))
        .bind_opt(4, t.worker)
        .bind_opt(5, t.run_at)
        .bind_opt(6, t.started_at)
        .bind_opt(7, t.finished_at)
        .bind(8, std::int64_t{t.set_outcome ? 1 : 0})
        .bind_opt(9, t.exit_code)
        .bind_opt_blob(10, t.result)
        .bind_opt(11, t.error)
        .run();
    if (sqlite3_changes(db_) != 1)
        throw StoreError(fmt::format("job {} vanished from the database", t.id), false);
    auto& e = st_->event.reset();
    e.bind(1, static_cast<std::int64_t>(t.id)).bind(2, t.at);
    if (t.from)
        e.bind(3, to_string(*t.from));
    else
        e.bind_null(3);
    e.bind(4, to_string(t.to))
        .bind(5, static_cast<std::int64_t>(t.attempts))
        .bind_opt(6, t.worker)
        .bind(7, std::string_view(t.reason))
        .run();
}

std::optional<JobId> SqliteStore::find_token(const std::string& token) {
    auto& s = st_->token.reset();
    s.bind(1, std::string_view(token));
    std::optional<JobId> id;
    if (s.step()) id = static_cast<JobId>(s.i64(0));
    s.reset();
    return id;
}

std::optional<JobInfo> SqliteStore::get_job(JobId id) {
    auto& s = st_->get.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<JobInfo> job;
    if (s.step()) job = read_job(s);
    s.reset();
    return job;
}

std::vector<JobInfo> SqliteStore::list_jobs(const ListRequest& filter) {
    auto& s = st_->list.reset();
    s.bind_opt(1, filter.queue);
    if (filter.state)
        s.bind(2, to_string(*filter.state));
    else
        s.bind_null(2);
    s.bind(3, static_cast<std::int64_t>(filter.limit));
    std::vector<JobInfo> out;
    while (s.step()) out.push_back(read_job(s));
    s.reset();
    return out;
}

std::optional<DispatchData> SqliteStore::dispatch_data(JobId id) {
    auto& s = st_->dispatch.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<DispatchData> d;
    if (s.step()) d = DispatchData{s.blob(0), s.argv(1)};
    s.reset();
    return d;
}

void SqliteStore::scan_live(const std::function<void(LiveJob&&)>& fn) {
    auto& s = st_->live.reset();
    while (s.step()) {
        LiveJob j;
        j.id = static_cast<JobId>(s.i64(0));
        j.queue = s.text(1);
        j.state = parse_job_state(s.text(2)).value_or(JobState::ready);
        j.attempts = static_cast<std::uint32_t>(s.i64(3));
        j.max_attempts = static_cast<std::uint32_t>(s.i64(4));
        j.priority = static_cast<std::int32_t>(s.i64(5));
        j.has_argv = s.i64(6) != 0;
        j.run_at = s.opt_i64(7);
        j.worker = s.opt_text(8);
        fn(std::move(j));
    }
    s.reset();
}

JobId SqliteStore::max_job_id() {
    auto& s = st_->max_id.reset();
    s.step();
    auto id = static_cast<JobId>(s.i64(0));
    s.reset();
    return id;
}

}  // namespace errand::broker
