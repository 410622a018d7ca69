// SQLite storage: schema and migrations, prepared statements, job rows and their events.
//
// Schema (version 1):
//   jobs(id, token UNIQUE, queue, state CHECK(...), payload, argv (msgpack array or NULL),
//        priority, attempts, max_attempts, run_at, worker, exit_code, result, error,
//        created_at, started_at, finished_at)           -- times: ms since the Unix epoch
//   events(id, job_id, at, from_state, to_state, attempt, worker, reason)  -- one per transition
//   schema_version(version)                              -- one row
// Version 2 adds the lifecycle: jobs.timeout_ms, backoff_ms, backoff_cap_ms, unique_key (unique
// among unfinished jobs), progress, progress_message; queues(name, paused); and clusters events
// by job: events(job_id, id, ...) PRIMARY KEY (job_id, id) WITHOUT ROWID, id from a counter.
// Version 3 adds id_floor(id) (ids are never reused) and jobs.attempt_budget (the max_attempts the
// job was submitted with, once RETRY or a hand-back has raised max_attempts; NULL until then),
// and rebuilds jobs with its state CHECK written without IN (see the migration).
// Version 4 adds jobs.history: the job's events (one msgpack array [at, from, to, attempt, worker,
// reason] after another), appended by the UPDATE that makes the transition, instead of one events
// row per transition (three b-tree inserts per job). The events table keeps the rows written
// before version 4; a job's history is its events rows, then its history column.
// Version 5 adds dispatch_log(seq, entries): the dispatches of one transaction (msgpack arrays, see
// pack_dispatch) that are not yet in their jobs' rows. See "Held-back dispatches" below.
// Version 6 adds broker_epoch(n), counted up and synced at every open, and jobs.epoch: the epoch
// of the running attempt's dispatch, which with the attempt is its fencing token (a dispatch lost
// in a power cut under synchronous=NORMAL is made again with the same attempt number but a new
// epoch; docs/RELIABILITY.md).
// Version 7 adds schedules(name, cron, zone, catch_up, job, paused, created_at, next_at, last_at,
// last_job): cron schedules (broker/cron.hpp), `job` the JobSpec each tick submits (msgpack, as
// errand::encode(JobSpec) writes it), next_at the next tick not yet handled.
// Version 8 makes a job's cost flat in what it has been through (docs/PERFORMANCE.md, "How cost
// grows"): the row that changes state is small and of a fixed size, so a transition costs the
// same at the 1st attempt as at the 50th, with a 1 MiB payload as with none.
//   - the history column holds the job's first event only (written with the row, never
//     appended); every later event is an events row, appended (events(job_id, id) clusters them
//     by job): the column grew with every change and was rewritten with it. Event ids come from
//     one counter, event_seq(n), from kEventIdBase up; ids below it are events rows from before
//     version 4. So a job's history reads: rows below kEventIdBase, its history column (all of it
//     for versions 4-7), rows from kEventIdBase on. The migration moves no event.
//   - a payload over kInlinePayload bytes lives in payloads(job_id, payload), written once at
//     submit; jobs.payload is then empty. Smaller ones stay in the row (one b-tree insert less).
//   - job_counts(queue, state, n): how many jobs of each queue are in each terminal state,
//     updated once per pass from the pass's changes (SqliteStore::flush_counts), so a start
//     counts finished jobs without reading them; the live ones it counts, and scans, through the
//     jobs_live index.
// Version 10 adds queues.paused_until: a timed pause (PAUSE with for_ms) ends by itself then.
// Version 11 adds jobs.expires_at (a job not dispatched by then ends `expired`, a new terminal
// state), widens the state CHECKs of jobs and job_counts to it, and excludes expired jobs from
// jobs_live and jobs_unique.
// Version 9 indexes finished jobs by (state, finished_at) instead of finished_at alone: retention
// deletes each state on its own clock (--dead-retention for dead jobs, --retention for the
// others).
#include "store_sqlite.hpp"

#include "argv_blob.hpp"
#include "job_rows.hpp"

#include <fmt/format.h>

#include <msgpack.hpp>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <type_traits>

namespace errand::broker {
namespace {

bool is_disk_error(int rc) {
    int primary = rc & 0xff;
    return primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_READONLY ||
           primary == SQLITE_CANTOPEN || primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

// `what` prefixes the message when it adds something a person can use.
[[noreturn]] void fail(sqlite3* db, int rc, const char* what) {
    std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    throw StoreError(*what ? fmt::format("{}: {}", what, detail) : detail, is_disk_error(rc));
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
    R"sql(
    ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN backoff_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN backoff_cap_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN unique_key TEXT;
    ALTER TABLE jobs ADD COLUMN progress INTEGER CHECK (progress BETWEEN 0 AND 100);
    ALTER TABLE jobs ADD COLUMN progress_message TEXT;
    -- "unfinished" is spelled with <> rather than NOT IN (...): SQLite evaluates an IN list in
    -- a partial index's WHERE with a temporary table on every write to the row.
    DROP INDEX jobs_live;
    CREATE INDEX jobs_live ON jobs(state)
        WHERE state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled';
    CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key)
        WHERE unique_key IS NOT NULL
          AND state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled';
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
    -- Events clustered by job: one b-tree per insert instead of a table plus an index.
    CREATE TABLE events_by_job (
        job_id     INTEGER NOT NULL,
        id         INTEGER NOT NULL,
        at         INTEGER NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        worker     TEXT,
        reason     TEXT NOT NULL,
        PRIMARY KEY (job_id, id)
    ) WITHOUT ROWID;
    INSERT INTO events_by_job SELECT job_id, id, at, from_state, to_state, attempt, worker, reason
        FROM events;
    DROP TABLE events;
    ALTER TABLE events_by_job RENAME TO events;
    CREATE TABLE queues (
        name   TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1))
    );
    )sql",
    // 3: job ids are never reused (the highest id of a deleted job is remembered in id_floor);
    // attempts only grow, so RETRY raises max_attempts by the job's first budget, kept here.
    // jobs is rebuilt, with the state CHECK spelled as comparisons: for `state IN (...)` SQLite
    // builds an ephemeral table on every row it writes (a sixth of the broker's time per job).
    R"sql(
    CREATE TABLE id_floor (id INTEGER NOT NULL);
    INSERT INTO id_floor SELECT COALESCE(MAX(id), 0) FROM jobs;
    CREATE TABLE jobs_v3 (
        id             INTEGER PRIMARY KEY,
        token          TEXT UNIQUE,
        queue          TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state = 'scheduled' OR state = 'ready'
                                            OR state = 'running' OR state = 'retrying'
                                            OR state = 'succeeded' OR state = 'dead'
                                            OR state = 'cancelled'),
        payload        BLOB NOT NULL,
        argv           BLOB,
        priority       INTEGER NOT NULL DEFAULT 0,
        attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        max_attempts   INTEGER NOT NULL CHECK (max_attempts >= 1),
        run_at         INTEGER,
        worker         TEXT,
        exit_code      INTEGER,
        result         BLOB,
        error          TEXT,
        created_at     INTEGER NOT NULL,
        started_at     INTEGER,
        finished_at    INTEGER,
        timeout_ms     INTEGER,
        backoff_ms     INTEGER,
        backoff_cap_ms INTEGER,
        unique_key     TEXT,
        progress       INTEGER CHECK (progress BETWEEN 0 AND 100),
        progress_message TEXT,
        attempt_budget INTEGER CHECK (attempt_budget >= 1)
    );
    INSERT INTO jobs_v3 SELECT id, token, queue, state, payload, argv, priority, attempts,
        max_attempts, run_at, worker, exit_code, result, error, created_at, started_at,
        finished_at, timeout_ms, backoff_ms, backoff_cap_ms, unique_key, progress,
        progress_message, NULL FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v3 RENAME TO jobs;
    CREATE INDEX jobs_queue ON jobs(queue, id);
    CREATE INDEX jobs_live ON jobs(state)
        WHERE state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled';
    CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key)
        WHERE unique_key IS NOT NULL
          AND state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled';
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
    )sql",
    // 4: events in the job's row (see the top of this file).
    R"sql(
    ALTER TABLE jobs ADD COLUMN history BLOB;
    )sql",
    // 5: dispatches held back from the jobs' rows (see the top of this file).
    R"sql(
    CREATE TABLE dispatch_log (seq INTEGER PRIMARY KEY, entries BLOB NOT NULL);
    )sql",
    // 6: fencing across power cuts (see the top of this file).
    R"sql(
    CREATE TABLE broker_epoch (n INTEGER NOT NULL);
    INSERT INTO broker_epoch VALUES (0);
    ALTER TABLE jobs ADD COLUMN epoch INTEGER;
    )sql",
    // 7: cron schedules (see the top of this file).
    R"sql(
    CREATE TABLE schedules (
        name       TEXT PRIMARY KEY,
        cron       TEXT NOT NULL,
        zone       TEXT NOT NULL,
        catch_up   TEXT NOT NULL CHECK (catch_up = 'none' OR catch_up = 'latest'
                                       OR catch_up = 'all'),
        job        BLOB NOT NULL,
        paused     INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
        created_at INTEGER NOT NULL,
        next_at    INTEGER,
        last_at    INTEGER,
        last_job   INTEGER
    );
    CREATE INDEX schedules_due ON schedules(next_at) WHERE paused = 0 AND next_at IS NOT NULL;
    )sql",
    // 8: flat as it grows (see the top of this file). The one pass over the rows is the count.
    R"sql(
    CREATE TABLE event_seq (n INTEGER NOT NULL);
    INSERT INTO event_seq VALUES (1099511627776);
    CREATE TABLE payloads (job_id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
    CREATE TABLE job_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'succeeded' OR state = 'dead' OR state = 'cancelled'),
        n     INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID;
    INSERT INTO job_counts SELECT queue, state, COUNT(*) FROM jobs
        WHERE state = 'succeeded' OR state = 'dead' OR state = 'cancelled' GROUP BY queue, state;
    )sql",
    // 9: retention by state (dead jobs are kept --dead-retention, the others --retention), so
    // the finished jobs of one state in finished_at order: a pass that deletes succeeded jobs
    // must not walk over the dead ones kept longer.
    R"sql(
    DROP INDEX jobs_finished;
    CREATE INDEX jobs_finished ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;
    )sql",
    // 10: timed pauses (PAUSE with for_ms): the queue resumes by itself at paused_until.
    R"sql(
    ALTER TABLE queues ADD COLUMN paused_until INTEGER;
    )sql",
    // 11: job expiry (see the top of this file). The state CHECKs of jobs and job_counts are
    // widened in place, their text in sqlite_schema edited under writable_schema
    // (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema
    // Changes"): every stored row meets the wider check, so no table is rebuilt (migration 3
    // copied all of jobs, payloads included); migrate() then counts schema_version up so every
    // connection reads the schema again. The partial indexes of unfinished jobs are made again
    // so that expired rows leave them (one pass over jobs each). Memory holds the deadlines
    // (the engine's heap, rebuilt from scan_live), so expires_at needs no index here.
    R"sql(
    ALTER TABLE jobs ADD COLUMN expires_at INTEGER;
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
        SET sql = replace(sql, 'OR state = ''cancelled'')',
                          'OR state = ''cancelled'' OR state = ''expired'')')
        WHERE type = 'table' AND name IN ('jobs', 'job_counts');
    PRAGMA writable_schema = OFF;
    DROP INDEX jobs_live;
    CREATE INDEX jobs_live ON jobs(state)
        WHERE state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled'
          AND state <> 'expired';
    DROP INDEX jobs_unique;
    CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key)
        WHERE unique_key IS NOT NULL
          AND state <> 'succeeded' AND state <> 'dead' AND state <> 'cancelled'
          AND state <> 'expired';
    )sql",
    // 12: queue settings (QUEUE_SET): at most max_running of the queue's jobs running at once, at
    // most `rate` started in any window of rate_per_ms; the default_* of its jobs that do not
    // set their own. The engine holds them in memory and enforces them itself (it knows every
    // running job).
    R"sql(
    ALTER TABLE queues ADD COLUMN max_running INTEGER CHECK (max_running > 0);
    ALTER TABLE queues ADD COLUMN rate INTEGER CHECK (rate > 0);
    ALTER TABLE queues ADD COLUMN rate_per_ms INTEGER CHECK (rate_per_ms > 0);
    ALTER TABLE queues ADD COLUMN default_max_attempts INTEGER CHECK (default_max_attempts > 0);
    ALTER TABLE queues ADD COLUMN default_timeout_ms INTEGER CHECK (default_timeout_ms > 0);
    ALTER TABLE queues ADD COLUMN default_priority INTEGER;
    )sql",
    // Job dependencies (SUBMIT after): a job waits `blocked` for its parents. job_deps holds one
    // edge per (child, unfinished parent), found from the parent (job_deps_parent) when it
    // finishes, and deleted then; jobs.blocked_on counts a blocked child's unfinished parents.
    // The state CHECKs widen to blocked in place as migration 11 did (blocked is unfinished, so
    // jobs_live and jobs_unique keep it).
    R"sql(
    ALTER TABLE jobs ADD COLUMN blocked_on INTEGER CHECK (blocked_on >= 0);
    CREATE TABLE job_deps (
        child  INTEGER NOT NULL,
        parent INTEGER NOT NULL,
        after_any INTEGER NOT NULL DEFAULT 0 CHECK (after_any IN (0, 1)),
        PRIMARY KEY (child, parent)
    ) WITHOUT ROWID;
    CREATE INDEX job_deps_parent ON job_deps(parent);
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
        SET sql = replace(sql, 'OR state = ''expired'')',
                          'OR state = ''expired'' OR state = ''blocked'')')
        WHERE type = 'table' AND name IN ('jobs', 'job_counts');
    PRAGMA writable_schema = OFF;
    )sql",
    // Queue settings (QUEUE_SET): retention_ms, how long the queue's finished jobs (not dead
    // ones) are kept instead of the broker's --retention; default_expires_in_ms, the expiry of
    // its jobs submitted without one, counted from their submission.
    R"sql(
    ALTER TABLE queues ADD COLUMN retention_ms INTEGER CHECK (retention_ms > 0);
    ALTER TABLE queues ADD COLUMN default_expires_in_ms INTEGER CHECK (default_expires_in_ms > 0);
    )sql",
    // Batches (BATCH_OPEN): one row per batch with a counter per terminal state, changed with
    // each member's change (never a scan of the members); jobs.batch_id names a member's batch,
    // and jobs_batch finds the failed members for a callback's summary. AUTOINCREMENT: a batch
    // id is never given out twice, even after retention deleted the newest.
    R"sql(
    ALTER TABLE jobs ADD COLUMN batch_id INTEGER;
    CREATE INDEX jobs_batch ON jobs(batch_id, state) WHERE batch_id IS NOT NULL;
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        description TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        sealed_at INTEGER,
        completed_at INTEGER,
        succeeded_at INTEGER,
        total INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
        succeeded INTEGER NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
        dead INTEGER NOT NULL DEFAULT 0 CHECK (dead >= 0),
        cancelled INTEGER NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
        expired INTEGER NOT NULL DEFAULT 0 CHECK (expired >= 0),
        complete_job INTEGER,
        success_job INTEGER,
        on_complete BLOB,
        on_success BLOB,
        token TEXT UNIQUE,
        CHECK (succeeded + dead + cancelled + expired <= total)
    );
    CREATE INDEX batches_completed ON batches(completed_at) WHERE completed_at IS NOT NULL;
    )sql",
};

static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion,
              "kSchemaVersion is the number of migrations");

// The first id of version 8's events rows (see the top of this file); event_seq starts here.
constexpr std::int64_t kEventIdBase = std::int64_t{1} << 40;
// Payloads up to this many bytes stay in the job's row.
constexpr std::size_t kInlinePayload = 512;
// How long the broker's connection waits for a lock another connection holds (an HTTP reader,
// the checkpointer).
constexpr int kBusyTimeoutMs = 5000;

// The event of a transition, as its events row holds it.
Event event_of(const Transition& t) {
    return Event{to_time(t.at), t.from, t.to, t.attempts.value_or(0), t.worker, t.reason};
}

// A job's first event, as its history column holds it (versions 4-7 appended every event).
std::string pack_event(const Event& e) {
    msgpack::sbuffer buf(64);
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(6);
    pk.pack_int64(to_ms(e.at));
    if (e.from)
        pk.pack(to_string(*e.from));
    else
        pk.pack_nil();
    pk.pack(to_string(e.to));
    pk.pack_int64(e.attempt);
    if (e.worker)
        pk.pack(*e.worker);
    else
        pk.pack_nil();
    pk.pack(e.reason);
    return {buf.data(), buf.size()};
}

// Calls fn(fields) for each MessagePack array of `arity` elements in [data, data + size), the
// records of a history column or a dispatch_log row. Anything else throws std::runtime_error
// with its byte offset.
template <class Fn>
void for_each_record(const void* data, int size, std::uint32_t arity, Fn fn,
                     std::uint32_t max_arity = 0) {
    if (max_arity < arity) max_arity = arity;
    if (!data) return;
    const char* p = static_cast<const char*>(data);
    std::size_t offset = 0, n = static_cast<std::size_t>(size);
    while (offset < n) {
        const std::size_t at = offset;
        try {
            auto h = msgpack::unpack(p, n, offset);
            const auto& o = h.get();
            if (o.type != msgpack::type::ARRAY || o.via.array.size < arity ||
                o.via.array.size > max_arity)
                throw std::runtime_error(fmt::format("not an array of {}", arity));
            if constexpr (std::is_invocable_v<Fn, const msgpack::object*, std::uint32_t>)
                fn(o.via.array.ptr, o.via.array.size);
            else
                fn(o.via.array.ptr);
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("damaged at byte {}: {}", at, e.what()));
        }
    }
}

// Appends the events of a history column to `out`. A damaged column is an error of the read, not
// of the broker's transaction (so not a StoreError).
void unpack_history(JobId id, const void* data, int size, std::vector<Event>& out) {
    try {
        for_each_record(data, size, 6, [&](const msgpack::object* f) {
            Event e;
            e.at = to_time(f[0].as<std::int64_t>());
            if (!f[1].is_nil()) e.from = stored_state(f[1].as<std::string>());
            e.to = stored_state(f[2].as<std::string>());
            e.attempt = f[3].as<std::uint32_t>();
            if (!f[4].is_nil()) e.worker = f[4].as<std::string>();
            e.reason = f[5].as<std::string>();
            out.push_back(std::move(e));
        });
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(fmt::format("job {}: history {}", id, e.what()));
    }
}

// One held-back dispatch as written to dispatch_log: [id, attempts, at, worker, started_at,
// reason, from, epoch] (before version 6 without epoch). Only the fields a dispatch sets (see
// SqliteStore::apply).
void pack_dispatch(msgpack::packer<msgpack::sbuffer>& pk, const Transition& t) {
    pk.pack_array(8);
    pk.pack_uint64(t.id);
    pk.pack_uint32(t.attempts.value_or(0));
    pk.pack_int64(t.at);
    if (t.worker)
        pk.pack(*t.worker);
    else
        pk.pack_nil();
    if (t.started_at)
        pk.pack_int64(*t.started_at);
    else
        pk.pack_nil();
    pk.pack(t.reason);
    if (t.from)
        pk.pack(to_string(*t.from));
    else
        pk.pack_nil();
    pk.pack_uint32(t.epoch);
}

// The dispatches of one dispatch_log row, in order. Damage is a StoreError: without the log the
// broker would hand out attempt numbers twice.
std::vector<Transition> unpack_dispatches(const void* data, int size) {
    std::vector<Transition> out;
    try {
        auto one = [&](const msgpack::object* f, std::uint32_t n) {
            Transition t;
            t.id = f[0].as<JobId>();
            t.to = JobState::running;
            t.attempts = f[1].as<std::uint32_t>();
            t.at = f[2].as<std::int64_t>();
            if (!f[3].is_nil()) t.worker = f[3].as<std::string>();
            if (!f[4].is_nil()) t.started_at = f[4].as<std::int64_t>();
            t.reason = f[5].as<std::string>();
            if (!f[6].is_nil()) t.from = stored_state(f[6].as<std::string>());
            if (n > 7) t.epoch = f[7].as<std::uint32_t>();
            out.push_back(std::move(t));
        };
        for_each_record(data, size, 7, one, 8);
    } catch (const std::runtime_error& e) {
        throw StoreError(fmt::format("dispatch_log {}", e.what()), false);
    }
    return out;
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
        // An empty blob, not NULL (which a null pointer would bind).
        sqlite3_bind_blob(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                          SQLITE_TRANSIENT);
        return *this;
    }
    // Without a copy: `v` must stay as it is until the statement has run (step()/run()).
    Stmt& bind_ref(int i, std::string_view v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
        return *this;
    }
    Stmt& bind_blob_ref(int i, std::string_view v) {
        sqlite3_bind_blob(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                          SQLITE_STATIC);
        return *this;
    }
    Stmt& bind_opt_ref(int i, const std::optional<std::string>& v) {
        return v ? bind_ref(i, *v) : bind_null(i);
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
        fail(db_, rc, "");
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
        return unpack_argv(sqlite3_column_blob(s_, col),
                           static_cast<std::size_t>(sqlite3_column_bytes(s_, col)));
    }
    // Virtual-machine steps of the statement's current run.
    std::uint64_t vm_steps() const {
        return static_cast<std::uint64_t>(sqlite3_stmt_status(s_, SQLITE_STMTSTATUS_VM_STEP, 0));
    }
    void append_history(JobId id, int col, std::vector<Event>& out) const {
        unpack_history(id, sqlite3_column_blob(s_, col), sqlite3_column_bytes(s_, col), out);
    }

  private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
};

// A job's events: the rows of the events statement (at, from, to, attempt, worker, reason, id)
// below kEventIdBase, its history column (the history statement's only column), then its rows
// from kEventIdBase on. Resets both.
std::vector<Event> read_events(JobId id, Stmt& s, Stmt& history) {
    std::vector<Event> out;
    std::vector<Event> later;
    s.bind(1, static_cast<std::int64_t>(id));
    while (s.step()) {
        Event e;
        e.at = to_time(s.i64(0));
        if (auto f = s.opt_text(1)) e.from = stored_state(*f);
        e.to = stored_state(s.text(2));
        e.attempt = static_cast<std::uint32_t>(s.i64(3));
        e.worker = s.opt_text(4);
        e.reason = s.text(5);
        (s.i64(6) < kEventIdBase ? out : later).push_back(std::move(e));
    }
    s.reset();
    history.bind(1, static_cast<std::int64_t>(id));
    if (history.step()) {
        try {
            history.append_history(id, 0, out);
        } catch (...) {
            history.reset();
            throw;
        }
    }
    history.reset();
    std::move(later.begin(), later.end(), std::back_inserter(out));
    return out;
}

// The columns of read_job: a payload's length is that of its payloads row, if it has one.
const std::string kSqliteJobColumns = job_columns(
    "COALESCE((SELECT length(payload) FROM payloads WHERE job_id = jobs.id), length(payload))");

constexpr const char* kEventsOfJob =
    "SELECT at, from_state, to_state, attempt, worker, reason, id FROM events "
    "WHERE job_id = ?1 ORDER BY id";

// Binds an events row's id and columns, from parameter `first` on.
void bind_event(Stmt& s, int first, std::int64_t id, const Event& e) {
    s.bind(first, id).bind(first + 1, to_ms(e.at));
    if (e.from)
        s.bind_ref(first + 2, to_string(*e.from));
    else
        s.bind_null(first + 2);
    s.bind_ref(first + 3, to_string(e.to))
        .bind(first + 4, static_cast<std::int64_t>(e.attempt))
        .bind_opt_ref(first + 5, e.worker)
        .bind_ref(first + 6, e.reason);
}

}  // namespace

struct SqliteStore::Statements {
    explicit Statements(sqlite3* db)
        : begin(db, "BEGIN IMMEDIATE"),
          commit(db, "COMMIT"),
          rollback(db, "ROLLBACK"),
          insert(
              db,
              "INSERT INTO jobs (id, token, queue, state, payload, argv, priority, attempts, "
              "max_attempts, run_at, created_at, timeout_ms, backoff_ms, backoff_cap_ms, "
              "unique_key, history, expires_at, batch_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, "
              "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) ON CONFLICT (token) DO NOTHING"),
          insert_payload(db, "INSERT INTO payloads (job_id, payload) VALUES (?1, ?2)"),
          insert_event(db,
                       "INSERT INTO events (job_id, id, at, from_state, to_state, attempt, "
                       "worker, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
          // A held dispatch and the change after it: two rows, one statement.
          insert_events2(db,
                         "INSERT INTO events (job_id, id, at, from_state, to_state, attempt, "
                         "worker, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8), "
                         "(?1, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
          update(db,
                 "UPDATE jobs SET state = ?2, attempts = COALESCE(?3, attempts), "
                 "worker = COALESCE(?4, worker), "
                 "progress = CASE WHEN ?14 THEN NULL ELSE progress END, "
                 "progress_message = CASE WHEN ?14 THEN NULL ELSE progress_message END, "
                 "run_at = ?5, started_at = COALESCE(?6, started_at), finished_at = ?7, "
                 "exit_code = CASE WHEN ?8 THEN ?9 ELSE exit_code END, "
                 "result = CASE WHEN ?8 THEN ?10 ELSE result END, "
                 "error = CASE WHEN ?8 THEN ?11 ELSE error END, "
                 "attempt_budget = CASE WHEN ?12 IS NULL THEN attempt_budget "
                 "ELSE COALESCE(attempt_budget, max_attempts) END, "
                 "max_attempts = COALESCE(?12, max_attempts), "
                 "epoch = CASE WHEN ?2 = 'running' THEN ?17 ELSE epoch END "
                 "WHERE id = ?1 AND (?15 IS NULL OR (state = ?15 AND attempts = ?16))"),
          token(db, "SELECT id FROM jobs WHERE token = ?1"),
          get(db, fmt::format("SELECT {} FROM jobs WHERE id = ?1", kSqliteJobColumns).c_str()),
          dispatch(db,
                   "SELECT COALESCE((SELECT payload FROM payloads WHERE job_id = ?1), payload), "
                   "argv FROM jobs WHERE id = ?1"),
          // Through the index, never the table: finished rows cost a start nothing.
          live(db, fmt::format("SELECT {}, COALESCE(epoch, 0) FROM jobs INDEXED BY jobs_live "
                               "WHERE state <> 'succeeded' AND state <> 'dead' AND "
                               "state <> 'cancelled' AND state <> 'expired'",
                               kLiveColumns)
                       .c_str()),
          live_one(
              db, fmt::format("SELECT {}, COALESCE(epoch, 0) FROM jobs WHERE id = ?1", kLiveColumns)
                      .c_str()),
          max_id(db,
                 "SELECT MAX(COALESCE((SELECT MAX(id) FROM jobs), 0), "
                 "(SELECT id FROM id_floor))"),
          raise_floor(db, "UPDATE id_floor SET id = MAX(id, ?1)"),
          count(db, "SELECT queue, state, n FROM job_counts WHERE n > 0"),
          count_live(db,
                     "SELECT queue, state, COUNT(*) FROM jobs INDEXED BY jobs_live WHERE state <> "
                     "'succeeded' AND state <> 'dead' AND state <> 'cancelled' AND state <> "
                     "'expired' GROUP BY queue, state"),
          add_count(db,
                    "INSERT INTO job_counts VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n"),
          forget_counts(db, "DELETE FROM job_counts WHERE n = 0"),
          event_seq(db, "SELECT n FROM event_seq"),
          save_event_seq(db, "UPDATE event_seq SET n = ?1"),
          free_pages(db, "PRAGMA freelist_count"),
          progress(db, "UPDATE jobs SET progress = ?2, progress_message = ?3 WHERE id = ?1"),
          events(db, kEventsOfJob),
          history(db, "SELECT history FROM jobs WHERE id = ?1"),
          log_insert(db, "INSERT INTO dispatch_log (entries) VALUES (?1)"),
          log_read(db, "SELECT entries FROM dispatch_log ORDER BY seq"),
          log_clear(db, "DELETE FROM dispatch_log"),
          row_state(db, "SELECT attempts, queue, state FROM jobs WHERE id = ?1"),
          set_paused(db,
                     "INSERT INTO queues (name, paused, paused_until) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, "
                     "paused_until = excluded.paused_until"),
          resume_due(db,
                     "UPDATE queues SET paused = 0, paused_until = NULL "
                     "WHERE name = ?1 AND paused = 1 AND paused_until = ?2"),
          pause_deadlines(db,
                          "SELECT name, paused_until FROM queues "
                          "WHERE paused = 1 AND paused_until IS NOT NULL"),
          paused(db, "SELECT name FROM queues WHERE paused = 1 ORDER BY name"),
          set_limits(db,
                     "INSERT INTO queues (name, max_running, rate, rate_per_ms, "
                     "default_max_attempts, default_timeout_ms, default_priority, retention_ms, "
                     "default_expires_in_ms) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name) DO UPDATE SET "
                     "max_running = excluded.max_running, rate = excluded.rate, "
                     "rate_per_ms = excluded.rate_per_ms, "
                     "default_max_attempts = excluded.default_max_attempts, "
                     "default_timeout_ms = excluded.default_timeout_ms, "
                     "default_priority = excluded.default_priority, "
                     "retention_ms = excluded.retention_ms, "
                     "default_expires_in_ms = excluded.default_expires_in_ms"),
          limits(db,
                 "SELECT name, max_running, rate, rate_per_ms, default_max_attempts, "
                 "default_timeout_ms, default_priority, retention_ms, default_expires_in_ms "
                 "FROM queues "
                 "WHERE max_running IS NOT NULL OR rate IS NOT NULL OR default_max_attempts IS "
                 "NOT NULL OR default_timeout_ms IS NOT NULL OR default_priority IS NOT NULL "
                 "OR retention_ms IS NOT NULL OR default_expires_in_ms IS NOT NULL "
                 "ORDER BY name"),
          dead(db,
               "SELECT id FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1) "
               "ORDER BY id LIMIT ?2"),
          finished(db,
                   "SELECT id, queue, state FROM jobs WHERE state = ?2 AND finished_at < ?1 "
                   "AND (?3 IS NULL OR queue = ?3) AND (?5 = 0 OR queue NOT IN (SELECT name "
                   "FROM queues WHERE retention_ms IS NOT NULL)) ORDER BY finished_at LIMIT ?4"),
          delete_job(db, "DELETE FROM jobs WHERE id = ?1"),
          delete_events(db, "DELETE FROM events WHERE job_id = ?1"),
          delete_payload(db, "DELETE FROM payloads WHERE job_id = ?1"),
          list(db, fmt::format("SELECT {} FROM jobs WHERE (?1 IS NULL OR queue = ?1) AND "
                               "(?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3",
                               kSqliteJobColumns)
                       .c_str()) {}
    Stmt begin, commit, rollback, insert, insert_payload, insert_event, insert_events2, update,
        token, get, dispatch, live, live_one, max_id, raise_floor, count, count_live, add_count,
        forget_counts, event_seq, save_event_seq, free_pages, progress, events, history, log_insert,
        log_read, log_clear, row_state, set_paused, resume_due, pause_deadlines, paused, set_limits,
        limits, dead, finished, delete_job, delete_events, delete_payload, list;
};

SqliteStore::SqliteStore(const std::string& path, SqliteOptions options) {
    // Before SQLite's first use in the process: no global mutex around every allocation for
    // memory statistics nobody reads. (Ignored, harmlessly, if SQLite is already initialised.)
    static std::once_flag configured;
    std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
    // SQLite takes a 0-byte file for a new database and would make one of it. errand leaves
    // none behind: PRAGMA journal_mode = WAL below writes the header into the file itself (not
    // the WAL) a moment after creating it, so only a crash in that moment of a first start
    // could. An empty file at --db is someone else's: a wrong path, a placeholder, a file
    // truncated by mistake. Only a path where no file exists is a new database.
    std::error_code size_error;
    if (path != ":memory:" && std::filesystem::is_regular_file(path, size_error) &&
        std::filesystem::file_size(path, size_error) == 0 && !size_error)
        throw StoreError(fmt::format("database {} is empty (0 bytes): it is no errand database, "
                                     "and errand creates a new one only where no file exists "
                                     "(remove the empty file to start a new database there)",
                                     path),
                         false);
    int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("cannot open database {}: {}", path, msg), true);
    }
    try {
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, kBusyTimeoutMs);
        // Look before writing anything: a corrupt, foreign or newer file is refused untouched.
        bool fresh = check_identity();
        // Incremental vacuum lets retention give space back; it must be set before the first
        // table exists, so only a new file gets it.
        if (fresh) exec("PRAGMA auto_vacuum = INCREMENTAL");
        {
            Stmt mode(db_, "PRAGMA auto_vacuum");
            incremental_vacuum_ = mode.step() && mode.i64(0) == 2;
        }
        exec("PRAGMA journal_mode = WAL");
        exec(options.synchronous_full ? "PRAGMA synchronous = FULL"
                                      : "PRAGMA synchronous = NORMAL");
        exec("PRAGMA foreign_keys = ON");
        exec(fmt::format("PRAGMA cache_size = -{}", options.cache_mib * 1024).c_str());
        // A migration's one pass over the rows (version 8's counts) sorts in temporary files,
        // not in memory: on a 10M-row file that was half a GB of RSS kept after it.
        exec("PRAGMA temp_store = FILE");
        migrate();
        exec("PRAGMA temp_store = MEMORY");
        count_epoch(options.synchronous_full);
        st_ = std::make_unique<Statements>(db_);
        reload_held();  // what a crash left in dispatch_log
        next_id_ = max_job_id() + 1;
        {
            auto& seq = st_->event_seq.reset();
            if (!seq.step()) throw StoreError("event_seq has no row", false);
            next_event_ = saved_event_ = seq.i64(0);
            seq.reset();
        }
        if (options.checkpoint_interval_ms > 0 && path != ":memory:") {
            // Start from a checkpointed file: until the database file's own header says WAL
            // (it may so far only be in the WAL), another connection would not see WAL mode.
            exec("PRAGMA wal_checkpoint(TRUNCATE)");
            exec("PRAGMA wal_autocheckpoint = 0");
            sqlite3_wal_hook(
                db_,
                [](void* self, sqlite3*, const char*, int frames) {
                    // Called for a commit that wrote to the WAL (not for one that only read:
                    // retention's look for old jobs every second).
                    static_cast<SqliteStore*>(self)->wal_frames_ = frames;
                    ++static_cast<SqliteStore*>(self)->commits_;
                    return SQLITE_OK;
                },
                this);
            exec("PRAGMA journal_size_limit = 67108864");  // a reset WAL is cut back to 64 MiB
            wal_path_ = path + "-wal";
            start_checkpointer(path, options.checkpoint_interval_ms);
        }
    } catch (const StoreError& e) {
        st_.reset();
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("database {}: {}", path, e.what()), e.disk());
    }
}

SqliteStore::~SqliteStore() {
    // A clean stop leaves every row exact (a crash leaves dispatch_log, read back at open).
    if (st_ && held_back() > 0 && sqlite3_get_autocommit(db_)) {
        try {
            begin();
            materialize();
            commit();
        } catch (const StoreError&) {
            rollback();
        }
    }
    stop_checkpointer();
    // Every statement first: sqlite3_close refuses (SQLITE_BUSY) a connection with statements
    // left, and the connection would then never be closed.
    batch_.reset();
    sched_.reset();
    st_.reset();
    if (db_) sqlite3_close(db_);
}

// WAL frames (pages) after which the checkpointer forces the WAL to start over: 16384 frames
// of 4 KiB = 64 MiB.
constexpr int kWalResetFrames = 16384;
// How often maintain() writes held-back dispatches into their rows: readers of the file (the HTTP
// API's own connection) lag the broker by at most this.
constexpr Millis kMaterializeEveryMs = 1000;
// Free pages maintain() gives back to the file system per pass (8 MiB of 4 KiB pages: a few ms),
// pass after pass until none is left.
constexpr int kReclaimPages = 2048;

// A second connection that copies committed WAL frames back into the database file (PASSIVE:
// it never blocks the broker's writes) so the WAL stays small without commits paying for it.
void SqliteStore::start_checkpointer(const std::string& path, int interval_ms) {
    checkpointer_ = std::thread([this, path, interval_ms] {
        sqlite3* db = nullptr;
        if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            nullptr) != SQLITE_OK) {
            sqlite3_close(db);
            return;
        }
        sqlite3_busy_timeout(db, 0);
        // A connection finds out it is in WAL mode on its first read; before that a checkpoint
        // does nothing (and reports -1 frames).
        sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
        std::unique_lock lock(ckpt_mu_);
        while (!ckpt_stop_) {
            ckpt_cv_.wait_for(lock, std::chrono::milliseconds(interval_ms));
            if (ckpt_stop_) break;
            lock.unlock();
            int log = 0, done = 0;
            sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
            lock.lock();
        }
        sqlite3_close(db);
    });
}

void SqliteStore::stop_checkpointer() {
    if (!checkpointer_.joinable()) return;
    {
        std::lock_guard lock(ckpt_mu_);
        ckpt_stop_ = true;
    }
    ckpt_cv_.notify_all();
    checkpointer_.join();
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

bool SqliteStore::check_identity() {
    // Reading the schema is the first access to the file: "file is not a database" and
    // "malformed" come from here, before any write.
    int tables = 0;
    bool has_version = false;
    {
        Stmt s(db_, "SELECT name FROM sqlite_master WHERE type = 'table'");
        while (s.step()) {
            ++tables;
            if (s.text(0) == "schema_version") has_version = true;
        }
    }
    if (!has_version && tables > 0)
        throw StoreError("not an errand database (it has tables but no schema_version)", false);
    if (has_version) {
        int version = schema_version();
        constexpr int known = static_cast<int>(std::size(kMigrations));
        if (version > known)
            throw StoreError(fmt::format("database schema version {} is newer than this errand "
                                         "understands ({}); upgrade errand",
                                         version, known),
                             false);
    }
    return tables == 0;
}

void SqliteStore::migrate() {
    exec("BEGIN IMMEDIATE");
    try {
        // Checked again inside the write transaction: another process may have raced us.
        if (check_identity()) {
            exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
            exec("INSERT INTO schema_version VALUES (0)");
        }
        int version = schema_version();
        constexpr int known = static_cast<int>(std::size(kMigrations));
        for (int v = version; v < known; ++v)
            exec(kMigrations[v]);
        if (version != known) {
            exec(fmt::format("UPDATE schema_version SET version = {}", known).c_str());
            // A migration may edit sqlite_schema's text (writable_schema): a new schema cookie
            // makes every connection, this one included, read the schema again.
            std::int64_t cookie = 0;
            {
                Stmt s(db_, "PRAGMA schema_version");
                if (s.step()) cookie = s.i64(0);
            }
            exec(fmt::format("PRAGMA schema_version = {}", cookie + 1).c_str());
        }
        exec("COMMIT");
    } catch (...) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

// This open's epoch, synced before anything is dispatched whatever --synchronous says: an epoch
// lost in a power cut would be handed out again, and with it the fencing tokens of its dispatches.
void SqliteStore::count_epoch(bool synchronous_full) {
    if (!synchronous_full) exec("PRAGMA synchronous = FULL");
    exec("BEGIN IMMEDIATE");
    try {
        exec("UPDATE broker_epoch SET n = n + 1");
        sqlite3_stmt* s = nullptr;
        int rc = sqlite3_prepare_v2(db_, "SELECT n FROM broker_epoch", -1, &s, nullptr);
        if (rc != SQLITE_OK) fail(db_, rc, "epoch");
        if (sqlite3_step(s) == SQLITE_ROW)
            epoch_ = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
        sqlite3_finalize(s);
        exec("COMMIT");
    } catch (...) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
    if (!synchronous_full) exec("PRAGMA synchronous = NORMAL");
}

void SqliteStore::begin() {
    if (sqlite3_get_autocommit(db_)) st_->begin.run();
}

bool SqliteStore::writing() const {
    return !sqlite3_get_autocommit(db_);
}

void SqliteStore::commit() {
    if (!writing()) return;
    try {
        if (log_.size() > 0) {
            st_->log_insert.reset().bind_blob(1, std::string_view(log_.data(), log_.size())).run();
            log_.clear();
        }
        flush_counts();
        st_->commit.run();
        // Under continuous writes the checkpointer's PASSIVE runs never catch up with the last
        // commit, so the WAL is never reset and would grow without bound. Past kWalResetFrames
        // the broker's own connection, which holds the write lock anyway, runs a RESTART: it
        // copies the little the checkpointer has not, and the next commit starts the WAL again.
        if (wal_frames_ > kWalResetFrames) {
            int log = 0, done = 0;
            sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_RESTART, &log, &done);
            wal_frames_ = 0;
        }
    } catch (const StoreError&) {
        // A failed COMMIT may leave the transaction open; make sure it is gone.
        rollback();
        throw;
    }
}

void SqliteStore::rollback() {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    // The transaction's dispatches never happened; the held-back ones are those of committed
    // transactions, as dispatch_log has them.
    log_.clear();
    count_delta_.clear();
    saved_event_ = -1;  // the rolled-back transaction may have written event_seq
    reload_held();
    next_id_ = max_job_id() + 1;  // ids of the rolled-back inserts were never acknowledged
    // (event ids of the rolled-back writes are skipped: only their order matters)
}

Inserted SqliteStore::insert_job(const NewJob& job, const std::string& reason) {
    begin();
    const bool inline_payload = job.spec.payload.size() <= kInlinePayload;
    const std::string first = pack_event(
        Event{to_time(job.created_at), std::nullopt, job.state, 0, std::nullopt, reason});
    auto& s = st_->insert.reset();
    s.bind(1, static_cast<std::int64_t>(next_id_))
        .bind_opt_ref(2, job.spec.token)
        .bind_ref(3, job.spec.queue)
        .bind_ref(4, to_string(job.state))
        .bind_blob_ref(5, inline_payload ? std::string_view(job.spec.payload) : std::string_view());
    if (job.spec.argv)
        s.bind_blob(6, pack_argv(*job.spec.argv));
    else
        s.bind_null(6);
    s.bind(7, static_cast<std::int64_t>(job.spec.priority.value_or(0)))
        .bind(8, static_cast<std::int64_t>(
                     job.spec.max_attempts.value_or(limits::kDefaultMaxAttempts)))
        .bind_opt(9, job.run_at)
        .bind(10, job.created_at)
        .bind_opt(11, to_ms(job.spec.timeout))
        .bind_opt(12, to_ms(job.spec.backoff))
        .bind_opt(13, to_ms(job.spec.backoff_cap))
        .bind_opt_ref(14, job.spec.unique)
        .bind_blob_ref(15, first)
        .bind_opt(16, job.expires_at)
        .bind_opt(17, job.spec.batch)
        .run();
    if (sqlite3_changes(db_) == 0)  // the token is taken: a resent submit
        return {find_token(*job.spec.token).value_or(0), true};
    if (!inline_payload)
        st_->insert_payload.reset()
            .bind(1, static_cast<std::int64_t>(next_id_))
            .bind_blob_ref(2, job.spec.payload)
            .run();
    return {next_id_++, false};
}

// ---- Held-back dispatches ----------------------------------------------------------------
// A dispatch (ready or retrying -> running) would be the second of the two row writes of a job
// that runs once: the UPDATE rewrites the row and moves it in jobs_live. Instead apply() keeps it
// in held_ and appends it to log_, which commit() writes as one dispatch_log row per transaction:
// durable before the DISPATCH leaves, one b-tree append per pass instead of an UPDATE per job.
// The job's next transition writes both into the row at once (both events in its history), and
// materialize() writes the rest and empties the log (the broker calls it every second, so readers
// of the file lag by at most that). At open and after a rollback, held_ is rebuilt from the log:
// an entry counts only while its job's row has fewer attempts (every dispatch adds one), so a
// log entry whose dispatch is already in the row is ignored.

// Compare-and-set: a job with a held dispatch is checked against it in memory (its row is one
// change behind); any other against its row, by the UPDATE's WHERE. A dispatch itself is not
// checked against the row: that would cost a read per dispatch, and on SQLite the broker that
// holds the file is its only writer, so memory and rows cannot disagree without a bug.
bool SqliteStore::apply(const Transition& t) {
    begin();
    if (t.to == JobState::running && t.attempts && !t.set_outcome && !t.max_attempts && !t.run_at &&
        !t.finished_at) {
        if (auto it = held_.find(t.id); it != held_.end()) write_held(it);  // never expected
        msgpack::packer<msgpack::sbuffer> pk(log_);
        pack_dispatch(pk, t);
        ++logged_;
        Held& h = held_.insert_or_assign(t.id, Held{t, event_of(t)}).first->second;
        h.t.queue = {};  // the caller's, gone after this call
        return true;
    }
    const Event event = event_of(t);
    auto it = held_.find(t.id);
    if (it == held_.end())
        return write_row(t, {&event, 1}, t.to == JobState::running, RowIs{t.from, t.from_attempts});
    // The held dispatch and this transition in one row write; this one's fields win.
    const Transition& d = it->second.t;
    if (t.from != JobState::running || t.from_attempts != d.attempts.value_or(0)) return false;
    Transition merged = t;
    if (!merged.attempts) merged.attempts = d.attempts;
    if (!merged.worker) merged.worker = d.worker;
    if (!merged.started_at) merged.started_at = d.started_at;
    const Event both[] = {it->second.event, event};
    if (!write_row(merged, both, true, RowIs{d.from, *d.attempts - 1})) return false;
    held_.erase(it);
    return true;
}

void SqliteStore::write_held(std::unordered_map<JobId, Held>::iterator it) {
    write_row(it->second.t, {&it->second.event, 1}, true, std::nullopt);
    held_.erase(it);
}

void SqliteStore::maintain(Millis now) {
    if (commits_ != commits_seen_) {
        commits_seen_ = commits_;
        quiet_since_ = now;
        wal_cut_ = false;
    } else if (!wal_cut_ && !reclaim_due_ && held_back() == 0 && now - quiet_since_ >= 1000 &&
               !wal_path_.empty() && sqlite3_get_autocommit(db_)) {
        cut_wal();
    }
    if (now >= next_materialize_) {
        if (held_back() > 0) materialize();
        next_materialize_ = now + kMaterializeEveryMs;
    }
    if (reclaim_due_) {
        begin();
        reclaim_due_ = reclaim_space(kReclaimPages) > 0;
    }
}

// The WAL file keeps its size after a checkpoint (up to journal_size_limit, 64 MiB) so that a
// steady load does not grow it again and again; once the broker has been idle for a second, a
// file over 4 MiB is checkpointed and cut to nothing (TRUNCATE). Without waiting: if the
// checkpointer or an HTTP reader is in the way, it is tried again at the next idle pass.
void SqliteStore::cut_wal() {
    std::error_code ec;
    const auto size = std::filesystem::file_size(wal_path_, ec);
    if (ec || size <= 4 * 1024 * 1024) {
        wal_cut_ = true;
        return;
    }
    sqlite3_busy_timeout(db_, 0);
    int log = 0, done = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    if (rc == SQLITE_OK) wal_cut_ = true;
}

void SqliteStore::materialize() {
    if (held_back() == 0) return;
    begin();
    for (const auto& [id, h] : held_)
        write_row(h.t, {&h.event, 1}, true, std::nullopt);
    held_.clear();
    log_.clear();
    st_->log_clear.reset().run();
    logged_ = 0;
}

std::size_t SqliteStore::held_back() const {
    return held_.size() + logged_;
}

void SqliteStore::reload_held() {
    held_.clear();
    logged_ = 0;
    std::unordered_map<JobId, Transition> last;
    auto& s = st_->log_read.reset();
    while (s.step()) {
        auto row = s.blob(0);
        for (auto& t : unpack_dispatches(row.data(), static_cast<int>(row.size()))) {
            ++logged_;
            JobId id = t.id;
            last.insert_or_assign(id, std::move(t));
        }
    }
    s.reset();
    for (auto& [id, t] : last) {
        auto& r = st_->row_state.reset();
        r.bind(1, static_cast<std::int64_t>(id));
        bool held = r.step() && r.i64(0) < static_cast<std::int64_t>(*t.attempts);
        r.reset();
        if (!held) continue;
        Event event = event_of(t);
        held_.emplace(id, Held{std::move(t), std::move(event)});
    }
}

void SqliteStore::overlay(JobInfo& j) const {
    auto it = held_.find(j.id);
    if (it == held_.end()) return;
    const Transition& t = it->second.t;
    j.state = JobState::running;
    j.attempts = *t.attempts;
    if (t.worker) j.worker = t.worker;
    if (t.started_at) j.started_at = to_time(t.started_at);
    j.run_at.reset();
    j.finished_at.reset();
    j.progress.reset();
    j.progress_message.reset();
}

void SqliteStore::overlay(LiveJob& j) const {
    auto it = held_.find(j.id);
    if (it == held_.end()) return;
    const Transition& t = it->second.t;
    j.state = JobState::running;
    j.attempts = *t.attempts;
    j.epoch = t.epoch;
    if (t.worker) j.worker = t.worker;
    if (t.started_at) j.started_at = t.started_at;
    j.run_at.reset();
}

bool SqliteStore::write_row(const Transition& t, std::span<const Event> events, bool reset_progress,
                            std::optional<RowIs> expect) {
    auto& s = st_->update.reset();
    if (expect && expect->state) {
        s.bind(15, to_string(*expect->state));
        s.bind(16, static_cast<std::int64_t>(expect->attempts));
    } else {
        s.bind_null(15);
        s.bind_null(16);
    }
    s.bind(1, static_cast<std::int64_t>(t.id))
        .bind_ref(2, to_string(t.to))
        .bind_opt(3, t.attempts)
        .bind_opt_ref(4, t.worker)
        .bind_opt(5, t.run_at)
        .bind_opt(6, t.started_at)
        .bind_opt(7, t.finished_at)
        .bind(8, std::int64_t{t.set_outcome ? 1 : 0})
        .bind_opt(9, t.exit_code)
        .bind_opt_blob(10, t.result)
        .bind_opt_ref(11, t.error)
        .bind_opt(12, t.max_attempts)
        .bind(14, std::int64_t{reset_progress ? 1 : 0})
        .bind(17, std::int64_t{t.epoch})
        .run();
    if (sqlite3_changes(db_) != 1) {
        if (!expect)
            throw StoreError(fmt::format("job {} vanished from the database", t.id), false);
        return false;
    }
    if (events.size() == 2) {
        auto& s2 = st_->insert_events2.reset();
        s2.bind(1, static_cast<std::int64_t>(t.id));
        bind_event(s2, 2, next_event_++, events[0]);
        bind_event(s2, 9, next_event_++, events[1]);
        s2.run();
    } else {
        for (const auto& e : events)
            write_event(t.id, e);
    }
    // Finished jobs are counted (job_counts), the others are not.
    if (t.from && is_terminal(*t.from) != is_terminal(t.to)) {
        std::string looked_up;
        std::string_view queue = t.queue;
        if (queue.empty()) {  // the engine always says; read it for any other caller
            auto& r = st_->row_state.reset();
            r.bind(1, static_cast<std::int64_t>(t.id));
            if (r.step()) looked_up = r.text(1);
            r.reset();
            queue = looked_up;
        }
        if (is_terminal(t.to)) count(queue, t.to, 1);
        if (is_terminal(*t.from)) count(queue, *t.from, -1);
    }
    return true;
}

void SqliteStore::count(std::string_view queue, JobState state, std::int64_t by) {
    auto it = count_delta_.find(queue);
    if (it == count_delta_.end())
        it = count_delta_.emplace(std::string(queue), StateDeltas{}).first;
    it->second[static_cast<std::size_t>(state)] += by;
}

void SqliteStore::flush_counts() {
    for (const auto& [queue, deltas] : count_delta_)
        for (std::size_t i = 0; i < deltas.size(); ++i)
            if (deltas[i] != 0)
                st_->add_count.reset()
                    .bind_ref(1, queue)
                    .bind_ref(2, to_string(static_cast<JobState>(i)))
                    .bind(3, deltas[i])
                    .run();
    count_delta_.clear();
    if (next_event_ != saved_event_) {
        st_->save_event_seq.reset().bind(1, next_event_).run();
        saved_event_ = next_event_;
    }
}

void SqliteStore::write_event(JobId job, const Event& e) {
    auto& s = st_->insert_event.reset();
    s.bind(1, static_cast<std::int64_t>(job));
    bind_event(s, 2, next_event_++, e);
    s.run();
}

std::optional<JobId> SqliteStore::find_token(const std::string& token) {
    auto& s = st_->token.reset();
    s.bind(1, std::string_view(token));
    std::optional<JobId> id;
    if (s.step()) id = static_cast<JobId>(s.i64(0));
    s.reset();
    return id;
}

// ---- job dependencies -----------------------------------------------------------------------
// Rare calls (a submit with parents, a job that has children): statements made per call.

std::vector<std::pair<JobId, JobState>> SqliteStore::parent_states(const std::vector<JobId>& ids) {
    std::vector<std::pair<JobId, JobState>> out;
    Stmt s(db_, "SELECT state FROM jobs WHERE id = ?1");
    for (JobId id : ids) {
        s.reset();
        s.bind(1, static_cast<std::int64_t>(id));
        if (s.step())
            out.emplace_back(id, held_.count(id) ? JobState::running : stored_state(s.text(0)));
    }
    return out;
}

void SqliteStore::add_parents(JobId child, const std::vector<JobId>& parents, bool any) {
    begin();
    Stmt e(db_, "INSERT INTO job_deps (child, parent, after_any) VALUES (?1, ?2, ?3)");
    for (JobId p : parents) {
        e.reset();
        e.bind(1, static_cast<std::int64_t>(child))
            .bind(2, static_cast<std::int64_t>(p))
            .bind(3, any ? 1 : 0)
            .run();
    }
    Stmt c(db_, "UPDATE jobs SET blocked_on = ?2 WHERE id = ?1");
    c.bind(1, static_cast<std::int64_t>(child))
        .bind(2, static_cast<std::int64_t>(parents.size()))
        .run();
}

std::vector<ChildEdge> SqliteStore::take_children(JobId parent) {
    begin();
    std::vector<ChildEdge> out;
    Stmt s(db_, "DELETE FROM job_deps WHERE parent = ?1 RETURNING child, after_any");
    s.bind(1, static_cast<std::int64_t>(parent));
    while (s.step())
        out.push_back({static_cast<JobId>(s.i64(0)), s.i64(1) != 0});
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.child < b.child; });
    return out;
}

std::optional<std::uint32_t> SqliteStore::parent_finished(JobId child) {
    begin();
    Stmt s(db_,
           "UPDATE jobs SET blocked_on = blocked_on - 1 WHERE id = ?1 AND state = 'blocked' "
           "AND blocked_on > 0 RETURNING blocked_on");
    s.bind(1, static_cast<std::int64_t>(child));
    std::optional<std::uint32_t> left;
    if (s.step()) left = static_cast<std::uint32_t>(s.i64(0));
    while (s.step()) {
    }
    return left;
}

std::vector<JobId> SqliteStore::parents() {
    std::vector<JobId> out;
    Stmt s(db_, "SELECT DISTINCT parent FROM job_deps");
    while (s.step())
        out.push_back(static_cast<JobId>(s.i64(0)));
    return out;
}

std::optional<JobInfo> SqliteStore::get_job(JobId id) {
    auto& s = st_->get.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<JobInfo> job;
    if (s.step()) job = read_job(s);
    s.reset();
    if (job) overlay(*job);
    return job;
}

std::vector<JobInfo> SqliteStore::list_jobs(const ListRequest& filter) {
    // A state filter runs in SQL: held-back dispatches must be in their rows first.
    if (filter.state && held_back() > 0) materialize();
    auto& s = st_->list.reset();
    s.bind_opt(1, filter.queue);
    if (filter.state)
        s.bind(2, to_string(*filter.state));
    else
        s.bind_null(2);
    s.bind(3, static_cast<std::int64_t>(filter.limit));
    std::vector<JobInfo> out;
    while (s.step()) {
        out.push_back(read_job(s));
        overlay(out.back());
    }
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
    // The index gives them by state, then id.
    std::vector<LiveJob> jobs;
    auto& s = st_->live.reset();
    while (s.step()) {
        auto j = read_live(s);
        j.epoch = static_cast<std::uint32_t>(s.i64(kLiveColumnCount));
        overlay(j);
        jobs.push_back(std::move(j));
    }
    start_steps_ += s.vm_steps();
    s.reset();
    std::sort(jobs.begin(), jobs.end(),
              [](const LiveJob& a, const LiveJob& b) { return a.id < b.id; });
    for (auto& j : jobs)
        fn(std::move(j));
}

std::optional<LiveJob> SqliteStore::load_live(JobId id) {
    auto& s = st_->live_one.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<LiveJob> j;
    if (s.step()) {
        j = read_live(s);
        j->epoch = static_cast<std::uint32_t>(s.i64(kLiveColumnCount));
    }
    s.reset();
    if (j) overlay(*j);
    return j;
}

std::vector<QueueStateCount> SqliteStore::count_jobs() {
    std::vector<QueueStateCount> out;
    for (Stmt* s : {&st_->count.reset(), &st_->count_live.reset()}) {
        while (s->step())
            out.push_back(
                {s->text(0), stored_state(s->text(1)), static_cast<std::uint64_t>(s->i64(2))});
        start_steps_ += s->vm_steps();
        s->reset();
    }
    // Held-back dispatches: counted in their row's state, they are running.
    auto bump = [&out](const std::string& queue, JobState state, int by) {
        auto it = std::find_if(out.begin(), out.end(), [&](const QueueStateCount& c) {
            return c.queue == queue && c.state == state;
        });
        if (it == out.end()) it = out.insert(out.end(), {queue, state, 0});
        it->count = static_cast<std::uint64_t>(static_cast<std::int64_t>(it->count) + by);
    };
    for (const auto& entry : held_) {
        auto& r = st_->row_state.reset();
        r.bind(1, static_cast<std::int64_t>(entry.first));
        if (r.step()) {
            auto queue = r.text(1);
            bump(queue, stored_state(r.text(2)), -1);
            bump(queue, JobState::running, 1);
        }
        r.reset();
    }
    for (const auto& [queue, deltas] : count_delta_)  // this transaction's, not yet flushed
        for (std::size_t i = 0; i < deltas.size(); ++i)
            if (deltas[i] != 0) bump(queue, static_cast<JobState>(i), static_cast<int>(deltas[i]));
    std::erase_if(out, [](const QueueStateCount& c) { return c.count == 0; });
    return out;
}

void SqliteStore::set_progress(JobId id, std::uint32_t percent, const std::string& message) {
    begin();
    // The dispatch goes into the row first: written later, it would clear this progress.
    if (auto it = held_.find(id); it != held_.end()) write_held(it);
    st_->progress.reset()
        .bind(1, static_cast<std::int64_t>(id))
        .bind(2, static_cast<std::int64_t>(percent))
        .bind(3, std::string_view(message))
        .run();
}

std::vector<Event> SqliteStore::events(JobId id) {
    auto out = read_events(id, st_->events.reset(), st_->history.reset());
    if (auto it = held_.find(id); it != held_.end()) out.push_back(it->second.event);
    return out;
}

void SqliteStore::set_paused(const std::string& queue, bool paused) {
    begin();
    st_->set_paused.reset()
        .bind(1, std::string_view(queue))
        .bind(2, std::int64_t{paused ? 1 : 0})
        .bind_null(3)
        .run();
}

void SqliteStore::pause_until(const std::string& queue, Millis until) {
    begin();
    st_->set_paused.reset()
        .bind(1, std::string_view(queue))
        .bind(2, std::int64_t{1})
        .bind(3, until)
        .run();
}

bool SqliteStore::resume_due(const std::string& queue, Millis until) {
    begin();
    st_->resume_due.reset().bind(1, std::string_view(queue)).bind(2, until).run();
    return sqlite3_changes(db_) == 1;
}

std::vector<std::pair<std::string, Millis>> SqliteStore::pause_deadlines() {
    auto& s = st_->pause_deadlines.reset();
    std::vector<std::pair<std::string, Millis>> out;
    while (s.step())
        out.emplace_back(s.text(0), s.i64(1));
    s.reset();
    return out;
}

std::vector<std::string> SqliteStore::paused_queues() {
    auto& s = st_->paused.reset();
    std::vector<std::string> out;
    while (s.step())
        out.push_back(s.text(0));
    s.reset();
    return out;
}

void SqliteStore::set_queue_limits(const std::string& queue, const QueueLimits& l) {
    begin();
    auto wide = [](const std::optional<std::uint32_t>& v) -> std::optional<std::int64_t> {
        if (!v) return std::nullopt;
        return std::int64_t{*v};
    };
    st_->set_limits.reset()
        .bind(1, std::string_view(queue))
        .bind_opt(2, wide(l.max_running))
        .bind_opt(3, wide(l.rate))
        .bind_opt(4, l.rate_per_ms)
        .bind_opt(5, wide(l.max_attempts))
        .bind_opt(6, l.timeout_ms)
        .bind_opt(7, l.priority ? std::optional<std::int64_t>(*l.priority) : std::nullopt)
        .bind_opt(8, l.retention_ms)
        .bind_opt(9, l.expires_in_ms)
        .run();
}

std::vector<std::pair<std::string, QueueLimits>> SqliteStore::queue_limits() {
    auto& s = st_->limits.reset();
    std::vector<std::pair<std::string, QueueLimits>> out;
    auto narrow = [](std::optional<std::int64_t> v) -> std::optional<std::uint32_t> {
        if (!v) return std::nullopt;
        return static_cast<std::uint32_t>(*v);
    };
    while (s.step()) {
        QueueLimits l{narrow(s.opt_i64(1)), narrow(s.opt_i64(2)), s.opt_i64(3),
                      narrow(s.opt_i64(4)), s.opt_i64(5),         std::nullopt};
        if (auto p = s.opt_i64(6)) l.priority = static_cast<std::int32_t>(*p);
        l.retention_ms = s.opt_i64(7);
        l.expires_in_ms = s.opt_i64(8);
        out.emplace_back(s.text(0), l);
    }
    s.reset();
    return out;
}

std::vector<JobId> SqliteStore::dead_jobs(const std::optional<std::string>& queue,
                                          std::size_t limit) {
    auto& s = st_->dead.reset();
    s.bind_opt(1, queue).bind(2, static_cast<std::int64_t>(limit));
    std::vector<JobId> out;
    while (s.step())
        out.push_back(static_cast<JobId>(s.i64(0)));
    s.reset();
    return out;
}

std::vector<Removed> SqliteStore::remove_finished(std::optional<JobState> state,
                                                  const std::optional<std::string>& queue,
                                                  Millis finished_before, std::size_t limit,
                                                  bool skip_own_retention) {
    begin();
    // One state at a time, each through its part of jobs_finished (state, finished_at).
    std::vector<std::pair<JobId, std::pair<std::string, JobState>>> rows;
    for (JobState st : kAllStates) {
        if (!is_terminal(st) || (state && st != *state) || rows.size() >= limit) continue;
        auto& s = st_->finished.reset();
        s.bind(1, finished_before).bind(2, to_string(st)).bind_opt(3, queue);
        s.bind(4, static_cast<std::int64_t>(limit - rows.size()));
        s.bind(5, std::int64_t{skip_own_retention ? 1 : 0});
        while (s.step())
            rows.push_back({static_cast<JobId>(s.i64(0)), {s.text(1), stored_state(s.text(2))}});
        s.reset();
    }
    std::vector<Removed> out;
    JobId highest = 0;
    for (const auto& row : rows)
        highest = std::max(highest, row.first);
    if (highest > 0) st_->raise_floor.reset().bind(1, static_cast<std::int64_t>(highest)).run();
    for (const auto& row : rows) {
        JobId id = row.first;
        const auto& qs = row.second;  // a plain reference: clang < 16 cannot capture bindings
        st_->delete_events.reset().bind(1, static_cast<std::int64_t>(id)).run();
        st_->delete_payload.reset().bind(1, static_cast<std::int64_t>(id)).run();
        st_->delete_job.reset().bind(1, static_cast<std::int64_t>(id)).run();
        auto it = std::find_if(out.begin(), out.end(), [&](const Removed& r) {
            return r.queue == qs.first && r.state == qs.second;
        });
        if (it == out.end())
            out.push_back({qs.first, qs.second, 1});
        else
            ++it->count;
    }
    for (const auto& r : out)
        count(r.queue, r.state, -static_cast<std::int64_t>(r.count));
    if (!rows.empty()) flush_counts();  // so that the counts that reach 0 go now
    if (!rows.empty()) {
        st_->forget_counts.reset().run();  // a queue's count that is 0 is no row
        reclaim_due_ = true;
    }
    return out;
}

std::optional<Removed> SqliteStore::remove_job(JobId id) {
    begin();
    auto& r = st_->row_state.reset();
    r.bind(1, static_cast<std::int64_t>(id));
    if (!r.step()) {
        r.reset();
        return std::nullopt;
    }
    Removed out{r.text(1), stored_state(r.text(2)), 1};
    r.reset();
    if (!is_terminal(out.state) || held_.count(id)) return std::nullopt;  // held: running
    st_->raise_floor.reset().bind(1, static_cast<std::int64_t>(id)).run();
    st_->delete_events.reset().bind(1, static_cast<std::int64_t>(id)).run();
    st_->delete_payload.reset().bind(1, static_cast<std::int64_t>(id)).run();
    st_->delete_job.reset().bind(1, static_cast<std::int64_t>(id)).run();
    count(out.queue, out.state, -1);
    flush_counts();  // so that a count that reaches 0 goes now
    st_->forget_counts.reset().run();
    reclaim_due_ = true;
    return out;
}

int SqliteStore::reclaim_space(int pages) {
    if (!incremental_vacuum_) return 0;  // a file made before errand set auto_vacuum
    exec(fmt::format("PRAGMA incremental_vacuum({})", pages).c_str());
    auto& s = st_->free_pages.reset();
    const int left = s.step() ? static_cast<int>(s.i64(0)) : 0;
    s.reset();
    return left;
}

JobId SqliteStore::max_job_id() {
    auto& s = st_->max_id.reset();
    s.step();
    auto id = static_cast<JobId>(s.i64(0));
    s.reset();
    return id;
}

// ---- Schedules --------------------------------------------------------------------------------

// The columns read_schedule() reads (also SqliteQueryStore::schedules).
constexpr const char* kScheduleColumns =
    "name, cron, zone, catch_up, job, paused, created_at, next_at, last_at, last_job";

// Prepared on first use (a broker without schedules never needs them).
struct SqliteStore::ScheduleStatements {
    static constexpr const char* kColumns = kScheduleColumns;
    explicit ScheduleStatements(sqlite3* db)
        : insert(db,
                 "INSERT INTO schedules (name, cron, zone, catch_up, job, paused, created_at, "
                 "next_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (name) DO NOTHING"),
          remove(db, "DELETE FROM schedules WHERE name = ?1"),
          pause(db, "UPDATE schedules SET paused = ?2, next_at = ?3 WHERE name = ?1"),
          get(db, fmt::format("SELECT {} FROM schedules WHERE name = ?1", kColumns).c_str()),
          list(db,
               fmt::format("SELECT {} FROM schedules ORDER BY name LIMIT ?1", kColumns).c_str()),
          due(db, fmt::format("SELECT {} FROM schedules WHERE paused = 0 AND next_at IS NOT NULL "
                              "AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
                              kColumns)
                      .c_str()),
          advance(db,
                  "UPDATE schedules SET next_at = ?3, last_at = ?4, last_job = ?5 "
                  "WHERE name = ?1 AND next_at = ?2"),
          next(db, "SELECT MIN(next_at) FROM schedules WHERE paused = 0 AND next_at IS NOT NULL") {}
    Stmt insert, remove, pause, get, list, due, advance, next;
};

namespace {
Schedule read_schedule(const Stmt& s) {
    Schedule out;
    out.name = s.text(0);
    out.cron = s.text(1);
    out.zone = s.text(2);
    out.catch_up = s.text(3);
    auto job = s.blob(4);
    Body body(job);
    out.job = decode_job_spec(body.reader());
    out.paused = s.i64(5) != 0;
    out.created_at = to_time(s.i64(6));
    out.next_at = to_time(s.opt_i64(7));
    out.last_at = to_time(s.opt_i64(8));
    if (auto j = s.opt_i64(9)) out.last_job = static_cast<JobId>(*j);
    return out;
}
std::vector<Schedule> read_schedules(Stmt& s) {
    std::vector<Schedule> out;
    try {
        while (s.step())
            out.push_back(read_schedule(s));
    } catch (...) {
        s.reset();
        throw;
    }
    s.reset();
    return out;
}
}  // namespace

SqliteStore::ScheduleStatements& SqliteStore::sched() {
    if (!sched_) sched_ = std::make_unique<ScheduleStatements>(db_);
    return *sched_;
}

bool SqliteStore::insert_schedule(const Schedule& s) {
    begin();
    auto& st = sched().insert.reset();
    st.bind(1, std::string_view(s.name))
        .bind(2, std::string_view(s.cron))
        .bind(3, std::string_view(s.zone))
        .bind(4, std::string_view(s.catch_up))
        .bind_blob(5, encode(s.job))
        .bind(6, std::int64_t{s.paused ? 1 : 0})
        .bind(7, to_ms(s.created_at))
        .bind_opt(8, to_ms(s.next_at))
        .run();
    return sqlite3_changes(db_) > 0;
}

bool SqliteStore::remove_schedule(const std::string& name) {
    begin();
    sched().remove.reset().bind(1, std::string_view(name)).run();
    return sqlite3_changes(db_) > 0;
}

bool SqliteStore::set_schedule_paused(const std::string& name, bool paused,
                                      std::optional<Millis> next_at) {
    begin();
    sched()
        .pause.reset()
        .bind(1, std::string_view(name))
        .bind(2, std::int64_t{paused ? 1 : 0})
        .bind_opt(3, next_at)
        .run();
    return sqlite3_changes(db_) > 0;
}

std::optional<Schedule> SqliteStore::get_schedule(const std::string& name) {
    auto& st = sched().get.reset();
    st.bind(1, std::string_view(name));
    auto all = read_schedules(st);
    if (all.empty()) return std::nullopt;
    return std::move(all.front());
}

std::vector<Schedule> SqliteStore::list_schedules(std::size_t limit) {
    auto& st = sched().list.reset();
    st.bind(1, static_cast<std::int64_t>(limit));
    return read_schedules(st);
}

std::vector<Schedule> SqliteStore::due_schedules(Millis now, std::size_t limit) {
    auto& st = sched().due.reset();
    st.bind(1, now).bind(2, static_cast<std::int64_t>(limit));
    return read_schedules(st);
}

bool SqliteStore::advance_schedule(const std::string& name, Millis from,
                                   const ScheduleAdvance& to) {
    begin();
    sched()
        .advance.reset()
        .bind(1, std::string_view(name))
        .bind(2, from)
        .bind_opt(3, to.next_at)
        .bind_opt(4, to.last_at)
        .bind_opt(5, to.last_job)
        .run();
    return sqlite3_changes(db_) > 0;
}

std::optional<Millis> SqliteStore::next_schedule_at() {
    auto& st = sched().next.reset();
    std::optional<Millis> out;
    if (st.step()) out = st.opt_i64(0);
    st.reset();
    return out;
}

// ---- batches ---------------------------------------------------------------------------------

struct SqliteStore::BatchStatements {
    explicit BatchStatements(sqlite3* db)
        : insert(db,
                 "INSERT INTO batches (description, created_at, on_complete, on_success, token) "
                 "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (token) DO NOTHING RETURNING id"),
          by_token(db, "SELECT id FROM batches WHERE token = ?1"),
          get(db, fmt::format("SELECT {}, {} FROM batches WHERE id = ?1", kBatchColumns,
                              kBatchSpecColumns)
                      .c_str()),
          // (?2 IS 'x'): 1 when the member entered state x (NULL: none), else 0.
          moved(db, fmt::format("UPDATE batches SET total = total + ?6, succeeded = succeeded + "
                                "?2, dead = dead + ?3, cancelled = cancelled + ?4, expired = "
                                "expired + ?5, sealed_at = COALESCE(sealed_at, ?7) WHERE id = ?1 "
                                "AND (?6 = 0 OR sealed_at IS NULL) RETURNING {}",
                                kBatchColumns)
                        .c_str()),
          fired_complete(db,
                         "UPDATE batches SET completed_at = ?2, complete_job = ?3 WHERE id = ?1"),
          fired_success(db,
                        "UPDATE batches SET succeeded_at = ?2, success_job = ?3, "
                        "completed_at = COALESCE(completed_at, ?2) WHERE id = ?1"),
          failed(db,
                 "SELECT id FROM jobs WHERE batch_id = ?1 AND state IN ('dead', 'cancelled', "
                 "'expired') ORDER BY id LIMIT ?2"),
          list(db, fmt::format("SELECT {} FROM batches WHERE ?1 IS NULL OR id < ?1 "
                               "ORDER BY id DESC LIMIT ?2",
                               kBatchColumns)
                       .c_str()),
          remove(db,
                 "DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE completed_at < "
                 "CASE WHEN dead > 0 THEN ?3 ELSE ?1 END AND succeeded + dead + cancelled + "
                 "expired = total LIMIT ?2)") {}
    Stmt insert, by_token, get, moved, fired_complete, fired_success, failed, list, remove;
};

SqliteStore::BatchStatements& SqliteStore::batch() {
    if (!batch_) batch_ = std::make_unique<BatchStatements>(db_);
    return *batch_;
}

Inserted SqliteStore::insert_batch(const BatchInfo& b, const std::optional<std::string>& token) {
    begin();
    auto& st = batch().insert.reset();
    st.bind(1, std::string_view(b.description)).bind(2, to_ms(b.created_at));
    if (b.on_complete)
        st.bind_blob(3, encode(*b.on_complete));
    else
        st.bind_null(3);
    if (b.on_success)
        st.bind_blob(4, encode(*b.on_success));
    else
        st.bind_null(4);
    st.bind_opt(5, token);
    if (st.step()) {
        auto id = static_cast<JobId>(st.i64(0));
        while (st.step()) {
        }
        st.reset();
        return {id, false};
    }
    st.reset();
    auto& known = batch().by_token.reset();
    known.bind(1, std::string_view(token.value_or("")));
    if (!token || !known.step()) throw StoreError("a new batch got no id", false);
    Inserted out{static_cast<JobId>(known.i64(0)), true};
    known.reset();
    return out;
}

std::optional<BatchInfo> SqliteStore::get_batch(JobId id, bool specs) {
    auto& st = batch().get.reset();
    st.bind(1, static_cast<std::int64_t>(id));
    std::optional<BatchInfo> out;
    try {
        if (st.step()) out = read_batch(st, specs);
    } catch (...) {
        st.reset();
        throw;
    }
    st.reset();
    return out;
}

std::optional<BatchInfo> SqliteStore::batch_moved(JobId id, const BatchDelta& d) {
    begin();
    auto& st = batch().moved.reset();
    st.bind(1, static_cast<std::int64_t>(id))
        .bind(2, d.succeeded)
        .bind(3, d.dead)
        .bind(4, d.cancelled)
        .bind(5, d.expired)
        .bind(6, d.total)
        .bind_opt(7, d.seal);
    std::optional<BatchInfo> out;
    const auto steps = st.vm_steps();  // counted over the statement's life
    if (st.step()) out = read_batch(st, false);
    // RETURNING: the row is written when the statement has run to its end.
    while (st.step()) {
    }
    batch_steps_ += st.vm_steps() - steps;
    st.reset();
    return out;
}

void SqliteStore::batch_fired(JobId id, bool success, std::optional<JobId> job, Millis now) {
    begin();
    auto& st = success ? batch().fired_success : batch().fired_complete;
    st.reset().bind(1, static_cast<std::int64_t>(id)).bind(2, now).bind_opt(3, job).run();
}

std::vector<JobId> SqliteStore::batch_failed(JobId id, std::size_t limit) {
    auto& st = batch().failed.reset();
    st.bind(1, static_cast<std::int64_t>(id)).bind(2, static_cast<std::int64_t>(limit));
    std::vector<JobId> out;
    while (st.step())
        out.push_back(static_cast<JobId>(st.i64(0)));
    st.reset();
    return out;
}

std::vector<BatchInfo> SqliteStore::list_batches(std::size_t limit, std::optional<JobId> before) {
    auto& st = batch().list.reset();
    st.bind_opt(1, before).bind(2, static_cast<std::int64_t>(limit));
    std::vector<BatchInfo> out;
    try {
        while (st.step())
            out.push_back(read_batch(st, false));
    } catch (...) {
        st.reset();
        throw;
    }
    st.reset();
    return out;
}

std::size_t SqliteStore::remove_batches(Millis before, Millis dead_before, std::size_t limit) {
    begin();
    batch()
        .remove.reset()
        .bind(1, before)
        .bind(2, static_cast<std::int64_t>(limit))
        .bind(3, dead_before)
        .run();
    return static_cast<std::size_t>(sqlite3_changes(db_));
}

// ---- SqliteQueryStore ----------------------------------------------------------------------

// The filters of a page of jobs (JobPage): ?1 queue, ?2 state, ?5 unique key, ?6 a substring of
// the error, any case (ASCII). The queue and live states use their indexes (jobs_queue,
// jobs_live); the rest is a scan by id that the progress budget below bounds.
constexpr const char* kPageWhere =
    "(?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2) AND "
    "(?5 IS NULL OR unique_key = ?5) AND (?6 IS NULL OR instr(lower(error), lower(?6)) > 0)";

// Virtual-machine steps one query of the HTTP side may take are counted in units of
// kProgressEvery (SqliteQueryStore's scan budget); past the budget SQLITE_INTERRUPT ends the
// query (a StoreError for the request, and the read connection is free again).
constexpr int kProgressEvery = 1000;

struct SqliteQueryStore::Statements {
    explicit Statements(sqlite3* db)
        : get(db, fmt::format("SELECT {} FROM jobs WHERE id = ?1", kSqliteJobColumns).c_str()),
          events(db, kEventsOfJob),
          history(db, "SELECT history FROM jobs WHERE id = ?1"),
          page(db, fmt::format("SELECT {} FROM jobs WHERE {} AND (?3 IS NULL OR id < ?3) "
                               "ORDER BY id DESC LIMIT ?4",
                               kSqliteJobColumns, kPageWhere)
                       .c_str()),
          count(db, fmt::format("SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {} LIMIT ?4)",
                                kPageWhere)
                        .c_str()),
          payload(db,
                  "SELECT substr(COALESCE((SELECT payload FROM payloads WHERE job_id = ?1), "
                  "payload), 1, ?2) FROM jobs WHERE id = ?1"),
          pages(db, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()") {}
    Stmt get, events, history, page, count, payload, pages;
    std::optional<Stmt> schedules;  // prepared on first use
    std::optional<Stmt> batches, batch;
};

namespace {

int spend_budget(void* left) {
    auto& n = *static_cast<int*>(left);
    return --n < 0 ? 1 : 0;  // nonzero interrupts the statement
}

void bind_filters(Stmt& s, const JobPage& page) {
    s.bind_opt(1, page.queue);
    if (page.state)
        s.bind(2, to_string(*page.state));
    else
        s.bind_null(2);
    s.bind_opt(5, page.unique_key);
    if (page.error_contains && !page.error_contains->empty())
        s.bind(6, std::string_view(*page.error_contains));
    else
        s.bind_null(6);
}

}  // namespace

SqliteQueryStore::SqliteQueryStore(const std::string& path, int scan_budget)
    : scan_budget_(scan_budget), path_(path) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError(fmt::format("cannot open database {} for reading: {}", path, msg), true);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 2000);
    sqlite3_progress_handler(db_, kProgressEvery, spend_budget, &budget_);
    try {
        st_ = std::make_unique<Statements>(db_);
    } catch (...) {
        sqlite3_close(db_);
        throw;
    }
}

SqliteQueryStore::~SqliteQueryStore() {
    st_.reset();
    sqlite3_close(db_);
}

std::optional<JobInfo> SqliteQueryStore::get_job(JobId id) {
    budget_ = scan_budget_;
    auto& s = st_->get.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<JobInfo> job;
    if (s.step()) job = read_job(s);
    s.reset();
    return job;
}

std::vector<Event> SqliteQueryStore::events(JobId id) {
    budget_ = scan_budget_;
    return read_events(id, st_->events.reset(), st_->history.reset());
}

std::vector<JobInfo> SqliteQueryStore::jobs(const JobPage& page) {
    budget_ = scan_budget_;
    auto& s = st_->page.reset();
    bind_filters(s, page);
    s.bind_opt(3, page.before);
    s.bind(4, static_cast<std::int64_t>(page.limit));
    std::vector<JobInfo> out;
    try {
        while (s.step())
            out.push_back(read_job(s));
    } catch (const StoreError&) {
        if (budget_ >= 0) throw;
        throw StoreError("the search scanned too many jobs: narrow it by queue or state", false);
    }
    s.reset();
    return out;
}

std::uint64_t SqliteQueryStore::count(const JobPage& page, std::uint64_t cap) {
    budget_ = scan_budget_;
    auto& s = st_->count.reset();
    bind_filters(s, page);
    s.bind(4, static_cast<std::int64_t>(cap));
    std::uint64_t n = 0;
    try {
        if (s.step()) n = static_cast<std::uint64_t>(s.i64(0));
    } catch (const StoreError&) {
        if (budget_ >= 0) throw;
        throw StoreError("the count scanned too many jobs: narrow it by queue or state", false);
    }
    s.reset();
    return n;
}

std::optional<std::string> SqliteQueryStore::payload(JobId id, std::size_t max) {
    budget_ = scan_budget_;
    auto& s = st_->payload.reset();
    s.bind(1, static_cast<std::int64_t>(id));
    s.bind(2, static_cast<std::int64_t>(max));
    std::optional<std::string> out;
    if (s.step()) out = s.blob(0);
    s.reset();
    return out;
}

std::optional<std::uint64_t> SqliteQueryStore::size_bytes() {
    budget_ = scan_budget_;
    auto& s = st_->pages.reset();
    std::uint64_t bytes = 0;
    if (s.step()) bytes = static_cast<std::uint64_t>(s.i64(0));
    s.reset();
    std::error_code ec;
    auto wal = std::filesystem::file_size(path_ + "-wal", ec);
    if (!ec) bytes += wal;
    return bytes;
}

std::vector<Schedule> SqliteQueryStore::schedules(std::size_t limit) {
    budget_ = scan_budget_;
    // Prepared on first use, as the writer's ScheduleStatements.
    if (!st_->schedules)
        st_->schedules.emplace(
            db_, fmt::format("SELECT {} FROM schedules ORDER BY name LIMIT ?1", kScheduleColumns)
                     .c_str());
    auto& s = st_->schedules->reset();
    s.bind(1, static_cast<std::int64_t>(limit));
    return read_schedules(s);
}

// As the writer's BatchStatements list and get.
std::vector<BatchInfo> SqliteQueryStore::batches(std::size_t limit, std::optional<JobId> before) {
    budget_ = scan_budget_;
    if (!st_->batches)
        st_->batches.emplace(db_, fmt::format("SELECT {} FROM batches WHERE ?1 IS NULL OR id < ?1 "
                                              "ORDER BY id DESC LIMIT ?2",
                                              kBatchColumns)
                                      .c_str());
    auto& s = st_->batches->reset();
    s.bind_opt(1, before).bind(2, static_cast<std::int64_t>(limit));
    std::vector<BatchInfo> out;
    try {
        while (s.step())
            out.push_back(read_batch(s, false));
    } catch (...) {
        s.reset();  // a statement left mid-way would hold the read snapshot
        throw;
    }
    s.reset();
    return out;
}

std::optional<BatchInfo> SqliteQueryStore::batch(JobId id) {
    budget_ = scan_budget_;
    if (!st_->batch)
        st_->batch.emplace(db_, fmt::format("SELECT {}, {} FROM batches WHERE id = ?1",
                                            kBatchColumns, kBatchSpecColumns)
                                    .c_str());
    auto& s = st_->batch->reset();
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<BatchInfo> out;
    try {
        if (s.step()) out = read_batch(s, true);  // a damaged spec throws
    } catch (...) {
        s.reset();
        throw;
    }
    s.reset();
    return out;
}

}  // namespace errand::broker
