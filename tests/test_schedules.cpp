// Cron schedules in the broker (broker/schedules.cpp), driven in-process through Broker::process
// with the time of each pass given by the test: SCHEDULE_* commands and their bad input, each
// tick firing once (with the tick in the job's unique key), pause/resume, restarts across a tick,
// the catch-up policies and their bounds, DST in a zone, and (PostgreSQL) two brokers on one
// database. Built twice: test_schedules on SQLite files, test_schedules_pg on PostgreSQL.
#include <doctest/doctest.h>

#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "broker.hpp"
#include "errand/codec.hpp"
#include "store_sqlite.hpp"
#ifdef ERRAND_TEST_PG
#include "pg_server.hpp"
#include "store_pg.hpp"
#endif

using namespace errand;
using namespace errand::broker;

namespace {

// 2026-01-01T00:00:00Z, a Thursday.
constexpr Millis kJan1 = 1'767'225'600'000;

class FixedClock final : public Clock {
  public:
    Millis now_ms() const override { return kJan1; }
};

BrokerConfig config() {
    BrokerConfig c;
    c.listen = "";  // nothing bound: messages go through process()
    return c;
}

// Where a fixture's database lives: a SQLite file in a temp dir, or a PostgreSQL schema of its
// own on one server started for the program. Several brokers (one after another, or at once on
// PostgreSQL) open the same one.
struct Database {
#ifdef ERRAND_TEST_PG
    static errand::pgserver::PgServer& server() {
        static errand::pgserver::PgServer s;
        return s;
    }
    std::string conninfo;
    Database() {
        static int n = 0;
        std::string schema = "sched_" + std::to_string(getpid()) + "_" + std::to_string(++n);
        pg::Connection(server().conninfo()).exec("CREATE SCHEMA " + schema);
        conninfo = server().conninfo() + " options='-csearch_path=" + schema + "'";
    }
    std::unique_ptr<Store> open() const {
        return std::make_unique<PgStore>(conninfo);
    }
#else
    std::filesystem::path dir;
    Database() {
        static int n = 0;
        dir = std::filesystem::temp_directory_path() /
              ("errand-sched-" + std::to_string(getpid()) + "-" + std::to_string(++n));
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
    }
    ~Database() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::unique_ptr<Store> open() const {
        return std::make_unique<SqliteStore>((dir / "errand.db").string());
    }
#endif
};

// One broker on the database, passes at times the test gives.
struct Node {
    FixedClock clock;
    Broker broker;
    Millis now;
    std::uint64_t req = 1;
    explicit Node(const Database& db, Millis start = kJan1)
        : broker(config(), db.open(), clock), now(start) {}

    std::vector<Envelope> send(std::string_view command, std::string body) {
        return broker.process(Envelope{"client", std::string(kProtocolVersion),
                                       std::string(command), std::move(body), 3},
                              now, now);
    }
    Envelope ask(std::string_view command, std::string body) {
        auto out = send(command, std::move(body));
        std::erase_if(out, [](const Envelope& e) { return e.identity != "client"; });
        REQUIRE(out.size() == 1);
        return out.front();
    }
    // A pass at `at` (a PING): the engine's tick runs in it.
    void pass_at(Millis at) {
        REQUIRE(at >= now);
        now = at;
        ask(cmd::kPing, encode_req(req++));
    }

    Envelope add_raw(const Schedule& s) {
        return ask(cmd::kScheduleAdd, encode(ScheduleAddRequest{req++, s}));
    }
    Schedule add(const Schedule& s) {
        auto rep = add_raw(s);
        REQUIRE_MESSAGE(rep.command == cmd::kSchedule, error_text(rep));
        Body b(rep.body);
        return decode_schedule(b.reader());
    }
    Envelope named(std::string_view command, const std::string& name) {
        return ask(command, encode(ScheduleRequest{req++, name}));
    }
    Schedule show(const std::string& name) {
        auto rep = named(cmd::kScheduleShow, name);
        REQUIRE_MESSAGE(rep.command == cmd::kSchedule, error_text(rep));
        Body b(rep.body);
        return decode_schedule(b.reader());
    }
    std::vector<Schedule> list() {
        auto rep = ask(cmd::kScheduleList, encode_req(req++));
        REQUIRE(rep.command == cmd::kSchedules);
        Body b(rep.body);
        return decode_schedules(b.reader());
    }
    std::vector<JobInfo> jobs(const std::string& queue) {
        ListRequest m;
        m.req = req++;
        m.queue = queue;
        m.limit = 1000;
        auto rep = ask(cmd::kList, encode(m));
        REQUIRE(rep.command == cmd::kJobs);
        Body b(rep.body);
        std::vector<JobInfo> out;
        for (const auto& o : b.reader().array("jobs"))
            out.push_back(decode_job_info(Reader(o)));
        return out;
    }
    static std::string error_text(const Envelope& e) {
        if (e.command != cmd::kError) return std::string(e.command);
        Body b(e.body);
        auto err = decode_error(b.reader());
        return std::string(to_string(err.code)) + ": " + err.message;
    }
    ErrorReply error(const Envelope& e) {
        REQUIRE(e.command == cmd::kError);
        Body b(e.body);
        return decode_error(b.reader());
    }
};

Schedule every(const std::string& name, const std::string& cron, const std::string& queue,
               const std::string& catch_up = "latest", const std::string& zone = "UTC") {
    Schedule s;
    s.name = name;
    s.cron = cron;
    s.zone = zone;
    s.catch_up = catch_up;
    s.job.queue = queue;
    s.job.payload = "tick";
    return s;
}

// The ticks (from the jobs' unique keys "schedule:NAME:TICK") of the jobs in `queue`, ascending.
std::vector<Millis> ticks_of(const std::vector<JobInfo>& jobs, const std::string& name) {
    std::vector<Millis> out;
    const std::string prefix = "schedule:" + name + ":";
    for (const auto& j : jobs) {
        REQUIRE(j.unique);
        REQUIRE(j.unique->rfind(prefix, 0) == 0);
        out.push_back(std::stoll(j.unique->substr(prefix.size())));
    }
    std::sort(out.begin(), out.end());
    return out;
}

constexpr Millis kSec = 1000;

}  // namespace

TEST_CASE("schedule add: the next tick is the first after now; list and show report it") {
    Database db;
    Node n(db, kJan1 + 3 * kSec);
    auto s = n.add(every("ten", "*/10 * * * * *", "q"));
    CHECK(s.next_at == to_time(kJan1 + 10 * kSec));
    CHECK(s.created_at == to_time(kJan1 + 3 * kSec));
    CHECK_FALSE(s.last_at);
    CHECK_FALSE(s.last_job);
    auto all = n.list();
    REQUIRE(all.size() == 1);
    CHECK(all[0].name == "ten");
    CHECK(all[0].cron == "*/10 * * * * *");
    CHECK(all[0].zone == "UTC");
    CHECK(all[0].catch_up == "latest");
    CHECK(all[0].job.queue == "q");
    CHECK(all[0].job.payload.empty());  // left out of the list
    CHECK(n.show("ten").next_at == to_time(kJan1 + 10 * kSec));
    CHECK(n.show("ten").job.payload == "tick");
}

TEST_CASE("schedule bad input: a clear error, and nothing changes") {
    Database db;
    Node n(db);
    n.add(every("good", "@hourly", "q"));
    auto bad_cron = n.error(n.add_raw(every("b1", "61 * * * *", "q")));
    CHECK(bad_cron.code == ErrorCode::bad_request);
    CHECK(bad_cron.message == "cron field 'minute' ('61'): 61 is out of range 0-59");
    auto fields = n.error(n.add_raw(every("b2", "* * *", "q")));
    CHECK(fields.code == ErrorCode::bad_request);
    CHECK(fields.message.find("has 3 fields") != std::string::npos);
    auto zone = n.error(n.add_raw(every("b3", "@daily", "q", "latest", "Mars/Olympus")));
    CHECK(zone.code == ErrorCode::bad_request);
    CHECK(zone.message.find("unknown time zone 'Mars/Olympus'") != std::string::npos);
    auto policy = n.error(n.add_raw(every("b4", "@daily", "q", "sometimes")));
    CHECK(policy.code == ErrorCode::bad_request);
    CHECK(policy.message.find("catch_up must be none, latest or all") != std::string::npos);
    auto token = every("b5", "@daily", "q");
    token.job.token = "mine";
    CHECK(n.error(n.add_raw(token)).code == ErrorCode::bad_request);
    auto name = n.error(n.add_raw(every("no spaces", "@daily", "q")));
    CHECK(name.code == ErrorCode::bad_request);
    CHECK(name.message.find("invalid schedule name") != std::string::npos);
    auto taken = n.error(n.add_raw(every("good", "@daily", "other")));
    CHECK(taken.code == ErrorCode::invalid_state);
    CHECK(taken.message.find("exists already") != std::string::npos);
    for (auto command :
         {cmd::kScheduleShow, cmd::kScheduleRemove, cmd::kSchedulePause, cmd::kScheduleResume}) {
        auto e = n.error(n.named(command, "nope"));
        CHECK(e.code == ErrorCode::not_found);
        CHECK(e.message == "no schedule named 'nope'");
    }
    auto all = n.list();
    REQUIRE(all.size() == 1);
    CHECK(all[0].name == "good");
    CHECK(all[0].cron == "@hourly");  // the refused add of the same name changed nothing
    CHECK(all[0].job.queue == "q");
}

TEST_CASE("each tick submits one job, keyed by the tick; show reports it and its state") {
    Database db;
    Node n(db, kJan1 + 3 * kSec);
    n.add(every("ten", "*/10 * * * * *", "q"));
    n.pass_at(kJan1 + 9 * kSec);
    CHECK(n.jobs("q").empty());  // not before its time
    n.pass_at(kJan1 + 10 * kSec);
    auto jobs = n.jobs("q");
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].state == JobState::ready);
    CHECK(jobs[0].unique == "schedule:ten:" + std::to_string(kJan1 + 10 * kSec));
    auto s = n.show("ten");
    CHECK(s.last_at == to_time(kJan1 + 10 * kSec));
    CHECK(s.last_job == jobs[0].id);
    CHECK(s.last_state == JobState::ready);
    CHECK(s.next_at == to_time(kJan1 + 20 * kSec));
    // More passes at the same time, and just after, fire nothing more.
    n.pass_at(kJan1 + 10 * kSec);
    n.pass_at(kJan1 + 15 * kSec);
    CHECK(n.jobs("q").size() == 1);
    for (int t = 16; t <= 60; ++t)
        n.pass_at(kJan1 + t * kSec);
    CHECK(ticks_of(n.jobs("q"), "ten") ==
          std::vector<Millis>{kJan1 + 10 * kSec, kJan1 + 20 * kSec, kJan1 + 30 * kSec,
                              kJan1 + 40 * kSec, kJan1 + 50 * kSec, kJan1 + 60 * kSec});
}

TEST_CASE("pause stops the ticks; resume fires from now on, without the paused ones") {
    Database db;
    Node n(db);
    n.add(every("s", "* * * * * *", "q"));
    n.pass_at(kJan1 + 1 * kSec);
    REQUIRE(n.jobs("q").size() == 1);
    auto paused = n.named(cmd::kSchedulePause, "s");
    REQUIRE(paused.command == cmd::kSchedule);
    for (int t = 2; t <= 10; ++t)
        n.pass_at(kJan1 + t * kSec);
    CHECK(n.jobs("q").size() == 1);
    CHECK(n.show("s").paused);
    REQUIRE(n.named(cmd::kScheduleResume, "s").command == cmd::kSchedule);
    auto s = n.show("s");
    CHECK_FALSE(s.paused);
    CHECK(s.next_at == to_time(kJan1 + 11 * kSec));
    n.pass_at(kJan1 + 11 * kSec);
    CHECK(ticks_of(n.jobs("q"), "s") == std::vector<Millis>{kJan1 + 1 * kSec, kJan1 + 11 * kSec});
    // Removed: no more ticks, its jobs stay.
    REQUIRE(n.named(cmd::kScheduleRemove, "s").command == cmd::kOk);
    n.pass_at(kJan1 + 20 * kSec);
    CHECK(n.jobs("q").size() == 2);
    CHECK(n.list().empty());
}

TEST_CASE("a broker restart across a tick fires it once") {
    Database db;
    {
        Node a(db, kJan1 + 1 * kSec);
        a.add(every("m", "* * * * *", "q"));  // every minute
        a.pass_at(kJan1 + 59 * kSec);
        CHECK(a.jobs("q").empty());
    }  // down across the tick at 60 s
    {
        Node b(db, kJan1 + 62 * kSec);
        b.pass_at(kJan1 + 62 * kSec);
        auto jobs = b.jobs("q");
        REQUIRE(jobs.size() == 1);
        CHECK(jobs[0].unique == "schedule:m:" + std::to_string(kJan1 + 60 * kSec));
        b.pass_at(kJan1 + 63 * kSec);
    }
    {
        Node c(db, kJan1 + 64 * kSec);  // and again: nothing fires twice
        c.pass_at(kJan1 + 64 * kSec);
        CHECK(c.jobs("q").size() == 1);
        CHECK(c.show("m").next_at == to_time(kJan1 + 120 * kSec));
    }
}

TEST_CASE("catch-up after an outage: none skips, latest fires the last tick, all fires each") {
    Database db;
    {
        Node a(db, kJan1);
        a.add(every("n", "*/10 * * * * *", "qn", "none"));
        a.add(every("l", "*/10 * * * * *", "ql", "latest"));
        a.add(every("a", "*/10 * * * * *", "qa", "all"));
        a.pass_at(kJan1 + 10 * kSec);  // the first tick, while up
    }
    // Down from 10 s to 67 s: the ticks at 20..60 s were missed (60 s is 7 s old, past the 5 s
    // grace that `none` allows a late pass).
    Node b(db, kJan1 + 67 * kSec);
    b.pass_at(kJan1 + 67 * kSec);
    const Millis t10 = kJan1 + 10 * kSec;
    CHECK(ticks_of(b.jobs("qn"), "n") == std::vector<Millis>{t10});
    CHECK(ticks_of(b.jobs("ql"), "l") == std::vector<Millis>{t10, kJan1 + 60 * kSec});
    CHECK(ticks_of(b.jobs("qa"), "a") == std::vector<Millis>{t10, kJan1 + 20 * kSec,
                                                             kJan1 + 30 * kSec, kJan1 + 40 * kSec,
                                                             kJan1 + 50 * kSec, kJan1 + 60 * kSec});
    for (const char* name : {"n", "l", "a"})
        CHECK(b.show(name).next_at == to_time(kJan1 + 70 * kSec));
    // After the outage every policy fires the ticks it is up for.
    b.pass_at(kJan1 + 70 * kSec);
    CHECK(b.jobs("qn").size() == 2);
    CHECK(b.jobs("ql").size() == 3);
    CHECK(b.jobs("qa").size() == 7);
}

TEST_CASE("catch-up all is bounded: at most 100 missed ticks, the most recent ones") {
    Database db;
    {
        Node a(db, kJan1);
        a.add(every("a", "* * * * * *", "qa", "all"));
    }
    Node b(db, kJan1 + 300 * kSec + 500);  // 300 ticks missed
    b.pass_at(b.now);
    auto ticks = ticks_of(b.jobs("qa"), "a");
    REQUIRE(ticks.size() == 100);
    CHECK(ticks.front() == kJan1 + 201 * kSec);
    CHECK(ticks.back() == kJan1 + 300 * kSec);
    CHECK(b.show("a").last_at == to_time(kJan1 + 300 * kSec));
}

TEST_CASE("a long outage is caught up in bounded slices, one pass at a time") {
    Database db;
    {
        Node a(db, kJan1);
        a.add(every("l", "* * * * * *", "q", "latest"));
    }
    // 3500 ticks missed: more than one pass steps over (1000), so the first passes only move
    // the cursor on; the latest tick fires once the cursor reaches it.
    const Millis back = kJan1 + 3500 * kSec;
    Node b(db, back);
    b.pass_at(back);
    auto s = b.show("l");
    CHECK(b.jobs("q").empty());
    REQUIRE(s.next_at);
    CHECK(*s.next_at > to_time(kJan1 + 900 * kSec));
    CHECK(*s.next_at <= to_time(kJan1 + 1000 * kSec));
    // Every request is a pass (its tick runs after the reply is made): four in all fire it.
    for (int i = 0; i < 10 && b.jobs("q").empty(); ++i)
        b.pass_at(back);
    CHECK(ticks_of(b.jobs("q"), "l") == std::vector<Millis>{back});
    CHECK(b.show("l").next_at == to_time(back + kSec));
}

TEST_CASE("DST in America/New_York, driven through the broker: a 02:30 job fires once a day") {
    Database db;
    // 2026-03-07T12:00Z; clocks go forward on 8 March at 07:00 UTC, so 02:30 does not exist.
    const Millis mar7 = 1'772'884'800'000;
    Node n(db, mar7);
    n.add(every("nyc", "30 2 * * *", "q", "latest", "America/New_York"));
    for (Millis t = mar7; t <= mar7 + 48 * 3600 * kSec; t += 600 * kSec)
        n.pass_at(t);
    // 8 March at the end of the gap (07:00Z = 03:00 EDT), 9 March at 02:30 EDT (06:30Z).
    const Millis mar8_0700 = 1'772'953'200'000;
    const Millis mar9_0630 = 1'773'037'800'000;
    CHECK(ticks_of(n.jobs("q"), "nyc") == std::vector<Millis>{mar8_0700, mar9_0630});
}

#ifdef ERRAND_TEST_PG
TEST_CASE("two brokers on one database fire each tick once") {
    Database db;
    Node a(db), b(db);
    a.add(every("s", "* * * * * *", "q"));
    b.add(every("t", "*/2 * * * * *", "q2"));
    // Both brokers run passes at the same times, at once, from two threads. A barrier keeps
    // their driven clocks together, as the brokers' wall clocks are (a broker whose clock ran
    // ahead would rightly fire only the latest of the ticks the other had not fired yet).
    std::atomic<bool> failed{false};
    std::barrier step(2);
    auto run = [&](Node& n) {
        for (int t = 1; t <= 30; ++t)
            for (int k = 0; k < 3; ++k) {
                try {
                    if (!failed) n.pass_at(kJan1 + t * kSec + k * 300);
                } catch (...) {
                    failed = true;
                }
                step.arrive_and_wait();
            }
    };
    std::thread ta(run, std::ref(a)), tb(run, std::ref(b));
    ta.join();
    tb.join();
    REQUIRE_FALSE(failed);
    std::vector<Millis> want, want2;
    for (int t = 1; t <= 30; ++t) {
        want.push_back(kJan1 + t * kSec);
        if (t % 2 == 0) want2.push_back(kJan1 + t * kSec);
    }
    auto got = ticks_of(a.jobs("q"), "s"), got2 = ticks_of(b.jobs("q2"), "t");
    auto seconds = [](const std::vector<Millis>& v) {
        std::string out;
        for (Millis x : v)
            out += std::to_string((x - kJan1) / kSec) + " ";
        return out;
    };
    INFO("s fired at " << seconds(got) << "; t fired at " << seconds(got2));
    CHECK(got == want);
    CHECK(got2 == want2);
}
#endif

// A database of the schema before schedules (what today's errand wrote, its jobs kept): the
// migration adds the table, the jobs are still there, schedules work.
TEST_CASE("migration: a database from before schedules gets them and keeps its jobs") {
    Database db;
    JobId old_job = 0;
    {
        Node a(db);
        SubmitRequest m;
        m.req = a.req++;
        JobSpec spec;
        spec.queue = "old";
        spec.payload = "kept";
        m.jobs.push_back(spec);
        auto rep = a.ask(cmd::kSubmit, encode(m));
        REQUIRE(rep.command == cmd::kSubmitted);
        Body b(rep.body);
        old_job = decode_submitted(b.reader()).ids.at(0);
    }
#ifdef ERRAND_TEST_PG
    pg::Connection(db.conninfo)
        .exec(
            "DROP TABLE batches; ALTER TABLE jobs DROP COLUMN batch_id; "
            "ALTER TABLE queues DROP COLUMN retention_ms, DROP COLUMN default_expires_in_ms; "
            "DROP TABLE job_deps; ALTER TABLE jobs DROP COLUMN blocked_on; "
            "ALTER TABLE jobs DROP COLUMN expires_at; "
            "ALTER TABLE queues DROP COLUMN paused_until; DROP TABLE job_counts; DROP TABLE "
            "schedules; ALTER TABLE queues DROP COLUMN max_running, DROP COLUMN rate, DROP "
            "COLUMN rate_per_ms, DROP COLUMN rate_log, DROP COLUMN default_max_attempts, DROP "
            "COLUMN default_timeout_ms, DROP COLUMN default_priority; DROP INDEX "
            "jobs_running_queue; UPDATE errand_schema SET version = 3");
#else
    {
        sqlite3* h = nullptr;
        REQUIRE(sqlite3_open((db.dir / "errand.db").c_str(), &h) == SQLITE_OK);
        char* err = nullptr;
        // Version 8's tables and columns go too (they came after schedules), and 10's to 15's.
        int rc = sqlite3_exec(h,
                              "DROP INDEX jobs_batch; ALTER TABLE jobs DROP COLUMN batch_id; "
                              "DROP TABLE batches; "
                              "ALTER TABLE queues DROP COLUMN retention_ms; "
                              "ALTER TABLE queues DROP COLUMN default_expires_in_ms; "
                              "DROP TABLE job_deps; ALTER TABLE jobs DROP COLUMN blocked_on; "
                              "ALTER TABLE jobs DROP COLUMN expires_at; "
                              "ALTER TABLE queues DROP COLUMN max_running; "
                              "ALTER TABLE queues DROP COLUMN rate; "
                              "ALTER TABLE queues DROP COLUMN rate_per_ms; "
                              "ALTER TABLE queues DROP COLUMN default_max_attempts; "
                              "ALTER TABLE queues DROP COLUMN default_timeout_ms; "
                              "ALTER TABLE queues DROP COLUMN default_priority; "
                              "ALTER TABLE queues DROP COLUMN paused_until; "
                              "DROP TABLE job_counts; DROP TABLE payloads; "
                              "DROP TABLE event_seq; "
                              "DELETE FROM events WHERE id >= 1099511627776; "
                              "DROP TABLE schedules; UPDATE schema_version SET version = 6",
                              nullptr, nullptr, &err);
        std::string message = err ? err : "";
        sqlite3_free(err);
        sqlite3_close(h);
        REQUIRE_MESSAGE(rc == SQLITE_OK, message);
    }
#endif
    Node b(db, kJan1 + 1 * kSec);
    auto jobs = b.jobs("old");
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].id == old_job);
    CHECK(jobs[0].payload_size == 4);
    b.add(every("new", "* * * * * *", "q"));
    b.pass_at(kJan1 + 2 * kSec);
    REQUIRE(b.jobs("q").size() == 1);
    CHECK(b.jobs("q")[0].id > old_job);
}

TEST_CASE(
    "a schedule's expires_in: kept with the schedule; each job expires that long after its "
    "tick, not after the pass that fires it") {
    Database db;
    {
        Node a(db, kJan1 + 3 * kSec);
        auto s = every("exp", "*/10 * * * * *", "q");
        s.job.expires_in = std::chrono::milliseconds(30 * kSec);
        CHECK(a.add(s).job.expires_in == std::chrono::milliseconds(30 * kSec));
    }
    Node n(db, kJan1 + 4 * kSec);  // a restart: read back from the store
    CHECK(n.show("exp").job.expires_in == std::chrono::milliseconds(30 * kSec));
    n.pass_at(kJan1 + 13 * kSec);  // the tick at 10 s fires 3 s late
    auto jobs = n.jobs("q");
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].expires_at == to_time(kJan1 + 40 * kSec));
    n.pass_at(kJan1 + 20 * kSec);
    jobs = n.jobs("q");
    REQUIRE(jobs.size() == 2);
    std::vector<std::optional<Timestamp>> expiries;
    for (const auto& j : jobs)
        expiries.push_back(j.expires_at);
    std::sort(expiries.begin(), expiries.end());
    CHECK(expiries == std::vector<std::optional<Timestamp>>{to_time(kJan1 + 40 * kSec),
                                                            to_time(kJan1 + 50 * kSec)});
}
