// Several brokers, all active, on one PostgreSQL database (issue 12, stage 2): real brokers on
// their own ports sharing a database started for the test, library workers and clients spread
// over them. The database is the only truth: every job runs once whichever broker its worker is
// connected to, attempts are counted by the database, pauses, tokens and unique keys hold
// across brokers, and the jobs of a broker that died are taken over by the others.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include "pg.hpp"
#include "pg_server.hpp"

using namespace errand;
using namespace errand::test;
using errand::pgserver::PgServer;

namespace {

// Brokers on the test's database, with short heartbeats so a dead broker is noticed quickly.
std::vector<std::string> cluster_args(const PgServer& pg) {
    return {"--db", pg.uri(), "--heartbeat", "200ms", "--worker-timeout", "1s"};
}

std::int64_t scalar(const PgServer& pg, const std::string& sql) {
    broker::pg::Connection c(pg.conninfo());
    return c.query(sql).i64(0, 0);
}

// A library worker on one broker that counts how often each job ran.
struct CountingWorker {
    // `work`: how long each job takes (a job being run when its broker dies).
    CountingWorker(const Broker& broker, std::string worker_name, std::vector<std::string> queues,
                   std::chrono::milliseconds work = 0ms)
        : name(std::move(worker_name)),
          worker({.endpoint = broker.endpoint(),
                  .name = name,
                  .concurrency = 2,
                  .prefetch = 2,
                  .accept_commands = false,
                  .max_result = limits::kDefaultMaxResult}) {
        for (const auto& q : queues)
            worker.handle(q, [this, work](const Job& job) {
                if (work > 0ms) std::this_thread::sleep_for(work);
                std::lock_guard lock(mu);
                ++runs[job.id];
                return Outcome::success("ran:" + job.payload);
            });
        thread = std::make_unique<WorkerThread>(worker);
    }
    std::map<JobId, int> snapshot() {
        std::lock_guard lock(mu);
        return runs;
    }

    std::string name;
    Worker worker;
    std::mutex mu;
    std::map<JobId, int> runs;
    std::unique_ptr<WorkerThread> thread;
};

// A test's PostgreSQL server that counts statements (pg_stat_statements), for the cases that
// count the claims a broker makes.
struct CountingPg {
    CountingPg() : admin(pg.conninfo()) { admin.exec("CREATE EXTENSION pg_stat_statements"); }
    void reset() { admin.exec("SELECT pg_stat_statements_reset()"); }
    // The claim statements run since the last reset(), and the rows they claimed.
    std::int64_t claims() { return sum("calls"); }
    std::int64_t claimed() { return sum("rows"); }

    PgServer pg{{.settings = {"shared_preload_libraries=pg_stat_statements"}}};
    broker::pg::Connection admin;

  private:
    std::int64_t sum(const std::string& column) {
        return admin
            .query("SELECT COALESCE(sum(" + column +
                   "), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%UPDATE jobs SET "
                   "state = ''running'', attempts = attempts + 1%'")
            .i64(0, 0);
    }
};

}  // namespace

TEST_CASE("three brokers on one database: every job runs once, attempts counted by the database") {
    PgServer pg;
    TempDir d1, d2, d3;
    Broker b1(d1, cluster_args(pg)), b2(d2, cluster_args(pg)), b3(d3, cluster_args(pg));
    std::vector<Broker*> brokers{&b1, &b2, &b3};
    CountingWorker w1(b1, "w1", {"q"}), w2(b2, "w2", {"q"}), w3(b3, "w3", {"q"});

    constexpr int kJobs = 600;
    std::vector<std::string> tokens;
    std::vector<JobId> ids;
    for (int batch = 0; batch < kJobs / 50; ++batch) {
        // Through two of the brokers only: the third's worker gets its jobs from the database.
        Client client(brokers[batch % 2]->client_options());
        std::vector<JobSpec> specs;
        for (int i = 0; i < 50; ++i) {
            auto s = job_spec("q", std::to_string(batch * 50 + i));
            s.token = unique_token();
            tokens.push_back(*s.token);
            specs.push_back(std::move(s));
        }
        for (const auto& r : client.submit_batch(std::move(specs))) {
            CHECK_FALSE(r.duplicate);
            ids.push_back(r.id);
        }
    }
    // The same tokens sent again through another broker are the same jobs.
    for (int i = 0; i < 30; ++i) {
        Client other(brokers[(i / 50 + 1) % 3]->client_options());
        auto s = job_spec("q", "again");
        s.token = tokens[static_cast<std::size_t>(i)];
        auto r = other.submit(s);
        CHECK(r.duplicate);
        CHECK(r.id == ids[static_cast<std::size_t>(i)]);
    }

    bool all_done = wait_until(
        [&] { return scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == kJobs; },
        60s, 50ms);
    REQUIRE_MESSAGE(all_done, b1.logs(), b2.logs(), b3.logs());

    std::map<JobId, int> runs;
    for (auto* w : {&w1, &w2, &w3}) {
        auto r = w->snapshot();
        CHECK_MESSAGE(!r.empty(), w->name << " got no job");
        for (auto [id, n] : r)
            runs[id] += n;
    }
    CHECK(runs.size() == static_cast<std::size_t>(kJobs));
    for (auto [id, n] : runs)
        CHECK_MESSAGE(n == 1, "job " << id << " ran " << n << " times");
    CHECK(scalar(pg, "SELECT count(*) FROM jobs") == kJobs);
    CHECK(scalar(pg, "SELECT count(*) FROM jobs WHERE attempts <> 1") == 0);
    CHECK(scalar(pg, "SELECT count(*) FROM job_events WHERE reason = 'dispatched'") == kJobs);
    // Any broker answers for any job.
    Client c3(b3.client_options());
    auto first = c3.status(ids.front());
    CHECK(first.state == JobState::succeeded);
    CHECK(first.result == "ran:0");
}

TEST_CASE("PAUSE through one broker stops dispatch on the others; RESUME through a third") {
    PgServer pg;
    TempDir d1, d2, d3;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg)), c(d3, cluster_args(pg));
    CountingWorker wb(b, "wb", {"p", "other"}), wc(c, "wc", {"p", "other"});

    Client ca(a.client_options()), cb(b.client_options()), cc(c.client_options());
    ca.pause("p");
    std::vector<JobId> paused;
    for (int i = 0; i < 4; ++i)
        paused.push_back((i % 2 ? ca : cb).submit(job_spec("p", "x")).id);
    // The workers are served meanwhile: jobs of another queue run through both brokers.
    for (int i = 0; i < 6; ++i) {
        auto id = (i % 2 ? cb : cc).submit(job_spec("other", "y")).id;
        auto done = ca.wait(id, 10s);
        REQUIRE_MESSAGE(done.has_value(), b.logs(), c.logs());
        CHECK(done->state == JobState::succeeded);
    }
    for (JobId id : paused)
        CHECK(cb.status(id).state == JobState::ready);
    // C shows the pause too, once it refreshed its counts (each second).
    CHECK(wait_until(
        [&] {
            auto queues = cc.queues();
            return std::any_of(queues.begin(), queues.end(),
                               [](const auto& q) { return q.name == "p" && q.paused; });
        },
        5s, 50ms));

    cc.resume("p");
    for (JobId id : paused) {
        auto done = ca.wait(id, 10s);
        REQUIRE_MESSAGE(done.has_value(), b.logs(), c.logs());
        CHECK(done->state == JobState::succeeded);
    }
}

TEST_CASE("a unique key and a token hold across brokers") {
    PgServer pg;
    TempDir d1, d2;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));
    Client ca(a.client_options()), cb(b.client_options());

    auto s = job_spec("nobody", "x");
    s.unique = "report-42";
    auto first = ca.submit(s);
    CHECK_FALSE(first.duplicate);
    auto again = cb.submit(s);
    CHECK(again.duplicate);
    CHECK(again.id == first.id);

    auto t = job_spec("nobody", "y");
    t.token = unique_token();
    auto one = cb.submit(t);
    auto two = ca.submit(t);
    CHECK_FALSE(one.duplicate);
    CHECK(two.duplicate);
    CHECK(two.id == one.id);

    // Once the holder is finished, the key makes a new job, through either broker.
    ca.cancel(first.id);
    auto fresh = cb.submit(s);
    CHECK_FALSE(fresh.duplicate);
    CHECK(fresh.id > first.id);
    CHECK(scalar(pg, "SELECT count(*) FROM jobs") == 3);
}

TEST_CASE("a broker that dies: its running attempt is taken over, its delayed job runs on time") {
    PgServer pg;
    TempDir d1, d2, wd;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));
    WorkerDaemon doomed(wd, a.endpoint(), {"doomed", {"slow=sleep 60"}, 1});
    Client ca(a.client_options());
    auto slow = ca.submit(job_spec("slow", "")).id;
    REQUIRE_MESSAGE(wait_until([&] { return ca.status(slow).state == JobState::running; }, 10s),
                    a.logs(), doomed.logs());
    auto delayed_spec = job_spec("later", "z");
    delayed_spec.delay = 1500ms;
    auto delayed = ca.submit(delayed_spec).id;
    auto submitted_at = ca.status(delayed).created_at;

    // The host goes: the broker and its worker die together.
    a.kill9();
    doomed.kill9();

    // The broker that stays takes over: it never saw these jobs but in the database.
    CountingWorker survivor(b, "survivor", {"slow", "later"});
    Client cb(b.client_options());
    auto rescued = cb.wait(slow, 20s);
    REQUIRE_MESSAGE(rescued.has_value(), b.logs());
    CHECK(rescued->state == JobState::succeeded);
    CHECK(rescued->attempts == 2);
    CHECK(rescued->worker == "survivor");
    auto h = cb.history(slow);
    CHECK(std::any_of(h.begin(), h.end(), [](const Event& e) {
        return e.from == JobState::running && e.to == JobState::ready && e.reason == "worker lost";
    }));

    auto ran = cb.wait(delayed, 20s);
    REQUIRE_MESSAGE(ran.has_value(), b.logs());
    CHECK(ran->state == JobState::succeeded);
    REQUIRE(ran->started_at.has_value());
    CHECK(*ran->started_at >= submitted_at + 1500ms);
    CHECK(*ran->started_at <= submitted_at + 1500ms + 1000ms);
}

TEST_CASE(
    "WAIT on one broker for a job finished through another: notified, also after the "
    "waiting broker's connection was terminated") {
    PgServer pg;
    TempDir d1, d2, d3;
    auto debug = cluster_args(pg);
    debug.insert(debug.end(), {"--log-level", "debug"});  // B logs each WAIT it holds
    Broker a(d1, cluster_args(pg)), b(d2, debug), c(d3, cluster_args(pg));
    CountingWorker wc(c, "wc", {"w"});
    int waits = 0;
    auto count_waits = [&] {
        auto logs = b.logs();
        int n = 0;
        for (auto at = logs.find("a client waits for it"); at != std::string::npos;
             at = logs.find("a client waits for it", at + 1))
            ++n;
        return n;
    };
    Client ca(a.client_options()), cb(b.client_options()), cc(c.client_options());

    // Submitted through A while the queue is paused, waited for on B, run through C once
    // resumed: how long after the job finished B's waiter had its answer.
    auto round = [&] {
        ca.pause("w");
        auto id = ca.submit(job_spec("w", "x")).id;
        std::optional<JobInfo> got;
        std::chrono::system_clock::time_point answered;
        std::string failed;
        std::thread waiter([&] {
            try {
                got = cb.wait(id, 15s);
            } catch (const std::exception& e) {
                failed = e.what();
            }
            answered = std::chrono::system_clock::now();
        });
        // The wait is registered on B before the job can finish.
        ++waits;
        bool waiting = wait_until([&] { return count_waits() >= waits; }, 5s);
        cc.resume("w");
        waiter.join();
        REQUIRE(waiting);
        REQUIRE_MESSAGE(got.has_value(), failed, b.logs());
        CHECK(got->state == JobState::succeeded);
        REQUIRE(got->finished_at.has_value());
        auto at = std::chrono::time_point_cast<std::chrono::milliseconds>(answered);
        return (at - *got->finished_at).count();
    };
    std::vector<Millis> latency;
    for (int i = 0; i < 5; ++i)
        latency.push_back(round());
    std::sort(latency.begin(), latency.end());
    MESSAGE("finished through C -> answered on B, ms (sorted): "
            << latency[0] << " " << latency[1] << " " << latency[2] << " " << latency[3] << " "
            << latency[4]);
    // Notified: a few ms. Without the notification only the one-second backstop would answer,
    // ~500 ms in the middle.
    CHECK(latency[2] <= 200);

    // B's connection is cut: it reconnects and listens again, and its waiters are still answered
    // (by the notification once it listens again, or by the backstop).
    auto killed = scalar(pg,
                         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE application_name = 'errand-broker pid=" +
                             std::to_string(b.process().pid()) + "'");
    CHECK(killed == 1);
    auto after = round();
    CHECK(after <= 3000);
}

TEST_CASE(
    "PostgreSQL restarted (immediate) under load: nothing acknowledged is lost, the brokers "
    "reconnect by themselves") {
    PgServer pg;
    TempDir d1, d2;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));
    CountingWorker wa(a, "wa", {"load"}), wb(b, "wb", {"load"});
    Client ca(a.client_options()), cb(b.client_options());

    // Each job is submitted with a token until acknowledged (a storage error while the database
    // is down is an answer that nothing was stored: send it again).
    constexpr int kJobs = 200;
    std::vector<JobId> acked;
    for (int i = 0; i < kJobs; ++i) {
        if (i == kJobs / 2) pg.restart_immediate();
        auto s = job_spec("load", std::to_string(i));
        s.token = unique_token();
        Client& c = i % 2 ? ca : cb;
        std::optional<JobId> id;
        bool ok = wait_until(
            [&] {
                try {
                    id = c.submit(s).id;
                    return true;
                } catch (const std::runtime_error&) {  // BrokerError (storage), ConnectionError
                    return false;
                }
            },
            30s, 50ms);
        REQUIRE_MESSAGE(ok, "job " << i << " never acknowledged", a.logs(), b.logs());
        acked.push_back(*id);
    }
    bool all_done = wait_until(
        [&] { return scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == kJobs; },
        60s, 100ms);
    REQUIRE_MESSAGE(all_done, a.logs(), b.logs());
    CHECK(scalar(pg, "SELECT count(*) FROM jobs") == kJobs);
    for (JobId id : acked)
        CHECK(cb.status(id).state == JobState::succeeded);
    CHECK(a.logs().find("reconnected to PostgreSQL") != std::string::npos);
    CHECK(b.logs().find("reconnected to PostgreSQL") != std::string::npos);
}

TEST_CASE(
    "three brokers SIGKILLed in turn under load: nothing acknowledged is lost, every job "
    "ends, every second run has a given-up attempt") {
    PgServer pg;
    TempDir d1, d2, d3;
    Broker b1(d1, cluster_args(pg)), b2(d2, cluster_args(pg)), b3(d3, cluster_args(pg));
    std::vector<Broker*> brokers{&b1, &b2, &b3};
    CountingWorker w1(b1, "w1", {"c"}, 20ms), w2(b2, "w2", {"c"}, 20ms), w3(b3, "w3", {"c"}, 20ms),
        w4(b1, "w4", {"c"}, 20ms);

    // Two producers, each job with a token, sent to the next broker until one acknowledges it.
    constexpr int kJobs = 400;
    std::mutex mu;
    std::vector<JobId> acked;
    std::atomic<bool> failed{false};
    auto produce = [&](int first, int step) {
        std::vector<std::unique_ptr<Client>> clients;
        for (auto* b : brokers)
            clients.push_back(std::make_unique<Client>(b->client_options(1000)));
        std::size_t at = static_cast<std::size_t>(first);
        for (int i = first; i < kJobs && !failed; i += step) {
            auto s = job_spec("c", std::to_string(i), 20);
            s.token = unique_token();
            std::optional<JobId> id;
            bool ok = wait_until(
                [&] {
                    try {
                        id = clients[at % clients.size()]->submit(s).id;
                        return true;
                    } catch (const std::runtime_error&) {  // down, or storage: the next broker
                        ++at;
                        return false;
                    }
                },
                30s, 20ms);
            if (!ok) {
                failed = true;
                return;
            }
            std::lock_guard lock(mu);
            acked.push_back(*id);
        }
    };
    std::thread p1(produce, 0, 2), p2(produce, 1, 2);
    auto acked_count = [&] {
        std::lock_guard lock(mu);
        return acked.size();
    };
    // Ten rounds: a broker killed and started again, each after some more jobs were acknowledged.
    for (int round = 0; round < 10 && !failed; ++round) {
        auto before = acked_count();
        wait_until([&] { return acked_count() >= std::min<std::size_t>(before + 25, kJobs); }, 20s);
        brokers[static_cast<std::size_t>(round) % 3]->restart();
    }
    p1.join();
    p2.join();
    REQUIRE_FALSE_MESSAGE(failed.load(), "a job was never acknowledged");
    REQUIRE(acked.size() == static_cast<std::size_t>(kJobs));

    bool all_done = wait_until(
        [&] {
            return scalar(pg,
                          "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'dead', "
                          "'cancelled')") == 0;
        },
        90s, 100ms);
    REQUIRE_MESSAGE(all_done, b1.logs(), b2.logs(), b3.logs());
    CHECK(scalar(pg, "SELECT count(*) FROM jobs") == kJobs);
    CHECK(scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == kJobs);

    // A job that ran more than once had an attempt given up in between (lost with its broker or
    // worker, timed out), never two live attempts at once.
    std::map<JobId, int> runs;
    for (auto* w : {&w1, &w2, &w3, &w4})
        for (auto [id, n] : w->snapshot())
            runs[id] += n;
    broker::pg::Connection db(pg.conninfo());
    auto given_up = db.query(
        "SELECT job_id, count(*) FROM job_events WHERE from_state = 'running' AND to_state <> "
        "'succeeded' GROUP BY job_id");
    std::map<JobId, std::int64_t> lost;
    for (int i = 0; i < given_up.rows(); ++i)
        lost[static_cast<JobId>(given_up.i64(i, 0))] = given_up.i64(i, 1);
    int twice = 0;
    for (JobId id : acked) {
        int n = runs[id];
        CHECK_MESSAGE(n >= 1, "job " << id << " never ran");
        if (n > 1) {
            ++twice;
            CHECK_MESSAGE(lost[id] >= n - 1,
                          "job " << id << " ran " << n << " times, " << lost[id] << " given up");
        }
    }
    MESSAGE(kJobs << " jobs, " << twice << " ran more than once, "
                  << scalar(pg, "SELECT count(*) FROM job_events WHERE reason = 'worker lost'")
                  << " attempts lost with a broker");
}

namespace {

// The pid of the broker holding the leader's lease, 0 when none does.
std::int64_t leader_pid(const PgServer& pg) {
    broker::pg::Connection c(pg.conninfo());
    auto r = c.query(
        "SELECT b.pid FROM leader l JOIN brokers b ON b.id = l.holder WHERE l.expires_at > now()");
    return r.rows() == 1 ? r.i64(0, 0) : 0;
}

}  // namespace

TEST_CASE("the leader SIGKILLed: another broker takes the role, retention and rescue go on") {
    PgServer pg;
    TempDir d1, d2, wd;
    auto args = cluster_args(pg);
    args.insert(args.end(), {"--retention", "1s"});
    Broker a(d1, args);
    REQUIRE(wait_until([&] { return leader_pid(pg) == a.process().pid(); }, 10s));
    Broker b(d2, args);
    WorkerDaemon doomed(wd, a.endpoint(), {"doomed", {"slow=sleep 60"}, 1});
    Client ca(a.client_options()), cb(b.client_options());
    auto slow = ca.submit(job_spec("slow", "")).id;
    REQUIRE_MESSAGE(wait_until([&] { return ca.status(slow).state == JobState::running; }, 10s),
                    a.logs(), doomed.logs());
    CHECK(leader_pid(pg) == a.process().pid());  // the first broker stays the leader
    // STATS through either broker names the one that answered and lists the cluster.
    StatsReply sa;
    REQUIRE(wait_until(
        [&] {
            sa = cb.stats();
            return sa.brokers.size() == 2;
        },
        5s, 50ms));
    REQUIRE(sa.broker.has_value());
    for (const auto& br : sa.brokers) {
        CHECK(br.leader == (br.pid == static_cast<std::uint64_t>(a.process().pid())));
        if (br.id == *sa.broker) CHECK(br.pid == static_cast<std::uint64_t>(b.process().pid()));
    }

    a.kill9();
    doomed.kill9();
    CHECK_MESSAGE(wait_until([&] { return leader_pid(pg) == b.process().pid(); }, 10s), b.logs());

    // Rescue: the new leader returns the dead broker's attempt to the queue.
    CountingWorker survivor(b, "survivor", {"slow", "short"});
    auto rescued = cb.wait(slow, 20s);
    REQUIRE_MESSAGE(rescued.has_value(), b.logs());
    CHECK(rescued->state == JobState::succeeded);
    CHECK(rescued->attempts == 2);
    // Retention: finished jobs older than --retention are deleted by the new leader.
    auto id = cb.submit(job_spec("short", "x")).id;
    REQUIRE(cb.wait(id, 10s).has_value());
    CHECK_MESSAGE(
        wait_until([&] { return scalar(pg, "SELECT count(*) FROM jobs") == 0; }, 10s, 100ms),
        b.logs());
}

TEST_CASE("a broker paused past its lease: none of its later decisions is applied, it rejoins") {
    PgServer pg;
    TempDir d1, d2, wd;
    Broker b(d2, cluster_args(pg));  // the leader: it rescues the paused broker's attempt
    REQUIRE(wait_until([&] { return leader_pid(pg) == b.process().pid(); }, 10s));
    Broker a(d1, cluster_args(pg));
    // A job of 2 s, run by a worker of A.
    WorkerDaemon wa(wd, a.endpoint(), {"wa", {"slow=sleep 2; echo from-a"}, 1});
    Client ca(a.client_options()), cb(b.client_options());
    auto id = ca.submit(job_spec("slow", "")).id;
    REQUIRE_MESSAGE(wait_until([&] { return cb.status(id).state == JobState::running; }, 10s),
                    a.logs(), wa.logs());

    // A stops answering and renewing its row; the leader declares it dead and returns its
    // attempt to the queue, where a worker of B runs it as attempt 2.
    a.process().kill(SIGSTOP);
    CountingWorker wb(b, "wb", {"slow"});
    auto done = cb.wait(id, 20s);
    REQUIRE_MESSAGE(done.has_value(), b.logs());
    CHECK(done->state == JobState::succeeded);
    CHECK(done->attempts == 2);
    CHECK(done->result == "ran:");
    auto events_before = scalar(pg, "SELECT count(*) FROM job_events");

    // A goes on: its worker's result of attempt 1 and whatever it had decided are refused; it
    // joins again under a new id and serves.
    a.process().kill(SIGCONT);
    CHECK_MESSAGE(
        wait_until([&] { return a.logs().find("declared dead") != std::string::npos; }, 10s),
        a.logs());
    // The worker learns it: its late result is refused as stale, or, when it registered again
    // first (A was silent), its held attempt is rejected.
    CHECK_MESSAGE(wait_until(
                      [&] {
                          auto logs = wa.logs();
                          return logs.find("stale") != std::string::npos ||
                                 logs.find("gave it to someone else") != std::string::npos;
                      },
                      10s),
                  wa.logs());
    auto after = cb.status(id);
    CHECK(after.state == JobState::succeeded);
    CHECK(after.attempts == 2);
    CHECK(after.result == "ran:");
    CHECK(scalar(pg, "SELECT count(*) FROM job_events") == events_before);
    auto again = ca.submit(job_spec("slow", "y")).id;
    auto ran = ca.wait(again, 20s);
    REQUIRE_MESSAGE(ran.has_value(), a.logs());
    CHECK(ran->state == JobState::succeeded);
    CHECK(scalar(pg, "SELECT count(*) FROM brokers WHERE pid = " +
                         std::to_string(a.process().pid()) + " AND NOT dead") == 1);
}

TEST_CASE("a job cancelled through one broker is stopped on a worker of another") {
    PgServer pg;
    TempDir d1, d2, wd;
    Broker a(d1, cluster_args(pg)), b(d2, cluster_args(pg));
    WorkerDaemon worker(wd, b.endpoint(), {"far", {"long=sleep 60"}, 1});
    Client cb(b.client_options());
    auto id = cb.submit(job_spec("long", "")).id;
    REQUIRE_MESSAGE(wait_until([&] { return cb.status(id).state == JobState::running; }, 10s),
                    b.logs(), worker.logs());

    Client ca(a.client_options());
    auto cancelled = ca.cancel(id);
    CHECK(cancelled.state == JobState::cancelled);
    // B hears of it (NOTIFY) and tells its worker, which kills the job's processes.
    bool stopped =
        wait_until([&] { return worker.logs().find("aborted by the broker") != std::string::npos; },
                   10s, 50ms);
    CHECK_MESSAGE(stopped, b.logs(), worker.logs());
    CHECK(b.logs().find("ended through another broker (cancelled)") != std::string::npos);
    CHECK(cb.status(id).state == JobState::cancelled);
}

TEST_CASE(
    "errand worker quiet/concurrency/resume/stop through one broker reach a worker of another") {
    PgServer pg;
    TempDir d1, d2, wd;
    Broker a(d1, cluster_args(pg));
    // Alone on its database, a broker knows every worker: an unknown one is not_found.
    auto alone = run_cli({"--broker", a.endpoint(), "worker", "quiet", "far-worker"});
    CHECK_MESSAGE(alone.exit_code == 121, describe(alone));
    CHECK(alone.err.find("no worker named 'far-worker'") != std::string::npos);
    Broker b(d2, cluster_args(pg));
    WorkerDaemon worker(wd, b.endpoint(), {"far-worker", {"q=echo ok"}, 1});
    Client ca(a.client_options()), cb(b.client_options());
    auto on_b = [&] {
        auto ws = cb.workers();
        return ws.size() == 1 ? std::optional<WorkerInfo>(ws[0]) : std::nullopt;
    };
    REQUIRE_MESSAGE(wait_until([&] { return on_b().has_value(); }, 10s), worker.logs());

    // A does not hold it: it answers with none of its own and tells B (NOTIFY), which tells the
    // worker.
    auto quiet = run_cli({"--broker", a.endpoint(), "worker", "quiet", "far-worker"});
    REQUIRE_MESSAGE(quiet.exit_code == 0, describe(quiet));
    CHECK_MESSAGE(quiet.out.find("no worker 'far-worker' is registered with this broker; sent to "
                                 "the other brokers") != std::string::npos,
                  quiet.out);
    REQUIRE_MESSAGE(wait_until([&] { return on_b()->state == "quiet"; }, 5s), b.logs());
    CHECK(wait_until(
        [&] { return worker.logs().find("quiet: taking no new jobs") != std::string::npos; }, 5s));
    auto id = ca.submit(job_spec("q")).id;
    // B has heard from its worker since the job was submitted (heartbeats every 200 ms), and
    // dispatched nothing.
    const auto seen = on_b()->last_seen;
    REQUIRE(wait_until([&] { return on_b()->last_seen > seen; }, 5s));
    CHECK(ca.status(id).state == JobState::ready);

    ca.control_worker("far-worker", "concurrency", 4);
    CHECK(wait_until([&] { return on_b()->concurrency == 4; }, 5s));
    ca.control_worker("far-worker", "resume");
    auto done = ca.wait(id, 10s);
    REQUIRE_MESSAGE(done, b.logs(), worker.logs());
    CHECK(done->state == JobState::succeeded);
    CHECK(on_b()->state == "active");

    // Bad input is refused by the CLI (usage), and by the broker it talks to before anything
    // travels to the others.
    auto zero = run_cli({"--broker", a.endpoint(), "worker", "concurrency", "far-worker", "0"});
    CHECK(zero.exit_code == 120);
    try {
        ca.control_worker("far-worker", "concurrency", 0);
        FAIL("concurrency 0 was accepted");
    } catch (const errand::BrokerError& e) {
        CHECK(e.code() == errand::ErrorCode::bad_request);
    }
    CHECK(on_b()->concurrency == 4);

    auto stop = run_cli({"--broker", a.endpoint(), "worker", "stop", "far-worker"});
    REQUIRE_MESSAGE(stop.exit_code == 0, describe(stop));
    auto code = worker.process().wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
}

TEST_CASE(
    "two brokers: a queue's max-running holds across the cluster, sampled from the database") {
    PgServer pg;
    TempDir d1, d2;
    Broker b1(d1, cluster_args(pg)), b2(d2, cluster_args(pg));
    Client c1(b1.client_options()), c2(b2.client_options());
    QueueSettings s;
    s.queue = "limited";
    s.max_running = 2;
    CHECK(c1.queue_set(s).max_running == 2u);
    // The other broker reads it from the database (at its next refresh at the latest).
    REQUIRE(wait_until([&] { return c2.queue_settings("limited").max_running == 2u; }, 5s, 20ms));

    constexpr int kJobs = 200;
    for (int batch = 0; batch < kJobs / 50; ++batch) {
        std::vector<JobSpec> specs;
        for (int i = 0; i < 50; ++i)
            specs.push_back(job_spec("limited"));
        (batch % 2 ? c2 : c1).submit_batch(std::move(specs));
    }
    std::atomic<int> in_flight{0}, most{0};
    auto make = [&](const Broker& b, const std::string& name) {
        auto w = std::make_unique<Worker>(WorkerOptions{.endpoint = b.endpoint(),
                                                        .name = name,
                                                        .concurrency = 4,
                                                        .prefetch = 0,
                                                        .accept_commands = false,
                                                        .max_result = limits::kDefaultMaxResult});
        w->handle("limited", [&](const Job&) {
            int n = ++in_flight;
            int seen = most.load();
            while (n > seen && !most.compare_exchange_weak(seen, n)) {
            }
            std::this_thread::sleep_for(5ms);
            --in_flight;
            return Outcome::success("ok");
        });
        return w;
    };
    std::vector<std::unique_ptr<Worker>> workers;
    workers.push_back(make(b1, "w1"));
    workers.push_back(make(b1, "w2"));
    workers.push_back(make(b2, "w3"));
    workers.push_back(make(b2, "w4"));
    std::vector<std::unique_ptr<WorkerThread>> threads;
    for (auto& w : workers)
        threads.push_back(std::make_unique<WorkerThread>(*w));

    std::int64_t most_db = 0;
    int samples = 0;
    bool finished = wait_until(
        [&] {
            most_db = std::max(most_db, scalar(pg,
                                               "SELECT count(*) FROM jobs WHERE queue = 'limited' "
                                               "AND state = 'running'"));
            ++samples;
            return scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == kJobs;
        },
        120s, 5ms);
    REQUIRE_MESSAGE(finished, b1.logs(), b2.logs());
    threads.clear();
    CHECK(samples > 20);
    CHECK(most_db <= 2);
    CHECK(most.load() <= 2);
    CHECK(most.load() == 2);
    MESSAGE("jobs claimed through b1: ",
            scalar(pg,
                   "SELECT count(*) FROM jobs j JOIN job_events e ON e.job_id = j.id AND "
                   "e.reason = 'dispatched' WHERE e.worker IN ('w1', 'w2')"),
            " of ", kJobs);
    // The stored times are not checked here as test_queue_limits checks them on SQLite: each
    // broker stamps started_at and finished_at with the time its pass began, so a claim that
    // ran after another broker's commit freed the slot can carry an earlier time than that
    // commit's finished_at (seen under the sanitizers, where passes are long). The workers'
    // own count of jobs in their handlers (`most`) is the instant-by-instant truth.
}

TEST_CASE("two brokers: a queue's rate holds across the cluster (from the jobs' start times)") {
    PgServer pg;
    TempDir d1, d2;
    Broker b1(d1, cluster_args(pg)), b2(d2, cluster_args(pg));
    Client c1(b1.client_options()), c2(b2.client_options());
    QueueSettings s;
    s.queue = "limited";
    s.rate = 10;
    s.rate_per = 1000ms;
    CHECK(c1.queue_set(s).rate == 10u);
    REQUIRE(wait_until([&] { return c2.queue_settings("limited").rate == 10u; }, 5s, 20ms));
    constexpr int kJobs = 30;
    std::vector<JobSpec> specs;
    for (int i = 0; i < kJobs; ++i)
        specs.push_back(job_spec("limited"));
    c2.submit_batch(std::move(specs));
    CountingWorker w1(b1, "w1", {"limited"}), w2(b2, "w2", {"limited"});
    bool finished = wait_until(
        [&] { return scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == kJobs; },
        30s, 20ms);
    REQUIRE_MESSAGE(finished, b1.logs(), b2.logs());
    // No window of a second holds more than 10 starts, whichever broker made them.
    CHECK(scalar(pg,
                 "SELECT max(n) FROM (SELECT (SELECT count(*) FROM jobs b WHERE b.started_at >= "
                 "a.started_at AND b.started_at < a.started_at + 1000) AS n FROM jobs a) x") <= 10);
    CHECK(scalar(pg, "SELECT max(started_at) - min(started_at) FROM jobs") >= 2000);
}

TEST_CASE("PostgreSQL: queue settings are stored: a restarted broker and a new one read them") {
    PgServer pg;
    TempDir d1, d2;
    Broker b1(d1, cluster_args(pg));
    QueueSettings s;
    s.queue = "slow";
    s.max_running = 3;
    s.rate = 7;
    s.rate_per = 2000ms;
    s.max_attempts = 9;
    s.timeout = 45000ms;
    s.priority = -5;
    Client(b1.client_options()).queue_set(s);
    b1.restart();
    Broker b2(d2, cluster_args(pg));
    for (Broker* b : {&b1, &b2}) {
        auto got = Client(b->client_options()).queue_settings("slow");
        CHECK(got.max_running == 3u);
        CHECK(got.rate == 7u);
        CHECK(got.rate_per == std::chrono::milliseconds(2000));
        CHECK(got.max_attempts == 9u);
        CHECK(got.timeout == std::chrono::milliseconds(45000));
        CHECK(got.priority == -5);
    }
    // A job submitted through the new broker gets the stored defaults.
    Client c2(b2.client_options());
    JobSpec plain;  // no max_attempts, priority or timeout of its own
    plain.queue = "slow";
    auto job = c2.status(c2.submit(plain).id);
    CHECK(job.max_attempts == 9);
    CHECK(job.priority == -5);
    CHECK(job.timeout == std::chrono::milliseconds(45000));
    // Unset through one broker: the other reads it at its next refresh.
    Client(b1.client_options()).queue_unset("slow", {"max_running", "rate"});
    CHECK(wait_until([&] { return !c2.queue_settings("slow").max_running.has_value(); }, 5s, 20ms));
    CHECK_FALSE(c2.queue_settings("slow").rate.has_value());
    CHECK(c2.queue_settings("slow").max_attempts == 9u);
}

TEST_CASE(
    "three brokers: members of one batch finishing through all of them fire each callback "
    "once") {
    PgServer pg;
    TempDir d1, d2, d3;
    Broker b1(d1, cluster_args(pg)), b2(d2, cluster_args(pg)), b3(d3, cluster_args(pg));
    std::vector<Broker*> brokers{&b1, &b2, &b3};
    // Short jobs, two at a time on each broker's worker: a batch's last members finish through
    // different brokers at about the same moment.
    CountingWorker w1(b1, "w1", {"q", "cb"}, 5ms), w2(b2, "w2", {"q", "cb"}, 5ms),
        w3(b3, "w3", {"q", "cb"}, 5ms);
    constexpr int kBatches = 10, kMembers = 30;
    std::vector<JobId> batches;
    for (int b = 0; b < kBatches; ++b) {
        Client client(brokers[static_cast<std::size_t>(b) % 3]->client_options());
        auto opened = client.batch_open("cluster", job_spec("cb"), job_spec("cb"));
        std::vector<JobSpec> specs;
        for (int i = 0; i < kMembers; ++i) {
            auto s = job_spec("q", std::to_string(i));
            s.batch = opened.id;
            specs.push_back(std::move(s));
        }
        client.submit_batch(std::move(specs));
        // Sealed through another broker than the one that opened it.
        Client other(brokers[static_cast<std::size_t>(b + 1) % 3]->client_options());
        other.batch_seal(opened.id);
        batches.push_back(opened.id);
    }
    bool all_done = wait_until(
        [&] {
            return scalar(pg,
                          "SELECT count(*) FROM jobs WHERE queue = 'cb' AND state = "
                          "'succeeded'") == 2 * kBatches &&
                   scalar(pg, "SELECT count(*) FROM jobs WHERE state <> 'succeeded'") == 0;
        },
        60s, 50ms);
    REQUIRE_MESSAGE(all_done, b1.logs(), b2.logs(), b3.logs());
    CHECK(scalar(pg, "SELECT count(*) FROM jobs WHERE queue = 'cb'") == 2 * kBatches);
    Client c(b3.client_options());
    std::set<JobId> callbacks;
    for (JobId id : batches) {
        auto b = c.batch(id);
        CHECK(b.state == "succeeded");
        CHECK(b.total == static_cast<std::uint64_t>(kMembers));
        CHECK(b.succeeded == static_cast<std::uint64_t>(kMembers));
        REQUIRE(b.complete_job);
        REQUIRE(b.success_job);
        callbacks.insert(*b.complete_job);
        callbacks.insert(*b.success_job);
    }
    CHECK(callbacks.size() == 2 * kBatches);
    // Each member ran once, on whichever broker's worker took it.
    std::map<JobId, int> runs;
    for (auto* w : {&w1, &w2, &w3})
        for (auto [id, n] : w->snapshot())
            runs[id] += n;
    CHECK(runs.size() == static_cast<std::size_t>(kBatches * (kMembers + 2)));
    for (auto [id, n] : runs)
        CHECK_MESSAGE(n == 1, "job " << id << " ran " << n << " times");
}

TEST_CASE("one claim per queue serves every worker of the broker, each job named for its worker") {
    CountingPg counting;
    const PgServer& pg = counting.pg;
    TempDir d;
    Broker b(d, cluster_args(pg));
    Client c(b.client_options());
    c.pause("q");
    std::vector<JobId> ids;
    for (int i = 0; i < 20; ++i)
        ids.push_back(c.submit(job_spec("q", std::to_string(i))).id);

    // Four workers of five slots each, whose handlers hold their jobs until released.
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::map<std::string, int> ran;  // worker name -> jobs its handlers started
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::unique_ptr<WorkerThread>> threads;
    for (int i = 0; i < 4; ++i) {
        std::string name = "w" + std::to_string(i);
        workers.push_back(std::make_unique<Worker>(WorkerOptions{
            .endpoint = b.endpoint(), .name = name, .concurrency = 5, .prefetch = 0, .log = {}}));
        workers.back()->handle("q", [&, name](const Job&) {
            std::unique_lock lock(mu);
            ++ran[name];
            cv.notify_all();
            cv.wait_for(lock, 30s, [&] { return release; });
            return Outcome::success("ok");
        });
        threads.push_back(std::make_unique<WorkerThread>(*workers.back()));
    }
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            auto list = c.workers();
                            return list.size() == 4 &&
                                   std::all_of(list.begin(), list.end(),
                                               [](const auto& w) { return w.credit == 5; });
                        },
                        10s, 20ms),
                    b.logs());
    counting.reset();
    c.resume("q");
    {
        std::unique_lock lock(mu);
        bool all = cv.wait_for(lock, 20s, [&] {
            int n = 0;
            for (const auto& [w, k] : ran)
                n += k;
            return n == 20;
        });
        REQUIRE_MESSAGE(all, b.logs());
    }
    // One statement claimed the twenty jobs for the four workers, five each.
    CHECK(counting.claims() == 1);
    {
        std::lock_guard lock(mu);
        CHECK(ran.size() == 4);
        for (const auto& [w, k] : ran)
            CHECK_MESSAGE(k == 5, w << " started " << k << " jobs");
    }
    for (int i = 0; i < 4; ++i)
        CHECK(scalar(pg, "SELECT count(*) FROM jobs WHERE state = 'running' AND worker = 'w" +
                             std::to_string(i) + "'") == 5);
    // Each row and its dispatched event name the same worker.
    CHECK(scalar(pg,
                 "SELECT count(*) FROM jobs j JOIN job_events e ON e.job_id = j.id AND e.reason "
                 "= 'dispatched' WHERE e.worker IS DISTINCT FROM j.worker") == 0);
    {
        std::lock_guard lock(mu);
        release = true;
    }
    cv.notify_all();
    for (JobId id : ids) {
        auto done = c.wait(id, 20s);
        REQUIRE_MESSAGE(done.has_value(), b.logs());
        CHECK(done->state == JobState::succeeded);
    }
}

TEST_CASE(
    "a claim takes at most 1,000 jobs: more free credit on a queue claims again in the pass") {
    CountingPg counting;
    const PgServer& pg = counting.pg;
    TempDir d;
    Broker b(d, cluster_args(pg));
    Client c(b.client_options());
    c.pause("q");
    constexpr int kJobs = 1100;
    for (int batch = 0; batch < kJobs / 100; ++batch) {
        std::vector<JobSpec> specs;
        for (int i = 0; i < 100; ++i)
            specs.push_back(job_spec("q", std::to_string(batch * 100 + i)));
        c.submit_batch(std::move(specs));
    }
    // One worker with room for all of them: one handler, the rest prefetched.
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    Worker worker({.endpoint = b.endpoint(),
                   .name = "w",
                   .concurrency = 1,
                   .prefetch = kJobs - 1,
                   .log = {}});
    worker.handle("q", [&](const Job&) {
        std::unique_lock lock(mu);
        cv.wait_for(lock, 30s, [&] { return release; });
        return Outcome::success("ok");
    });
    WorkerThread thread(worker);
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                            auto list = c.workers();
                            return list.size() == 1 && list[0].credit == kJobs;
                        },
                        10s, 20ms),
                    b.logs());
    counting.reset();
    c.resume("q");
    const std::string running =
        "SELECT count(*) FROM jobs WHERE state = 'running' AND worker = 'w'";
    REQUIRE_MESSAGE(wait_until([&] { return scalar(pg, running) == kJobs; }, 20s, 20ms), b.logs());
    // 1,000 slots, then the 100 left, in two statements.
    CHECK(counting.claims() == 2);
    CHECK(counting.claimed() == kJobs);
    {
        std::lock_guard lock(mu);
        release = true;
    }
    cv.notify_all();
    CHECK_MESSAGE(wait_until(
                      [&] {
                          return scalar(pg,
                                        "SELECT count(*) FROM jobs WHERE state = "
                                        "'succeeded'") == kJobs;
                      },
                      60s, 50ms),
                  b.logs());
}

// PostgreSQL plans a prepared statement generically after its first five runs and keeps that
// plan until the table is analysed again: a claim planned while the table was small must still
// find its rows by primary key, not hash a sequential scan of a table that has grown since.
TEST_CASE("the claim's plan finds rows by primary key, however small the table was when planned") {
    PgServer pg({.settings = {"shared_preload_libraries=auto_explain",
                              "auto_explain.log_min_duration=0", "autovacuum=off"}});
    TempDir d;
    Broker b(d, cluster_args(pg));
    CountingWorker w(b, "w", {"q"});
    Client c(b.client_options());
    constexpr int kJobs = 60;
    for (int i = 0; i < kJobs; ++i) {
        auto done = c.wait(c.submit(job_spec("q", std::to_string(i))).id, 10s);
        REQUIRE_MESSAGE(done.has_value(), b.logs());
    }
    std::ifstream in(pg.log_path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string log = text.str();
    const std::string marker = "LOG:  duration: ";
    std::vector<std::string> claims;  // each claim's logged plan, in order
    for (auto at = log.find(marker); at != std::string::npos;) {
        auto next = log.find(marker, at + marker.size());
        auto entry = log.substr(at, next == std::string::npos ? std::string::npos : next - at);
        if (entry.find("UPDATE jobs SET state = 'running', attempts = attempts + 1") !=
            std::string::npos)
            claims.push_back(std::move(entry));
        at = next;
    }
    REQUIRE(claims.size() >= static_cast<std::size_t>(kJobs));
    // The first runs are planned for their parameters (on a table of a few rows a scan is
    // right); from the tenth on, the plan is the cached one or one made for a larger table.
    for (std::size_t i = 10; i < claims.size(); ++i) {
        CHECK_MESSAGE(claims[i].find("Seq Scan on jobs") == std::string::npos, claims[i]);
        CHECK_MESSAGE(claims[i].find("jobs_pkey") != std::string::npos, claims[i]);
    }
}
