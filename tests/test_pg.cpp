// The libpq wrapper (broker/pg.hpp) against a real PostgreSQL server started for the test:
// binary parameters and results (a 1 MiB payload with every byte value), NULLs, prepared
// statements, pipelines and their failures, and errors that carry PostgreSQL's message and code;
// and the HTTP side's reads on PostgreSQL (PgQueryStore: searches, counts, payload prefix).
#include <doctest/doctest.h>

#include <map>
#include <vector>

#include "errand/clock.hpp"
#include "pg.hpp"
#include "pg_server.hpp"
#include "store_pg.hpp"

using namespace errand::broker;

namespace {

errand::pgserver::PgServer& server() {
    static errand::pgserver::PgServer s;  // one server for the whole program
    return s;
}

}  // namespace

TEST_CASE("binary parameters and results round-trip: integers, bytes, text, NULL") {
    pg::Connection c(server().conninfo());
    c.exec(
        "DROP TABLE IF EXISTS t; CREATE TABLE t (id bigint PRIMARY KEY, n int, ok boolean, "
        "payload bytea, name text)");
    c.prepare("put", "INSERT INTO t VALUES ($1, $2, $3, $4, $5)", 5);
    c.prepare("get", "SELECT id, n, ok, payload, name FROM t WHERE id = $1", 1);
    std::string payload(1 << 20, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i)
        payload[i] = static_cast<char>(i * 7 % 256);
    auto put = c.run("put", pg::Params()
                                .i64(-(std::int64_t{1} << 40))
                                .i32(-7)
                                .boolean(true)
                                .bytes(payload)
                                .text("ünïcode"));
    CHECK(put.affected() == 1);
    c.run("put", pg::Params().i64(2).null().null().null().null());

    auto r = c.run("get", pg::Params().i64(-(std::int64_t{1} << 40)));
    REQUIRE(r.rows() == 1);
    CHECK(r.i64(0, 0) == -(std::int64_t{1} << 40));
    CHECK(r.i64(0, 1) == -7);
    CHECK(r.boolean(0, 2));
    CHECK(r.text(0, 3) == payload);
    CHECK(r.text(0, 4) == "ünïcode");
    auto nulls = c.run("get", pg::Params().i64(2));
    REQUIRE(nulls.rows() == 1);
    CHECK(nulls.opt_i64(0, 1) == std::nullopt);
    CHECK(nulls.opt_text(0, 3) == std::nullopt);
    CHECK(c.run("get", pg::Params().i64(3)).rows() == 0);
}

TEST_CASE("binary arrays through unnest: bigint, text and bytea, with NULLs; empty arrays") {
    pg::Connection c(server().conninfo());
    c.exec("DROP TABLE IF EXISTS a; CREATE TABLE a (n bigint, name text, data bytea)");
    c.prepare("put_many",
              "INSERT INTO a SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])", 3);
    c.prepare("all", "SELECT n, name, data FROM a ORDER BY n NULLS LAST", 0);
    std::string bytes("\0\xff\x01", 3);
    std::string big(100000, 'z');
    auto put = c.run("put_many", pg::Params()
                                     .i64_array({-5, 7, std::nullopt})
                                     .text_array({"ünï", std::nullopt, ""})
                                     .bytes_array({bytes, big, std::nullopt}));
    CHECK(put.affected() == 3);
    auto r = c.run("all");
    REQUIRE(r.rows() == 3);
    CHECK(r.i64(0, 0) == -5);
    CHECK(r.text(0, 1) == "ünï");
    CHECK(r.text(0, 2) == bytes);
    CHECK(r.i64(1, 0) == 7);
    CHECK(r.opt_text(1, 1) == std::nullopt);
    CHECK(r.text(1, 2) == big);
    CHECK(r.opt_i64(2, 0) == std::nullopt);
    CHECK(r.text(2, 1).empty());
    CHECK(r.opt_text(2, 2) == std::nullopt);
    auto none = c.run("put_many", pg::Params().i64_array({}).text_array({}).bytes_array({}));
    CHECK(none.affected() == 0);
}

TEST_CASE("a pipeline runs its statements in one round trip, in order") {
    pg::Connection c(server().conninfo());
    c.exec("DROP TABLE IF EXISTS q; CREATE TABLE q (id bigserial PRIMARY KEY, v text)");
    c.prepare("add", "INSERT INTO q (v) VALUES ($1) RETURNING id", 1);
    c.prepare("count", "SELECT count(*) FROM q", 0);
    std::vector<pg::Params> values(3);
    std::vector<pg::Call> calls;
    for (int i = 0; i < 3; ++i)
        calls.push_back({"add", &values[i].text("v" + std::to_string(i))});
    calls.push_back({"count"});
    auto results = c.pipeline(calls);
    REQUIRE(results.size() == 4);
    CHECK(results[0].i64(0, 0) == 1);
    CHECK(results[2].i64(0, 0) == 3);
    CHECK(results[3].i64(0, 0) == 3);
    // The connection is usable outside pipeline mode afterwards.
    CHECK(c.run("count").i64(0, 0) == 3);
}

TEST_CASE("a failing statement in a pipeline throws with its SQLSTATE; the rest is not run") {
    pg::Connection c(server().conninfo());
    c.exec("DROP TABLE IF EXISTS u; CREATE TABLE u (k text UNIQUE)");
    c.prepare("add_u", "INSERT INTO u VALUES ($1)", 1);
    c.prepare("count_u", "SELECT count(*) FROM u", 0);
    c.exec("BEGIN");
    std::string state;
    pg::Params a, b;
    a.text("a");
    b.text("b");
    try {
        c.pipeline({{"add_u", &a}, {"add_u", &a}, {"add_u", &b}});
    } catch (const pg::Error& e) {
        state = e.sqlstate();
        CHECK(std::string(e.what()).find("duplicate key") != std::string::npos);
        CHECK_FALSE(e.disk());
    }
    CHECK(state == "23505");  // unique_violation
    c.exec("ROLLBACK");
    CHECK(c.run("count_u").i64(0, 0) == 0);
}

TEST_CASE("errors name what failed: bad SQL, an unknown statement, a server that is not there") {
    pg::Connection c(server().conninfo());
    CHECK_THROWS_WITH_AS(c.exec("SELEC 1"), doctest::Contains("syntax error"), pg::Error);
    CHECK_THROWS_AS(c.run("no_such_statement"), pg::Error);
    // The connection survives a failed statement.
    c.prepare("one", "SELECT 1::bigint", 0);
    CHECK(c.run("one").i64(0, 0) == 1);

    std::string missing = "host=" + server().socket_dir() + " port=1 user=errand dbname=errand";
    try {
        pg::Connection gone(missing);
        FAIL("connected to a server that does not exist");
    } catch (const pg::Error& e) {
        CHECK(std::string(e.what()).find("cannot connect to PostgreSQL") != std::string::npos);
        CHECK(e.disk());  // an operator's problem, like a full disk
    }
}

TEST_CASE("PgQueryStore: search by error text and unique key, capped counts, payload prefix") {
    pg::Connection(server().conninfo()).exec("CREATE SCHEMA http_reads");
    auto conninfo = server().conninfo() + " options='-csearch_path=http_reads'";
    PgStore store(conninfo);  // writes begin a transaction of their own
    for (errand::JobId id = 1; id <= 40; ++id) {
        NewJob j;
        j.spec.queue = id % 2 ? "odd" : "even";
        j.spec.payload = id == 5 ? std::string("\x00\xff", 2) + std::string(100, 'p') : "x";
        if (id == 7) j.spec.unique = "key-7";
        j.created_at = 1000 + static_cast<errand::Millis>(id);
        store.insert_job(j, "submitted");
    }
    store.commit();
    pg::Connection(conninfo).exec("UPDATE jobs SET error = 'Boom ' || id WHERE id % 10 = 0");

    PgQueryStore reader(conninfo);
    JobPage p;
    p.error_contains = "BOOM";
    auto found = reader.jobs(p);
    REQUIRE(found.size() == 4);
    CHECK(found[0].id == 40);
    CHECK(reader.count(p, 10000) == 4);
    CHECK(reader.count(p, 3) == 3);
    p.limit = 2;
    p.before = 30;
    auto older = reader.jobs(p);
    REQUIRE(older.size() == 2);
    CHECK(older[0].id == 20);
    JobPage u;
    u.unique_key = "key-7";
    auto by_key = reader.jobs(u);
    REQUIRE(by_key.size() == 1);
    CHECK(by_key[0].id == 7);
    JobPage q;
    q.queue = "even";
    q.state = errand::JobState::ready;
    CHECK(reader.count(q, 10000) == 20);
    auto head = reader.payload(5, 10);
    REQUIRE(head);
    CHECK(*head == std::string("\x00\xff", 2) + std::string(8, 'p'));
    CHECK_FALSE(reader.payload(999999, 10));
}

TEST_CASE(
    "counts on PostgreSQL: finished jobs from job_counts (every broker's shard), unfinished "
    "ones through jobs_live; retention subtracts") {
    using errand::JobState;
    pg::Connection(server().conninfo()).exec("CREATE SCHEMA counts");
    auto conninfo = server().conninfo() + " options='-csearch_path=counts'";
    PgStore a(conninfo), b(conninfo);  // two brokers, each adding to its own shard
    for (errand::JobId id = 1; id <= 30; ++id) {
        NewJob j;
        j.spec.queue = "q";
        j.spec.payload = "x";
        j.created_at = 1000;
        a.insert_job(j, "submitted");
    }
    a.commit();
    auto finish = [](PgStore& s, errand::JobId id, JobState to) {
        Transition run;
        run.id = id;
        run.from = JobState::ready;
        run.to = JobState::running;
        run.attempts = 1;
        run.at = 2000;
        run.started_at = 2000;
        run.worker = "w";
        run.reason = "dispatched";
        run.queue = "q";
        REQUIRE(s.apply(run));
        Transition end;
        end.id = id;
        end.from = JobState::running;
        end.from_attempts = 1;
        end.to = to;
        end.attempts = 1;
        end.at = 3000;
        end.finished_at = 3000;
        end.reason = "done";
        if (id % 2) end.queue = "q";  // without it the store reads the job's queue
        REQUIRE(s.apply(end));
    };
    for (errand::JobId id = 1; id <= 10; ++id)
        finish(a, id, JobState::succeeded);
    for (errand::JobId id = 11; id <= 20; ++id)
        finish(b, id, JobState::dead);
    a.commit();
    b.commit();
    auto counts = [](PgStore& s) {
        std::map<JobState, std::uint64_t> out;
        for (const auto& c : s.count_jobs())
            if (c.queue == "q") out[c.state] += c.count;
        return out;
    };
    const std::map<JobState, std::uint64_t> want{
        {JobState::ready, 10}, {JobState::succeeded, 10}, {JobState::dead, 10}};
    CHECK(counts(a) == want);
    CHECK(counts(b) == want);
    // A rolled-back pass changes no count.
    finish(a, 21, JobState::succeeded);
    a.rollback();
    CHECK(counts(a) == want);
    // Retention subtracts what it deletes, whichever broker counted it; one state at a time
    // (dead jobs on a clock of their own) or every finished one, within the limit.
    std::uint64_t removed = 0;
    for (const auto& r : b.remove_finished(JobState::succeeded, std::nullopt, 5000, 4)) {
        CHECK(r.state == JobState::succeeded);
        removed += r.count;
    }
    CHECK(removed == 4);
    for (const auto& r : b.remove_finished(std::nullopt, std::nullopt, 5000, 100))
        removed += r.count;
    b.commit();
    CHECK(removed == 20);
    CHECK(counts(a) == std::map<JobState, std::uint64_t>{{JobState::ready, 10}});
    pg::Connection check(conninfo);
    // Rows that reach 0 are dropped; the shards' rows of a count may cancel out (bounded: at most
    // kCountShards rows per queue and state).
    CHECK(check.query("SELECT count(*) FROM job_counts WHERE n = 0").i64(0, 0) == 0);
    CHECK(check.query("SELECT count(*) FROM job_counts").i64(0, 0) <= 2);
    // With many finished rows the count reads the unfinished ones through their index only.
    check.exec(
        "INSERT INTO jobs (queue, state, payload, max_attempts, created_at, finished_at) "
        "SELECT 'done', 'succeeded', '\\x00', 1, 1, 2 FROM generate_series(1, 20000)");
    check.exec("INSERT INTO job_counts VALUES ('done', 'succeeded', 0, 20000)");
    check.exec("ANALYZE jobs");
    auto plan = check.query(std::string("EXPLAIN ") + PgStore::kCountJobsSql);
    std::string text;
    for (int i = 0; i < plan.rows(); ++i)
        text += plan.text(i, 0) + "\n";
    CHECK_MESSAGE(text.find("Seq Scan on jobs") == std::string::npos, text);
    auto all = counts(a);
    CHECK(all[JobState::ready] == 10);
    std::uint64_t done = 0;
    for (const auto& c : a.count_jobs())
        if (c.queue == "done") done += c.count;
    CHECK(done == 20000);
}

TEST_CASE("migrations 6 and 7 on PostgreSQL: finished jobs by state; timed pauses are stored") {
    pg::Connection(server().conninfo()).exec("CREATE SCHEMA mig6");
    auto conninfo = server().conninfo() + " options='-csearch_path=mig6'";
    pg::Connection check(conninfo);
    { PgStore fresh(conninfo); }
    // What version 5 had.
    check.exec(
        "DROP TABLE IF EXISTS batches; ALTER TABLE jobs DROP COLUMN IF EXISTS batch_id; "
        "ALTER TABLE queues DROP COLUMN IF EXISTS retention_ms, DROP COLUMN IF EXISTS "
        "default_expires_in_ms; "
        "DROP TABLE IF EXISTS job_deps; ALTER TABLE jobs DROP COLUMN IF EXISTS blocked_on; "
        "DROP INDEX jobs_finished; CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state "
        "IN ('succeeded', 'dead', 'cancelled'); ALTER TABLE queues DROP COLUMN paused_until; "
        "ALTER TABLE queues DROP COLUMN IF EXISTS max_running, DROP COLUMN IF EXISTS rate, "
        "DROP COLUMN IF EXISTS rate_per_ms, DROP COLUMN IF EXISTS rate_log, DROP COLUMN IF "
        "EXISTS default_max_attempts, DROP COLUMN IF EXISTS default_timeout_ms, DROP COLUMN IF "
        "EXISTS default_priority; DROP INDEX IF EXISTS jobs_running_queue; "
        "ALTER TABLE jobs DROP COLUMN expires_at; "
        "UPDATE errand_schema SET version = 5");
    PgStore store(conninfo);
    CHECK(store.schema_version() == PgStore::kSchemaVersion);
    auto def = check.query(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_finished' "
        "AND schemaname = 'mig6'");
    REQUIRE(def.rows() == 1);
    CHECK(def.text(0, 0).find("(state, finished_at)") != std::string::npos);

    // A timed pause's end is a row: another broker (another connection) reads it, and only
    // the pause it names is resumed.
    store.pause_until("q", 5000);
    store.commit();
    PgStore other(conninfo);
    CHECK(other.pause_deadlines() ==
          std::vector<std::pair<std::string, errand::Millis>>{{"q", 5000}});
    CHECK_FALSE(other.resume_due("q", 4000));
    CHECK(other.resume_due("q", 5000));
    other.commit();
    CHECK(store.paused_queues().empty());
    CHECK(store.pause_deadlines().empty());
}

TEST_CASE("migration 8 on PostgreSQL: a version-7 database keeps its jobs; `expired` is a state") {
    using errand::JobState;
    pg::Connection(server().conninfo()).exec("CREATE SCHEMA mig8");
    auto conninfo = server().conninfo() + " options='-csearch_path=mig8'";
    pg::Connection check(conninfo);
    { PgStore fresh(conninfo); }
    // What version 7 had (version 9's queue settings go too), and jobs as it wrote them.
    check.exec(
        "DROP TABLE IF EXISTS batches; ALTER TABLE jobs DROP COLUMN IF EXISTS batch_id; "
        "ALTER TABLE queues DROP COLUMN IF EXISTS retention_ms, DROP COLUMN IF EXISTS "
        "default_expires_in_ms; "
        "DROP TABLE IF EXISTS job_deps; ALTER TABLE jobs DROP COLUMN IF EXISTS blocked_on; "
        "ALTER TABLE queues DROP COLUMN IF EXISTS max_running, DROP COLUMN IF EXISTS rate, "
        "DROP COLUMN IF EXISTS rate_per_ms, DROP COLUMN IF EXISTS rate_log, DROP COLUMN IF "
        "EXISTS default_max_attempts, DROP COLUMN IF EXISTS default_timeout_ms, DROP COLUMN IF "
        "EXISTS default_priority; DROP INDEX IF EXISTS jobs_running_queue; "
        "ALTER TABLE jobs DROP COLUMN expires_at; "
        "ALTER TABLE jobs DROP CONSTRAINT jobs_state_check; ALTER TABLE jobs ADD CONSTRAINT "
        "jobs_state_check CHECK (state IN ('scheduled', 'ready', 'running', 'retrying', "
        "'succeeded', 'dead', 'cancelled')); "
        "ALTER TABLE job_counts DROP CONSTRAINT job_counts_state_check; ALTER TABLE job_counts "
        "ADD CONSTRAINT job_counts_state_check CHECK (state IN ('succeeded', 'dead', "
        "'cancelled')); DROP INDEX jobs_finished; CREATE INDEX jobs_finished ON jobs (state, "
        "finished_at) WHERE state IN ('succeeded', 'dead', 'cancelled'); "
        "UPDATE errand_schema SET version = 7");
    check.exec(
        "INSERT INTO jobs (queue, state, payload, max_attempts, created_at, run_at) VALUES "
        "('q', 'ready', '\\x01', 3, 1000, NULL), ('q', 'scheduled', '\\x02', 3, 1000, 99000)");
    check.exec(
        "INSERT INTO jobs (queue, state, payload, max_attempts, created_at, finished_at) VALUES "
        "('q', 'succeeded', '\\x03', 3, 1000, 2000); "
        "INSERT INTO job_counts VALUES ('q', 'succeeded', 0, 1)");
    CHECK_THROWS(check.exec("UPDATE jobs SET state = 'expired' WHERE id = 1"));

    PgStore store(conninfo);
    CHECK(store.schema_version() == PgStore::kSchemaVersion);
    auto counts = [&] {
        std::map<JobState, std::uint64_t> out;
        for (const auto& c : store.count_jobs())
            if (c.queue == "q") out[c.state] += c.count;
        return out;
    };
    CHECK(counts() == std::map<JobState, std::uint64_t>{{JobState::ready, 1},
                                                        {JobState::scheduled, 1},
                                                        {JobState::succeeded, 1}});
    std::vector<errand::JobId> live;
    store.scan_live([&](LiveJob&& j) {
        live.push_back(j.id);
        CHECK_FALSE(j.expires_at.has_value());
    });
    CHECK(live == std::vector<errand::JobId>{1, 2});
    CHECK(check
              .query("SELECT count(*) FROM pg_indexes WHERE indexname = 'jobs_expiry' AND "
                     "schemaname = 'mig8'")
              .i64(0, 0) == 1);

    // New jobs carry an expiry; expire_due ends the waiting ones whose time has come, and the
    // claim never takes a job past its expiry.
    NewJob soon;
    soon.spec.queue = "q";
    soon.spec.payload = "soon";
    soon.created_at = 3000;
    soon.expires_at = 5000;
    auto a = store.insert_job(soon, "submitted");
    NewJob later = soon;
    later.expires_at = 9000;
    auto b = store.insert_job(later, "submitted");
    store.commit();
    CHECK(store.load_live(a.id)->expires_at == 5000);
    CHECK(store.get_job(b.id)->expires_at == errand::to_time(9000));
    CHECK(store.expire_due(4999, 10).empty());
    auto gone = store.expire_due(5000, 10);
    store.commit();
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].id == a.id);
    CHECK(gone[0].from == JobState::ready);
    auto job = store.get_job(a.id);
    CHECK(job->state == JobState::expired);
    CHECK(job->finished_at == errand::to_time(5000));
    CHECK(store.events(a.id).back().reason == "expired");
    CHECK(counts()[JobState::expired] == 1);
    CHECK(counts()[JobState::ready] == 2);  // job 1 and `later`
    auto claimed = store.claim({"q", false, 10, std::vector<std::string>(10, "w"), 9000});
    store.commit();
    REQUIRE(claimed.size() == 1);  // job 1; `later` is past its expiry at 9000
    CHECK(claimed[0].job.id == 1);
    CHECK(store.expire_due(9000, 10).size() == 1);
    store.commit();
    // The wider CHECK still refuses what is not a state; retention deletes expired jobs.
    CHECK_THROWS(check.exec("UPDATE jobs SET state = 'bogus' WHERE id = 2"));
    std::uint64_t removed = 0;
    for (const auto& r : store.remove_finished(JobState::expired, std::nullopt, 9001, 10))
        removed += r.count;
    store.commit();
    CHECK(removed == 2);
    CHECK(counts().count(JobState::expired) == 0);
}

TEST_CASE(
    "queue retention and expires_in on PostgreSQL: stored, read back, and retention's pass "
    "over the other queues skips a queue with its own") {
    using errand::JobState;
    pg::Connection(server().conninfo()).exec("CREATE SCHEMA qretention");
    PgStore s(server().conninfo() + " options='-csearch_path=qretention'");
    for (errand::JobId id = 1; id <= 4; ++id) {
        NewJob j;
        j.spec.queue = id <= 2 ? "keep" : "q";
        j.spec.payload = "x";
        j.created_at = 1000;
        s.insert_job(j, "submitted");
    }
    s.commit();
    for (errand::JobId id = 1; id <= 4; ++id) {
        Transition end;
        end.id = id;
        end.from = JobState::ready;
        end.to = JobState::cancelled;
        end.at = 2000;
        end.finished_at = 2000;
        end.reason = "cancelled";
        REQUIRE(s.apply(end));
    }
    QueueLimits l;
    l.retention_ms = 86'400'000;
    l.expires_in_ms = 60'000;
    s.set_queue_limits("keep", l);
    s.commit();
    auto all = s.queue_limits();
    REQUIRE(all.size() == 1);
    CHECK(all[0].first == "keep");
    CHECK(all[0].second.retention_ms == errand::Millis{86'400'000});
    CHECK(all[0].second.expires_in_ms == errand::Millis{60'000});
    std::uint64_t removed = 0;
    for (const auto& r : s.remove_finished(std::nullopt, std::nullopt, 5000, 100, true)) {
        CHECK(r.queue == "q");
        removed += r.count;
    }
    s.commit();
    CHECK(removed == 2);
    for (const auto& r : s.remove_finished(std::nullopt, std::string("keep"), 5000, 100))
        removed += r.count;
    s.commit();
    CHECK(removed == 4);
}
