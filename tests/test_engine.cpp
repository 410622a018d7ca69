// The broker's job rules, driven in-process through its test seam (Broker::process) over a real
// in-memory SQLite store, with time given explicitly as the `now` of each pass. One case per edge
// of the state diagram (broker/lifecycle.hpp, docs/LIFECYCLE.md) and per fencing rule
// (docs/PROTOCOL.md). Only the public seam is used: Broker::process, BrokerConfig, SqliteStore
// and the codec's encoders and decoders, so the cases hold across a refactoring of the broker.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "broker.hpp"
#include "errand/codec.hpp"
#include "errand/utf8.hpp"
#include "start_window.hpp"
#include "store_sqlite.hpp"
#ifdef ERRAND_TEST_PG
#include "pg_server.hpp"
#include "store_pg.hpp"
#endif

using namespace errand;
using namespace errand::broker;
using namespace std::chrono_literals;

namespace {

constexpr Millis kBase = 1'000'000;
constexpr Millis kHeartbeatMs = 1000;
constexpr Millis kWorkerTimeoutMs = 5000;
constexpr Millis kGraceMs = 500;
constexpr Millis kRetryDelayMs = 100;

// The broker reads the clock only at construction; every pass gets its `now` from the test.
class FixedClock final : public Clock {
  public:
    Millis now_ms() const override { return kBase; }
};

BrokerConfig engine_config() {
    BrokerConfig c;
    c.listen = "";  // nothing bound: messages go through process()
    c.heartbeat_ms = kHeartbeatMs;
    c.worker_timeout_ms = kWorkerTimeoutMs;
    c.timeout_grace_ms = kGraceMs;
    c.retry_delay_ms = kRetryDelayMs;
    c.retry_cap_ms = 10 * kRetryDelayMs;
    return c;
}

// What the fixture knows of one of its worker connections (as a real worker would).
struct WorkerConn {
    std::string identity;
    std::string name;
    std::uint64_t seq = 0;  // highest DISPATCH.seq received
    std::set<JobId> held;   // dispatched and not yet reported, released or aborted
    Millis last_sent = 0;
};

JobSpec spec(const std::string& queue, const std::string& payload = "") {
    JobSpec s;
    s.queue = queue;
    s.payload = payload;
    return s;
}

std::vector<Envelope> addressed(const std::vector<Envelope>& out, const std::string& identity,
                                std::string_view command) {
    std::vector<Envelope> found;
    for (const auto& e : out)
        if (e.identity == identity && e.command == command) found.push_back(e);
    return found;
}

std::vector<Dispatch> dispatches(const std::vector<Envelope>& out, const std::string& identity) {
    std::vector<Dispatch> found;
    for (const auto& e : addressed(out, identity, cmd::kDispatch)) {
        Body b(e.body);
        found.push_back(decode_dispatch(b.reader()));
    }
    return found;
}

std::vector<Abort> aborts(const std::vector<Envelope>& out, const std::string& identity) {
    std::vector<Abort> found;
    for (const auto& e : addressed(out, identity, cmd::kAbort)) {
        Body b(e.body);
        found.push_back(decode_abort(b.reader()));
    }
    return found;
}

// Everything sent to `identity` except the broker's periodic HEARTBEAT.
std::vector<Envelope> replies(const std::vector<Envelope>& out, const std::string& identity) {
    std::vector<Envelope> found;
    for (const auto& e : out)
        if (e.identity == identity && e.command != cmd::kHeartbeat) found.push_back(e);
    return found;
}

ErrorReply error_of(const Envelope& e) {
    REQUIRE(e.command == cmd::kError);
    Body b(e.body);
    return decode_error(b.reader());
}

Ack ack_of(const Envelope& e) {
    REQUIRE(e.command == cmd::kAck);
    Body b(e.body);
    return decode_ack(b.reader());
}

std::vector<Ack> acks_of(const Envelope& e) {
    REQUIRE(e.command == cmd::kAcks);
    Body b(e.body);
    return decode_acks(b.reader());
}

JobInfo job_of(const Envelope& e) {
    REQUIRE(e.command == cmd::kJob);
    Body b(e.body);
    return decode_job_info(b.reader().map("job"));
}

std::uint64_t req_of(const Envelope& e) {
    Body b(e.body);
    return b.reader().u64("req");
}

void check_ack(const std::vector<Envelope>& out, JobId id, std::uint32_t attempt) {
    REQUIRE(out.size() == 1);
    auto a = ack_of(out.front());
    CHECK(a.id == id);
    CHECK(a.attempt == attempt);
}

void check_stale(const std::vector<Envelope>& out, JobId id, std::uint32_t attempt) {
    REQUIRE(out.size() == 1);
    auto e = error_of(out.front());
    CHECK(e.code == ErrorCode::stale);
    CHECK(e.id == id);
    CHECK(e.attempt == attempt);
    CHECK_FALSE(e.req.has_value());
}

// The engine under test: SQLite in memory, or (test_engine_pg, the same cases) PostgreSQL, each
// fixture in a schema of its own on one server started for the program.
std::unique_ptr<Store> make_store() {
#ifdef ERRAND_TEST_PG
    static errand::pgserver::PgServer server;
    static int fixtures = 0;
    std::string schema = "engine_" + std::to_string(++fixtures);
    pg::Connection(server.conninfo()).exec("CREATE SCHEMA " + schema);
    return std::make_unique<PgStore>(server.conninfo() + " options='-csearch_path=" + schema + "'");
#else
    return std::make_unique<SqliteStore>(":memory:");
#endif
}

struct Engine {
    FixedClock clock;
    Broker broker;
    Millis now = kBase;  // the monotonic time of each pass
    // How far the wall clock is from `now` (a step of the wall clock: NTP, an operator).
    Millis wall_step = 0;
    std::uint64_t req = 1;
    const std::string client = "client";
    std::map<std::string, WorkerConn> workers;  // by identity

    Engine() : Engine(engine_config()) {}
    explicit Engine(BrokerConfig config) : broker(std::move(config), make_store(), clock) {}

    // One pass at the current time. Keeps the fixture's picture of its workers up to date.
    std::vector<Envelope> send(const std::string& identity, std::string_view command,
                               std::string body) {
        auto out = broker.process(Envelope{identity, std::string(kProtocolVersion),
                                           std::string(command), std::move(body), 3},
                                  now + wall_step, now);
        if (auto w = workers.find(identity); w != workers.end()) w->second.last_sent = now;
        for (const auto& e : out) {
            auto w = workers.find(e.identity);
            if (w == workers.end()) continue;
            Body b(e.body);
            if (e.command == cmd::kDispatch) {
                auto d = decode_dispatch(b.reader());
                w->second.seq = std::max(w->second.seq, d.seq);
                w->second.held.insert(d.id);
            } else if (e.command == cmd::kAbort) {
                w->second.held.erase(decode_abort(b.reader()).id);
            }
        }
        return out;
    }

    // A client request answered by exactly one message to the client.
    Envelope ask(std::string_view command, std::string body) {
        auto out = replies(send(client, command, std::move(body)), client);
        REQUIRE(out.size() == 1);
        return out.front();
    }

    SubmitReply submit_request(SubmitRequest m) {
        auto rep = ask(cmd::kSubmit, encode(m));
        REQUIRE(rep.command == cmd::kSubmitted);
        Body b(rep.body);
        auto s = decode_submitted(b.reader());
        CHECK(s.req == m.req);
        return s;
    }

    SubmitReply submit_reply(const JobSpec& s) {
        SubmitRequest m;
        m.req = req++;
        m.jobs.push_back(s);
        return submit_request(std::move(m));
    }

    JobId submit(const JobSpec& s) {
        auto rep = submit_reply(s);
        REQUIRE(rep.ids.size() == 1);
        REQUIRE(rep.duplicate.size() == 1);
        CHECK_FALSE(rep.duplicate.front());
        return rep.ids.front();
    }

    RegisteredReply register_worker(const std::string& identity,
                                    const std::vector<std::string>& queues,
                                    std::uint32_t concurrency = 1, std::uint32_t prefetch = 0,
                                    bool commands = false) {
        RegisterRequest m;
        m.req = req++;
        m.instance = "inst-" + identity;
        m.name = "name-" + identity;
        m.host = "host";
        m.pid = 42;
        m.queues = queues;
        m.concurrency = concurrency;
        m.prefetch = prefetch;
        m.commands = commands;
        workers[identity] = WorkerConn{identity, m.name, 0, {}, now};
        auto out = replies(send(identity, cmd::kRegister, encode(m)), identity);
        REQUIRE(out.size() == 1);
        REQUIRE(out.front().command == cmd::kRegistered);
        Body b(out.front().body);
        auto rep = decode_registered(b.reader());
        CHECK(rep.req == m.req);
        return rep;
    }

    std::vector<Dispatch> credit(const std::string& worker, std::uint32_t n) {
        return dispatches(send(worker, cmd::kCredit, encode_credit(n)), worker);
    }

    // Sends a result from `identity`; returns what came back to that connection.
    std::vector<Envelope> result(const std::string& identity, const JobResult& r) {
        if (auto w = workers.find(identity); w != workers.end()) w->second.held.erase(r.id);
        return replies(send(identity, r.ok ? cmd::kDone : cmd::kFail, encode(r)), identity);
    }
    std::vector<Envelope> done(const std::string& identity, JobId id, std::uint32_t attempt,
                               const std::string& out = "ok") {
        return result(identity, JobResult{.ok = true, .id = id, .attempt = attempt, .result = out});
    }
    std::vector<Envelope> fail(const std::string& identity, JobId id, std::uint32_t attempt,
                               const std::string& error = "boom", bool permanent = false) {
        return result(identity, JobResult{.ok = false,
                                          .id = id,
                                          .attempt = attempt,
                                          .exit_code = 1,
                                          .error = error,
                                          .permanent = permanent});
    }
    std::vector<Envelope> release(const std::string& identity, JobId id, std::uint32_t attempt) {
        if (auto w = workers.find(identity); w != workers.end()) w->second.held.erase(id);
        return replies(send(identity, cmd::kRelease, encode(Ack{id, attempt})), identity);
    }

    // A HEARTBEAT as the worker would send it: its highest seq and the jobs it holds.
    std::vector<Envelope> heartbeat(const std::string& identity) {
        auto& w = workers.at(identity);
        WorkerHeartbeat hb{w.seq, std::vector<JobId>(w.held.begin(), w.held.end())};
        return send(identity, cmd::kHeartbeat, encode(hb));
    }

    // Moves time on by `ms` and runs passes at the new time: a HEARTBEAT from each worker
    // (keep_alive) and a PING from the client. Returns everything the broker sent meanwhile
    // (the PONG left out). Without keep_alive, workers silent for longer than the worker timeout
    // are forgotten by the fixture as the broker forgets them.
    std::vector<Envelope> advance(Millis ms, bool keep_alive = true) {
        now += ms;
        std::vector<Envelope> all;
        if (keep_alive)
            for (auto& [identity, w] : workers) {
                auto out = heartbeat(identity);
                all.insert(all.end(), out.begin(), out.end());
            }
        auto out = send(client, cmd::kPing, encode_req(req++));
        for (auto& e : out)
            if (!(e.identity == client && e.command == cmd::kPong)) all.push_back(std::move(e));
        if (!keep_alive)
            std::erase_if(workers, [&](const auto& kv) {
                return now - kv.second.last_sent > kWorkerTimeoutMs;
            });
        return all;
    }

    // Advances to exactly `at` (which must not be in the past).
    std::vector<Envelope> advance_to(Millis at, bool keep_alive = true) {
        REQUIRE(at >= now);
        return advance(at - now, keep_alive);
    }

    JobInfo status(JobId id) { return job_of(ask(cmd::kStatus, encode(IdRequest{req++, id}))); }

    std::vector<Event> history(JobId id) {
        auto rep = ask(cmd::kHistory, encode(IdRequest{req++, id}));
        REQUIRE(rep.command == cmd::kEvents);
        Body b(rep.body);
        return decode_events(b.reader());
    }

    ErrorReply error(std::string_view command, std::string body) {
        auto rep = ask(command, std::move(body));
        return error_of(rep);
    }

    Envelope cancel(JobId id) { return ask(cmd::kCancel, encode(IdRequest{req++, id})); }

    std::vector<Envelope> cancel_all(JobId id) {
        return send(client, cmd::kCancel, encode(IdRequest{req++, id}));
    }

    Envelope retry(std::optional<JobId> id, bool dead = false,
                   std::optional<std::string> queue = std::nullopt) {
        return ask(cmd::kRetry, encode(RetryRequest{req++, id, dead, std::move(queue)}));
    }

    std::vector<JobId> retried(const Envelope& e) {
        REQUIRE(e.command == cmd::kRetried);
        Body b(e.body);
        return decode_ids(b.reader());
    }

    // A single-dispatch helper: credit 1 and expect exactly one DISPATCH of `id`.
    Dispatch dispatch_one(const std::string& worker, JobId id) {
        auto d = credit(worker, 1);
        REQUIRE(d.size() == 1);
        CHECK(d.front().id == id);
        return d.front();
    }
};

// The (from, to, reason) of each event, for compact comparisons.
struct Edge {
    std::optional<JobState> from;
    JobState to;
    std::string reason;
    bool operator==(const Edge&) const = default;
};

std::vector<Edge> edges(const std::vector<Event>& events) {
    std::vector<Edge> out;
    for (const auto& e : events)
        out.push_back({e.from, e.to, e.reason});
    return out;
}

doctest::String edge_text(const Edge& e) {
    std::string s = e.from ? std::string(to_string(*e.from)) : "(new)";
    s += " -> " + std::string(to_string(e.to)) + " (" + e.reason + ")";
    return doctest::String(s.c_str());
}

}  // namespace

namespace doctest {
template <>
struct StringMaker<Edge> {
    static String convert(const Edge& e) { return edge_text(e); }
};
template <>
struct StringMaker<std::vector<Edge>> {
    static String convert(const std::vector<Edge>& v) {
        String s = "[";
        for (const auto& e : v)
            s += edge_text(e) + "; ";
        return s + "]";
    }
};
}  // namespace doctest

using S = JobState;

// ---- submit -------------------------------------------------------------------------------

TEST_CASE("submit: a job without a time is ready at once") {
    Engine f;
    auto rep = f.submit_reply(spec("q", "hello"));
    CHECK(rep.ids == std::vector<JobId>{1});
    CHECK(rep.duplicate == std::vector<bool>{false});
    auto j = f.status(1);
    CHECK(j.id == 1);
    CHECK(j.queue == "q");
    CHECK(j.state == S::ready);
    CHECK(j.attempts == 0);
    CHECK(j.max_attempts == limits::kDefaultMaxAttempts);
    CHECK(j.payload_size == 5);
    CHECK(j.created_at == to_time(kBase));
    auto h = f.history(1);
    REQUIRE(h.size() == 1);
    CHECK(edges(h) == std::vector<Edge>{{std::nullopt, S::ready, "submitted"}});
    CHECK(h[0].at == to_time(kBase));
    CHECK(h[0].attempt == 0);

    CHECK(f.submit(spec("q")) == 2);  // ids count up
}

TEST_CASE("submit with delay_ms: scheduled, ready when due and not before") {
    Engine f;
    auto s = spec("q");
    s.delay = 500ms;
    JobId id = f.submit(s);
    auto j = f.status(id);
    CHECK(j.state == S::scheduled);
    CHECK(j.run_at == to_time(kBase + 500));

    f.advance(499);
    CHECK(f.status(id).state == S::scheduled);
    f.advance(1);
    CHECK(f.status(id).state == S::ready);
    CHECK(edges(f.history(id)) == std::vector<Edge>{{std::nullopt, S::scheduled, "scheduled"},
                                                    {S::scheduled, S::ready, "due"}});
}

TEST_CASE("submit with run_at: scheduled until run_at; a run_at not in the future is ready") {
    Engine f;
    auto later = spec("q");
    later.run_at = to_time(kBase + 2000);
    JobId a = f.submit(later);
    auto past = spec("q");
    past.run_at = to_time(kBase - 1);
    JobId b = f.submit(past);
    auto at_now = spec("q");
    at_now.run_at = to_time(kBase);
    JobId c = f.submit(at_now);
    auto zero_delay = spec("q");
    zero_delay.delay = 0ms;
    JobId d = f.submit(zero_delay);

    CHECK(f.status(a).state == S::scheduled);
    CHECK(f.status(a).run_at == to_time(kBase + 2000));
    CHECK(f.status(b).state == S::ready);
    CHECK(f.status(c).state == S::ready);
    CHECK(f.status(d).state == S::ready);

    f.advance(1999);
    CHECK(f.status(a).state == S::scheduled);
    f.advance(1);
    CHECK(f.status(a).state == S::ready);
}

TEST_CASE("jobs that come due together are made ready in slices per pass, earliest first") {
    Engine f;
    constexpr int kJobs = 2500;  // the engine's promote_batch is 1000
    std::vector<JobId> ids;
    std::map<JobId, Millis> due_at;
    for (int batch = 0; batch < kJobs / 500; ++batch) {
        SubmitRequest m;
        m.req = f.req++;
        for (int i = 0; i < 500; ++i) {
            auto s = spec("q");
            // Later ids are due sooner: due order is not id order.
            s.delay = std::chrono::milliseconds(
                100 + (kJobs - static_cast<int>(m.jobs.size()) - 500 * batch));
            m.jobs.push_back(s);
        }
        auto rep = f.submit_request(m);
        REQUIRE(rep.ids.size() == 500);
        for (std::size_t i = 0; i < rep.ids.size(); ++i) {
            ids.push_back(rep.ids[i]);
            due_at[rep.ids[i]] = kBase + to_ms(*m.jobs[i].delay);
        }
    }
    auto ready = [&] {
        auto rep = f.ask(cmd::kStats, encode_req(f.req++));
        REQUIRE(rep.command == cmd::kStats);
        Body b(rep.body);
        for (const auto& q : decode_stats(b.reader()).queues)
            for (const auto& [state, n] : q.counts)
                if (q.name == "q" && state == S::ready) return n;
        return std::uint64_t{0};
    };
    f.now += kJobs + 1000;  // every one is due
    std::vector<std::uint64_t> seen;
    for (int pass = 0; pass < 10 && (seen.empty() || seen.back() < kJobs); ++pass) {
        f.now += 1;  // each pass at its own time, to tell them apart in the histories
        seen.push_back(ready());
    }
    std::string trail;
    for (auto n : seen)
        trail += std::to_string(n) + " ";
    // STATS is answered after its pass's commit: each sees its own pass's slice too.
    const std::vector<std::uint64_t> slices{1000, 2000, 2500};
    CHECK_MESSAGE(seen == slices, trail);
    // Promoted in due order: a job due sooner was never promoted in a later pass.
    std::vector<std::pair<Millis, Millis>> order;  // (due, promoted)
    for (JobId id : ids) {
        auto h = f.history(id);
        REQUIRE(h.size() == 2);
        CHECK(h[1].reason == "due");
        order.push_back({due_at[id], to_ms(h[1].at)});
    }
    std::sort(order.begin(), order.end());
    for (std::size_t i = 1; i < order.size(); ++i)
        CHECK(order[i - 1].second <= order[i].second);
}

TEST_CASE("a due scheduled job is dispatched in the pass that makes it ready") {
    Engine f;
    f.register_worker("w1", {"q"});
    CHECK(f.credit("w1", 1).empty());
    auto s = spec("q", "later");
    s.delay = 300ms;
    JobId id = f.submit(s);
    CHECK(dispatches(f.advance(299), "w1").empty());
    auto d = dispatches(f.advance(1), "w1");
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    CHECK(d[0].attempt == 1);
    CHECK(d[0].payload == "later");
    CHECK(f.status(id).state == S::running);
}

// ---- dispatch -----------------------------------------------------------------------------

TEST_CASE("ready -> running on CREDIT: DISPATCH carries id, queue, attempt 1, payload, seq") {
    Engine f;
    JobId a = f.submit(spec("q", "first"));
    auto timed = spec("q", "second");
    timed.timeout = 60'000ms;
    JobId b = f.submit(timed);
    auto reg = f.register_worker("w1", {"q"}, 2);
    CHECK(reg.heartbeat_ms == kHeartbeatMs);
    CHECK(reg.expiry_ms == kWorkerTimeoutMs);
    CHECK(f.status(a).state == S::ready);  // registered, but no credit yet

    f.now += 10;
    auto d1 = f.credit("w1", 1);
    REQUIRE(d1.size() == 1);
    CHECK(d1[0].id == a);
    CHECK(d1[0].queue == "q");
    CHECK(d1[0].attempt == 1);
    CHECK(d1[0].payload == "first");
    CHECK(d1[0].seq == 1);
    CHECK_FALSE(d1[0].timeout_ms.has_value());
    CHECK_FALSE(d1[0].argv.has_value());

    auto d2 = f.credit("w1", 1);
    REQUIRE(d2.size() == 1);
    CHECK(d2[0].id == b);
    CHECK(d2[0].seq == 2);
    CHECK(d2[0].timeout_ms == 60'000);

    auto j = f.status(a);
    CHECK(j.state == S::running);
    CHECK(j.attempts == 1);
    CHECK(j.worker == "name-w1");
    CHECK(j.started_at == to_time(kBase + 10));
    auto h = f.history(a);
    REQUIRE(h.size() == 2);
    CHECK(edges(h)[1] == Edge{S::ready, S::running, "dispatched"});
    CHECK(h[1].attempt == 1);
    CHECK(h[1].worker == "name-w1");
    CHECK(h[1].at == to_time(kBase + 10));
}

TEST_CASE("credit: at most concurrency + prefetch jobs held at once") {
    Engine f;
    for (int i = 0; i < 5; ++i)
        f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 2, 1);
    auto d = f.credit("w1", 10);
    REQUIRE(d.size() == 3);
    CHECK(d[0].id == 1);
    CHECK(d[1].id == 2);
    CHECK(d[2].id == 3);
    CHECK(f.credit("w1", 1).empty());  // all three slots are busy
    check_ack(f.done("w1", 1, 1), 1, 1);
    auto next = f.credit("w1", 1);  // a slot was freed by the result
    REQUIRE(next.size() == 1);
    CHECK(next[0].id == 4);
    CHECK(next[0].seq == 4);
}

TEST_CASE("no dispatch from a paused queue; RESUME dispatches to a waiting credit") {
    Engine f;
    auto ok = f.ask(cmd::kPause, encode(QueueRequest{f.req++, "q"}));
    CHECK(ok.command == cmd::kOk);
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    CHECK(f.credit("w1", 1).empty());
    CHECK(f.status(id).state == S::ready);
    CHECK(dispatches(f.advance(1000), "w1").empty());

    auto out = f.send(f.client, cmd::kResume, encode(QueueRequest{f.req++, "q"}));
    auto to_client = replies(out, f.client);
    REQUIRE(to_client.size() == 1);
    CHECK(to_client[0].command == cmd::kOk);
    auto d = dispatches(out, "w1");
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    CHECK(f.status(id).state == S::running);
}

TEST_CASE("PAUSE with for_ms: nothing dispatched until then, then resumed by itself") {
    Engine f;
    auto queue_info = [&]() -> QueueInfo {
        auto rep = f.ask(cmd::kQueues, encode_req(f.req++));
        REQUIRE(rep.command == cmd::kQueues);
        Body b(rep.body);
        for (auto& q : decode_queues(b.reader()))
            if (q.name == "q") return q;
        return {};
    };
    // Bad durations: refused, nothing paused.
    for (Millis bad : {Millis{0}, Millis{-5}}) {
        auto e = f.error(cmd::kPause, encode(PauseRequest{f.req++, "q", bad}));
        CHECK(e.code == ErrorCode::bad_request);
        CHECK(e.message.find("for_ms") != std::string::npos);
    }
    JobId id = f.submit(spec("q"));
    CHECK_FALSE(queue_info().paused);
    const Millis until = f.now + 5000;
    CHECK(f.ask(cmd::kPause, encode(PauseRequest{f.req++, "q", 5000})).command == cmd::kOk);
    auto q = queue_info();
    CHECK(q.paused);
    CHECK(q.paused_until == Timestamp{std::chrono::milliseconds(until)});
    f.register_worker("w1", {"q"});
    CHECK(f.credit("w1", 1).empty());
    CHECK(dispatches(f.advance(4900), "w1").empty());
    auto d = dispatches(f.advance(100), "w1");
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    q = queue_info();
    CHECK_FALSE(q.paused);
    CHECK_FALSE(q.paused_until.has_value());

    // A plain PAUSE replaces a timed one (and RESUME ends it early).
    CHECK(f.ask(cmd::kPause, encode(PauseRequest{f.req++, "q", 1000})).command == cmd::kOk);
    CHECK(f.ask(cmd::kPause, encode(PauseRequest{f.req++, "q", std::nullopt})).command == cmd::kOk);
    f.advance(2000);
    q = queue_info();
    CHECK(q.paused);
    CHECK_FALSE(q.paused_until.has_value());
    CHECK(f.ask(cmd::kPause, encode(PauseRequest{f.req++, "q", 1000})).command == cmd::kOk);
    CHECK(f.ask(cmd::kResume, encode(QueueRequest{f.req++, "q"})).command == cmd::kOk);
    CHECK_FALSE(queue_info().paused_until.has_value());
}

TEST_CASE("priority order: higher first, FIFO within a priority") {
    Engine f;
    auto low = spec("q");
    auto high = spec("q");
    high.priority = 5;
    auto neg = spec("q");
    neg.priority = -3;
    JobId l1 = f.submit(low);
    JobId n1 = f.submit(neg);
    JobId h1 = f.submit(high);
    JobId l2 = f.submit(low);
    JobId h2 = f.submit(high);
    f.register_worker("w1", {"q"}, 5);
    auto d = f.credit("w1", 5);
    REQUIRE(d.size() == 5);
    std::vector<JobId> order;
    for (const auto& x : d)
        order.push_back(x.id);
    CHECK(order == std::vector<JobId>{h1, h2, l1, l2, n1});
}

TEST_CASE("a worker may serve 1024 queues: a job of the last one is dispatched to it") {
    Engine f;
    std::vector<std::string> queues;
    for (int i = 0; i < 1024; ++i)
        queues.push_back("q" + std::to_string(i));
    f.register_worker("w1", queues);
    JobId id = f.submit(spec("q1023", "last"));
    auto d = f.credit("w1", 1);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    CHECK(d[0].queue == "q1023");
}

TEST_CASE("a worker takes its queues in the order it lists them") {
    Engine f;
    JobId b1 = f.submit(spec("b"));
    JobId a1 = f.submit(spec("a"));
    JobId b2 = f.submit(spec("b"));
    f.register_worker("w1", {"a", "b"}, 3);
    auto d = f.credit("w1", 3);
    REQUIRE(d.size() == 3);
    CHECK(d[0].id == a1);
    CHECK(d[0].queue == "a");
    CHECK(d[1].id == b1);
    CHECK(d[2].id == b2);
}

TEST_CASE("a job with argv goes only to a worker that accepts commands") {
    Engine f;
    auto s = spec("q");
    s.argv = std::vector<std::string>{"echo", "hi"};
    JobId id = f.submit(s);
    f.register_worker("plain", {"q"});
    CHECK(f.credit("plain", 1).empty());
    f.register_worker("cmds", {"q"}, 1, 0, true);
    auto d = f.credit("cmds", 1);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    CHECK(d[0].argv == std::vector<std::string>{"echo", "hi"});
}

// ---- results ------------------------------------------------------------------------------

TEST_CASE("running -> succeeded: DONE is ACKed and its result recorded") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.now += 250;
    auto out = f.result(
        "w1",
        JobResult{.ok = true, .id = id, .attempt = 1, .exit_code = 0, .result = "the answer"});
    check_ack(out, id, 1);
    auto j = f.status(id);
    CHECK(j.state == S::succeeded);
    CHECK(j.attempts == 1);
    CHECK(j.result == "the answer");
    CHECK(j.exit_code == 0);
    CHECK(j.finished_at == to_time(kBase + 250));
    CHECK(edges(f.history(id)) == std::vector<Edge>{{std::nullopt, S::ready, "submitted"},
                                                    {S::ready, S::running, "dispatched"},
                                                    {S::running, S::succeeded, "done"}});
    CHECK(f.history(id)[2].worker == "name-w1");
}

TEST_CASE("running -> retrying on FAIL with attempts left; ready after the backoff; attempt 2") {
    Engine f;
    auto s = spec("q", "p");
    s.backoff = 100ms;
    s.backoff_cap = 1000ms;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.now += 20;
    Millis failed_at = f.now;
    check_ack(f.fail("w1", id, 1, "boom\nstack trace"), id, 1);

    auto j = f.status(id);
    CHECK(j.state == S::retrying);
    CHECK(j.attempts == 1);
    CHECK(j.error == "boom\nstack trace");
    CHECK(j.exit_code == 1);
    REQUIRE(j.run_at.has_value());
    // First retry: d = 100, waits d/2 + random(0, d/2).
    CHECK(*j.run_at >= to_time(failed_at + 50));
    CHECK(*j.run_at <= to_time(failed_at + 100));
    Millis due = to_ms(*j.run_at);

    f.advance_to(due - 1);
    CHECK(f.status(id).state == S::retrying);
    CHECK(f.credit("w1", 1).empty());  // credit waits: the job is not ready yet
    auto out = f.advance_to(due);
    auto d = dispatches(out, "w1");  // ready, and dispatched to the waiting credit at once
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);
    CHECK(d[0].attempt == 2);
    CHECK(d[0].payload == "p");
    CHECK(d[0].seq == 2);

    CHECK(edges(f.history(id)) == std::vector<Edge>{{std::nullopt, S::ready, "submitted"},
                                                    {S::ready, S::running, "dispatched"},
                                                    {S::running, S::retrying, "failed: boom"},
                                                    {S::retrying, S::ready, "retry delay over"},
                                                    {S::ready, S::running, "dispatched"}});

    // Second failure: d = 200 (doubled), so the wait is 100-200 ms.
    f.now += 5;
    failed_at = f.now;
    check_ack(f.fail("w1", id, 2), id, 2);
    auto j2 = f.status(id);
    CHECK(j2.state == S::retrying);
    REQUIRE(j2.run_at.has_value());
    CHECK(*j2.run_at >= to_time(failed_at + 100));
    CHECK(*j2.run_at <= to_time(failed_at + 200));
}

TEST_CASE("without a backoff of its own a job retries after the broker's retry_delay_ms") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    Millis failed_at = f.now;
    check_ack(f.fail("w1", id, 1), id, 1);
    auto j = f.status(id);
    REQUIRE(j.run_at.has_value());
    CHECK(*j.run_at >= to_time(failed_at + kRetryDelayMs / 2));
    CHECK(*j.run_at <= to_time(failed_at + kRetryDelayMs));
    f.advance_to(to_ms(*j.run_at));
    CHECK(f.status(id).state == S::ready);
}

TEST_CASE("running -> dead: FAIL permanent, attempts left or not") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1, "bad input", true), id, 1);
    auto j = f.status(id);
    CHECK(j.state == S::dead);
    CHECK(j.attempts == 1);
    CHECK(j.max_attempts == 3);
    CHECK(j.error == "bad input");
    CHECK(j.finished_at == to_time(f.now));
    auto h = edges(f.history(id));
    REQUIRE(h.size() == 3);
    CHECK(h[2] == Edge{S::running, S::dead, "failed permanently: bad input"});
}

TEST_CASE("running -> dead: FAIL on the last attempt") {
    Engine f;
    auto s = spec("q");
    s.max_attempts = 2;
    s.backoff = 1ms;  // d <= 1: exactly 1 ms
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1, "first"), id, 1);
    CHECK(f.status(id).state == S::retrying);
    CHECK(f.status(id).run_at == to_time(f.now + 1));
    f.advance(1);
    CHECK(f.status(id).state == S::ready);
    auto d = f.dispatch_one("w1", id);
    CHECK(d.attempt == 2);
    check_ack(f.fail("w1", id, 2, "second"), id, 2);
    auto j = f.status(id);
    CHECK(j.state == S::dead);
    CHECK(j.attempts == 2);
    CHECK(j.error == "second");
    auto h = edges(f.history(id));
    REQUIRE(h.size() == 6);
    CHECK(h[5] == Edge{S::running, S::dead, "no attempts left: second"});
}

// ---- lost attempts --------------------------------------------------------------------------

TEST_CASE("running -> ready: worker silent past worker_timeout_ms, attempt counted") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);  // w1's last message: kBase

    f.advance(kWorkerTimeoutMs, false);  // silent for exactly the timeout: still there
    CHECK(f.status(id).state == S::running);
    f.advance(1, false);  // one ms more: lost
    auto j = f.status(id);
    CHECK(j.state == S::ready);
    CHECK(j.attempts == 1);
    CHECK(j.error == "worker lost");
    auto h = f.history(id);
    REQUIRE(h.size() == 3);
    CHECK(edges(h)[2] == Edge{S::running, S::ready, "worker lost"});
    CHECK(h[2].attempt == 1);
    CHECK(h[2].worker == "name-w1");
    CHECK(h[2].at == to_time(kBase + kWorkerTimeoutMs + 1));

    // The lost connection is no longer a worker.
    auto out = replies(f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{1, {id}})), "w1");
    REQUIRE(out.size() == 1);
    CHECK(error_of(out[0]).code == ErrorCode::not_registered);

    // The next dispatch is attempt 2.
    f.register_worker("w2", {"q"});
    auto d = f.dispatch_one("w2", id);
    CHECK(d.attempt == 2);
    CHECK(d.seq == 1);  // seq counts per registration
}

TEST_CASE("a worker that keeps sending HEARTBEAT is never lost") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    for (int i = 0; i < 10; ++i)
        f.advance(kHeartbeatMs);
    CHECK(f.now - kBase == 10 * kHeartbeatMs);  // twice the worker timeout
    auto j = f.status(id);
    CHECK(j.state == S::running);
    CHECK(j.attempts == 1);
}

TEST_CASE("running -> dead: worker lost on the last attempt") {
    Engine f;
    auto s = spec("q");
    s.max_attempts = 1;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.advance(kWorkerTimeoutMs + 1, false);
    auto j = f.status(id);
    CHECK(j.state == S::dead);
    CHECK(j.attempts == 1);
    CHECK(j.error == "worker lost");
    CHECK(edges(f.history(id)).back() == Edge{S::running, S::dead, "worker lost"});

    check_stale(f.done("w1", id, 1), id, 1);
    // The lost attempt's late FAIL was never applied: stale (it was ACKed as "applied before"
    // while the job was dead at that attempt, until the engine checked how the attempt ended).
    check_stale(f.fail("w1", id, 1), id, 1);
    CHECK(f.status(id).error == "worker lost");
}

TEST_CASE("running -> ready: dispatch lost (HEARTBEAT seq >= its seq, job not listed)") {
    Engine f;
    JobId a = f.submit(spec("q"));
    JobId b = f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 2);
    auto d = f.credit("w1", 2);
    REQUIRE(d.size() == 2);
    CHECK(d[0].seq == 1);
    CHECK(d[1].seq == 2);

    SUBCASE("seq covers the dispatch, job missing: lost") {
        // The worker says it got dispatches up to seq 1 and holds nothing.
        f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{1, {}}));
        auto ja = f.status(a);
        CHECK(ja.state == S::ready);
        CHECK(ja.attempts == 1);
        CHECK(ja.error == "dispatch lost");
        CHECK(edges(f.history(a)).back() == Edge{S::running, S::ready, "dispatch lost"});
        CHECK(f.status(b).state == S::running);  // seq 2 may still be on its way

        f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{2, {}}));
        CHECK(f.status(b).state == S::ready);
        // Both slots are free again: credit brings them back as attempt 2.
        auto again = f.credit("w1", 2);
        REQUIRE(again.size() == 2);
        CHECK(again[0].attempt == 2);
        CHECK(again[1].attempt == 2);
    }
    SUBCASE("jobs listed, or seq behind: kept") {
        f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{2, {a, b}}));
        f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{0, {}}));
        CHECK(f.status(a).state == S::running);
        CHECK(f.status(b).state == S::running);
        CHECK(f.status(a).attempts == 1);
    }
}

TEST_CASE("running -> dead: dispatch lost on the last attempt") {
    Engine f;
    auto s = spec("q");
    s.max_attempts = 1;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{1, {}}));
    auto j = f.status(id);
    CHECK(j.state == S::dead);
    CHECK(j.error == "dispatch lost");
}

// ---- timeouts -----------------------------------------------------------------------------

TEST_CASE("running -> retrying by timeout: no result by timeout + grace, ABORT to the worker") {
    Engine f;
    auto s = spec("q");
    s.timeout = 1000ms;
    s.backoff = 100ms;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    auto d = f.dispatch_one("w1", id);
    CHECK(d.timeout_ms == 1000);

    auto before = f.advance(1000 + kGraceMs - 1);
    CHECK(aborts(before, "w1").empty());
    CHECK(f.status(id).state == S::running);

    auto out = f.advance(1);
    auto a = aborts(out, "w1");
    REQUIRE(a.size() == 1);
    CHECK(a[0].id == id);
    CHECK(a[0].attempt == 1);
    CHECK(a[0].reason == "timed out");
    auto j = f.status(id);
    CHECK(j.state == S::retrying);
    CHECK(j.attempts == 1);
    CHECK(j.error == "timed out after 1s (no result from the worker)");
    CHECK(edges(f.history(id)).back() == Edge{S::running, S::retrying, "timed out"});

    // The late result of the timed-out attempt is stale, DONE or FAIL.
    check_stale(f.done("w1", id, 1), id, 1);
    check_stale(f.fail("w1", id, 1), id, 1);
    CHECK(f.status(id).state == S::retrying);

    // The retry is attempt 2, with a fresh lease of its own.
    f.advance_to(to_ms(*j.run_at));
    auto d2 = f.dispatch_one("w1", id);
    CHECK(d2.attempt == 2);
    CHECK(aborts(f.advance(1000 + kGraceMs - 1), "w1").empty());
    check_ack(f.done("w1", id, 2), id, 2);
    CHECK(f.status(id).state == S::succeeded);
    CHECK(aborts(f.advance(10'000), "w1").empty());  // the finished attempt's lease is void
}

TEST_CASE("running -> dead by timeout on the last attempt, with ABORT") {
    Engine f;
    auto s = spec("q");
    s.timeout = 200ms;
    s.max_attempts = 1;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    auto out = f.advance(200 + kGraceMs);
    auto a = aborts(out, "w1");
    REQUIRE(a.size() == 1);
    CHECK(a[0].id == id);
    CHECK(a[0].attempt == 1);
    CHECK(a[0].reason == "timed out");
    auto j = f.status(id);
    CHECK(j.state == S::dead);
    CHECK(j.error == "timed out after 200ms (no result from the worker)");
    CHECK(edges(f.history(id)).back() == Edge{S::running, S::dead, "timed out"});

    check_stale(f.done("w1", id, 1), id, 1);
    // The timed-out attempt's late FAIL was never applied: stale, not "applied before".
    check_stale(f.fail("w1", id, 1), id, 1);
    CHECK(f.status(id).state == S::dead);
    CHECK(f.status(id).error == "timed out after 200ms (no result from the worker)");
}

// ---- cancel -------------------------------------------------------------------------------

TEST_CASE("cancel from ready, scheduled, retrying and running") {
    Engine f;
    SUBCASE("ready") {
        JobId id = f.submit(spec("q"));
        auto j = job_of(f.cancel(id));
        CHECK(j.id == id);
        CHECK(j.state == S::cancelled);
        CHECK(j.error == "cancelled");
        CHECK(j.finished_at == to_time(f.now));
        CHECK(f.status(id).state == S::cancelled);
        CHECK(edges(f.history(id)).back() == Edge{S::ready, S::cancelled, "cancelled"});
        f.register_worker("w1", {"q"});
        CHECK(f.credit("w1", 1).empty());  // out of the queue
    }
    SUBCASE("scheduled") {
        auto s = spec("q");
        s.delay = 100ms;
        JobId id = f.submit(s);
        CHECK(job_of(f.cancel(id)).state == S::cancelled);
        f.advance(200);  // its timer is void
        CHECK(f.status(id).state == S::cancelled);
        CHECK(edges(f.history(id)).back() == Edge{S::scheduled, S::cancelled, "cancelled"});
    }
    SUBCASE("retrying") {
        auto s = spec("q");
        s.backoff = 100ms;
        JobId id = f.submit(s);
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        check_ack(f.fail("w1", id, 1), id, 1);
        REQUIRE(f.status(id).state == S::retrying);
        auto j = job_of(f.cancel(id));
        CHECK(j.state == S::cancelled);
        CHECK(j.attempts == 1);
        CHECK(f.credit("w1", 1).empty());
        CHECK(dispatches(f.advance(200), "w1").empty());  // the backoff timer is void
        CHECK(f.status(id).state == S::cancelled);
        CHECK(edges(f.history(id)).back() == Edge{S::retrying, S::cancelled, "cancelled"});
    }
    SUBCASE("running: ABORT to the worker, its late result is stale") {
        JobId id = f.submit(spec("q"));
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        auto out = f.cancel_all(id);
        auto to_client = replies(out, f.client);
        REQUIRE(to_client.size() == 1);
        auto j = job_of(to_client[0]);
        CHECK(j.state == S::cancelled);
        CHECK(j.attempts == 1);
        auto a = aborts(out, "w1");
        REQUIRE(a.size() == 1);
        CHECK(a[0].id == id);
        CHECK(a[0].attempt == 1);
        CHECK(a[0].reason == "cancelled");
        CHECK(edges(f.history(id)).back() == Edge{S::running, S::cancelled, "cancelled"});

        check_stale(f.done("w1", id, 1), id, 1);
        // A late FAIL of the cancelled attempt is stale, as docs/PROTOCOL.md says.
        check_stale(f.fail("w1", id, 1), id, 1);
        CHECK(f.status(id).state == S::cancelled);
        CHECK(f.status(id).error == "cancelled");
        // The slot was freed by the ABORT: the worker can take another job.
        JobId next = f.submit(spec("q"));
        auto d = f.credit("w1", 1);
        REQUIRE(d.size() == 1);
        CHECK(d[0].id == next);
    }
}

TEST_CASE("cancel of a finished job is invalid_state; of an unknown id, not_found") {
    Engine f;
    JobId id = f.submit(spec("q"));
    REQUIRE(job_of(f.cancel(id)).state == S::cancelled);
    std::uint64_t r = f.req;
    auto again = f.error(cmd::kCancel, encode(IdRequest{f.req++, id}));
    CHECK(again.code == ErrorCode::invalid_state);
    CHECK(again.req == r);

    JobId done = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", done);
    check_ack(f.done("w1", done, 1), done, 1);
    CHECK(f.error(cmd::kCancel, encode(IdRequest{f.req++, done})).code == ErrorCode::invalid_state);
    CHECK(f.status(done).state == S::succeeded);

    r = f.req;
    auto missing = f.error(cmd::kCancel, encode(IdRequest{f.req++, 999}));
    CHECK(missing.code == ErrorCode::not_found);
    CHECK(missing.req == r);
}

// ---- retry of dead jobs -------------------------------------------------------------------

TEST_CASE("dead -> ready by RETRY {id}: a fresh budget on top of the attempts used") {
    Engine f;
    auto s = spec("q", "again");
    s.max_attempts = 2;
    s.backoff = 1ms;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1), id, 1);
    f.advance(1);
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 2), id, 2);
    REQUIRE(f.status(id).state == S::dead);

    CHECK(f.retried(f.retry(id)) == std::vector<JobId>{id});
    auto j = f.status(id);
    CHECK(j.state == S::ready);
    CHECK(j.attempts == 2);
    CHECK(j.max_attempts == 4);  // two used + the two it was submitted with
    CHECK(edges(f.history(id)).back() == Edge{S::dead, S::ready, "retried by request"});

    auto d = f.dispatch_one("w1", id);
    CHECK(d.attempt == 3);
    CHECK(d.payload == "again");
    check_ack(f.done("w1", id, 3), id, 3);
    CHECK(f.status(id).state == S::succeeded);
}

TEST_CASE("dead -> ready by RETRY {dead: true, queue}; without a queue, every dead job") {
    Engine f;
    JobId a1 = f.submit(spec("a"));
    JobId b1 = f.submit(spec("b"));
    JobId a2 = f.submit(spec("a"));
    JobId a3 = f.submit(spec("a"));  // stays ready: not dead, not retried
    f.register_worker("w1", {"b", "a"}, 3);
    auto d = f.credit("w1", 3);
    REQUIRE(d.size() == 3);
    CHECK(d[0].id == b1);
    CHECK(d[1].id == a1);
    CHECK(d[2].id == a2);
    for (JobId id : {a1, a2, b1})
        check_ack(f.fail("w1", id, 1, "no", true), id, 1);

    auto ids = f.retried(f.retry(std::nullopt, true, "a"));
    std::sort(ids.begin(), ids.end());
    CHECK(ids == std::vector<JobId>{a1, a2});
    CHECK(f.status(a1).state == S::ready);
    CHECK(f.status(a2).state == S::ready);
    CHECK(f.status(b1).state == S::dead);
    CHECK(f.status(a3).state == S::ready);

    CHECK(f.retried(f.retry(std::nullopt, true, "a")).empty());  // nothing dead there now
    CHECK(f.retried(f.retry(std::nullopt, true)) == std::vector<JobId>{b1});
    CHECK(f.status(b1).state == S::ready);
    CHECK(f.status(b1).max_attempts == 1 + 3);
}

TEST_CASE("RETRY of a job that is not dead is invalid_state; of an unknown id, not_found") {
    Engine f;
    JobId succeeded = f.submit(spec("q"));
    JobId running = f.submit(spec("q"));
    JobId ready = f.submit(spec("q"));
    auto s = spec("q");
    s.delay = 1000ms;
    JobId scheduled = f.submit(s);
    JobId cancelled = f.submit(spec("q"));
    f.cancel(cancelled);
    f.register_worker("w1", {"q"}, 2);
    f.dispatch_one("w1", succeeded);
    check_ack(f.done("w1", succeeded, 1), succeeded, 1);
    f.dispatch_one("w1", running);
    REQUIRE(f.status(ready).state == S::ready);

    for (JobId id : {succeeded, running, ready, scheduled, cancelled}) {
        CAPTURE(id);
        auto e = f.error(cmd::kRetry, encode(RetryRequest{f.req++, id, false, std::nullopt}));
        CHECK(e.code == ErrorCode::invalid_state);
    }
    CHECK(f.status(succeeded).state == S::succeeded);
    CHECK(f.status(running).state == S::running);
    CHECK(f.status(running).attempts == 1);
    CHECK(f.status(ready).state == S::ready);
    CHECK(f.status(scheduled).state == S::scheduled);
    CHECK(f.status(cancelled).state == S::cancelled);
    auto missing = f.error(cmd::kRetry, encode(RetryRequest{f.req++, 999, false, std::nullopt}));
    CHECK(missing.code == ErrorCode::not_found);
}

// ---- run now and delete ---------------------------------------------------------------------

TEST_CASE("scheduled | retrying -> ready by RUN_NOW; any other state is invalid_state") {
    Engine f;
    auto later = spec("q");
    later.delay = std::chrono::milliseconds(60000);
    JobId scheduled = f.submit(later);
    auto s = spec("q");
    s.backoff = std::chrono::milliseconds(60000);
    JobId retrying = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", retrying);
    check_ack(f.fail("w1", retrying, 1), retrying, 1);
    REQUIRE(f.status(retrying).state == S::retrying);

    auto j = job_of(f.ask(cmd::kRunNow, encode(IdRequest{f.req++, scheduled})));
    CHECK(j.id == scheduled);
    CHECK(j.state == S::ready);
    CHECK_FALSE(j.run_at.has_value());
    CHECK(edges(f.history(scheduled)).back() == Edge{S::scheduled, S::ready, "run now by request"});
    CHECK(f.dispatch_one("w1", scheduled).attempt == 1);
    check_ack(f.done("w1", scheduled, 1), scheduled, 1);

    CHECK(job_of(f.ask(cmd::kRunNow, encode(IdRequest{f.req++, retrying}))).state == S::ready);
    CHECK(edges(f.history(retrying)).back() == Edge{S::retrying, S::ready, "run now by request"});
    CHECK(f.dispatch_one("w1", retrying).attempt == 2);
    check_ack(f.done("w1", retrying, 2), retrying, 2);
    // Its old timer comes due later and changes nothing.
    f.advance(61'000);
    CHECK(f.status(scheduled).state == S::succeeded);
    CHECK(f.status(retrying).state == S::succeeded);

    JobId running = f.submit(spec("q"));
    JobId ready = f.submit(spec("q"));
    f.dispatch_one("w1", running);
    for (JobId id : {ready, running, scheduled}) {  // ready, running, succeeded
        CAPTURE(id);
        auto before = f.history(id).size();
        auto e = f.error(cmd::kRunNow, encode(IdRequest{f.req++, id}));
        CHECK(e.code == ErrorCode::invalid_state);
        CHECK(e.message.find("only scheduled or retrying jobs") != std::string::npos);
        CHECK(f.history(id).size() == before);
    }
    CHECK(f.status(ready).state == S::ready);
    CHECK(f.status(running).state == S::running);
    CHECK(f.error(cmd::kRunNow, encode(IdRequest{f.req++, 999})).code == ErrorCode::not_found);
}

TEST_CASE("DELETE: a finished job goes with all of it; a live one only with force") {
    Engine f;
    auto queue_counts = [&] {
        auto rep = f.ask(cmd::kQueues, encode_req(f.req++));
        REQUIRE(rep.command == cmd::kQueues);
        Body b(rep.body);
        std::map<S, std::uint64_t> out;
        for (const auto& q : decode_queues(b.reader()))
            if (q.name == "q")
                for (auto [state, n] : q.counts)
                    out[state] = n;
        return out;
    };
    auto del = [&](JobId id, bool force) {
        return f.send(f.client, cmd::kDelete, encode(DeleteRequest{f.req++, id, force}));
    };
    JobId done = f.submit(spec("q", std::string(2000, 'p')));  // a payload in its own row
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", done);
    check_ack(f.done("w1", done, 1), done, 1);
    JobId ready = f.submit(spec("q"));
    REQUIRE(queue_counts()[S::succeeded] == 1);

    auto out = replies(del(done, false), f.client);
    REQUIRE(out.size() == 1);
    CHECK(out[0].command == cmd::kOk);
    CHECK(f.error(cmd::kStatus, encode(IdRequest{f.req++, done})).code == ErrorCode::not_found);
    CHECK(f.error(cmd::kHistory, encode(IdRequest{f.req++, done})).code == ErrorCode::not_found);
    CHECK(queue_counts()[S::succeeded] == 0);
    CHECK(f.error(cmd::kDelete, encode(DeleteRequest{f.req++, done, false})).code ==
          ErrorCode::not_found);

    // Live without force: refused, nothing changed.
    auto e = f.error(cmd::kDelete, encode(DeleteRequest{f.req++, ready, false}));
    CHECK(e.code == ErrorCode::invalid_state);
    CHECK(e.message.find("force") != std::string::npos);
    CHECK(f.status(ready).state == S::ready);
    CHECK(queue_counts()[S::ready] == 1);

    // Running, with force: cancelled (ABORT to the worker), then gone; its waiter hears not_found.
    f.dispatch_one("w1", ready);
    std::uint64_t wait_req = f.req++;
    CHECK(replies(f.send(f.client, cmd::kWait, encode(WaitRequest{wait_req, ready, 10'000})),
                  f.client)
              .empty());
    out = del(ready, true);
    auto a = aborts(out, "w1");
    REQUIRE(a.size() == 1);
    CHECK(a[0].id == ready);
    CHECK(a[0].reason == "cancelled");
    auto to_client = replies(out, f.client);
    REQUIRE(to_client.size() == 2);
    int oks = 0, gone = 0;
    for (const auto& r : to_client) {
        if (r.command == cmd::kOk) ++oks;
        if (r.command == cmd::kError && error_of(r).code == ErrorCode::not_found &&
            error_of(r).req == wait_req)
            ++gone;
    }
    CHECK(oks == 1);
    CHECK(gone == 1);
    CHECK(f.error(cmd::kStatus, encode(IdRequest{f.req++, ready})).code == ErrorCode::not_found);
    check_stale(f.done("w1", ready, 1), ready, 1);
    auto counts = queue_counts();
    CHECK(counts[S::running] == 0);
    CHECK(counts[S::cancelled] == 0);

    // Scheduled, with force; ids are never given out again.
    auto later = spec("q");
    later.delay = std::chrono::milliseconds(1000);
    JobId scheduled = f.submit(later);
    CHECK(replies(del(scheduled, true), f.client).at(0).command == cmd::kOk);
    f.advance(2000);
    CHECK(f.error(cmd::kStatus, encode(IdRequest{f.req++, scheduled})).code ==
          ErrorCode::not_found);
    CHECK(f.submit(spec("q")) > scheduled);
    CHECK(f.error(cmd::kDelete, encode(DeleteRequest{f.req++, 999, true})).code ==
          ErrorCode::not_found);
}

TEST_CASE("retention: dead jobs are kept dead_retention_ms, other finished ones retention_ms") {
    auto c = engine_config();
    c.retention_ms = 1000;
    c.dead_retention_ms = 10'000;
    Engine f(c);
    JobId ok = f.submit(spec("q"));
    JobId bad = f.submit(spec("q"));
    JobId off = f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 3);
    REQUIRE(f.credit("w1", 3).size() == 3);
    check_ack(f.done("w1", ok, 1), ok, 1);
    check_ack(f.fail("w1", bad, 1, "boom", true), bad, 1);
    CHECK(job_of(f.cancel(off)).state == S::cancelled);
    auto gone = [&](JobId id) {
        auto rep = f.ask(cmd::kStatus, encode(IdRequest{f.req++, id}));
        return rep.command == cmd::kError && error_of(rep).code == ErrorCode::not_found;
    };
    f.advance(1500);  // retention looks once a second
    f.advance(1000);
    CHECK(gone(ok));
    CHECK(gone(off));
    CHECK(f.status(bad).state == S::dead);
    f.advance(6000);
    CHECK(f.status(bad).state == S::dead);
    f.advance(3000);
    f.advance(1000);
    CHECK(gone(bad));
}

// ---- drain and release ----------------------------------------------------------------------

TEST_CASE("running -> ready by RELEASE after DRAIN: the attempt is not charged") {
    Engine f;
    JobId id = f.submit(spec("q"));
    JobId other = f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 1, 1);
    auto d = f.credit("w1", 1);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == id);

    CHECK(replies(f.send("w1", cmd::kDrain, encode_empty()), "w1").empty());  // no reply
    CHECK(f.credit("w1", 1).empty());  // a draining worker gets nothing more
    CHECK(f.status(other).state == S::ready);
    CHECK(f.status(id).state == S::running);  // running jobs stay assigned

    check_ack(f.release("w1", id, 1), id, 1);
    auto j = f.status(id);
    CHECK(j.state == S::ready);
    CHECK(j.attempts == 1);
    CHECK(j.max_attempts == limits::kDefaultMaxAttempts + 1);
    auto h = f.history(id);
    CHECK(edges(h).back() == Edge{S::running, S::ready, "released by worker"});
    CHECK(h.back().attempt == 1);
    CHECK(f.credit("w1", 1).empty());  // still draining

    // Released attempt fenced off, and a second RELEASE of it is stale.
    check_stale(f.done("w1", id, 1), id, 1);
    check_stale(f.release("w1", id, 1), id, 1);

    f.register_worker("w2", {"q"}, 2);
    auto d2 = f.credit("w2", 2);
    REQUIRE(d2.size() == 2);
    CHECK(d2[0].id == other);  // the released job went to the back of its queue
    CHECK(d2[0].attempt == 1);
    CHECK(d2[1].id == id);
    CHECK(d2[1].attempt == 2);
}

TEST_CASE("RELEASE of an attempt that is not current is stale and changes nothing") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_stale(f.release("w1", id, 2), id, 2);  // never dispatched
    check_stale(f.release("w1", 999, 1), 999, 1);
    CHECK(f.status(id).state == S::running);
    CHECK(f.status(id).max_attempts == limits::kDefaultMaxAttempts);
    check_ack(f.done("w1", id, 1), id, 1);
    check_stale(f.release("w1", id, 1), id, 1);  // finished
    CHECK(f.status(id).state == S::succeeded);
}

// ---- fencing ------------------------------------------------------------------------------

TEST_CASE("fencing: late DONE/FAIL after the attempt was lost") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.advance(kWorkerTimeoutMs + 1, false);
    REQUIRE(f.status(id).state == S::ready);

    // From the lost connection (no longer registered: results are accepted from anyone).
    check_stale(f.done("w1", id, 1), id, 1);
    check_stale(f.fail("w1", id, 1), id, 1);
    CHECK(f.status(id).state == S::ready);

    f.register_worker("w2", {"q"});
    f.dispatch_one("w2", id);
    check_stale(f.done("w1", id, 1), id, 1);  // attempt 2 runs now
    auto j = f.status(id);
    CHECK(j.state == S::running);
    CHECK(j.attempts == 2);
    CHECK(j.worker == "name-w2");
    check_ack(f.done("w2", id, 2, "new"), id, 2);
    CHECK(f.status(id).result == "new");
}

TEST_CASE("fencing: after a retry revived a dead job, the old attempt's result is stale") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1, "no", true), id, 1);
    CHECK(f.retried(f.retry(id)) == std::vector<JobId>{id});
    // Revived (ready), attempt 1 is over: its DONE cannot count; its FAIL, applied before the
    // retry, is acknowledged again and changes nothing.
    check_stale(f.done("w1", id, 1), id, 1);
    check_ack(f.fail("w1", id, 1), id, 1);
    CHECK(f.status(id).state == S::ready);
    auto d = f.dispatch_one("w1", id);
    CHECK(d.attempt == 2);
    check_stale(f.done("w1", id, 1, "old"), id, 1);
    auto j = f.status(id);
    CHECK(j.state == S::running);
    CHECK(j.attempts == 2);
    check_ack(f.done("w1", id, 2, "new"), id, 2);
    CHECK(f.status(id).result == "new");
}

TEST_CASE("fencing: a resent result of an applied attempt is ACKed again, not applied twice") {
    Engine f;
    SUBCASE("DONE") {
        JobId id = f.submit(spec("q"));
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        check_ack(f.done("w1", id, 1, "first"), id, 1);
        f.now += 1000;
        check_ack(f.done("w1", id, 1, "second"), id, 1);
        auto j = f.status(id);
        CHECK(j.state == S::succeeded);
        CHECK(j.result == "first");
        CHECK(j.finished_at == to_time(kBase));
        CHECK(f.history(id).size() == 3);
        // A FAIL for the succeeded attempt is not that result: stale.
        check_stale(f.fail("w1", id, 1), id, 1);
        // Nor is a DONE of an attempt that never ran.
        check_stale(f.done("w1", id, 2), id, 2);
    }
    SUBCASE("FAIL that made the job dead") {
        JobId id = f.submit(spec("q"));
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        check_ack(f.fail("w1", id, 1, "first", true), id, 1);
        check_ack(f.fail("w1", id, 1, "second", true), id, 1);
        CHECK(f.status(id).error == "first");
        check_stale(f.done("w1", id, 1), id, 1);
        CHECK(f.status(id).state == S::dead);
    }
    SUBCASE("FAIL that made the job retry") {
        auto s = spec("q");
        s.backoff = 1000ms;
        JobId id = f.submit(s);
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        check_ack(f.fail("w1", id, 1, "first"), id, 1);
        // The resend of a FAIL that was applied (the job now retrying) is ACKed again, and the
        // job is unchanged.
        check_ack(f.fail("w1", id, 1, "first"), id, 1);
        auto j = f.status(id);
        CHECK(j.state == S::retrying);
        CHECK(j.attempts == 1);
        CHECK(f.history(id).size() == 3);
    }
}

TEST_CASE("fencing: a result for an unknown job is stale") {
    Engine f;
    f.register_worker("w1", {"q"});
    check_stale(f.done("w1", 42, 1), 42, 1);
    check_stale(f.fail("w1", 42, 3), 42, 3);
    check_stale(f.done("stranger", 7, 1), 7, 1);  // not even a worker
}

TEST_CASE("fencing: the current attempt's result is accepted from any connection") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    // E.g. the worker reconnected (new identity) and reports before it registers again.
    check_ack(f.done("w1-reconnected", id, 1, "from elsewhere"), id, 1);
    auto j = f.status(id);
    CHECK(j.state == S::succeeded);
    CHECK(j.result == "from elsewhere");
    // The worker's slot was freed even so.
    JobId next = f.submit(spec("q"));
    auto d = f.credit("w1", 1);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == next);
}

TEST_CASE("RESULTS' credit refills the slots its results freed, as a CREDIT after it would") {
    Engine f;
    JobId a = f.submit(spec("q"));
    JobId b = f.submit(spec("q"));
    JobId c = f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 1);
    REQUIRE(f.credit("w1", 1).size() == 1);  // a
    auto result = [](JobId id) { return encode(JobResult{.ok = true, .id = id, .attempt = 1}); };
    std::string ra = result(a);
    // No CREDIT after it: the RESULTS' own credit brings b.
    auto out = f.send("w1", cmd::kResults, encode_results({ra}, 1));
    auto d = dispatches(out, "w1");
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == b);
    CHECK(acks_of(replies(out, "w1").at(0)).at(0).id == a);
    // A RESULTS without credit frees the slot but grants nothing: c waits for a CREDIT.
    std::string rb = result(b);
    CHECK(dispatches(f.send("w1", cmd::kResults, encode_results({rb})), "w1").empty());
    REQUIRE(f.credit("w1", 1).size() == 1);  // c
    // Credit past what the worker can hold is cut there, as CREDIT's is (concurrency 1, c held).
    JobId e = f.submit(spec("q"));
    std::string again = result(a);
    CHECK(dispatches(f.send("w1", cmd::kResults, encode_results({again}, 5)), "w1").empty());
    CHECK(f.status(e).state == S::ready);
    // A refused RESULTS (credit over 1024) changes nothing, its credit included.
    std::string rc = result(c);
    auto bad = replies(f.send("w1", cmd::kResults, encode_results({rc}, 1025)), "w1");
    REQUIRE(bad.size() == 1);
    CHECK(error_of(bad[0]).code == ErrorCode::bad_request);
    CHECK(f.status(c).state == S::running);
    // A draining worker's RESULTS credit is ignored, as its CREDIT is.
    CHECK(replies(f.send("w1", cmd::kDrain, encode_empty()), "w1").empty());
    CHECK(dispatches(f.send("w1", cmd::kResults, encode_results({rc}, 1)), "w1").empty());
    CHECK(f.status(c).state == S::succeeded);
    CHECK(f.status(e).state == S::ready);
}

TEST_CASE("RESULTS: fresh, resent and stale results answered with ACKS and ERROR stale") {
    Engine f;
    JobId a = f.submit(spec("q"));  // fresh DONE
    JobId b = f.submit(spec("q"));  // resent DONE (applied before)
    JobId c = f.submit(spec("q"));  // fresh FAIL
    JobId d = f.submit(spec("q"));  // stale: wrong attempt
    auto dead = spec("q");
    dead.max_attempts = 1;
    JobId e = f.submit(dead);  // resent permanent FAIL (applied before)
    f.register_worker("w1", {"q"}, 5);
    REQUIRE(f.credit("w1", 5).size() == 5);
    check_ack(f.done("w1", b, 1, "b"), b, 1);
    check_ack(f.fail("w1", e, 1, "e"), e, 1);
    REQUIRE(f.status(e).state == S::dead);

    std::vector<std::string> bodies = {
        encode(JobResult{.ok = true, .id = a, .attempt = 1, .result = "a"}),
        encode(JobResult{.ok = true, .id = b, .attempt = 1, .result = "b again"}),
        encode(JobResult{.ok = false, .id = c, .attempt = 1, .exit_code = 2, .error = "c"}),
        encode(JobResult{.ok = true, .id = d, .attempt = 2, .result = "d"}),
        encode(JobResult{.ok = false, .id = e, .attempt = 1, .exit_code = 1, .error = "e"}),
        encode(JobResult{.ok = true, .id = 999, .attempt = 1, .result = "nobody"}),
    };
    std::vector<std::string_view> views(bodies.begin(), bodies.end());
    auto out = replies(f.send("w1", cmd::kResults, encode_results(views)), "w1");

    // Today's order: one ERROR stale per refused result as it is met, then ACKS of the results
    // applied before, then ACKS of those applied now (each in the order of `results`).
    REQUIRE(out.size() == 4);
    auto s1 = error_of(out[0]);
    CHECK(s1.code == ErrorCode::stale);
    CHECK(s1.id == d);
    CHECK(s1.attempt == 2);
    auto s2 = error_of(out[1]);
    CHECK(s2.code == ErrorCode::stale);
    CHECK(s2.id == 999);
    CHECK(s2.attempt == 1);
    auto again = acks_of(out[2]);
    REQUIRE(again.size() == 2);
    CHECK(again[0].id == b);
    CHECK(again[1].id == e);
    CHECK(again[0].attempt == 1);
    CHECK(again[1].attempt == 1);
    auto fresh = acks_of(out[3]);
    REQUIRE(fresh.size() == 2);
    CHECK(fresh[0].id == a);
    CHECK(fresh[1].id == c);
    CHECK(fresh[0].attempt == 1);
    CHECK(fresh[1].attempt == 1);

    CHECK(f.status(a).state == S::succeeded);
    CHECK(f.status(a).result == "a");
    CHECK(f.status(b).result == "b");
    CHECK(f.status(c).state == S::retrying);
    CHECK(f.status(c).exit_code == 2);
    CHECK(f.status(d).state == S::running);
    CHECK(f.status(d).attempts == 1);
    CHECK(f.status(e).error == "e");
    CHECK(f.status(e).state == S::dead);
}

TEST_CASE("RESULTS with only fresh results is answered with one ACKS") {
    Engine f;
    JobId a = f.submit(spec("q"));
    JobId b = f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 2);
    REQUIRE(f.credit("w1", 2).size() == 2);
    std::vector<std::string> bodies = {
        encode(JobResult{.ok = true, .id = b, .attempt = 1, .result = "b"}),
        encode(JobResult{.ok = true, .id = a, .attempt = 1, .result = "a"}),
    };
    std::vector<std::string_view> views(bodies.begin(), bodies.end());
    auto out = replies(f.send("w1", cmd::kResults, encode_results(views)), "w1");
    REQUIRE(out.size() == 1);
    auto acks = acks_of(out[0]);
    REQUIRE(acks.size() == 2);
    CHECK(acks[0].id == b);
    CHECK(acks[1].id == a);
    CHECK(f.status(a).state == S::succeeded);
    CHECK(f.status(b).state == S::succeeded);
}

TEST_CASE("PROGRESS is recorded for the running attempt only") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    CHECK(replies(f.send("w1", cmd::kProgress, encode(Progress{id, 1, 40, "resizing"})), "w1")
              .empty());
    auto j = f.status(id);
    CHECK(j.progress == 40u);
    CHECK(j.progress_message == "resizing");
    f.send("w1", cmd::kProgress, encode(Progress{id, 2, 90, "other attempt"}));
    CHECK(f.status(id).progress == 40u);
}

// ---- duplicates ---------------------------------------------------------------------------

TEST_CASE("SUBMIT with a known token returns the same id, duplicate, even once it finished") {
    Engine f;
    auto s = spec("q", "once");
    s.token = "tok-1";
    JobId id = f.submit(s);
    auto again = f.submit_reply(s);
    CHECK(again.ids == std::vector<JobId>{id});
    CHECK(again.duplicate == std::vector<bool>{true});

    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.done("w1", id, 1), id, 1);
    auto after = f.submit_reply(s);
    CHECK(after.ids == std::vector<JobId>{id});
    CHECK(after.duplicate == std::vector<bool>{true});
    auto err = f.error(cmd::kStatus, encode(IdRequest{f.req++, id + 1}));
    CHECK(err.code == ErrorCode::not_found);  // no second job

    // A different token is a new job. SQLite's ids have no gaps: the duplicates used up none.
    // PostgreSQL's come from a sequence, which an INSERT that finds the token taken still
    // advances: ids only grow there (never reused), with gaps.
    s.token = "tok-2";
#ifdef ERRAND_TEST_PG
    CHECK(f.submit(s) > id);
#else
    CHECK(f.submit(s) == id + 1);
#endif
}

TEST_CASE("SUBMIT of a batch: ids in order, repeated and known tokens are duplicates, events") {
    Engine f;
    auto known = spec("b", "known");
    known.token = "known-token";
    JobId first = f.submit(known);
    JobId second = f.submit(spec("b", "x"));  // the queue exists: its batches go together

    SubmitRequest m;
    m.req = f.req++;
    for (int i = 0; i < 6; ++i) {
        auto s = spec("b", "p" + std::to_string(i));
        if (i == 1) s.token = "known-token";      // a job from before
        if (i == 2 || i == 4) s.token = "twice";  // twice in this batch
        if (i == 3) s.delay = 60'000ms;           // scheduled
        if (i == 5) s.argv = std::vector<std::string>{"echo", "hi"};
        m.jobs.push_back(std::move(s));
    }
    auto rep = f.submit_request(std::move(m));
    REQUIRE(rep.ids.size() == 6);
    CHECK(rep.duplicate == std::vector<bool>{false, true, false, false, true, false});
    CHECK(rep.ids[1] == first);
    CHECK(rep.ids[4] == rep.ids[2]);
    CHECK(rep.ids[0] < rep.ids[2]);
    CHECK(rep.ids[2] < rep.ids[3]);
    CHECK(rep.ids[3] < rep.ids[5]);
    CHECK(f.status(rep.ids[3]).state == JobState::scheduled);
    CHECK(f.status(rep.ids[5]).argv == std::vector<std::string>{"echo", "hi"});
    CHECK(edges(f.history(rep.ids[0])) ==
          std::vector<Edge>{{std::nullopt, JobState::ready, "submitted"}});
    CHECK(edges(f.history(rep.ids[3])) ==
          std::vector<Edge>{{std::nullopt, JobState::scheduled, "scheduled"}});

    // They run in the order given.
    f.register_worker("w1", {"b"}, 1, 0, true);
    const std::vector<std::pair<JobId, std::string>> order = {{first, "known"},
                                                              {second, "x"},
                                                              {rep.ids[0], "p0"},
                                                              {rep.ids[2], "p2"},
                                                              {rep.ids[5], "p5"}};
    for (const auto& [want, payload] : order) {
        auto d = f.dispatch_one("w1", want);
        CHECK(d.payload == payload);
        check_ack(f.done("w1", d.id, 1), d.id, 1);
    }
}

TEST_CASE("SUBMIT with a unique key held by an unfinished job returns that job") {
    Engine f;
    auto s = spec("q");
    s.unique = "key";
    JobId first = f.submit(s);

    SUBCASE("ready") {
        auto dup = f.submit_reply(s);
        CHECK(dup.ids == std::vector<JobId>{first});
        CHECK(dup.duplicate == std::vector<bool>{true});
        CHECK(f.status(first).unique == "key");
    }
    SUBCASE("running, then succeeded: the key is free and makes a new job") {
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", first);
        auto dup = f.submit_reply(s);
        CHECK(dup.ids == std::vector<JobId>{first});
        CHECK(dup.duplicate == std::vector<bool>{true});
        check_ack(f.done("w1", first, 1), first, 1);
        auto fresh = f.submit_reply(s);
        CHECK(fresh.ids == std::vector<JobId>{first + 1});
        CHECK(fresh.duplicate == std::vector<bool>{false});
        CHECK(f.status(first + 1).state == S::ready);
    }
    SUBCASE("cancelled: the key is free") {
        f.cancel(first);
        CHECK(f.submit(s) == first + 1);
    }
    SUBCASE("two of one batch: the second is the first's duplicate") {
        SubmitRequest m;
        m.req = f.req++;
        auto other = spec("q");
        other.unique = "other";
        m.jobs = {other, other};
        auto rep = f.submit_request(m);
        CHECK(rep.ids == std::vector<JobId>{first + 1, first + 1});
        CHECK(rep.duplicate == std::vector<bool>{false, true});
    }
    SUBCASE("a dead job holding it cannot be retried while another holds the key") {
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", first);
        check_ack(f.fail("w1", first, 1, "no", true), first, 1);
        JobId second = f.submit(s);  // the key is free: first is dead
        CHECK(second == first + 1);
        auto e = f.error(cmd::kRetry, encode(RetryRequest{f.req++, first, false, std::nullopt}));
        CHECK(e.code == ErrorCode::invalid_state);
        CHECK(f.retried(f.retry(std::nullopt, true)).empty());  // skipped, stays dead
        CHECK(f.status(first).state == S::dead);
    }
}

// ---- waiting ------------------------------------------------------------------------------

TEST_CASE("SUBMIT with wait_ms: SUBMITTED, then JOB when the job finishes") {
    Engine f;
    SubmitRequest m;
    m.req = 77;
    m.jobs = {spec("q", "w")};
    m.wait_ms = 10'000;
    auto sub = f.ask(cmd::kSubmit, encode(m));
    REQUIRE(sub.command == cmd::kSubmitted);
    CHECK(req_of(sub) == 77);

    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", 1);
    CHECK(replies(f.advance(1000), f.client).empty());
    auto out = f.send("w1", cmd::kDone,
                      encode(JobResult{.ok = true, .id = 1, .attempt = 1, .result = "42"}));
    check_ack(replies(out, "w1"), 1, 1);
    auto to_client = replies(out, f.client);
    REQUIRE(to_client.size() == 1);
    CHECK(req_of(to_client[0]) == 77);
    auto j = job_of(to_client[0]);
    CHECK(j.id == 1);
    CHECK(j.state == S::succeeded);
    CHECK(j.result == "42");
    CHECK(replies(f.advance(20'000), f.client).empty());  // answered once; no timeout later
}

TEST_CASE(
    "SUBMIT with wait_ms times out with ERROR timeout; a finished duplicate answers at once") {
    Engine f;
    SubmitRequest m;
    m.req = 5;
    auto s = spec("q");
    s.token = "t";
    m.jobs = {s};
    m.wait_ms = 1000;
    REQUIRE(f.ask(cmd::kSubmit, encode(m)).command == cmd::kSubmitted);
    CHECK(replies(f.advance(999), f.client).empty());
    auto out = replies(f.advance(1), f.client);
    REQUIRE(out.size() == 1);
    auto e = error_of(out[0]);
    CHECK(e.code == ErrorCode::timeout);
    CHECK(e.req == 5);
    CHECK(f.status(1).state == S::ready);  // the job itself is untouched

    f.cancel(1);
    m.req = 6;
    auto both = replies(f.send(f.client, cmd::kSubmit, encode(m)), f.client);
    REQUIRE(both.size() == 2);
    REQUIRE(both[0].command == cmd::kSubmitted);
    Body b(both[0].body);
    auto rep = decode_submitted(b.reader());
    CHECK(rep.ids == std::vector<JobId>{1});
    CHECK(rep.duplicate == std::vector<bool>{true});
    CHECK(req_of(both[1]) == 6);
    CHECK(job_of(both[1]).state == S::cancelled);
}

TEST_CASE("WAIT on an unfinished job is answered with JOB when it finishes") {
    Engine f;
    auto s = spec("q");
    s.max_attempts = 1;
    JobId id = f.submit(s);
    auto none = f.send(f.client, cmd::kWait, encode(WaitRequest{31, id, 60'000}));
    CHECK(replies(none, f.client).empty());

    SUBCASE("succeeded") {
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        auto out =
            replies(f.send("w1", cmd::kDone, encode(JobResult{.ok = true, .id = id, .attempt = 1})),
                    f.client);
        REQUIRE(out.size() == 1);
        CHECK(req_of(out[0]) == 31);
        CHECK(job_of(out[0]).state == S::succeeded);
    }
    SUBCASE("dead (worker lost on its only attempt)") {
        f.register_worker("w1", {"q"});
        f.dispatch_one("w1", id);
        auto out = replies(f.advance(kWorkerTimeoutMs + 1, false), f.client);
        REQUIRE(out.size() == 1);
        CHECK(req_of(out[0]) == 31);
        auto j = job_of(out[0]);
        CHECK(j.state == S::dead);
        CHECK(j.error == "worker lost");
    }
    SUBCASE("cancelled: the canceller and the waiter both get JOB") {
        auto out = replies(f.cancel_all(id), f.client);
        REQUIRE(out.size() == 2);
        std::set<std::uint64_t> reqs{req_of(out[0]), req_of(out[1])};
        CHECK(reqs.count(31) == 1);
        CHECK(job_of(out[0]).state == S::cancelled);
        CHECK(job_of(out[1]).state == S::cancelled);
    }
}

TEST_CASE("WAIT: timeout -> ERROR timeout; finished -> JOB at once; unknown -> not_found") {
    Engine f;
    JobId id = f.submit(spec("q"));
    CHECK(
        replies(f.send(f.client, cmd::kWait, encode(WaitRequest{8, id, 1000})), f.client).empty());
    CHECK(replies(f.advance(999), f.client).empty());
    auto out = replies(f.advance(1), f.client);
    REQUIRE(out.size() == 1);
    auto e = error_of(out[0]);
    CHECK(e.code == ErrorCode::timeout);
    CHECK(e.req == 8);

    f.cancel(id);
    auto now = f.ask(cmd::kWait, encode(WaitRequest{9, id, 1000}));
    CHECK(req_of(now) == 9);
    CHECK(job_of(now).state == S::cancelled);

    auto missing = f.error(cmd::kWait, encode(WaitRequest{10, 999, 1000}));
    CHECK(missing.code == ErrorCode::not_found);
    CHECK(missing.req == 10);
}

// ---- a whole life -------------------------------------------------------------------------

TEST_CASE("HISTORY of a job through retry, loss, timeout and success") {
    Engine f;
    auto s = spec("q");
    s.max_attempts = 4;
    s.backoff = 1ms;
    s.timeout = 100ms;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1, "oops"), id, 1);                  // -> retrying
    f.advance(1);                                                   // -> ready
    f.dispatch_one("w1", id);                                       // attempt 2
    f.send("w1", cmd::kHeartbeat, encode(WorkerHeartbeat{2, {}}));  // dispatch lost -> ready
    f.dispatch_one("w1", id);                                       // attempt 3
    f.advance(100 + kGraceMs);                                      // timed out -> retrying
    f.advance(10);                                                  // -> ready
    auto d = f.dispatch_one("w1", id);
    CHECK(d.attempt == 4);
    check_ack(f.done("w1", id, 4), id, 4);

    auto h = f.history(id);
    CHECK(edges(h) == std::vector<Edge>{{std::nullopt, S::ready, "submitted"},
                                        {S::ready, S::running, "dispatched"},
                                        {S::running, S::retrying, "failed: oops"},
                                        {S::retrying, S::ready, "retry delay over"},
                                        {S::ready, S::running, "dispatched"},
                                        {S::running, S::ready, "dispatch lost"},
                                        {S::ready, S::running, "dispatched"},
                                        {S::running, S::retrying, "timed out"},
                                        {S::retrying, S::ready, "retry delay over"},
                                        {S::ready, S::running, "dispatched"},
                                        {S::running, S::succeeded, "done"}});
    std::vector<std::uint32_t> attempts;
    for (const auto& e : h)
        attempts.push_back(e.attempt);
    CHECK(attempts == std::vector<std::uint32_t>{0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4});
    for (std::size_t i = 1; i < h.size(); ++i)
        CHECK(h[i].at >= h[i - 1].at);
}

TEST_CASE("WAIT whose deadline falls in the pass that finishes the job") {
    Engine f;
    JobId id = f.submit(spec("q"));
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    CHECK(
        replies(f.send(f.client, cmd::kWait, encode(WaitRequest{12, id, 1000})), f.client).empty());
    f.advance(999);
    f.now += 1;  // the DONE arrives exactly at the waiter's deadline
    auto out = f.send("w1", cmd::kDone, encode(JobResult{.ok = true, .id = id, .attempt = 1}));
    check_ack(replies(out, "w1"), id, 1);
    CHECK(f.status(id).state == S::succeeded);
    // The job succeeded (and was committed) in the pass in which the wait's deadline falls: the
    // waiter gets the job, not ERROR timeout.
    auto to_client = replies(out, f.client);
    REQUIRE(to_client.size() == 1);
    CHECK(to_client[0].command == "JOB");
}

TEST_CASE("ERROR messages are valid UTF-8 whatever bytes the request quoted") {
    Engine f;
    auto check_utf8_error = [](const std::vector<Envelope>& out, const std::string& expect) {
        REQUIRE(out.size() == 1);
        REQUIRE(out[0].command == cmd::kError);
        Body b(out[0].body);
        auto e = decode_error(b.reader());
        CHECK(is_utf8(e.message));
        CHECK_MESSAGE(e.message.find(expect) != std::string::npos, e.message);
    };
    // An unknown command of bytes that are not UTF-8.
    check_utf8_error(f.send(f.client, "\xff\xfeX", encode_req(1)), "'\\xff\\xfeX'");
    // A queue name that is not UTF-8 (a str field with any bytes), quoted by the decode error.
    JobSpec bad = spec("q");
    bad.queue = "q\xc3(";
    SubmitRequest m;
    m.req = 2;
    m.jobs.push_back(bad);
    check_utf8_error(f.send(f.client, cmd::kSubmit, encode(m)), "q\\xc3(");
}

TEST_CASE("WAITs are bounded per connection and for the whole broker") {
    auto cfg = engine_config();
    cfg.max_waits = 2;
    cfg.max_waits_total = 3;
    FixedClock clock;
    Broker broker(cfg, make_store(), clock);
    Millis now = kBase;
    auto send = [&](const std::string& who, std::string_view command, std::string body) {
        return broker.process(
            Envelope{who, std::string(kProtocolVersion), std::string(command), std::move(body), 3},
            now += 1);
    };
    SubmitRequest m;
    m.req = 1;
    m.jobs.push_back(spec("q"));
    auto sub = send("c1", cmd::kSubmit, encode(m));
    REQUIRE(sub.size() == 1);
    Body sb(sub[0].body);
    JobId id = decode_submitted(sb.reader()).ids.at(0);
    auto wait = [&](const std::string& who, std::uint64_t req) {
        auto out = send(who, cmd::kWait, encode(WaitRequest{req, id, 60'000}));
        if (out.empty()) return std::optional<ErrorCode>();
        Body b(out.at(0).body);
        return std::optional<ErrorCode>(decode_error(b.reader()).code);
    };
    CHECK(wait("c1", 10) == std::nullopt);
    CHECK(wait("c1", 11) == std::nullopt);
    CHECK(wait("c1", 12) == ErrorCode::too_large);  // per connection
    CHECK(wait("c2", 13) == std::nullopt);
    CHECK(wait("c3", 14) == ErrorCode::too_large);  // the broker's total
    // Waits that time out free their places.
    now += 60'000;
    send("c9", cmd::kPing, encode_req(99));
    CHECK(wait("c3", 15) == std::nullopt);
}

TEST_CASE("queues are bounded (max_queues), and an unused queue is forgotten") {
    auto cfg = engine_config();
    cfg.max_queues = 3;
    cfg.snapshots = std::make_shared<SnapshotHub>();  // what /metrics and the dashboard show
    FixedClock clock;
    Broker broker(cfg, make_store(), clock);
    Millis now = kBase;
    std::uint64_t req = 1;
    auto send = [&](std::string_view command, std::string body) {
        auto out = broker.process(
            Envelope{"c1", std::string(kProtocolVersion), std::string(command), std::move(body), 3},
            now += 1);
        REQUIRE(!out.empty());
        return out.front();
    };
    auto submit = [&](const std::string& queue) {
        SubmitRequest m;
        m.req = req++;
        m.jobs.push_back(spec(queue));
        return send(cmd::kSubmit, encode(m));
    };
    auto queue_names = [&] {
        auto e = send(cmd::kStats, encode_req(req++));
        REQUIRE(e.command == cmd::kStats);
        Body b(e.body);
        std::vector<std::string> names;
        for (const auto& q : decode_stats(b.reader()).queues)
            names.push_back(q.name);
        return names;
    };

    std::vector<JobId> ids;
    for (const char* q : {"q1", "q2", "q3"}) {
        auto e = submit(q);
        REQUIRE(e.command == cmd::kSubmitted);
        Body b(e.body);
        ids.push_back(decode_submitted(b.reader()).ids.at(0));
    }
    auto refused = submit("q4");
    CHECK(error_of(refused).code == ErrorCode::too_large);
    CHECK(error_of(refused).message.find("--max-queues") != std::string::npos);
    CHECK(submit("q1").command == cmd::kSubmitted);  // a queue that exists takes more jobs
    {
        // Several jobs, one of them in a new queue too many: refused whole, none written.
        SubmitRequest m;
        m.req = req++;
        m.jobs.push_back(spec("q1"));
        m.jobs.push_back(spec("q5"));
        m.jobs.push_back(spec("q6"));
        CHECK(error_of(send(cmd::kSubmit, encode(m))).code == ErrorCode::too_large);
        ListRequest l;
        l.req = req++;
        l.queue = "q1";
        auto e = send(cmd::kList, encode(l));
        REQUIRE(e.command == cmd::kJobs);
        Body b(e.body);
        CHECK(b.reader().array("jobs").size == 2);  // the two single submits only
    }
    {
        auto s = cfg.snapshots->latest();
        REQUIRE(s);
        CHECK(s->metrics.queues.size() == 3);
        CHECK(s->queues.size() == 3);
    }

    // Once their jobs are gone (cancelled, purged), the queues are forgotten after a minute
    // without activity, and their places are free.
    for (JobId id = ids.front(); id <= ids.back() + 1; ++id)
        send(cmd::kCancel, encode(IdRequest{req++, id}));
    PurgeRequest purge;
    purge.req = req++;
    purge.state = JobState::cancelled;
    send(cmd::kPurge, encode(purge));
    CHECK(queue_names() == std::vector<std::string>{"q1", "q2", "q3"});
    now += 61'000;
    send(cmd::kPing, encode_req(req++));
    now += 11'000;
    send(cmd::kPing, encode_req(req++));
    CHECK(queue_names().empty());
    // Nor do /metrics' per-queue series (counters, histograms, gauges) keep them.
    auto published = [&] {
        std::vector<std::string> names;
        auto s = cfg.snapshots->latest();
        REQUIRE(s);
        for (const auto& [name, m] : s->metrics.queues)
            names.push_back(name);
        for (const auto& q : s->queues)
            names.push_back(q.name);
        return names;
    };
    CHECK(published().empty());
    CHECK(submit("q4").command == cmd::kSubmitted);
    CHECK(queue_names() == std::vector<std::string>{"q4"});
    CHECK(published() == std::vector<std::string>{"q4", "q4"});
}

TEST_CASE("a step of the wall clock expires no worker, times out no job and ends no wait") {
    Engine f;
    auto s = spec("q");
    s.timeout = 1000ms;
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    CHECK(f.send(f.client, cmd::kWait, encode(WaitRequest{f.req++, id, 60'000})).empty());

    auto quiet = [&](const std::vector<Envelope>& out) {
        CHECK(aborts(out, "w1").empty());
        CHECK(addressed(out, f.client, cmd::kError).empty());  // the wait did not time out
        CHECK(f.status(id).state == S::running);
        auto w = f.ask(cmd::kWorkers, encode_req(f.req++));
        Body b(w.body);
        CHECK(decode_workers(b.reader()).size() == 1);  // the worker is not lost
    };
    f.wall_step = 3'600'000;  // an hour ahead
    quiet(f.advance(100));
    f.wall_step = -3'600'000;  // an hour back
    quiet(f.advance(100));

    // Time as durations measure it still runs: the attempt times out after its timeout + grace.
    auto out = f.advance(1000 + kGraceMs);
    REQUIRE(aborts(out, "w1").size() == 1);
    CHECK(f.status(id).state == S::retrying);
}

// ---- expiry ---------------------------------------------------------------------------------

TEST_CASE("expiry: a ready job not dispatched by expires_in ends expired; its WAIT gets it") {
    Engine f;
    auto s = spec("q");
    s.expires_in = std::chrono::milliseconds(5000);
    JobId id = f.submit(s);
    CHECK(f.status(id).expires_at == to_time(kBase + 5000));
    auto none = f.send(f.client, cmd::kWait, encode(WaitRequest{77, id, 60'000}));
    CHECK(replies(none, f.client).empty());
    CHECK(replies(f.advance(4999), f.client).empty());
    CHECK(f.status(id).state == S::ready);
    auto out = replies(f.advance(1), f.client);
    REQUIRE(out.size() == 1);
    CHECK(req_of(out[0]) == 77);
    auto j = job_of(out[0]);
    CHECK(j.state == S::expired);
    CHECK(j.finished_at == to_time(kBase + 5000));
    CHECK(j.attempts == 0);
    CHECK(edges(f.history(id)) == std::vector<Edge>{{std::nullopt, S::ready, "submitted"},
                                                    {S::ready, S::expired, "expired"}});
    // A worker that comes later gets nothing of it.
    f.register_worker("w1", {"q"});
    CHECK(f.credit("w1", 1).empty());
    auto counts = f.ask(cmd::kQueues, encode_req(f.req++));
    REQUIRE(counts.command == cmd::kQueues);
    Body b(counts.body);
    auto queues = decode_queues(b.reader());
    REQUIRE(queues.size() == 1);
    CHECK(queues[0].counts[static_cast<std::size_t>(S::expired)].second == 1);
    CHECK(queues[0].counts[static_cast<std::size_t>(S::ready)].second == 0);
}

TEST_CASE("expiry: a scheduled job whose expires_at comes before its run_at expires, never ready") {
    Engine f;
    auto s = spec("q");
    s.delay = std::chrono::milliseconds(60'000);
    s.expires_at = to_time(kBase + 10'000);
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.credit("w1", 1);
    f.advance(10'000);
    CHECK(f.status(id).state == S::expired);
    CHECK(dispatches(f.advance(60'000), "w1").empty());
    CHECK(edges(f.history(id)) == std::vector<Edge>{{std::nullopt, S::scheduled, "scheduled"},
                                                    {S::scheduled, S::expired, "expired"}});
}

TEST_CASE("expiry: a retrying job whose next attempt would start after expiry expires") {
    Engine f;
    auto s = spec("q");
    s.backoff = std::chrono::milliseconds(60'000);
    s.expires_in = std::chrono::milliseconds(10'000);
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1), id, 1);
    REQUIRE(f.status(id).state == S::retrying);
    f.credit("w1", 1);
    f.advance(9'999);
    CHECK(f.status(id).state == S::retrying);
    auto out = f.advance(1);
    CHECK(dispatches(out, "w1").empty());
    auto j = f.status(id);
    CHECK(j.state == S::expired);
    CHECK(j.attempts == 1);
    CHECK(edges(f.history(id)).back() == Edge{S::retrying, S::expired, "expired"});
    CHECK(dispatches(f.advance(60'000), "w1").empty());
}

TEST_CASE("expiry after dispatch: a running job is not expired and finishes normally") {
    Engine f;
    auto s = spec("q");
    s.expires_in = std::chrono::milliseconds(1000);
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.advance(5000);
    CHECK(f.status(id).state == S::running);
    check_ack(f.done("w1", id, 1), id, 1);
    CHECK(f.status(id).state == S::succeeded);
}

TEST_CASE("expiry: a job back in ready after a failed attempt expires there") {
    Engine f;
    auto s = spec("q");
    s.expires_in = std::chrono::milliseconds(1000);
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    check_ack(f.fail("w1", id, 1), id, 1);  // retrying after at most kRetryDelayMs (100 ms)
    f.advance(2 * kRetryDelayMs);           // ready again before its expiry, no credit
    REQUIRE(f.status(id).state == S::ready);
    f.advance(1000 - 2 * kRetryDelayMs);
    CHECK(f.status(id).state == S::expired);
    CHECK(edges(f.history(id)).back() == Edge{S::ready, S::expired, "expired"});
}

TEST_CASE("expiry: a job whose worker is lost after its expiry expires instead of running again") {
    Engine f;
    auto s = spec("q");
    s.expires_in = std::chrono::milliseconds(1000);
    JobId id = f.submit(s);
    f.register_worker("w1", {"q"});
    f.dispatch_one("w1", id);
    f.advance(kWorkerTimeoutMs + 1, false);  // lost: back to ready, past its expiry
    // Expired by the next pass (a shared store: its next look for due jobs, poll_ms); never
    // dispatched meanwhile, the claim skips it.
    f.advance(100);
    CHECK(f.status(id).state == S::expired);
    auto h = edges(f.history(id));
    REQUIRE(h.size() >= 2);
    CHECK(h[h.size() - 2] == Edge{S::running, S::ready, "worker lost"});
    CHECK(h.back() == Edge{S::ready, S::expired, "expired"});
}

TEST_CASE("expiry at dispatch: a ready job past its expiry is expired, not dispatched") {
    // More jobs expire at once than one pass expires (promote_batch, 1000): the pass's dispatch
    // meets the rest still ready, past their expiry. The worker's credit waits on a paused queue
    // that is resumed in the pass of the expiry.
    Engine f;
    CHECK(f.ask(cmd::kPause, encode(QueueRequest{f.req++, "q"})).command == cmd::kOk);
    SubmitReply rep;
    for (int batch : {1000, 100}) {
        SubmitRequest m;
        m.req = f.req++;
        for (int i = 0; i < batch; ++i) {
            auto s = spec("q");
            s.expires_in = std::chrono::milliseconds(1000);
            m.jobs.push_back(s);
        }
        auto r = f.submit_request(std::move(m));
        rep.ids.insert(rep.ids.end(), r.ids.begin(), r.ids.end());
    }
    REQUIRE(rep.ids.size() == 1100);
    f.register_worker("w1", {"q"});
    CHECK(f.credit("w1", 1).empty());
    f.now += 1000;
    CHECK(dispatches(f.send(f.client, cmd::kResume, encode(QueueRequest{f.req++, "q"})), "w1")
              .empty());
    std::size_t expired = 0;
    for (JobId id : rep.ids)
        if (f.status(id).state == S::expired) ++expired;
    CHECK(expired == 1100);
    // The credit is still there for a job that has not expired.
    JobId fresh = f.submit(spec("q"));
    CHECK(f.status(fresh).state == S::running);
}

TEST_CASE("expiry: an expired job frees its unique key; retention deletes it like a success") {
    auto c = engine_config();
    c.retention_ms = 1000;
    Engine f(c);
    auto s = spec("q");
    s.unique = "once";
    s.expires_in = std::chrono::milliseconds(500);
    JobId id = f.submit(s);
    f.advance(500);
    REQUIRE(f.status(id).state == S::expired);
    s.expires_in.reset();
    JobId again = f.submit(s);
    CHECK(again != id);
    f.advance(1500);
    f.advance(1000);
    auto rep = f.ask(cmd::kStatus, encode(IdRequest{f.req++, id}));
    CHECK(error_of(rep).code == ErrorCode::not_found);
    CHECK(f.status(again).state == S::ready);
}

TEST_CASE("expiry: SUBMIT with both expires_at and expires_in_ms, or expires_in_ms 0, is refused") {
    Engine f;
    auto both = spec("q");
    both.expires_in = std::chrono::milliseconds(1000);
    both.expires_at = to_time(kBase + 1000);
    SubmitRequest m;
    m.req = f.req++;
    m.jobs.push_back(both);
    auto e = f.error(cmd::kSubmit, encode(m));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("'expires_at' or 'expires_in_ms'") != std::string::npos);
    auto zero = spec("q");
    zero.expires_in = std::chrono::milliseconds(0);
    m.jobs = {zero};
    e = f.error(cmd::kSubmit, encode(m));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("expires_in_ms") != std::string::npos);
    auto q = f.ask(cmd::kQueues, encode_req(f.req++));
    Body b(q.body);
    CHECK(decode_queues(b.reader()).empty());
}

// ---- queue limits (QUEUE_SET; docs/LIFECYCLE.md "Queue limits") ------------------------------

namespace {

QueueSettings queue_reply(const Envelope& e) {
    REQUIRE(e.command == cmd::kQueue);
    Body b(e.body);
    return decode_queue(b.reader());
}

QueueInfo queue_row(Engine& f, const std::string& name) {
    auto rep = f.ask(cmd::kQueues, encode_req(f.req++));
    REQUIRE(rep.command == cmd::kQueues);
    Body b(rep.body);
    for (auto& q : decode_queues(b.reader()))
        if (q.name == name) return q;
    FAIL("no queue " << name << " in QUEUES");
    return {};
}

QueueSetRequest max_running(Engine& f, const std::string& queue, std::uint32_t n) {
    QueueSetRequest m;
    m.req = f.req++;
    m.queue = queue;
    m.max_running = n;
    return m;
}

}  // namespace

TEST_CASE("max_running: no more than N running across workers; a finished one lets the next in") {
    Engine f;
    auto s = queue_reply(f.ask(cmd::kQueueSet, encode(max_running(f, "q", 2))));
    CHECK(s.queue == "q");
    CHECK(s.max_running == 2u);
    CHECK_FALSE(s.held.has_value());
    std::vector<JobId> ids;
    for (int i = 0; i < 5; ++i)
        ids.push_back(f.submit(spec("q")));
    f.register_worker("w1", {"q"}, 4);
    f.register_worker("w2", {"q"}, 4);
    auto d1 = f.credit("w1", 4);
    auto d2 = f.credit("w2", 4);
    CHECK(d1.size() + d2.size() == 2);
    auto q = queue_row(f, "q");
    CHECK(q.max_running == 2u);
    CHECK(q.held == std::string(kHeldMaxRunning));
    // The jobs held back stay ready.
    CHECK(q.counts[static_cast<std::size_t>(S::ready)].second == 3);
    CHECK(queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "q"}))).held ==
          std::string(kHeldMaxRunning));
    CHECK(dispatches(f.advance(1000), "w1").empty());
    CHECK(dispatches(f.advance(1000), "w2").empty());

    // One finishes: exactly one more starts, in the same pass.
    const auto& first = d1.empty() ? d2.front() : d1.front();
    const std::string who = d1.empty() ? "w2" : "w1";
    auto out = f.send(who, cmd::kDone,
                      encode(JobResult{.ok = true, .id = first.id, .attempt = first.attempt}));
    CHECK(dispatches(out, "w1").size() + dispatches(out, "w2").size() == 1);
    CHECK(queue_row(f, "q").counts[static_cast<std::size_t>(S::running)].second == 2);

    // Raised: two more start; removed: the last one too.
    out = f.send(f.client, cmd::kQueueSet, encode(max_running(f, "q", 4)));
    CHECK(dispatches(out, "w1").size() + dispatches(out, "w2").size() == 2);
    QueueUnsetRequest u{f.req++, "q", {"max_running"}};
    out = f.send(f.client, cmd::kQueueUnset, encode(u));
    auto to_client = replies(out, f.client);
    REQUIRE(to_client.size() == 1);
    CHECK_FALSE(queue_reply(to_client.front()).max_running.has_value());
    CHECK(dispatches(out, "w1").size() + dispatches(out, "w2").size() == 0);  // none left
    CHECK(queue_row(f, "q").counts[static_cast<std::size_t>(S::ready)].second == 0);
}

TEST_CASE("max_running is per queue: another queue of the same worker is not held back") {
    Engine f;
    f.ask(cmd::kQueueSet, encode(max_running(f, "slow", 1)));
    f.submit(spec("slow"));
    f.submit(spec("slow"));
    JobId fast1 = f.submit(spec("fast"));
    JobId fast2 = f.submit(spec("fast"));
    f.register_worker("w1", {"slow", "fast"}, 8);
    auto d = f.credit("w1", 8);
    std::set<JobId> got;
    for (auto& x : d)
        got.insert(x.id);
    CHECK(d.size() == 3);
    CHECK(got.count(fast1));
    CHECK(got.count(fast2));
    CHECK_FALSE(queue_row(f, "fast").held.has_value());
    CHECK(queue_row(f, "slow").held == std::string(kHeldMaxRunning));
}

TEST_CASE("queue settings: bad QUEUE_SET / QUEUE_UNSET are bad_request and change nothing") {
    Engine f;
    f.ask(cmd::kQueueSet, encode(max_running(f, "q", 3)));
    auto zero = max_running(f, "q", 0);
    auto e = f.error(cmd::kQueueSet, encode(zero));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("max_running") != std::string::npos);
    auto big = max_running(f, "q", limits::kMaxMaxRunning + 1);
    CHECK(f.error(cmd::kQueueSet, encode(big)).code == ErrorCode::bad_request);
    QueueSetRequest none{f.req++, "q", std::nullopt, std::nullopt, std::nullopt};
    e = f.error(cmd::kQueueSet, encode(none));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("at least one setting") != std::string::npos);
    QueueSetRequest half{f.req++, "q", std::nullopt, 5, std::nullopt};
    e = f.error(cmd::kQueueSet, encode(half));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("go together") != std::string::npos);
    auto bad_name = encode(max_running(f, "no spaces", 2));
    CHECK(f.error(cmd::kQueueSet, bad_name).code == ErrorCode::bad_request);
    QueueUnsetRequest unknown{f.req++, "q", {"max_runing"}};
    e = f.error(cmd::kQueueUnset, encode(unknown));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("max_runing") != std::string::npos);
    QueueUnsetRequest empty{f.req++, "q", {}};
    CHECK(f.error(cmd::kQueueUnset, encode(empty)).code == ErrorCode::bad_request);
    CHECK(queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "q"}))).max_running ==
          3u);
    // A queue without settings shows none (and is not an error).
    auto other = queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "other"})));
    CHECK_FALSE(other.max_running.has_value());
}

TEST_CASE("rate: no more than N started in any window; the next start when the window has room") {
    Engine f;
    QueueSetRequest m{f.req++, "q", std::nullopt, 3, 1000};
    auto s = queue_reply(f.ask(cmd::kQueueSet, encode(m)));
    CHECK(s.rate == 3u);
    CHECK(s.rate_per == std::chrono::milliseconds(1000));
    for (int i = 0; i < 8; ++i)
        f.submit(spec("q"));
    f.register_worker("w1", {"q"}, 10);
    const Millis t0 = f.now;
    auto d = f.credit("w1", 10);
    CHECK(d.size() == 3);
    CHECK(queue_row(f, "q").held == std::string(kHeldRate));
    // Finishing them frees no room: the window counts starts, not running jobs.
    for (auto& x : d)
        f.done("w1", x.id, x.attempt);
    CHECK(dispatches(f.advance(500), "w1").empty());
    CHECK(dispatches(f.advance_to(t0 + 999), "w1").empty());
    auto next = dispatches(f.advance_to(t0 + 1000), "w1");
    CHECK(next.size() == 3);
    CHECK(dispatches(f.advance_to(t0 + 1999), "w1").empty());
    CHECK(dispatches(f.advance_to(t0 + 2000), "w1").size() == 2);
    CHECK_FALSE(queue_row(f, "q").held.has_value());  // nothing left ready
    // Unset: no rate from then on.
    QueueUnsetRequest u{f.req++, "q", {"rate"}};
    CHECK_FALSE(queue_reply(f.ask(cmd::kQueueUnset, encode(u))).rate.has_value());
}

TEST_CASE("rate: bad values are bad_request and change nothing") {
    Engine f;
    QueueSetRequest ok{f.req++, "q", std::nullopt, 5, 1000};
    f.ask(cmd::kQueueSet, encode(ok));
    QueueSetRequest zero{f.req++, "q", std::nullopt, 0, 1000};
    CHECK(f.error(cmd::kQueueSet, encode(zero)).code == ErrorCode::bad_request);
    QueueSetRequest per0{f.req++, "q", std::nullopt, 5, 0};
    auto e = f.error(cmd::kQueueSet, encode(per0));
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.message.find("rate_per_ms") != std::string::npos);
    QueueSetRequest huge{f.req++, "q", std::nullopt, limits::kMaxRate + 1, 1000};
    CHECK(f.error(cmd::kQueueSet, encode(huge)).code == ErrorCode::bad_request);
    auto now = queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "q"})));
    CHECK(now.rate == 5u);
    CHECK(now.rate_per == std::chrono::milliseconds(1000));
}

TEST_CASE("StartWindow: room over a sliding window, merged starts, encode/decode") {
    StartWindow w;
    CHECK(w.room(1000, 3, 100) == 3);
    w.started(1000, 2, 100);
    w.started(1000, 1, 100);
    CHECK(w.room(1000, 3, 100) == 0);
    CHECK(w.room(1099, 3, 100) == 0);
    CHECK(w.room(1100, 3, 100) == 3);
    CHECK(w.frees_at(100) == Millis{1100});
    w.started(1050, 1, 100);
    CHECK(w.encode() == "1000:3,1050:1");
    auto back = StartWindow::decode(w.encode());
    CHECK(back.encode() == w.encode());
    CHECK(back.room(1100, 3, 100) == 2);
    w.started(1200, 1, 100);  // the old starts are forgotten
    CHECK(w.encode() == "1200:1");
    CHECK(StartWindow::decode("garbage").encode().empty());
    CHECK(StartWindow::decode("5:1,3:1").encode().empty());  // out of order
    CHECK(StartWindow::decode("").encode().empty());
}

TEST_CASE(
    "queue defaults: a job without its own max_attempts, timeout, priority takes the queue's") {
    Engine f;
    QueueSetRequest m{f.req++, "q", std::nullopt, std::nullopt, std::nullopt, 5, 2000, 7};
    auto s = queue_reply(f.ask(cmd::kQueueSet, encode(m)));
    CHECK(s.max_attempts == 5u);
    CHECK(s.timeout == std::chrono::milliseconds(2000));
    CHECK(s.priority == 7);
    // Without values of its own: the queue's.
    auto plain = f.status(f.submit(spec("q")));
    CHECK(plain.max_attempts == 5);
    CHECK(plain.timeout == std::chrono::milliseconds(2000));
    CHECK(plain.priority == 7);
    // Its own values win, also when they equal the broker's defaults.
    JobSpec own = spec("q");
    own.max_attempts = 3;
    own.timeout = std::chrono::milliseconds(500);
    own.priority = 0;
    auto mine = f.status(f.submit(own));
    CHECK(mine.max_attempts == 3);
    CHECK(mine.timeout == std::chrono::milliseconds(500));
    CHECK(mine.priority == 0);
    // Another queue: the broker's defaults.
    auto other = f.status(f.submit(spec("other")));
    CHECK(other.max_attempts == limits::kDefaultMaxAttempts);
    CHECK_FALSE(other.timeout.has_value());
    CHECK(other.priority == 0);
    // The default priority orders dispatch like an own one: 7 before an own 1.
    JobSpec low = spec("q");
    low.priority = 1;
    JobId low_id = f.submit(low);
    f.register_worker("w1", {"q"}, 1);
    auto d = f.credit("w1", 1);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id != low_id);
    // Unset: the broker's defaults again, for jobs submitted from then on.
    QueueUnsetRequest u{f.req++, "q", {"max_attempts", "timeout", "priority"}};
    auto after = queue_reply(f.ask(cmd::kQueueUnset, encode(u)));
    CHECK_FALSE(after.max_attempts.has_value());
    CHECK_FALSE(after.timeout.has_value());
    CHECK_FALSE(after.priority.has_value());
    auto later = f.status(f.submit(spec("q")));
    CHECK(later.max_attempts == limits::kDefaultMaxAttempts);
    CHECK_FALSE(later.timeout.has_value());
    CHECK(later.priority == 0);
    CHECK(f.status(d[0].id).max_attempts == 5);  // jobs already submitted keep theirs
}

TEST_CASE("queue defaults: bad values are bad_request and change nothing") {
    Engine f;
    QueueSetRequest ok{f.req++,      "q", std::nullopt, std::nullopt,
                       std::nullopt, 4,   std::nullopt, std::nullopt};
    f.ask(cmd::kQueueSet, encode(ok));
    for (auto bad : {QueueSetRequest{f.req++, "q", {}, {}, {}, 0, {}, {}},
                     QueueSetRequest{f.req++, "q", {}, {}, {}, 1001, {}, {}},
                     QueueSetRequest{f.req++, "q", {}, {}, {}, {}, 0, {}},
                     QueueSetRequest{f.req++, "q", {}, {}, {}, {}, limits::kMaxTimeoutMs + 1, {}},
                     QueueSetRequest{f.req++, "q", {}, {}, {}, {}, {}, 1001},
                     QueueSetRequest{f.req++, "q", {}, {}, {}, {}, {}, -1001}}) {
        CHECK(f.error(cmd::kQueueSet, encode(bad)).code == ErrorCode::bad_request);
    }
    auto s = queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "q"})));
    CHECK(s.max_attempts == 4u);
    CHECK_FALSE(s.timeout.has_value());
    CHECK_FALSE(s.priority.has_value());
}

// ---- job dependencies (SUBMIT after; docs/LIFECYCLE.md "Dependencies") ----------------------

namespace {
JobSpec child_of(std::vector<JobId> parents, bool any = false) {
    auto s = spec("q");
    s.after = std::move(parents);
    s.after_any = any;
    return s;
}
}  // namespace

TEST_CASE("after: a chain a -> b -> c runs in order") {
    Engine f;
    f.register_worker("w1", {"q"});
    JobId a = f.submit(spec("q"));
    JobId b = f.submit(child_of({a}));
    JobId c = f.submit(child_of({b}));
    CHECK(f.status(b).state == S::blocked);
    CHECK(f.status(c).state == S::blocked);
    auto d = f.dispatch_one("w1", a);
    CHECK(f.credit("w1", 1).empty());  // b and c are not ready
    f.done("w1", a, d.attempt);
    CHECK(f.status(b).state == S::ready);
    CHECK(f.status(c).state == S::blocked);
    d = f.dispatch_one("w1", b);
    f.done("w1", b, d.attempt);
    CHECK(f.status(c).state == S::ready);
    d = f.dispatch_one("w1", c);
    f.done("w1", c, d.attempt);
    CHECK(f.status(c).state == S::succeeded);
    CHECK(edges(f.history(c)) == std::vector<Edge>{{std::nullopt, S::blocked, "blocked"},
                                                   {S::blocked, S::ready, "unblocked"},
                                                   {S::ready, S::running, "dispatched"},
                                                   {S::running, S::succeeded, "done"}});
}

TEST_CASE("after: fan-in of 10 parents, the child runs only after the 10th succeeds") {
    Engine f;
    f.register_worker("w1", {"p"});
    std::vector<JobId> parents;
    for (int i = 0; i < 10; ++i)
        parents.push_back(f.submit(spec("p")));
    JobId child = f.submit(child_of(parents));
    for (int i = 0; i < 10; ++i) {
        CHECK(f.status(child).state == S::blocked);
        auto d = f.dispatch_one("w1", parents[static_cast<std::size_t>(i)]);
        f.done("w1", d.id, d.attempt);
    }
    CHECK(f.status(child).state == S::ready);
}

TEST_CASE("after: a dead parent cancels its children and theirs, transitively") {
    Engine f;
    f.register_worker("w1", {"q"});
    auto ps = spec("q");
    ps.max_attempts = 1;
    JobId a = f.submit(ps);
    JobId b = f.submit(child_of({a}));
    JobId c = f.submit(child_of({b}));
    JobId any = f.submit(child_of({a}, true));
    auto d = f.dispatch_one("w1", a);
    f.fail("w1", a, d.attempt, "boom", true);
    CHECK(f.status(a).state == S::dead);
    auto jb = f.status(b);
    CHECK(jb.state == S::cancelled);
    CHECK(jb.error == std::optional<std::string>("parent " + std::to_string(a) + " dead"));
    auto jc = f.status(c);
    CHECK(jc.state == S::cancelled);
    CHECK(jc.error == std::optional<std::string>("parent " + std::to_string(b) + " cancelled"));
    // after_any: runs once the parent is finished, whatever its outcome.
    CHECK(f.status(any).state == S::ready);
    auto d2 = f.dispatch_one("w1", any);
    CHECK(d2.id == any);
}

TEST_CASE("after: a missing parent is refused, nothing submitted; finished parents count at once") {
    Engine f;
    f.register_worker("w1", {"q"});
    JobId a = f.submit(spec("q"));
    auto d = f.dispatch_one("w1", a);
    f.done("w1", a, d.attempt);
    SubmitRequest m;
    m.req = f.req++;
    m.jobs.push_back(child_of({a, 999'999}));
    auto err = f.error(cmd::kSubmit, encode(m));
    CHECK(err.code == ErrorCode::not_found);
    CHECK(err.message.find("999999") != std::string::npos);
    auto next = f.submit(spec("q"));
    CHECK(next == a + 1);  // nothing was inserted
    // A parent already succeeded: ready at once.
    JobId c = f.submit(child_of({a}));
    CHECK(f.status(c).state == S::ready);
    // A parent already cancelled: cancelled at once (or ready, with after_any).
    f.cancel(next);
    JobId e = f.submit(child_of({next}));
    CHECK(f.status(e).state == S::cancelled);
    JobId g = f.submit(child_of({next}, true));
    CHECK(f.status(g).state == S::ready);
}

TEST_CASE(
    "after: a blocked child with a delay is scheduled once unblocked; cancel of a blocked job") {
    Engine f;
    f.register_worker("w1", {"q"});
    JobId a = f.submit(spec("q"));
    auto s = child_of({a});
    s.delay = 5000ms;
    JobId b = f.submit(s);
    JobId x = f.submit(child_of({a}));
    CHECK(f.cancel(x).command == cmd::kJob);
    CHECK(f.status(x).state == S::cancelled);
    auto d = f.dispatch_one("w1", a);
    f.done("w1", a, d.attempt);
    CHECK(f.status(b).state == S::scheduled);
    CHECK(f.status(x).state == S::cancelled);
    f.advance(5000);
    CHECK(f.status(b).state == S::ready);
}

TEST_CASE("after: a missing parent in a batch refuses the whole SUBMIT") {
    Engine f;
    JobId a = f.submit(spec("q"));
    SubmitRequest m;
    m.req = f.req++;
    m.jobs.push_back(spec("q"));
    m.jobs.push_back(child_of({a}));
    m.jobs.push_back(child_of({a + 50}));
    auto err = f.error(cmd::kSubmit, encode(m));
    CHECK(err.code == ErrorCode::not_found);
    CHECK(f.submit(spec("q")) == a + 1);  // neither of the batch's first two was kept
}

// ---- per-queue retention and expiry (QUEUE_SET retention_ms, expires_in_ms) -----------------

TEST_CASE(
    "queue retention: its finished jobs kept retention_ms, others the broker's; dead ones "
    "dead_retention_ms; unset gives the broker's back") {
    auto c = engine_config();
    c.retention_ms = 1000;
    c.dead_retention_ms = 30'000;
    Engine f(c);
    QueueSetRequest longer;
    longer.req = f.req++;
    longer.queue = "keep";
    longer.retention_ms = 10'000;
    CHECK(queue_reply(f.ask(cmd::kQueueSet, encode(longer))).retention ==
          std::chrono::milliseconds(10'000));
    QueueSetRequest shorter;
    shorter.req = f.req++;
    shorter.queue = "brief";
    shorter.retention_ms = 200;
    f.ask(cmd::kQueueSet, encode(shorter));
    JobId kept = f.submit(spec("keep"));
    JobId kept_dead = f.submit(spec("keep"));
    JobId plain = f.submit(spec("q"));
    f.register_worker("w1", {"keep", "q"}, 3);
    REQUIRE(f.credit("w1", 3).size() == 3);
    check_ack(f.done("w1", kept, 1), kept, 1);
    check_ack(f.fail("w1", kept_dead, 1, "boom", true), kept_dead, 1);
    check_ack(f.done("w1", plain, 1), plain, 1);
    JobId brief = f.submit(spec("brief"));
    CHECK(job_of(f.cancel(brief)).state == S::cancelled);
    auto gone = [&](JobId id) {
        auto rep = f.ask(cmd::kStatus, encode(IdRequest{f.req++, id}));
        return rep.command == cmd::kError && error_of(rep).code == ErrorCode::not_found;
    };
    f.advance(1500);  // retention looks once a second
    f.advance(1000);
    CHECK(gone(plain));
    CHECK(gone(brief));
    CHECK(f.status(kept).state == S::succeeded);  // not the broker's 1s
    CHECK(f.status(kept_dead).state == S::dead);
    f.advance(5000);
    CHECK(f.status(kept).state == S::succeeded);
    f.advance(4000);
    f.advance(1000);
    CHECK(gone(kept));
    CHECK(f.status(kept_dead).state == S::dead);  // dead: --dead-retention, not the queue's
    // Unset: the broker's retention again.
    QueueUnsetRequest u{f.req++, "keep", {"retention"}};
    CHECK_FALSE(queue_reply(f.ask(cmd::kQueueUnset, encode(u))).retention.has_value());
    JobId again = f.submit(spec("keep"));
    REQUIRE(f.credit("w1", 1).size() == 1);
    check_ack(f.done("w1", again, 1), again, 1);
    f.advance(1500);
    f.advance(1000);
    CHECK(gone(again));
}

TEST_CASE("queue expires_in: a job without its own expiry expires that long after submit") {
    Engine f;
    QueueSetRequest m;
    m.req = f.req++;
    m.queue = "q";
    m.expires_in_ms = 5000;
    CHECK(queue_reply(f.ask(cmd::kQueueSet, encode(m))).expires_in ==
          std::chrono::milliseconds(5000));
    JobId plain = f.submit(spec("q"));
    CHECK(f.status(plain).expires_at == to_time(kBase + 5000));
    auto own = spec("q");
    own.expires_in = std::chrono::milliseconds(60'000);
    JobId mine = f.submit(own);
    CHECK(f.status(mine).expires_at == to_time(kBase + 60'000));
    JobId elsewhere = f.submit(spec("other"));
    CHECK_FALSE(f.status(elsewhere).expires_at.has_value());
    f.advance(5001);
    CHECK(f.status(plain).state == S::expired);
    CHECK(f.status(mine).state == S::ready);
    // Bad values are refused and change nothing.
    for (Millis bad : {Millis{0}, Millis{-5}, limits::kMaxDelayMs + 1}) {
        QueueSetRequest b;
        b.req = f.req++;
        b.queue = "q";
        b.expires_in_ms = bad;
        CHECK(f.error(cmd::kQueueSet, encode(b)).code == ErrorCode::bad_request);
        QueueSetRequest r;
        r.req = f.req++;
        r.queue = "q";
        r.retention_ms = bad;
        CHECK(f.error(cmd::kQueueSet, encode(r)).code == ErrorCode::bad_request);
    }
    auto now = queue_reply(f.ask(cmd::kQueueShow, encode(QueueRequest{f.req++, "q"})));
    CHECK(now.expires_in == std::chrono::milliseconds(5000));
    CHECK_FALSE(now.retention.has_value());
    QueueUnsetRequest u{f.req++, "q", {"expires_in"}};
    CHECK_FALSE(queue_reply(f.ask(cmd::kQueueUnset, encode(u))).expires_in.has_value());
    CHECK_FALSE(f.status(f.submit(spec("q"))).expires_at.has_value());
}

// ---- batches (BATCH_OPEN, SUBMIT batch, BATCH_SEAL; docs/LIFECYCLE.md "Batches") --------------

namespace {

BatchInfo batch_of(const Envelope& e) {
    REQUIRE(e.command == cmd::kBatch);
    Body b(e.body);
    return decode_batch(b.reader());
}

JobSpec member(JobId batch, const std::string& queue = "q") {
    auto s = spec(queue);
    s.batch = batch;
    return s;
}

BatchInfo open_batch(Engine& f, std::optional<JobSpec> on_complete,
                     std::optional<JobSpec> on_success, const std::string& description = "") {
    return batch_of(
        f.ask(cmd::kBatchOpen, encode(BatchOpenRequest{f.req++, description, std::move(on_complete),
                                                       std::move(on_success)})));
}

BatchInfo seal(Engine& f, JobId id) {
    return batch_of(f.ask(cmd::kBatchSeal, encode(BatchRequest{f.req++, id})));
}

BatchInfo show(Engine& f, JobId id) {
    return batch_of(f.ask(cmd::kBatchShow, encode(BatchRequest{f.req++, id})));
}

std::vector<JobInfo> jobs_in(Engine& f, const std::string& queue) {
    ListRequest m;
    m.req = f.req++;
    m.queue = queue;
    auto rep = f.ask(cmd::kList, encode(m));
    REQUIRE(rep.command == cmd::kJobs);
    Body b(rep.body);
    const auto& arr = b.reader().array("jobs");
    std::vector<JobInfo> out;
    for (std::uint32_t i = 0; i < arr.size; ++i)
        out.push_back(decode_job_info(Reader(arr.ptr[i])));
    return out;
}

}  // namespace

TEST_CASE(
    "batch: on_complete once every member finished, on_success once all succeeded, "
    "each once; a revived dead member that succeeds fires on_success") {
    Engine f;
    f.register_worker("w1", {"q"}, 3);
    f.register_worker("cb", {"done", "ok"});
    auto b = open_batch(f, spec("done"), spec("ok"), "nightly");
    CHECK(b.state == "open");
    CHECK(b.total == 0);
    JobId m1 = f.submit(member(b.id));
    JobId m2 = f.submit(member(b.id));
    auto failing = member(b.id);
    failing.max_attempts = 1;
    JobId m3 = f.submit(failing);
    CHECK(f.status(m1).batch == std::optional<JobId>(b.id));
    auto d = f.credit("w1", 3);
    REQUIRE(d.size() == 3);
    check_ack(f.done("w1", m1, 1), m1, 1);
    check_ack(f.done("w1", m2, 1), m2, 1);
    // Not sealed: every member finished or not, nothing fires.
    check_ack(f.fail("w1", m3, 1, "boom", true), m3, 1);
    auto open = show(f, b.id);
    CHECK(open.state == "open");
    CHECK(open.total == 3);
    CHECK(open.pending == 0);
    CHECK(open.succeeded == 2);
    CHECK(open.dead == 1);
    CHECK_FALSE(open.complete_job);
    CHECK(jobs_in(f, "done").empty());
    // The seal finds them all finished: on_complete fires in its pass; on_success does not.
    auto sealed = seal(f, b.id);
    CHECK(sealed.state == "complete");
    REQUIRE(sealed.complete_job);
    CHECK_FALSE(sealed.success_job);
    CHECK(sealed.completed_at == std::optional<Timestamp>(to_time(kBase)));
    auto cb = f.dispatch_one("cb", *sealed.complete_job);
    auto summary = nlohmann::json::parse(cb.payload);
    CHECK(summary["batch"] == b.id);
    CHECK(summary["callback"] == "complete");
    CHECK(summary["description"] == "nightly");
    CHECK(summary["total"] == 3);
    CHECK(summary["succeeded"] == 2);
    CHECK(summary["dead"] == 1);
    CHECK(summary["failed_ids"] == nlohmann::json::array({m3}));
    CHECK(summary["failed_ids_truncated"] == false);
    check_ack(f.done("cb", cb.id, cb.attempt), cb.id, cb.attempt);
    // Sealing again changes nothing and fires nothing.
    CHECK(seal(f, b.id).complete_job == sealed.complete_job);
    CHECK(jobs_in(f, "done").size() == 1);
    // The dead member revived: the batch waits for it again, then succeeds.
    CHECK(f.retry(m3).command == cmd::kRetried);
    CHECK(show(f, b.id).state == "sealed");
    CHECK(show(f, b.id).pending == 1);
    auto again = f.dispatch_one("w1", m3);
    check_ack(f.done("w1", m3, again.attempt), m3, again.attempt);
    auto ok = show(f, b.id);
    CHECK(ok.state == "succeeded");
    CHECK(ok.succeeded == 3);
    CHECK(ok.dead == 0);
    REQUIRE(ok.success_job);
    CHECK(ok.complete_job == sealed.complete_job);  // on_complete fired once only
    auto s = f.dispatch_one("cb", *ok.success_job);
    CHECK(nlohmann::json::parse(s.payload)["callback"] == "success");
    CHECK(jobs_in(f, "done").size() == 1);
    CHECK(jobs_in(f, "ok").size() == 1);
}

TEST_CASE("batch: the last member finishing after the seal fires both callbacks in its pass") {
    Engine f;
    f.register_worker("w1", {"q"}, 2);
    auto b = open_batch(f, spec("done"), spec("ok"));
    JobId m1 = f.submit(member(b.id));
    JobId m2 = f.submit(member(b.id));
    REQUIRE(f.credit("w1", 2).size() == 2);
    auto sealed = seal(f, b.id);
    CHECK(sealed.state == "sealed");
    CHECK(sealed.pending == 2);
    check_ack(f.done("w1", m1, 1), m1, 1);
    CHECK(show(f, b.id).state == "sealed");
    CHECK(jobs_in(f, "ok").empty());
    check_ack(f.done("w1", m2, 1), m2, 1);
    auto done = show(f, b.id);
    CHECK(done.state == "succeeded");
    REQUIRE(done.complete_job);
    REQUIRE(done.success_job);
    CHECK(jobs_in(f, "done").size() == 1);
    CHECK(jobs_in(f, "ok").size() == 1);
    // A later seal or show fires nothing more.
    seal(f, b.id);
    f.advance(2000);
    CHECK(jobs_in(f, "done").size() == 1);
    CHECK(jobs_in(f, "ok").size() == 1);
}

TEST_CASE("batch: an empty batch sealed fires at once; cancelled and expired members count") {
    Engine f;
    auto empty = open_batch(f, spec("done"), spec("ok"));
    auto s = seal(f, empty.id);
    CHECK(s.state == "succeeded");
    CHECK(s.complete_job);
    CHECK(s.success_job);

    auto b = open_batch(f, spec("done"), spec("ok"));
    JobId c = f.submit(member(b.id));
    auto e = member(b.id);
    e.expires_in = 1000ms;
    JobId x = f.submit(e);
    seal(f, b.id);
    CHECK(job_of(f.cancel(c)).state == S::cancelled);
    f.advance(1500);
    CHECK(f.status(x).state == S::expired);
    auto done = show(f, b.id);
    CHECK(done.state == "complete");
    CHECK(done.cancelled == 1);
    CHECK(done.expired == 1);
    CHECK(done.complete_job);
    CHECK_FALSE(done.success_job);
}

TEST_CASE(
    "batch: SUBMIT to a sealed or unknown batch is refused and writes nothing; a "
    "duplicate is not counted twice; bad BATCH_OPEN / BATCH_LIST are bad_request") {
    Engine f;
    auto b = open_batch(f, std::nullopt, std::nullopt);
    auto m = member(b.id);
    m.token = "t1";
    JobId first = f.submit(m);
    auto dup = f.submit_reply(m);
    CHECK(dup.duplicate == std::vector<bool>{true});
    CHECK(dup.ids == std::vector<JobId>{first});
    CHECK(show(f, b.id).total == 1);
    seal(f, b.id);
    SubmitRequest late;
    late.req = f.req++;
    late.jobs.push_back(spec("q"));
    late.jobs.push_back(member(b.id));
    CHECK(f.error(cmd::kSubmit, encode(late)).code == ErrorCode::invalid_state);
    SubmitRequest unknown;
    unknown.req = f.req++;
    unknown.jobs.push_back(member(b.id + 100));
    CHECK(f.error(cmd::kSubmit, encode(unknown)).code == ErrorCode::not_found);
    CHECK(jobs_in(f, "q").size() == 1);  // neither SUBMIT wrote a job
    CHECK(show(f, b.id).total == 1);
    CHECK(f.error(cmd::kBatchSeal, encode(BatchRequest{f.req++, 999})).code ==
          ErrorCode::not_found);
    CHECK(f.error(cmd::kBatchShow, encode(BatchRequest{f.req++, 999})).code ==
          ErrorCode::not_found);

    auto with_payload = spec("done", "mine");
    CHECK(f.error(cmd::kBatchOpen, encode(BatchOpenRequest{f.req++, "", with_payload, {}})).code ==
          ErrorCode::bad_request);
    auto with_token = spec("done");
    with_token.token = "x";
    CHECK(f.error(cmd::kBatchOpen, encode(BatchOpenRequest{f.req++, "", {}, with_token})).code ==
          ErrorCode::bad_request);
    CHECK(
        f.error(cmd::kBatchOpen, encode(BatchOpenRequest{f.req++, std::string(2000, 'd'), {}, {}}))
            .code == ErrorCode::bad_request);
    // The broker's own keys: a client's job cannot stand in for a callback or a schedule's tick.
    for (const char* key : {"batch:1:complete", "schedule:nightly:1000"}) {
        auto t = spec("q");
        t.token = key;
        auto u = spec("q");
        u.unique = key;
        for (const auto& s : {t, u}) {
            SubmitRequest r;
            r.req = f.req++;
            r.jobs.push_back(s);
            auto e = f.error(cmd::kSubmit, encode(r));
            CHECK(e.code == ErrorCode::bad_request);
            CHECK(e.message.find("the broker's own") != std::string::npos);
        }
    }
    BatchListRequest l{f.req++, 0, std::nullopt};
    CHECK(f.error(cmd::kBatchList, encode(l)).code == ErrorCode::bad_request);
    // The refused opens made no batch.
    auto next = open_batch(f, std::nullopt, std::nullopt);
    CHECK(next.id == b.id + 1);
    // A resent BATCH_OPEN (same token) answers the batch it opened, as it is now.
    BatchOpenRequest once{f.req++, "once", spec("done"), std::nullopt, "open-token-1"};
    auto first_open = batch_of(f.ask(cmd::kBatchOpen, encode(once)));
    f.submit(member(first_open.id));
    once.req = f.req++;
    once.description = "changed";
    auto again = batch_of(f.ask(cmd::kBatchOpen, encode(once)));
    CHECK(again.id == first_open.id);
    CHECK(again.description == "once");
    CHECK(again.total == 1);
    REQUIRE(again.on_complete);
    CHECK(again.on_complete->queue == "done");
    once.req = f.req++;
    once.token = "open-token-2";
    CHECK(batch_of(f.ask(cmd::kBatchOpen, encode(once))).id > first_open.id);  // a new one
}

TEST_CASE("batch: BATCH_LIST newest first, paged by before; retention deletes finished batches") {
    auto c = engine_config();
    c.retention_ms = 1000;
    c.dead_retention_ms = 10'000;
    Engine f(c);
    f.register_worker("w1", {"q"});
    std::vector<JobId> ids;
    for (int i = 0; i < 3; ++i)
        ids.push_back(open_batch(f, std::nullopt, std::nullopt).id);
    auto list = [&](std::uint32_t limit, std::optional<JobId> before) {
        auto rep = f.ask(cmd::kBatchList, encode(BatchListRequest{f.req++, limit, before}));
        REQUIRE(rep.command == cmd::kBatches);
        Body b(rep.body);
        std::vector<JobId> out;
        for (const auto& x : decode_batches(b.reader()))
            out.push_back(x.id);
        return out;
    };
    CHECK(list(100, std::nullopt) == std::vector<JobId>{ids[2], ids[1], ids[0]});
    CHECK(list(1, ids[2]) == std::vector<JobId>{ids[1]});
    // ids[0]: one member that succeeds; ids[1]: one that dies; ids[2]: open, kept.
    JobId ok = f.submit(member(ids[0]));
    auto dying = member(ids[1]);
    dying.max_attempts = 1;
    JobId bad = f.submit(dying);
    seal(f, ids[0]);
    seal(f, ids[1]);
    auto d = f.dispatch_one("w1", ok);
    check_ack(f.done("w1", ok, d.attempt), ok, d.attempt);
    d = f.dispatch_one("w1", bad);
    check_ack(f.fail("w1", bad, d.attempt, "no", true), bad, d.attempt);
    f.advance(1500);
    f.advance(1000);
    CHECK(list(100, std::nullopt) == std::vector<JobId>{ids[2], ids[1]});
    f.advance(10'000);
    f.advance(1000);
    CHECK(list(100, std::nullopt) == std::vector<JobId>{ids[2]});
}

TEST_CASE("batch: BATCH_OPEN whose two callbacks name more new queues than max_queues leaves") {
    auto c = engine_config();
    c.max_queues = 2;
    Engine f(c);
    f.submit(spec("q1"));
    auto two = f.error(cmd::kBatchOpen,
                       encode(BatchOpenRequest{f.req++, "", spec("a"), spec("b"), std::nullopt}));
    CHECK(two.code == ErrorCode::too_large);
    auto one = open_batch(f, spec("a"), spec("a"));  // one new queue: room for it
    CHECK(one.state == "open");
}
