// Unit tests of the SQLite store against real files in a temp directory.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

#include "errand/clock.hpp"
#include "store_sqlite.hpp"

using namespace errand;
using namespace errand::broker;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "errand-store-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() { fs::remove_all(path); }
    std::string db() const { return (path / "errand.db").string(); }
};

// A new job; `id` only names its payload and creation time (the store assigns ids, counting up
// from 1 in a new file, so tests insert in id order).
NewJob job(JobId id, const std::string& queue, std::optional<std::string> token = std::nullopt) {
    NewJob j;
    j.spec.queue = queue;
    j.spec.payload = "payload-" + std::to_string(id);
    j.spec.token = std::move(token);
    j.created_at = 1000 + static_cast<Millis>(id);
    return j;
}

// Runs `sql` on its own connection to `db`: the SQLite result code, and SQLite's message.
std::pair<int, std::string> exec_sql(const std::string& db, const char* sql) {
    sqlite3* h = nullptr;
    sqlite3_open(db.c_str(), &h);
    char* err = nullptr;
    int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
    std::string message = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(h);
    return {rc, message};
}

std::string text_of(const std::string& db, const char* sql) {
    sqlite3* h = nullptr;
    sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(h, sql, -1, &s, nullptr);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(h);
    return out;
}

Transition dispatch(JobId id, std::uint32_t attempt, Millis at, const std::string& worker) {
    Transition t;
    t.id = id;
    t.from = JobState::ready;
    t.from_attempts = attempt - 1;
    t.to = JobState::running;
    t.attempts = attempt;
    t.at = at;
    t.worker = worker;
    t.started_at = at;
    t.reason = "dispatched";
    return t;
}

Transition succeed(JobId id, Millis at, std::uint32_t attempt = 1) {
    Transition t;
    t.id = id;
    t.from = JobState::running;
    t.from_attempts = attempt;
    t.to = JobState::succeeded;
    t.at = at;
    t.finished_at = at;
    t.set_outcome = true;
    t.exit_code = 0;
    t.result = "ok";
    t.reason = "done";
    return t;
}

// Turns a database back into what version 7 wrote (its jobs' events rows of version 8 go too:
// they would have been in the history column; version 9's index is made again as it was; 10's
// to 15's columns and tables go; 11's wider state CHECKs may stay, every row meets them).
constexpr const char* kUndoVersion8 =
    "DROP INDEX jobs_batch; ALTER TABLE jobs DROP COLUMN batch_id; DROP TABLE batches; "
    "ALTER TABLE queues DROP COLUMN retention_ms; "
    "ALTER TABLE queues DROP COLUMN default_expires_in_ms; "
    "DROP TABLE job_deps; ALTER TABLE jobs DROP COLUMN blocked_on; "
    "ALTER TABLE queues DROP COLUMN max_running; ALTER TABLE queues DROP COLUMN rate; "
    "ALTER TABLE queues DROP COLUMN rate_per_ms; ALTER TABLE queues DROP COLUMN "
    "default_max_attempts; ALTER TABLE queues DROP COLUMN default_timeout_ms; "
    "ALTER TABLE queues DROP COLUMN default_priority; "
    "ALTER TABLE jobs DROP COLUMN expires_at; "
    "ALTER TABLE queues DROP COLUMN paused_until; DROP INDEX jobs_finished; "
    "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL; "
    "DROP TABLE job_counts; DROP TABLE payloads; DROP TABLE event_seq; "
    "DELETE FROM events WHERE id >= 1099511627776; ";

int count_rows(const std::string& db, const char* sql) {
    sqlite3* h = nullptr;
    sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(h, sql, -1, &s, nullptr);
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    sqlite3_close(h);
    return n;
}

}  // namespace

TEST_CASE("a committed job survives reopening; an uncommitted one does not") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q", "tok"), "submitted");
        store.commit();
        store.begin();
        auto fresh = store.insert_job(job(2, "q"), "submitted");
        CHECK_FALSE(fresh.duplicate);
        CHECK(fresh.id == 2);
        auto taken = store.insert_job(job(3, "q", "tok"), "submitted");  // token taken
        CHECK(taken.duplicate);
        CHECK(taken.id == 1);
        store.rollback();
    }
    SqliteStore store(dir.db());
    CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
    CHECK(store.max_job_id() == 1);
    auto j = store.get_job(1);
    REQUIRE(j.has_value());
    CHECK(j->state == JobState::ready);
    CHECK(j->payload_size == 9);
    CHECK(store.find_token("tok") == JobId{1});
    CHECK_FALSE(store.find_token("other").has_value());
    CHECK_FALSE(store.get_job(2).has_value());
    // The rolled-back id was never acknowledged: the next insert gets it.
    CHECK(store.insert_job(job(2, "q"), "submitted").id == 2);
    store.rollback();
}

TEST_CASE("apply is a compare-and-set on (state, attempts): a stale transition writes nothing") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.insert_job(job(1, "q"), "submitted");
    store.insert_job(job(2, "q"), "submitted");
    store.commit();
    CHECK(store.apply(dispatch(1, 1, 5000, "w1")));  // held back from the row
    // The held dispatch is attempt 1: a result for another attempt, or from another state, is
    // refused against it in memory.
    CHECK_FALSE(store.apply(succeed(1, 6000, 2)));
    auto wrong_state = succeed(1, 6000);
    wrong_state.from = JobState::ready;
    CHECK_FALSE(wrong_state.from == JobState::running);
    CHECK_FALSE(store.apply(wrong_state));
    CHECK(store.apply(succeed(1, 6000)));
    // Against the row: job 2 is ready at attempt 0.
    auto cancel = succeed(2, 6000);
    cancel.to = JobState::cancelled;
    CHECK_FALSE(store.apply(cancel));  // not running
    cancel.from = JobState::ready;
    cancel.from_attempts = 3;
    CHECK_FALSE(store.apply(cancel));  // not at attempt 3
    cancel.from_attempts = 0;
    CHECK(store.apply(cancel));
    store.commit();
    CHECK(store.get_job(1)->state == JobState::succeeded);
    CHECK(store.get_job(1)->attempts == 1);
    CHECK(store.get_job(2)->state == JobState::cancelled);
    CHECK(store.events(1).size() == 3);  // submitted, dispatched, done: nothing of the refused
    CHECK(store.events(2).size() == 2);
}

TEST_CASE("migration 3 upgrades a version-2 database: id floor from its jobs, budget column") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        for (JobId id = 1; id <= 7; ++id)
            store.insert_job(job(id, "q"), "submitted");
        store.commit();
    }
    // Turn it back into what version 2 wrote.
    auto [rc, err] =
        exec_sql(dir.db(), (std::string(kUndoVersion8) +
                            "DROP TABLE id_floor; ALTER TABLE jobs DROP COLUMN attempt_budget; "
                            "ALTER TABLE jobs DROP COLUMN history; DROP TABLE dispatch_log; "
                            "DROP TABLE broker_epoch; ALTER TABLE jobs DROP COLUMN epoch; "
                            "DROP TABLE schedules; UPDATE schema_version SET version = 2;")
                               .c_str());
    CHECK_MESSAGE(rc == SQLITE_OK, err);
    CHECK(count_rows(dir.db(), "SELECT version FROM schema_version") == 2);
    SqliteStore store(dir.db());
    CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
    CHECK(count_rows(dir.db(), "SELECT id FROM id_floor") == 7);
    auto live = store.load_live(7);
    REQUIRE(live.has_value());
    CHECK(live->attempt_budget == live->max_attempts);
    // Raising max_attempts keeps the first one as the budget.
    store.begin();
    Transition t;
    t.id = 7;
    t.from = JobState::ready;
    t.to = JobState::ready;
    t.max_attempts = 10;
    t.reason = "test";
    store.apply(t);
    store.commit();
    auto raised = store.load_live(7);
    REQUIRE(raised.has_value());
    CHECK(raised->max_attempts == 10);
    CHECK(raised->attempt_budget == live->max_attempts);
}

TEST_CASE("migration 6: epochs count every open, durably; a held dispatch keeps its epoch") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q"), "submitted");
        store.commit();
    }
    // What version 5 wrote: no epochs.
    auto [rc, err] = exec_sql(dir.db(), (std::string(kUndoVersion8) +
                                         "DROP TABLE broker_epoch; ALTER TABLE jobs DROP COLUMN "
                                         "epoch; DROP TABLE schedules; UPDATE schema_version SET "
                                         "version = 5;")
                                            .c_str());
    CHECK_MESSAGE(rc == SQLITE_OK, err);
    std::uint32_t first = 0;
    {
        SqliteStore store(dir.db());
        CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
        first = store.epoch();
        CHECK(first == 1);
        auto d = dispatch(1, 1, 200, "w");
        d.epoch = store.epoch();
        store.begin();
        store.apply(d);
        store.commit();
        auto live = store.load_live(1);
        REQUIRE(live.has_value());
        CHECK(live->epoch == first);  // held back, from memory
    }
    // Reopened (the dispatch now in its row, or read back from the log): a new epoch, the
    // running attempt still of the first.
    SqliteStore store(dir.db());
    CHECK(store.epoch() == first + 1);
    auto live = store.load_live(1);
    REQUIRE(live.has_value());
    CHECK(live->state == JobState::running);
    CHECK(live->epoch == first);
    CHECK(count_rows(dir.db(), "SELECT n FROM broker_epoch") == static_cast<int>(first + 1));
}

TEST_CASE("migrations 4 and 8: a version-3 database keeps its event rows, new events follow") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q"), "submitted");
        store.commit();
    }
    // What version 3 wrote: no history column, the creation event as a row of events.
    auto [rc, err] =
        exec_sql(dir.db(), (std::string(kUndoVersion8) +
                            "ALTER TABLE jobs DROP COLUMN history; DROP TABLE dispatch_log; "
                            "DROP TABLE broker_epoch; ALTER TABLE jobs DROP COLUMN epoch; "
                            "DROP TABLE schedules; "
                            "INSERT INTO events (job_id, id, at, from_state, to_state, attempt, "
                            "worker, reason) VALUES (1, 1, 100, NULL, 'ready', 0, NULL, 'old'); "
                            "UPDATE schema_version SET version = 3;")
                               .c_str());
    CHECK_MESSAGE(rc == SQLITE_OK, err);
    SqliteStore store(dir.db());
    CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
    store.begin();
    store.apply(dispatch(1, 1, 200, "w"));
    store.commit();
    auto check = [](const std::vector<Event>& ev) {
        REQUIRE(ev.size() == 2);
        CHECK(ev[0].reason == "old");
        CHECK(ev[0].at == to_time(100));
        CHECK_FALSE(ev[0].from.has_value());
        CHECK(ev[1].reason == "dispatched");
        CHECK(ev[1].from == JobState::ready);
        CHECK(ev[1].to == JobState::running);
        CHECK(ev[1].attempt == 1);
        CHECK(ev[1].worker == "w");
    };
    check(store.events(1));
    store.begin();
    store.materialize();  // the dispatch was held back from the row (see the next test case)
    store.commit();
    SqliteQueryStore reader(dir.db());
    check(reader.events(1));
    // Retention deletes both kinds.
    store.begin();
    store.apply(succeed(1, 300));
    auto removed = store.remove_finished(std::nullopt, std::nullopt, 1000, 10);
    store.commit();
    REQUIRE(removed.size() == 1);
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM events") == 0);
    CHECK(store.events(1).empty());
}

TEST_CASE("a damaged history column fails that read only, with the job's id") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    store.insert_job(job(1, "q"), "submitted");
    store.insert_job(job(2, "q"), "submitted");
    store.commit();
    // 0xc1 is never used by msgpack.
    CHECK(exec_sql(dir.db(), "UPDATE jobs SET history = x'c1' WHERE id = 1").first == SQLITE_OK);
    bool store_error = false;
    std::string message;
    try {
        store.events(1);
    } catch (const StoreError&) {
        store_error = true;
    } catch (const std::exception& e) {
        message = e.what();
    }
    CHECK_FALSE(store_error);
    CHECK(message.find("job 1") != std::string::npos);
    CHECK(store.events(2).size() == 1);
    CHECK(store.get_job(1).has_value());
}

TEST_CASE("transitions update the row and write one event each") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    auto nj = job(1, "q");
    nj.spec.argv = std::vector<std::string>{"echo", "x"};
    store.insert_job(nj, "submitted");
    Transition run;
    run.id = 1;
    run.from = JobState::ready;
    run.to = JobState::running;
    run.attempts = 1;
    run.at = 5000;
    run.worker = "w1";
    run.started_at = 5000;
    run.reason = "dispatched";
    store.apply(run);
    Transition done;
    done.id = 1;
    done.from = JobState::running;
    done.from_attempts = 1;
    done.to = JobState::succeeded;
    done.attempts = 1;
    done.at = 6000;
    done.finished_at = 6000;
    done.set_outcome = true;
    done.exit_code = 0;
    done.result = "out";
    done.reason = "done";
    store.apply(done);
    store.commit();

    auto j = store.get_job(1);
    REQUIRE(j.has_value());
    CHECK(j->state == JobState::succeeded);
    CHECK(j->worker == "w1");
    CHECK(j->started_at == to_time(5000));
    CHECK(j->finished_at == to_time(6000));
    CHECK(j->result == "out");
    CHECK(j->argv == std::vector<std::string>{"echo", "x"});
    auto ev = store.events(1);
    REQUIRE(ev.size() == 3);
    CHECK(ev[0].reason == "submitted");
    CHECK(ev[0].to == JobState::ready);
    CHECK(ev[1].reason == "dispatched");
    CHECK(ev[1].worker == "w1");
    CHECK(ev[1].at == to_time(5000));
    CHECK(ev[2].from == JobState::running);
    CHECK(ev[2].to == JobState::succeeded);
    CHECK(ev[2].at == to_time(6000));
    // The first event in the job's row, an events row for each one after it.
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM events WHERE job_id = 1") == 2);

    auto d = store.dispatch_data(1);
    REQUIRE(d.has_value());
    CHECK(d->payload == "payload-1");
}

TEST_CASE("a dispatch is held back from the row, logged, and seen by every read of the store") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    store.insert_job(job(1, "q"), "submitted");
    store.insert_job(job(2, "q"), "submitted");
    store.commit();
    store.begin();
    store.apply(dispatch(1, 1, 5000, "w1"));
    store.commit();
    // The row still says ready; the log has the dispatch.
    CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "ready");
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM dispatch_log") == 1);
    CHECK(store.held_back() > 0);
    auto j = store.get_job(1);
    REQUIRE(j.has_value());
    CHECK(j->state == JobState::running);
    CHECK(j->attempts == 1);
    CHECK(j->worker == "w1");
    CHECK(j->started_at == to_time(5000));
    auto live = store.load_live(1);
    REQUIRE(live.has_value());
    CHECK(live->state == JobState::running);
    CHECK(live->attempts == 1);
    auto ev = store.events(1);
    REQUIRE(ev.size() == 2);
    CHECK(ev[1].to == JobState::running);
    CHECK(ev[1].worker == "w1");
    std::map<JobState, std::uint64_t> counts;
    for (const auto& c : store.count_jobs())
        counts[c.state] += c.count;
    CHECK(counts[JobState::running] == 1);
    CHECK(counts[JobState::ready] == 1);
    ListRequest running;
    running.limit = 10;
    auto listed = store.list_jobs(running);
    REQUIRE(listed.size() == 2);
    CHECK(listed[1].state == JobState::running);  // newest first: job 2, then job 1
    std::vector<LiveJob> scanned;
    store.scan_live([&](LiveJob&& l) { scanned.push_back(std::move(l)); });
    REQUIRE(scanned.size() == 2);
    CHECK(scanned[0].state == JobState::running);
    CHECK(scanned[1].state == JobState::ready);

    // The job's next change writes both into the row: one UPDATE, three events, in order.
    store.begin();
    store.apply(succeed(1, 6000));
    store.commit();
    CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "succeeded");
    CHECK(count_rows(dir.db(), "SELECT attempts FROM jobs WHERE id = 1") == 1);
    CHECK(text_of(dir.db(), "SELECT worker FROM jobs WHERE id = 1") == "w1");
    CHECK(count_rows(dir.db(), "SELECT started_at FROM jobs WHERE id = 1") == 5000);
    SqliteQueryStore reader(dir.db());
    auto history = reader.events(1);
    REQUIRE(history.size() == 3);
    CHECK(history[1].reason == "dispatched");
    CHECK(history[2].reason == "done");
    CHECK(history[2].at == to_time(6000));

    // materialize() writes what is still held and empties the log.
    store.begin();
    store.apply(dispatch(2, 1, 7000, "w2"));
    store.commit();
    CHECK(reader.get_job(2)->state == JobState::ready);  // the file lags until materialize
    store.begin();
    store.materialize();
    store.commit();
    CHECK(store.held_back() == 0);
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM dispatch_log") == 0);
    CHECK(reader.get_job(2)->state == JobState::running);
    CHECK(reader.events(2).size() == 2);
}

TEST_CASE("held-back dispatches survive a crash and a rollback, and never repeat an attempt") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    store.insert_job(job(1, "q"), "submitted");
    store.insert_job(job(2, "q"), "submitted");
    store.commit();
    store.begin();
    store.apply(dispatch(1, 1, 5000, "w1"));
    store.commit();
    {
        // A copy of the files as they are now: what a broker finds after kill -9.
        TempDir crashed;
        fs::copy_file(dir.db(), crashed.db());
        fs::copy_file(dir.db() + "-wal", crashed.db() + "-wal");
        SqliteStore after_crash(crashed.db());
        auto live = after_crash.load_live(1);
        REQUIRE(live.has_value());
        CHECK(live->state == JobState::running);
        CHECK(live->attempts == 1);  // so the next dispatch is attempt 2, never 1 again
        CHECK(after_crash.load_live(2)->state == JobState::ready);
    }
    // A rolled-back transaction: its own dispatch never happened, and the result that merged
    // the committed dispatch into the row is undone, so that dispatch is held again.
    store.begin();
    store.apply(dispatch(2, 1, 6000, "w2"));
    store.apply(succeed(1, 6000));
    store.rollback();
    CHECK(store.get_job(2)->state == JobState::ready);
    CHECK(store.get_job(1)->state == JobState::running);
    CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "ready");
    // Progress is written after the dispatch, not cleared by it.
    store.begin();
    store.set_progress(1, 40, "half");
    store.commit();
    CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "running");
    CHECK(store.get_job(1)->progress == 40u);
    // The log entry stays until materialize(), but is not taken for a new dispatch: the row has
    // the attempt already.
    {
        SqliteStore again(dir.db());
        CHECK(again.load_live(1)->attempts == 1);
        CHECK(again.get_job(1)->progress == 40u);
    }
}

TEST_CASE("closing the store writes held-back dispatches into their rows") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q"), "submitted");
        store.apply(dispatch(1, 1, 5000, "w1"));
        store.commit();
        CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "ready");
    }
    CHECK(text_of(dir.db(), "SELECT state FROM jobs WHERE id = 1") == "running");
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM dispatch_log") == 0);
}

TEST_CASE("scan_live returns unfinished jobs only; list filters") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    for (JobId id = 1; id <= 4; ++id)
        store.insert_job(job(id, id % 2 ? "odd" : "even"), "s");
    Transition t;
    t.id = 2;
    t.from = JobState::ready;
    t.to = JobState::cancelled;
    t.at = 1;
    t.finished_at = 1;
    t.reason = "test";
    store.apply(t);
    store.commit();
    std::vector<JobId> live;
    store.scan_live([&](LiveJob&& j) { live.push_back(j.id); });
    CHECK(live == std::vector<JobId>{1, 3, 4});
    ListRequest all;
    all.limit = 10;
    auto jobs = store.list_jobs(all);
    REQUIRE(jobs.size() == 4);
    CHECK(jobs.front().id == 4);  // newest first
    ListRequest odd;
    odd.queue = "odd";
    CHECK(store.list_jobs(odd).size() == 2);
    ListRequest cancelled;
    cancelled.state = JobState::cancelled;
    auto c = store.list_jobs(cancelled);
    REQUIRE(c.size() == 1);
    CHECK(c[0].id == 2);
}

TEST_CASE("the schema's CHECK constraint refuses an unknown state") {
    TempDir dir;
    { SqliteStore store(dir.db()); }
    int rc = exec_sql(dir.db(),
                      "INSERT INTO jobs (id, queue, state, payload, max_attempts, created_at) "
                      "VALUES (1, 'q', 'done', x'', 1, 0)")
                 .first;
    CHECK((rc & 0xff) == SQLITE_CONSTRAINT);
}

TEST_CASE("a foreign or corrupt file is refused with a clear error") {
    TempDir dir;
    {
        std::ofstream f(dir.db());
        f << "this is not a database, just some text that is long enough to fill a header...";
    }
    CHECK_THROWS_WITH_AS(SqliteStore(dir.db()), doctest::Contains("not a database"), StoreError);

    TempDir other;
    sqlite3* h = nullptr;
    sqlite3_open(other.db().c_str(), &h);
    sqlite3_exec(h, "CREATE TABLE stuff (x)", nullptr, nullptr, nullptr);
    sqlite3_close(h);
    CHECK_THROWS_WITH_AS(SqliteStore(other.db()), doctest::Contains("not an errand database"),
                         StoreError);
}

TEST_CASE("an empty (0-byte) file is refused, not taken for a new database") {
    TempDir dir;
    { std::ofstream f(dir.db()); }
    REQUIRE(fs::file_size(dir.db()) == 0);
    CHECK_THROWS_WITH_AS(SqliteStore(dir.db()), doctest::Contains("is empty (0 bytes)"),
                         StoreError);
    CHECK(fs::file_size(dir.db()) == 0);
    CHECK_FALSE(fs::exists(dir.db() + "-wal"));
    // No file at all is a new database.
    fs::remove(dir.db());
    { SqliteStore store(dir.db()); }
    CHECK(fs::file_size(dir.db()) > 0);
    { SqliteStore again(dir.db()); }
}

TEST_CASE("a database from a newer errand is refused") {
    TempDir dir;
    { SqliteStore store(dir.db()); }
    REQUIRE(exec_sql(dir.db(), "UPDATE schema_version SET version = 999").first == SQLITE_OK);
    CHECK_THROWS_WITH_AS(SqliteStore(dir.db()), doctest::Contains("newer"), StoreError);
}

TEST_CASE(
    "the HTTP side's reads: search by error text and unique key, counts, payload prefix, "
    "and a scan cut off by its budget") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    for (JobId id = 1; id <= 3000; ++id) {
        auto j = job(id, id % 2 ? "odd" : "even");
        if (id == 77) j.spec.unique = "key-77";
        if (id == 5) j.spec.payload = std::string("\x00\xff", 2) + std::string(100, 'p');
        store.insert_job(j, "submitted");
    }
    store.commit();
    REQUIRE(exec_sql(dir.db(), "UPDATE jobs SET error = 'Boom ' || id WHERE id % 1000 = 0").first ==
            SQLITE_OK);

    SqliteQueryStore reader(dir.db());
    JobPage p;
    p.error_contains = "BOOM";
    auto found = reader.jobs(p);
    REQUIRE(found.size() == 3);
    CHECK(found[0].id == 3000);
    CHECK(reader.count(p, 10000) == 3);
    CHECK(reader.count(p, 2) == 2);  // capped
    p.queue = "odd";
    CHECK(reader.count(p, 10000) == 0);
    JobPage u;
    u.unique_key = "key-77";
    auto by_key = reader.jobs(u);
    REQUIRE(by_key.size() == 1);
    CHECK(by_key[0].id == 77);
    JobPage q;
    q.queue = "even";
    CHECK(reader.count(q, 10000) == 1500);
    auto head = reader.payload(5, 10);
    REQUIRE(head);
    CHECK(*head == std::string("\x00\xff", 2) + std::string(8, 'p'));
    CHECK_FALSE(reader.payload(999999, 10));

    // With a budget of 5000 steps the same search over 3000 rows is cut off with a clear error,
    // and the connection serves the next query.
    SqliteQueryStore tight(dir.db(), 5);
    JobPage miss;
    miss.error_contains = "no such text";
    std::string message;
    try {
        tight.jobs(miss);
    } catch (const StoreError& e) {
        message = e.what();
    }
    CHECK(message.find("narrow it by queue or state") != std::string::npos);
    CHECK_THROWS_AS(tight.count(miss, 10000), StoreError);
    CHECK(tight.get_job(77).has_value());
}

// ---- flat as it grows (schema version 8) ------------------------------------------------------

namespace {

Transition fail_attempt(JobId id, std::uint32_t attempt, Millis at) {
    Transition t;
    t.id = id;
    t.from = JobState::running;
    t.from_attempts = attempt;
    t.to = JobState::retrying;
    t.at = at;
    t.run_at = at + 1000;
    t.set_outcome = true;
    t.exit_code = 1;
    t.error = "boom";
    t.reason = "failed";
    return t;
}

Transition retry_due(JobId id, std::uint32_t attempts, Millis at) {
    Transition t;
    t.id = id;
    t.from = JobState::retrying;
    t.from_attempts = attempts;
    t.to = JobState::ready;
    t.at = at;
    t.reason = "retry delay over";
    return t;
}

// One round of a failing job: dispatched (attempt `attempt`), failed, due again.
void fail_round(SqliteStore& store, JobId id, std::uint32_t attempt) {
    const Millis at = 10'000 * attempt;
    store.begin();
    store.apply(dispatch(id, attempt, at, "w"));
    store.commit();
    store.begin();
    store.apply(fail_attempt(id, attempt, at + 1));
    store.commit();
    store.begin();
    store.apply(retry_due(id, attempt, at + 2));
    store.commit();
}

}  // namespace

TEST_CASE("a start reads no finished job: counts from job_counts, live jobs by their index") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        for (JobId id = 1; id <= 5; ++id)
            store.insert_job(job(id, "q"), "submitted");
        store.commit();
    }
    std::map<std::pair<std::string, JobState>, std::uint64_t> counts;
    auto start_cost = [&] {
        SqliteStore store(dir.db());
        std::vector<JobId> live;
        store.scan_live([&](LiveJob&& j) { live.push_back(j.id); });
        counts.clear();
        for (const auto& c : store.count_jobs())
            counts[{c.queue, c.state}] = c.count;
        CHECK(live == std::vector<JobId>{1, 2, 3, 4, 5});  // in id order
        return store.start_steps();
    };
    const auto empty_history = start_cost();
    CHECK(counts[{"q", JobState::ready}] == 5);
    {
        SqliteStore store(dir.db());
        store.begin();
        for (JobId id = 6; id < 6 + 20000; ++id) {
            store.insert_job(job(id, "done"), "submitted");
            store.apply(dispatch(id, 1, 3, "w"));
            store.apply(succeed(id, 4));
        }
        store.commit();
    }
    const auto full_history = start_cost();
    CHECK(counts[{"done", JobState::succeeded}] == 20000);
    CHECK(counts[{"q", JobState::ready}] == 5);
    // Reading 20,000 rows would take more than 100,000 steps.
    CHECK(full_history <= empty_history + 100);
    MESSAGE("start steps: " << empty_history << " without, " << full_history << " with 20,000 "
                            << "finished jobs");
    // Deleting them keeps the counts right, and a count that reaches 0 leaves no row.
    {
        SqliteStore store(dir.db());
        store.begin();
        std::uint64_t removed = 0;
        for (int i = 0; i < 50 && removed < 20000; ++i)
            for (const auto& r : store.remove_finished(std::nullopt, std::nullopt, 10, 1000))
                removed += r.count;
        store.commit();
        CHECK(removed == 20000);
    }
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM job_counts WHERE queue = 'done'") == 0);
    start_cost();
    CHECK(counts.size() == 1);
}

TEST_CASE("a job's 50th transition writes what its 1st did: events are rows, the row stays") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    store.insert_job(job(1, "q"), "submitted");
    store.commit();
    const char* row_bytes =
        "SELECT length(payload) + COALESCE(length(CAST(history AS BLOB)), 0) + "
        "COALESCE(length(error), 0) + COALESCE(length(worker), 0) + COALESCE(length(argv), 0) "
        "FROM jobs WHERE id = 1";
    fail_round(store, 1, 1);
    const int after_first = count_rows(dir.db(), row_bytes);
    for (std::uint32_t attempt = 2; attempt <= 17; ++attempt)
        fail_round(store, 1, attempt);
    CHECK(count_rows(dir.db(), row_bytes) == after_first);  // 52 events later
    // Reading the whole history is one indexed query, in order.
    SqliteQueryStore reader(dir.db());
    auto ev = reader.events(1);
    REQUIRE(ev.size() == 1 + 3 * 17);
    CHECK(ev[0].reason == "submitted");
    for (std::size_t i = 0; i < 17; ++i) {
        CHECK(ev[1 + 3 * i].reason == "dispatched");
        CHECK(ev[1 + 3 * i].attempt == i + 1);
        CHECK(ev[2 + 3 * i].reason == "failed");
        CHECK(ev[3 + 3 * i].reason == "retry delay over");
    }
    CHECK(store.events(1).size() == ev.size());
}

TEST_CASE("a payload is written once: a retried job's transitions do not rewrite it") {
    TempDir dir;
    // Checkpoints inside commits, so the WAL file's size is what the commits wrote.
    SqliteStore store(dir.db(), SqliteOptions{.checkpoint_interval_ms = 0});
    NewJob big = job(1, "q");
    big.spec.payload.resize(1 << 20);
    for (std::size_t i = 0; i < big.spec.payload.size(); ++i)
        big.spec.payload[i] = static_cast<char>(i * 7 + i / 251);
    store.begin();
    store.insert_job(big, "submitted");
    store.insert_job(job(2, "q"), "submitted");  // a small one stays in its row
    store.commit();
    const auto wal = dir.db() + "-wal";
    const auto after_insert = fs::file_size(wal);
    for (std::uint32_t attempt = 1; attempt <= 5; ++attempt)
        fail_round(store, 1, attempt);
    const auto written = fs::file_size(wal) - after_insert;
    MESSAGE("WAL bytes for 15 transitions of a job with a 1 MiB payload: " << written);
    CHECK(written < 512 * 1024);  // ten row writes of 1 MiB each before version 8
    CHECK(store.dispatch_data(1)->payload == big.spec.payload);
    CHECK(store.dispatch_data(2)->payload == "payload-2");
    CHECK(store.get_job(1)->payload_size == big.spec.payload.size());
    CHECK(count_rows(dir.db(), "SELECT length(payload) FROM jobs WHERE id = 1") == 0);
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM payloads") == 1);
    SqliteQueryStore reader(dir.db());
    CHECK(reader.payload(1, 16) == big.spec.payload.substr(0, 16));
    CHECK(reader.get_job(1)->payload_size == big.spec.payload.size());
    CHECK(reader.payload(2, 100) == "payload-2");
    // Retention takes the payload with its job.
    store.begin();
    Transition cancel;
    cancel.id = 1;
    cancel.from = JobState::ready;
    cancel.from_attempts = 5;
    cancel.to = JobState::cancelled;
    cancel.at = 100;
    cancel.finished_at = 100;
    cancel.reason = "cancelled";
    REQUIRE(store.apply(cancel));
    auto removed = store.remove_finished(std::nullopt, std::nullopt, 1000, 10);
    store.commit();
    REQUIRE(removed.size() == 1);
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM payloads") == 0);
    CHECK_FALSE(store.dispatch_data(1).has_value());
}

TEST_CASE("migration 8 upgrades a database version 7 made: counts, payloads and histories") {
    TempDir dir;
    std::ifstream in(std::string(ERRAND_FIXTURES) + "/schema-v7.sql");
    REQUIRE(in.good());
    std::string dump((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto [rc, err] = exec_sql(dir.db(), dump.c_str());
    REQUIRE_MESSAGE(rc == SQLITE_OK, err);
    REQUIRE(count_rows(dir.db(), "SELECT version FROM schema_version") == 7);

    SqliteStore store(dir.db());
    CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
    // Migration 9: finished jobs indexed by state, then finish time (retention per state).
    CHECK(count_rows(dir.db(),
                     "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_finished' AND "
                     "sql LIKE '%(state, finished_at)%'") == 1);
    std::map<std::pair<std::string, JobState>, std::uint64_t> counts;
    for (const auto& c : store.count_jobs())
        counts[{c.queue, c.state}] = c.count;
    const std::map<std::pair<std::string, JobState>, std::uint64_t> expected{
        {{"work", JobState::succeeded}, 2}, {{"work", JobState::dead}, 1},
        {{"work", JobState::retrying}, 1},  {{"later", JobState::scheduled}, 1},
        {{"idle", JobState::ready}, 1},     {{"idle", JobState::cancelled}, 1}};
    CHECK(counts == expected);
    std::vector<JobId> live;
    store.scan_live([&](LiveJob&& j) { live.push_back(j.id); });
    CHECK(live == std::vector<JobId>{4, 5, 7});
    // Version 7's payloads stay in their rows and read as before.
    CHECK(store.dispatch_data(5)->payload.size() == 4000);
    CHECK(store.get_job(5)->payload_size == 4000);
    CHECK(store.dispatch_data(1)->payload == "first");
    // Three attempts, each in the history column: submitted, then per attempt dispatched and
    // failed (and due again, but for the last).
    const auto ev3 = store.events(3);
    REQUIRE(ev3.size() == 9);
    CHECK_FALSE(ev3.front().from.has_value());
    CHECK(ev3[1].to == JobState::running);
    CHECK(ev3[8].attempt == 3);
    CHECK(ev3.back().to == JobState::dead);

    // Job 7's next changes follow its old history, in order.
    const auto old7 = store.events(7);
    REQUIRE(old7.size() == 3);
    store.begin();
    REQUIRE(store.apply(retry_due(7, 1, 1796154554270)));
    REQUIRE(store.apply(dispatch(7, 2, 1796154554300, "w")));
    REQUIRE(store.apply(succeed(7, 1796154554400, 2)));
    store.commit();
    auto ev = SqliteQueryStore(dir.db()).events(7);
    REQUIRE(ev.size() == 6);
    for (std::size_t i = 0; i < 3; ++i)
        CHECK(ev[i].reason == old7[i].reason);
    CHECK(ev[3].reason == "retry delay over");
    CHECK(ev[4].reason == "dispatched");
    CHECK(ev[5].reason == "done");
    counts.clear();
    for (const auto& c : store.count_jobs())
        counts[{c.queue, c.state}] = c.count;
    CHECK(counts[{"work", JobState::succeeded}] == 3);
    CHECK(counts.count({"work", JobState::retrying}) == 0);
    // Retention deletes old and new rows alike, one state at a time (dead jobs on a clock of
    // their own: --dead-retention) or all of them.
    store.begin();
    std::uint64_t removed = 0;
    for (const auto& r : store.remove_finished(JobState::dead, std::nullopt, 1796154554500, 100)) {
        CHECK(r.state == JobState::dead);
        removed += r.count;
    }
    CHECK(removed == 1);
    CHECK(store.get_job(7).has_value());
    for (const auto& r : store.remove_finished(std::nullopt, std::nullopt, 1796154554500, 100))
        removed += r.count;
    store.commit();
    CHECK(removed == 5);
    CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM events") == 0);
    CHECK(store.get_job(7) == std::nullopt);
}

TEST_CASE("migration 11 upgrades a database version 10 made: jobs kept, `expired` a state") {
    TempDir dir;
    std::ifstream in(std::string(ERRAND_FIXTURES) + "/schema-v10.sql");
    REQUIRE(in.good());
    std::string dump((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto [rc, err] = exec_sql(dir.db(), dump.c_str());
    REQUIRE_MESSAGE(rc == SQLITE_OK, err);
    REQUIRE(count_rows(dir.db(), "SELECT version FROM schema_version") == 10);
    // Version 10's CHECKs do not know the state.
    CHECK(exec_sql(dir.db(), "UPDATE jobs SET state = 'expired' WHERE id = 5").first ==
          SQLITE_CONSTRAINT);

    {
        SqliteStore store(dir.db());
        CHECK(store.schema_version() == SqliteStore::kSchemaVersion);
        CHECK(text_of(dir.db(), "PRAGMA integrity_check") == "ok");
        std::map<std::pair<std::string, JobState>, std::uint64_t> counts;
        for (const auto& c : store.count_jobs())
            counts[{c.queue, c.state}] = c.count;
        const std::map<std::pair<std::string, JobState>, std::uint64_t> expected{
            {{"work", JobState::succeeded}, 2}, {{"work", JobState::dead}, 1},
            {{"work", JobState::retrying}, 1},  {{"later", JobState::scheduled}, 1},
            {{"idle", JobState::ready}, 1},     {{"idle", JobState::cancelled}, 1}};
        CHECK(counts == expected);
        std::vector<JobId> live;
        store.scan_live([&](LiveJob&& j) {
            live.push_back(j.id);
            CHECK_FALSE(j.expires_at.has_value());
        });
        CHECK(live == std::vector<JobId>{4, 5, 7});
        CHECK(store.dispatch_data(5)->payload.size() == 4000);
        CHECK(store.get_job(2)->unique == "u-second");
        CHECK(store.events(3).back().to == JobState::dead);

        // The ready job of version 10 expires: its row and its count take the new state, and it
        // leaves the index of unfinished jobs.
        store.begin();
        Transition t;
        t.id = 5;
        t.from = JobState::ready;
        t.to = JobState::expired;
        t.at = 2'000'000'000'000;
        t.finished_at = t.at;
        t.reason = "expired";
        t.queue = "idle";
        REQUIRE(store.apply(t));
        // A new job with an expiry and a unique key; once expired, its key is free again.
        NewJob e = job(8, "q");
        e.spec.unique = "k";
        e.expires_at = 2'000'000'000'500;
        auto ins = store.insert_job(e, "submitted");
        REQUIRE_FALSE(ins.duplicate);
        CHECK(store.load_live(ins.id)->expires_at == 2'000'000'000'500);
        CHECK(store.get_job(ins.id)->expires_at == to_time(2'000'000'000'500));
        Transition t2 = t;
        t2.id = ins.id;
        t2.queue = "q";
        REQUIRE(store.apply(t2));
        NewJob again = job(9, "q");
        again.spec.unique = "k";
        CHECK_FALSE(store.insert_job(again, "submitted").duplicate);
        store.commit();
    }
    CHECK(text_of(dir.db(), "PRAGMA integrity_check") == "ok");
    SqliteStore reopened(dir.db());  // a new connection reads the edited schema
    std::map<std::pair<std::string, JobState>, std::uint64_t> counts;
    for (const auto& c : reopened.count_jobs())
        counts[{c.queue, c.state}] = c.count;
    CHECK(counts[{"idle", JobState::expired}] == 1);
    CHECK(counts[{"q", JobState::expired}] == 1);
    CHECK(counts.count({"idle", JobState::ready}) == 0);
    CHECK(count_rows(dir.db(),
                     "SELECT n FROM job_counts WHERE queue = 'idle' AND "
                     "state = 'expired'") == 1);
    std::vector<JobId> live;
    reopened.scan_live([&](LiveJob&& j) { live.push_back(j.id); });
    CHECK(live == std::vector<JobId>{4, 7, 9});
    // The wider CHECKs still refuse what is not a state.
    CHECK(exec_sql(dir.db(), "UPDATE jobs SET state = 'bogus' WHERE id = 4").first ==
          SQLITE_CONSTRAINT);
    CHECK(exec_sql(dir.db(), "INSERT INTO job_counts VALUES ('q', 'ready', 1)").first ==
          SQLITE_CONSTRAINT);
    // Retention deletes expired jobs as it does the other finished ones.
    reopened.begin();
    std::uint64_t removed = 0;
    for (const auto& r :
         reopened.remove_finished(JobState::expired, std::nullopt, 2'000'000'000'001, 100))
        removed += r.count;
    reopened.commit();
    CHECK(removed == 2);
    CHECK_FALSE(reopened.get_job(5).has_value());
}

TEST_CASE("a new database's state CHECKs know `expired`") {
    TempDir dir;
    { SqliteStore store(dir.db()); }
    CHECK(count_rows(dir.db(),
                     "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('jobs', "
                     "'job_counts') AND sql LIKE '%''expired''%'") == 2);
    CHECK(count_rows(dir.db(),
                     "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('jobs_live', "
                     "'jobs_unique') AND sql LIKE '%<> ''expired''%'") == 2);
    CHECK(text_of(dir.db(), "PRAGMA integrity_check") == "ok");
}

TEST_CASE("space comes back: after a purge the file shrinks, a slice per maintenance pass") {
    TempDir dir;
    SqliteStore store(dir.db(), SqliteOptions{.checkpoint_interval_ms = 0});
    auto file_bytes = [&] {
        return count_rows(dir.db(),
                          "SELECT page_count * page_size FROM pragma_page_count(), "
                          "pragma_page_size()");
    };
    const auto empty = file_bytes();
    store.begin();
    for (JobId id = 1; id <= 6000; ++id) {
        NewJob j = job(id, "q");
        j.spec.payload.assign(3000, static_cast<char>('a' + id % 26));  // 18 MB of payloads
        store.insert_job(j, "submitted");
        store.apply(dispatch(id, 1, 3, "w"));
        store.apply(succeed(id, 4));
    }
    store.commit();
    const auto full = file_bytes();
    REQUIRE(full > 16 * 1024 * 1024);
    store.begin();
    std::uint64_t removed = 0;
    for (int i = 0; i < 20 && removed < 6000; ++i)
        for (const auto& r : store.remove_finished(std::nullopt, std::nullopt, 10, 500))
            removed += r.count;
    store.commit();
    REQUIRE(removed == 6000);
    int passes = 0;
    while (store.maintenance_due() && passes < 100) {
        store.maintain(0);
        store.commit();
        ++passes;
    }
    CHECK_FALSE(store.maintenance_due());
    CHECK(passes > 1);  // in slices, not in one pass
    const auto after = file_bytes();
    MESSAGE("file: " << empty << " bytes empty, " << full << " with 6,000 finished jobs, " << after
                     << " after purging them (" << passes << " maintenance passes)");
    CHECK(after < empty + 512 * 1024);
}

TEST_CASE("space comes back: a WAL file a burst left large is cut once the broker is idle") {
    TempDir dir;
    SqliteStore store(dir.db(), SqliteOptions{.checkpoint_interval_ms = 50});
    const std::string wal = dir.db() + "-wal";
    store.begin();
    for (JobId id = 1; id <= 3000; ++id) {
        NewJob j = job(id, "q");
        j.spec.payload.assign(4000, static_cast<char>('a' + id % 26));  // 12 MB in one commit
        store.insert_job(j, "submitted");
    }
    store.commit();
    const auto burst = std::filesystem::file_size(wal);
    REQUIRE(burst > 8 * 1024 * 1024);
    // Busy (a commit that writes in each pass): nothing is cut. A commit that only read (as
    // retention's every second) does not count.
    Millis now = 1'000'000;
    for (int i = 0; i < 5; ++i, now += 500) {
        store.maintain(now);
        store.begin();
        store.insert_job(job(static_cast<JobId>(5000 + i), "q"), "submitted");
        store.commit();
        store.remove_finished(std::nullopt, std::nullopt, now, 500);
        store.commit();
    }
    CHECK(std::filesystem::file_size(wal) >= burst);
    // Idle: cut within a second or so of the last commit (a pass that meets the checkpointer
    // at work tries again at the next). The passes are paced in real time, as the broker's
    // are: the checkpointer thread works in real time, and on a loaded machine its pass over
    // the burst can outlast many driven passes.
    int passes = 0;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::filesystem::file_size(wal) > 0 && std::chrono::steady_clock::now() < give_up) {
        store.maintain(now);  // as the engine's passes do: held-back dispatches are written too
        if (store.writing()) store.commit();
        now += 100;
        ++passes;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    MESSAGE("WAL: " << burst << " bytes after the burst, cut after " << passes << " idle passes");
    CHECK(std::filesystem::file_size(wal) == 0);
    CHECK(passes >= 10);  // not before a second without commits
    // Everything is still there.
    CHECK(store.get_job(3000).has_value());
}

TEST_CASE("remove_job: a finished job goes with its events, payload and count; others stay") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q"), "submitted");
        auto big = job(2, "q");
        big.spec.payload = std::string(4000, 'x');  // in payloads, apart from the row
        store.insert_job(big, "submitted");
        REQUIRE(store.apply(dispatch(2, 1, 200, "w")));
        REQUIRE(store.apply(succeed(2, 300)));
        store.commit();
        REQUIRE(count_rows(dir.db(), "SELECT COUNT(*) FROM payloads") == 1);

        store.begin();
        CHECK_FALSE(store.remove_job(1).has_value());  // ready: not finished
        CHECK_FALSE(store.remove_job(99).has_value());
        auto removed = store.remove_job(2);
        store.commit();
        REQUIRE(removed.has_value());
        CHECK(removed->queue == "q");
        CHECK(removed->state == JobState::succeeded);
        CHECK_FALSE(store.get_job(2).has_value());
        CHECK(store.events(2).empty());
        CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM payloads") == 0);
        CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM events WHERE job_id = 2") == 0);
        CHECK(count_rows(dir.db(), "SELECT COUNT(*) FROM job_counts") == 0);
        CHECK(store.get_job(1)->state == JobState::ready);
    }
    // The highest id was deleted: it is still not given out again (id_floor).
    SqliteStore store(dir.db());
    store.begin();
    auto next = store.insert_job(job(3, "q"), "submitted");
    store.commit();
    CHECK(next.id == 3);
}

TEST_CASE("a timed pause is stored: its end survives a reopen; resume_due is compare-and-set") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.pause_until("q", 5000);
        store.set_paused("p", true);
        store.commit();
    }
    SqliteStore store(dir.db());
    CHECK(store.paused_queues() == std::vector<std::string>{"p", "q"});
    CHECK(store.pause_deadlines() == std::vector<std::pair<std::string, Millis>>{{"q", 5000}});
    store.begin();
    CHECK_FALSE(store.resume_due("q", 4000));  // paused until another time: left alone
    CHECK_FALSE(store.resume_due("p", 5000));  // paused for good
    CHECK(store.resume_due("q", 5000));
    store.commit();
    CHECK(store.paused_queues() == std::vector<std::string>{"p"});
    CHECK(store.pause_deadlines().empty());
    // A plain pause or resume clears the end.
    store.begin();
    store.pause_until("q", 9000);
    store.set_paused("q", true);
    store.commit();
    CHECK(store.pause_deadlines().empty());
    CHECK(store.paused_queues() == std::vector<std::string>{"p", "q"});
}

TEST_CASE("job dependencies survive reopening: edges by parent, the count of unfinished parents") {
    TempDir dir;
    {
        SqliteStore store(dir.db());
        store.begin();
        store.insert_job(job(1, "q"), "submitted");
        store.insert_job(job(2, "q"), "submitted");
        auto child = job(3, "q");
        child.state = JobState::blocked;
        store.insert_job(child, "blocked");
        store.add_parents(3, {1, 2}, false);
        store.commit();
    }
    SqliteStore store(dir.db());
    auto parents = store.parents();
    std::sort(parents.begin(), parents.end());
    CHECK(parents == std::vector<JobId>{1, 2});
    auto states = store.parent_states({1, 3, 99});
    REQUIRE(states.size() == 2);  // 99 does not exist
    CHECK(states[1] == std::pair<JobId, JobState>{3, JobState::blocked});
    store.begin();
    auto kids = store.take_children(1);
    REQUIRE(kids.size() == 1);
    CHECK(kids[0].child == 3);
    CHECK_FALSE(kids[0].any);
    CHECK(store.take_children(1).empty());  // each edge once
    CHECK(store.parent_finished(3) == std::optional<std::uint32_t>(1));
    CHECK(store.take_children(2).size() == 1);
    CHECK(store.parent_finished(3) == std::optional<std::uint32_t>(0));
    CHECK_FALSE(store.parent_finished(3).has_value());  // never below 0
    store.commit();
    CHECK(store.parents().empty());
}

TEST_CASE("a member finishing costs its batch one row, whether it has 10 members or 100,000") {
    TempDir dir;
    SqliteStore store(dir.db());
    store.begin();
    BatchInfo b;
    b.created_at = to_time(1000);
    const JobId small = store.insert_batch(b, std::nullopt).id;
    const JobId big = store.insert_batch(b, std::nullopt).id;
    JobId n = 0;
    auto members = [&](JobId batch, std::uint64_t count) {
        for (std::uint64_t i = 0; i < count; ++i) {
            auto j = job(++n, "q");
            j.spec.batch = batch;
            store.insert_job(j, "submitted");
        }
        REQUIRE(store.batch_moved(batch, BatchDelta{.total = static_cast<std::int64_t>(count)}));
    };
    members(small, 10);
    members(big, 100'000);
    store.commit();
    auto cost = [&](JobId batch) {
        const auto before = store.batch_steps();
        store.begin();
        auto after = store.batch_moved(batch, BatchDelta{.succeeded = 1});
        store.commit();
        REQUIRE(after);
        CHECK(after->succeeded == 1);
        return store.batch_steps() - before;
    };
    const auto steps_small = cost(small);
    const auto steps_big = cost(big);
    CHECK(steps_small > 0);
    CHECK(steps_big == steps_small);
    MESSAGE("a member's change: " << steps_small << " steps in a batch of 10, " << steps_big
                                  << " in one of 100,000");
    // Leaving a terminal state (a revived member) moves the counter back, in the same row.
    store.begin();
    auto back = store.batch_moved(big, BatchDelta{.succeeded = -1});
    store.commit();
    REQUIRE(back);
    CHECK(back->succeeded == 0);
    CHECK(back->total == 100'000);
    // A sealed batch takes no members: that change is refused whole (nullopt, nothing written);
    // its members' own changes still count.
    store.begin();
    auto sealed = store.batch_moved(small, BatchDelta{.seal = 2000});
    REQUIRE(sealed);
    CHECK(sealed->sealed_at == std::optional<Timestamp>(to_time(2000)));
    CHECK(store.batch_moved(small, BatchDelta{.seal = 3000})->sealed_at ==
          std::optional<Timestamp>(to_time(2000)));  // sealed once
    CHECK_FALSE(store.batch_moved(small, BatchDelta{.total = 1, .succeeded = 1}));
    auto members_only = store.batch_moved(small, BatchDelta{.succeeded = 1});
    store.commit();
    REQUIRE(members_only);
    CHECK(members_only->total == 10);
    CHECK(members_only->succeeded == 2);
}
