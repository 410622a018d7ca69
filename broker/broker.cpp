// The broker's event loop, command table, job transitions, worker tracking and group commit.
#include "broker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <limits>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/log_fields.hpp"
#include "errand/transport.hpp"
#include "lifecycle.hpp"
#include "ready_index.hpp"

namespace errand::broker {
namespace {

// ---- compact fields of Live ----------------------------------------------------------------
// A million queued jobs live in memory at once, so Live is kept small (96 bytes instead of 184):
// names repeat across jobs and are shared, optional durations use a sentinel, the rare unique key
// sits behind a pointer.

// A queue name, interned in the broker's name pool: one copy per queue, 8 bytes per job.
class Name {
  public:
    Name() = default;
    explicit Name(const std::string* s) : s_(s) {}
    const std::string& str() const { return *s_; }
    operator const std::string&() const { return *s_; }  // NOLINT: reads like the string

  private:
    const std::string* s_ = nullptr;
};

// The worker instance holding a running job, shared with its WorkerRec; empty: none (orphan).
class WorkerRef {
  public:
    WorkerRef() = default;
    WorkerRef(std::shared_ptr<const std::string> s) : s_(std::move(s)) {}  // NOLINT
    WorkerRef& operator=(const std::string& s) {
        s_ = s.empty() ? nullptr : std::make_shared<const std::string>(s);
        return *this;
    }
    bool empty() const { return !s_; }
    void clear() { s_.reset(); }
    operator const std::string&() const { return s_ ? *s_ : none(); }  // NOLINT
    bool operator==(const std::string& other) const { return s_ ? *s_ == other : other.empty(); }

  private:
    static const std::string& none() {
        static const std::string empty;
        return empty;
    }
    std::shared_ptr<const std::string> s_;
};

// An optional duration in 8 bytes (std::optional<Millis> takes 16).
class OptMillis {
  public:
    OptMillis() = default;
    OptMillis(std::optional<Millis> v) : v_(v.value_or(kNone)) {}  // NOLINT
    explicit operator bool() const { return v_ != kNone; }
    Millis operator*() const { return v_; }
    Millis value_or(Millis d) const { return v_ == kNone ? d : v_; }
    operator std::optional<Millis>() const {  // NOLINT
        return v_ == kNone ? std::nullopt : std::optional<Millis>(v_);
    }

  private:
    static constexpr Millis kNone = std::numeric_limits<Millis>::min();
    Millis v_ = kNone;
};

// A unique key, rare: 8 bytes when absent.
class UniqueKey {
  public:
    UniqueKey() = default;
    explicit UniqueKey(const std::optional<std::string>& s)
        : s_(s && !s->empty() ? std::make_unique<std::string>(*s) : nullptr) {}
    bool empty() const { return !s_; }
    operator const std::string&() const { return *s_; }  // NOLINT: only when !empty()

  private:
    std::unique_ptr<std::string> s_;
};

// A job that is not finished. Terminal jobs live only in the store.
struct Live {
    Name queue;
    WorkerRef worker_instance;  // running: the registration that holds it; empty = orphan
    UniqueKey unique;
    Millis run_at = 0;
    Millis orphan_deadline = 0;  // running with no known worker (after a restart)
    Millis created_at = 0;
    OptMillis timeout_ms;
    OptMillis backoff_ms;
    OptMillis backoff_cap_ms;
    std::uint32_t attempts = 0;
    std::uint32_t max_attempts = 0;
    std::int16_t priority = 0;  // limits::kMinPriority..kMaxPriority
    bool has_argv = false;
    JobState state = JobState::ready;

    static Live from(const LiveJob& j, Name queue) {
        Live l;
        l.queue = queue;
        l.unique = UniqueKey(j.unique);
        l.run_at = j.run_at.value_or(0);
        l.created_at = j.created_at;
        l.timeout_ms = j.timeout_ms;
        l.backoff_ms = j.backoff_ms;
        l.backoff_cap_ms = j.backoff_cap_ms;
        l.attempts = j.attempts;
        l.max_attempts = j.max_attempts;
        l.priority = static_cast<std::int16_t>(j.priority);
        l.state = j.state;
        l.has_argv = j.has_argv;
        return l;
    }
};
static_assert(sizeof(Live) <= 96, "Live is per queued job: keep it small");

constexpr std::size_t kStates = 7;
using StateCounts = std::array<std::uint64_t, kStates>;
std::size_t index_of(JobState s) {
    return static_cast<std::size_t>(s);
}

// Most rows one PURGE or RETRY --dead touches; clients repeat until fewer come back.
constexpr std::size_t kAdminBatch = 10000;
// How often held-back dispatches are written into their rows (see Store::apply).
constexpr Millis kMaterializeEveryMs = 1000;

struct WorkerRec {
    std::string identity;
    std::string instance;
    std::shared_ptr<const std::string> instance_ref;  // `instance`, shared by its running jobs
    std::string name;
    std::string host;
    std::uint64_t pid = 0;
    std::vector<std::string> queues;
    std::uint32_t concurrency = 1;
    std::uint32_t prefetch = 0;
    bool commands = false;
    std::vector<std::uint32_t> weights;  // empty: strict order
    std::uint32_t credit = 0;
    bool draining = false;  // sent DRAIN: takes no more jobs, whatever CREDIT says
    Millis last_seen = 0;
    std::uint64_t seq = 0;                          // last DISPATCH.seq sent
    std::unordered_map<JobId, std::uint64_t> jobs;  // job -> its DISPATCH.seq (0: adopted)
};

struct Waiter {
    std::string identity;
    std::uint64_t req = 0;
    Millis deadline = 0;
};

// A SUBMIT with wait_ms of the current pass, waiting for the commit.
struct SubmitWait {
    std::string identity;
    std::uint64_t req = 0;
    JobId id = 0;
    Millis timeout_ms = 0;
    std::string queue;
};

struct Deadline {
    Millis at = 0;
    JobId id = 0;
    std::uint32_t attempt = 0;  // lease deadlines: the attempt they guard
    bool operator>(const Deadline& o) const { return at > o.at || (at == o.at && id > o.id); }
};
using DeadlineHeap = std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>>;

// What to do with an outgoing message if the pass's commit fails.
enum class OnFail { send, error, drop };

struct Outgoing {
    std::string identity;
    std::string_view command;
    std::string body;
    OnFail on_fail = OnFail::send;
    std::optional<std::uint64_t> req;
};

// A state change of the current pass: published (PUB, recent ring, metrics) only once the
// pass's commit has succeeded.
struct PendingEvent {
    EventView event;
    std::optional<Millis> waited_ms;
    std::optional<Millis> ran_ms;
    bool failed_attempt = false;
};

// Identities of messages that came in on the admin (inproc) socket. ROUTER-generated identities
// are 5 bytes starting with 0 and peers cannot choose one that starts with 0, so no peer of the
// main socket can have this prefix.
const std::string kAdminPrefix("\0admin/", 7);
constexpr std::size_t kRecentEvents = 500;

std::string random_hex(std::size_t bytes) {
    std::random_device rd;
    std::string out;
    static constexpr char kHex[] = "0123456789abcdef";
    for (std::size_t i = 0; i < bytes; ++i) {
        auto b = static_cast<unsigned>(rd()) & 0xff;
        out += kHex[b >> 4];
        out += kHex[b & 15];
    }
    return out;
}

}  // namespace

struct Broker::State {
    using Handler = void (State::*)(const std::string& identity, const Reader& r);
    // Which keys may send a command when CURVE roles are in force.
    enum class Access { everyone, clients, workers };
    struct Command {
        std::string_view name;
        Handler handler;
        Access access = Access::everyone;
    };

    BrokerConfig cfg;
    std::unique_ptr<Store> store;
    const Clock& clock;
    zmq::context_t ctx{1};
    std::unique_ptr<ZapHandler> zap;  // started before sock binds, so no handshake escapes it
    zmq::socket_t sock{ctx, zmq::socket_type::router};
    zmq::socket_t admin{ctx, zmq::socket_type::router};  // bound only with cfg.admin_endpoint
    zmq::socket_t pub{ctx, zmq::socket_type::pub};       // bound only with cfg.events_endpoint
    std::string instance = random_hex(8);

    // Observability: metrics from committed events, the recent-events ring, snapshots.
    Metrics metrics;
    std::vector<PendingEvent> pending;
    std::deque<EventView> recent;
    std::uint64_t event_seq = 0;
    Millis started_at = 0;
    Millis next_snapshot = 0;
    bool snapshot_dirty = true;

    std::unordered_map<JobId, Live> live;
    std::unordered_set<std::string> names;  // queue names, interned (never shrinks)
    ReadyIndex ready;
    DeadlineHeap timers;          // retrying/scheduled jobs by run_at (stale entries skipped)
    DeadlineHeap leases;          // running attempts with a timeout, by timeout + grace
    DeadlineHeap wait_deadlines;  // waiters by deadline
    std::unordered_map<std::string, JobId> unique_live;   // unique key -> unfinished job
    std::unordered_map<std::string, StateCounts> counts;  // queue -> jobs per state
    std::unordered_set<std::string> paused;
    std::mt19937_64 rng{std::random_device{}()};
    Millis next_retention = 0;
    Millis next_materialize = 0;
    std::unordered_map<std::string, WorkerRec> workers;        // by instance
    std::unordered_map<std::string, std::string> instance_of;  // identity -> instance
    std::unordered_map<JobId, std::vector<Waiter>> waiters;
    std::unordered_map<std::string, std::size_t> waits_of;  // identity -> outstanding WAITs
    std::vector<JobId> orphans;
    JobId last_id = 0;

    // State of the current pass.
    Millis now = 0;
    bool in_txn = false;
    bool txn_failed = false;
    std::string txn_error;
    std::vector<Outgoing> outbox;
    std::vector<JobId> finished;
    std::vector<SubmitWait> submit_waits;
    bool dispatch_dirty = true;
    Millis next_heartbeat = 0;
    Millis next_status = 0;

    static const Command kCommands[24];

    State(BrokerConfig c, std::unique_ptr<Store> s, const Clock& clk)
        : cfg(std::move(c)), store(std::move(s)), clock(clk) {}

    Name intern(const std::string& name) { return Name(&*names.insert(name).first); }

    // ---- outgoing -------------------------------------------------------------------------

    void reply(const std::string& identity, std::string_view command, std::string body,
               std::optional<std::uint64_t> req, OnFail on_fail = OnFail::error) {
        outbox.push_back({identity, command, std::move(body), on_fail, req});
    }

    void reply_error(const std::string& identity, std::optional<std::uint64_t> req, ErrorCode code,
                     const std::string& message, std::optional<JobId> id = std::nullopt,
                     std::optional<std::uint32_t> attempt = std::nullopt) {
        ErrorReply e{req, code, message, id, attempt};
        outbox.push_back({identity, cmd::kError, encode(e), OnFail::send, req});
    }

    // ---- state rebuild (start-up and after a failed commit) -------------------------------

    void rebuild() {
        live.clear();
        ready.clear();
        timers = {};
        leases = {};
        orphans.clear();
        unique_live.clear();
        counts.clear();
        for (const auto& c : store->count_jobs())
            counts[c.queue][index_of(c.state)] = c.count;
        paused.clear();
        for (auto& q : store->paused_queues())
            paused.insert(std::move(q));
        std::unordered_map<JobId, std::string> holder;
        for (auto& [inst, w] : workers)
            for (auto& [id, seq] : w.jobs)
                holder[id] = inst;
        store->scan_live([&](LiveJob&& j) {
            Live l = Live::from(j, intern(j.queue));
            if (!l.unique.empty()) unique_live[l.unique] = j.id;
            if (j.state == JobState::running && j.timeout_ms && j.started_at)
                leases.push(
                    {*j.started_at + *j.timeout_ms + cfg.timeout_grace_ms, j.id, j.attempts});
            switch (j.state) {
                case JobState::ready:
                    ready.push(j.queue, j.id, j.priority, j.has_argv);
                    break;
                case JobState::scheduled:
                case JobState::retrying:
                    timers.push({l.run_at, j.id});
                    break;
                case JobState::running:
                    l.run_at = j.started_at.value_or(0);  // see since()
                    if (auto h = holder.find(j.id); h != holder.end()) {
                        l.worker_instance = h->second;
                    } else {
                        l.orphan_deadline = now + cfg.worker_timeout_ms;
                        orphans.push_back(j.id);
                    }
                    break;
                default:
                    break;
            }
            live.emplace(j.id, std::move(l));
        });
        // Dispatches of a rolled-back pass never happened: give the credit back.
        for (auto& [inst, w] : workers) {
            for (auto it = w.jobs.begin(); it != w.jobs.end();) {
                auto l = live.find(it->first);
                if (l == live.end() || l->second.state != JobState::running) {
                    it = w.jobs.erase(it);
                    ++w.credit;
                } else {
                    ++it;
                }
            }
        }
        last_id = store->max_job_id();
        dispatch_dirty = true;
    }

    // ---- transactions ---------------------------------------------------------------------

    void ensure_txn() {
        if (in_txn) return;
        store->begin();
        in_txn = true;
    }

    // The one place that changes a job's state: memory, index, timers, store and its event.
    void transition(JobId id, Live& l, JobState to, Transition t) {
        check_transition(l.state, to);
        ensure_txn();
        t.id = id;
        t.from = l.state;
        t.to = to;
        t.at = now;
        if (!t.attempts) t.attempts = l.attempts;
        if (is_terminal(to)) t.finished_at = now;
        if (!t.worker && l.state == JobState::running)
            if (auto w = workers.find(l.worker_instance); w != workers.end())
                t.worker = w->second.name;
        store->apply(t);
        if (spdlog::should_log(spdlog::level::debug))  // per job: build nothing unless logged
            spdlog::debug("{}: {} -> {} ({}){}", job_fields(id, l.queue.str(), *t.attempts),
                          to_string(l.state), to_string(to), t.reason,
                          t.worker ? " worker=" + *t.worker : std::string());
        note_event(id, l, t);
        // run_at of a ready or running job: when it entered that state (see since()).
        if (to == JobState::ready || to == JobState::running) l.run_at = now;
        auto& c = counts[l.queue];
        if (c[index_of(l.state)] > 0) --c[index_of(l.state)];
        ++c[index_of(to)];
        l.state = to;
        l.attempts = *t.attempts;
        switch (to) {
            case JobState::ready:
                l.worker_instance.clear();
                ready.push(l.queue, id, l.priority, l.has_argv);
                dispatch_dirty = true;
                break;
            case JobState::scheduled:
            case JobState::retrying:
                l.worker_instance.clear();
                l.run_at = t.run_at.value_or(now);
                timers.push({l.run_at, id});
                break;
            case JobState::running:
                break;
            case JobState::succeeded:
            case JobState::dead:
            case JobState::cancelled:
                finished.push_back(id);
                if (!l.unique.empty()) unique_live.erase(l.unique);
                live.erase(id);  // `l` dangles from here on
                break;
        }
    }

    // When a ready job became ready, or a running job was dispatched: Live::run_at, which has no
    // other use in those states, holds it (set by transition(); 0 after a restart for running
    // jobs, the creation time for ready ones). Keeps Live small for the metrics' sake.
    static Millis since(const Live& l) {
        if (l.state == JobState::ready && l.run_at == 0) return l.created_at;
        return l.run_at;
    }

    void note_event(JobId id, const Live& l, const Transition& t) {
        PendingEvent p;
        p.event = EventView{0,    id,       l.queue, t.from, t.to, t.attempts.value_or(l.attempts),
                            t.at, t.worker, t.reason};
        if (t.from == JobState::ready && t.to == JobState::running)
            p.waited_ms = std::max<Millis>(0, now - since(l));
        if (t.from == JobState::running && since(l) > 0)
            p.ran_ms = std::max<Millis>(0, now - since(l));
        // An attempt that ended with an outcome other than success or cancellation failed (FAIL,
        // timeout, worker lost); a drained worker's RELEASE sets no outcome and is not counted.
        p.failed_attempt = t.from == JobState::running && t.set_outcome &&
                           t.to != JobState::succeeded && t.to != JobState::cancelled;
        pending.push_back(std::move(p));
    }

    // After a successful commit: metrics, the recent ring and the PUB socket see the pass.
    void publish_committed() {
        for (auto& p : pending) {
            p.event.seq = ++event_seq;
            metrics.on_event(MetricEvent{p.event.queue, p.event.from, p.event.to, p.event.at,
                                         p.waited_ms, p.ran_ms, p.failed_attempt});
            if (!cfg.events_endpoint.empty() && !captured) {
                auto body = encode(p.event);
                zmq::message_t topic(p.event.queue.data(), p.event.queue.size());
                zmq::message_t msg(body.data(), body.size());
                (void)pub.send(topic, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
                (void)pub.send(msg, zmq::send_flags::dontwait);
            }
            recent.push_back(std::move(p.event));
            if (recent.size() > kRecentEvents) recent.pop_front();
        }
        if (!pending.empty()) snapshot_dirty = true;
        pending.clear();
    }

    // The live picture for the HTTP side; cheap (no store access), a few times a second.
    void publish_snapshot() {
        if (!cfg.snapshots || captured) return;
        auto snap = std::make_shared<Snapshot>();
        snap->at = now;
        snap->started_at = started_at;
        for (const auto& [q, c] : counts) {
            QueueView v;
            v.name = q;
            v.paused = paused.count(q) > 0;
            v.counts = c;
            v.oldest_ready_at = oldest_ready(q);
            if (auto m = metrics.queues.find(q); m != metrics.queues.end()) {
                v.finished_per_second = m->second.finished.per_second(now);
                v.submitted_per_second = m->second.submitted_rate.per_second(now);
            }
            snap->queues.push_back(std::move(v));
        }
        for (const auto& q : paused)
            if (!counts.count(q)) snap->queues.push_back(QueueView{q, true, {}, {}, 0, 0});
        std::sort(snap->queues.begin(), snap->queues.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        snap->workers = worker_infos();
        snap->metrics = metrics;
        auto from = recent.size() > 200 ? recent.end() - 200 : recent.begin();
        snap->recent.assign(from, recent.end());
        cfg.snapshots->publish(std::move(snap));
        snapshot_dirty = false;
        next_snapshot = now + cfg.snapshot_interval_ms;
    }

    // Retry delay after the n-th failed attempt: d/2 + random(0, d/2), d = min(cap, base·2^(n-1)).
    // Gaps never shrink as attempts go on (equal jitter).
    Millis backoff(const Live& l) {
        Millis base = l.backoff_ms.value_or(cfg.retry_delay_ms);
        Millis cap = std::max(base, l.backoff_cap_ms.value_or(cfg.retry_cap_ms));
        Millis d = base;
        for (std::uint32_t i = 1; i < l.attempts && d < cap; ++i)
            d *= 2;
        d = std::min(d, cap);
        if (d <= 1) return d;
        std::uniform_int_distribution<Millis> jitter(0, d / 2);
        return d - d / 2 + jitter(rng);
    }

    // A failed attempt: retry after the backoff, or dead when no attempts are left.
    void fail_attempt(JobId id, Live& l, Transition t, bool permanent) {
        t.set_outcome = true;
        if (permanent || l.attempts >= l.max_attempts) {
            if (t.reason.empty()) t.reason = permanent ? "failed permanently" : "no attempts left";
            transition(id, l, JobState::dead, std::move(t));
        } else {
            if (t.reason.empty()) t.reason = "failed";
            t.run_at = now + backoff(l);
            transition(id, l, JobState::retrying, std::move(t));
        }
    }

    // Tells the worker holding `id` to stop the attempt, and forgets the assignment.
    void abort_on_worker(JobId id, Live& l, const std::string& reason) {
        auto w = workers.find(l.worker_instance);
        if (w == workers.end()) return;
        w->second.jobs.erase(id);
        outbox.push_back({w->second.identity, cmd::kAbort, encode(Abort{id, l.attempts, reason}),
                          OnFail::drop, std::nullopt});
    }

    // A running attempt ended without a result (worker lost, dispatch never arrived).
    void lose_attempt(JobId id, Live& l, const std::string& reason) {
        Transition t;
        t.set_outcome = true;
        t.error = reason;
        t.reason = reason;
        if (l.attempts >= l.max_attempts) {
            transition(id, l, JobState::dead, std::move(t));
        } else {
            transition(id, l, JobState::ready, std::move(t));
        }
    }

    // ---- worker bookkeeping ---------------------------------------------------------------

    WorkerRec* worker_of(const std::string& identity) {
        auto it = instance_of.find(identity);
        if (it == instance_of.end()) return nullptr;
        auto w = workers.find(it->second);
        return w == workers.end() ? nullptr : &w->second;
    }

    WorkerRec& registered(const std::string& identity) {
        auto* w = worker_of(identity);
        if (!w)
            throw ProtocolError(ErrorCode::not_registered,
                                "this connection has not registered as a worker: send REGISTER");
        return *w;
    }

    void drop_worker_jobs(WorkerRec& w, const std::string& reason,
                          const std::unordered_set<JobId>* keep = nullptr) {
        for (auto it = w.jobs.begin(); it != w.jobs.end();) {
            if (keep && keep->count(it->first)) {
                ++it;
                continue;
            }
            auto l = live.find(it->first);
            if (l != live.end() && l->second.state == JobState::running &&
                l->second.worker_instance == w.instance)
                lose_attempt(it->first, l->second, reason);
            it = w.jobs.erase(it);
        }
    }

    // ---- handlers: clients ----------------------------------------------------------------

    void on_submit(const std::string& identity, const Reader& r) {
        auto m = decode_submit(r, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        if (m.wait_ms) check_wait_limit(identity);  // before anything is written
        ensure_txn();
        SubmitReply rep;
        rep.req = m.req;
        for (auto& spec : m.jobs) {
            // A known token wins (a resent request gets its own job back), then a unique key
            // held by an unfinished job. The token is checked by the insert itself, so the
            // common case costs no extra lookup.
            std::optional<JobId> existing;
            if (spec.unique)
                if (auto u = unique_live.find(*spec.unique); u != unique_live.end()) {
                    if (spec.token) existing = store->find_token(*spec.token);
                    if (!existing) existing = u->second;
                }
            if (existing) {
                rep.ids.push_back(*existing);
                rep.duplicate.push_back(true);
                continue;
            }
            NewJob job;
            job.id = ++last_id;
            job.token = std::move(spec.token);
            job.queue = spec.queue;
            job.payload = std::move(spec.payload);
            job.argv = std::move(spec.argv);
            job.priority = spec.priority;
            job.max_attempts = spec.max_attempts;
            job.created_at = now;
            job.timeout_ms = spec.timeout_ms;
            job.backoff_ms = spec.backoff_ms;
            job.backoff_cap_ms = spec.backoff_cap_ms;
            job.unique = spec.unique;
            Millis run_at = spec.run_at ? *spec.run_at : now + spec.delay_ms.value_or(0);
            if (run_at > now) {
                job.state = JobState::scheduled;
                job.run_at = run_at;
            }
            if (!store->insert_job(job,
                                   job.state == JobState::scheduled ? "scheduled" : "submitted")) {
                --last_id;
                rep.ids.push_back(store->find_token(*job.token).value_or(0));
                rep.duplicate.push_back(true);
                continue;
            }
            Live l;
            l.queue = intern(job.queue);
            l.unique = UniqueKey(job.unique);
            l.run_at = run_at;
            l.created_at = now;
            l.timeout_ms = job.timeout_ms;
            l.backoff_ms = job.backoff_ms;
            l.backoff_cap_ms = job.backoff_cap_ms;
            l.max_attempts = job.max_attempts;
            l.priority = static_cast<std::int16_t>(job.priority);
            l.state = job.state;
            l.has_argv = job.argv.has_value();
            if (job.state == JobState::ready) {
                ready.push(job.queue, job.id, job.priority, job.argv.has_value());
                dispatch_dirty = true;
            } else {
                timers.push({run_at, job.id});
            }
            if (job.unique) unique_live[*job.unique] = job.id;
            ++counts[job.queue][index_of(job.state)];
            pending.push_back(
                {EventView{0, job.id, job.queue, std::nullopt, job.state, 0, now, std::nullopt,
                           job.state == JobState::scheduled ? "scheduled" : "submitted"},
                 std::nullopt, std::nullopt});
            live.emplace(job.id, std::move(l));
            rep.ids.push_back(job.id);
            rep.duplicate.push_back(false);
        }
        reply(identity, cmd::kSubmitted, encode(rep), m.req);
        if (m.wait_ms) {
            // Submit and wait: the same req is answered again when the job finishes. The waiter
            // is added once the pass has committed: a rolled-back job's id is handed out again.
            JobId id = rep.ids.front();
            if (auto l = live.find(id); l != live.end()) {
                submit_waits.push_back({identity, m.req, id, *m.wait_ms, l->second.queue});
            } else if (auto job = store->get_job(id)) {  // a duplicate that has finished
                reply(identity, cmd::kJob, encode_job(*job, m.req), m.req, OnFail::send);
            }
        }
    }

    void on_status(const std::string& identity, const Reader& r) {
        auto m = decode_id_request(r);
        auto job = store->get_job(m.id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", m.id));
        reply(identity, cmd::kJob, encode_job(*job, m.req), m.req, OnFail::send);
    }

    void on_wait(const std::string& identity, const Reader& r) {
        auto m = decode_wait(r);
        auto job = store->get_job(m.id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", m.id));
        if (is_terminal(job->state)) {
            reply(identity, cmd::kJob, encode_job(*job, m.req), m.req, OnFail::send);
            return;
        }
        add_waiter(identity, m.req, m.id, m.timeout_ms, job->queue, job->attempts);
    }

    // Refuses a new waiter on a connection that has --max-waits outstanding.
    void check_wait_limit(const std::string& identity) {
        auto n = waits_of.find(identity);
        if (n != waits_of.end() && n->second >= cfg.max_waits)
            throw ProtocolError(ErrorCode::too_large,
                                fmt::format("{} WAITs outstanding on this connection, the limit "
                                            "(--max-waits)",
                                            n->second));
    }

    // `identity` gets JOB (or ERROR timeout) for `req` when unfinished job `id` finishes.
    // `check_limit` false: checked before (a SUBMIT with wait_ms, added after its commit).
    void add_waiter(const std::string& identity, std::uint64_t req, JobId id, Millis timeout_ms,
                    const std::string& queue, std::uint32_t attempts, bool check_limit = true) {
        auto& list = waiters[id];
        auto same = std::find_if(list.begin(), list.end(), [&](const Waiter& w) {
            return w.identity == identity && w.req == req;
        });
        if (same != list.end()) return;  // a resent WAIT: the first one's deadline stands
        try {
            if (check_limit) check_wait_limit(identity);
        } catch (const ProtocolError&) {
            if (list.empty()) waiters.erase(id);
            throw;
        }
        ++waits_of[identity];
        Millis deadline = now + timeout_ms;
        list.push_back({identity, req, deadline});
        wait_deadlines.push({deadline, id});
        spdlog::debug("{}: a client waits for it (up to {} ms)", job_fields(id, queue, attempts),
                      timeout_ms);
    }

    void on_list(const std::string& identity, const Reader& r) {
        auto m = decode_list(r);
        // A state filter runs in SQL: held-back dispatches must be in their rows.
        if (m.state && store->held_back() > 0) {
            ensure_txn();
            store->materialize();
        }
        reply(identity, cmd::kJobs, encode_jobs(store->list_jobs(m), m.req), m.req, OnFail::send);
    }

    void on_ping(const std::string& identity, const Reader& r) {
        auto req = r.u64("req");
        reply(identity, cmd::kPong, encode(Pong{req, "0.1.0", now}), req, OnFail::send);
    }

    void on_cancel(const std::string& identity, const Reader& r) {
        auto m = decode_id_request(r);
        auto l = live.find(m.id);
        if (l == live.end()) {
            auto job = store->get_job(m.id);
            if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", m.id));
            throw ProtocolError(ErrorCode::invalid_state,
                                fmt::format("job {} is already {}; only unfinished jobs can be "
                                            "cancelled",
                                            m.id, to_string(job->state)));
        }
        if (l->second.state == JobState::running) {
            abort_on_worker(m.id, l->second, "cancelled");
            std::erase(orphans, m.id);
        }
        Transition t;
        t.reason = "cancelled";
        t.set_outcome = true;
        t.error = "cancelled";
        transition(m.id, l->second, JobState::cancelled, std::move(t));
        auto job = store->get_job(m.id);
        reply(identity, cmd::kJob, encode_job(*job, m.req), m.req);
    }

    void revive(JobId id) {
        auto j = store->load_live(id);
        if (!j) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
        if (j->state != JobState::dead)
            throw ProtocolError(ErrorCode::invalid_state,
                                fmt::format("job {} is {}; only dead jobs can be retried", id,
                                            to_string(j->state)));
        if (j->unique && unique_live.count(*j->unique))
            throw ProtocolError(ErrorCode::invalid_state,
                                fmt::format("job {} cannot be retried: job {} holds its unique key",
                                            id, unique_live[*j->unique]));
        auto [it, fresh] = live.emplace(id, Live::from(*j, intern(j->queue)));
        if (!it->second.unique.empty()) unique_live[it->second.unique] = id;
        // Attempts only grow, so a late result of an old attempt can never match a new
        // dispatch: the job gets its first budget of attempts on top of those it has used.
        Transition t;
        t.max_attempts = j->attempts + j->attempt_budget;
        it->second.max_attempts = *t.max_attempts;
        t.reason = "retried by request";
        transition(id, it->second, JobState::ready, std::move(t));
    }

    void on_retry(const std::string& identity, const Reader& r) {
        auto m = decode_retry(r);
        std::vector<JobId> ids;
        if (m.id) {
            revive(*m.id);
            ids.push_back(*m.id);
        } else {
            for (JobId id : store->dead_jobs(m.queue, kAdminBatch)) {
                try {
                    revive(id);
                    ids.push_back(id);
                } catch (const ProtocolError&) {
                    // a unique key now held by another job: leave this one dead
                }
            }
        }
        reply(identity, cmd::kRetried, encode_ids(m.req, ids), m.req);
    }

    void set_paused(const std::string& identity, const Reader& r, bool pause) {
        auto m = decode_queue_request(r);
        ensure_txn();
        store->set_paused(m.queue, pause);
        if (pause) {
            paused.insert(m.queue);
        } else {
            paused.erase(m.queue);
            dispatch_dirty = true;
        }
        spdlog::info("queue {} {}", m.queue, pause ? "paused" : "resumed");
        reply(identity, cmd::kOk, encode_req(m.req), m.req);
    }
    void on_pause(const std::string& identity, const Reader& r) { set_paused(identity, r, true); }
    void on_resume(const std::string& identity, const Reader& r) { set_paused(identity, r, false); }

    void forget_removed(const std::vector<Removed>& removed, std::uint64_t* total) {
        for (const auto& rm : removed) {
            auto& c = counts[rm.queue][index_of(rm.state)];
            c -= std::min(c, rm.count);
            if (total) *total += rm.count;
        }
    }

    void on_purge(const std::string& identity, const Reader& r) {
        auto m = decode_purge(r);
        ensure_txn();
        Millis before = m.older_than_ms ? now - *m.older_than_ms : now + 1;
        std::uint64_t total = 0;
        forget_removed(store->remove_finished(m.state, m.queue, before, kAdminBatch), &total);
        reply(identity, cmd::kPurged, encode_count(m.req, total), m.req);
    }

    void on_queues(const std::string& identity, const Reader& r) {
        auto req = r.u64("req");
        std::vector<QueueInfo> out;
        std::vector<std::string> names;
        for (const auto& [q, c] : counts)
            if (paused.count(q) || std::any_of(c.begin(), c.end(), [](auto n) { return n > 0; }))
                names.push_back(q);
        for (const auto& q : paused)
            if (!counts.count(q)) names.push_back(q);
        std::sort(names.begin(), names.end());
        for (const auto& q : names) {
            QueueInfo info;
            info.name = q;
            info.paused = paused.count(q) > 0;
            auto c = counts.find(q);
            for (std::size_t i = 0; i < kStates; ++i)
                info.counts.emplace_back(static_cast<JobState>(i),
                                         c == counts.end() ? 0 : c->second[i]);
            info.oldest_ready_at = oldest_ready(q);
            out.push_back(std::move(info));
        }
        reply(identity, cmd::kQueues, encode_queues(req, out), req, OnFail::send);
    }

    void on_history(const std::string& identity, const Reader& r) {
        auto m = decode_id_request(r);
        auto events = store->events(m.id);
        if (events.empty() && !store->get_job(m.id))
            throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", m.id));
        reply(identity, cmd::kEvents, encode_events(m.req, m.id, events), m.req, OnFail::send);
    }

    // ---- handlers: observability (answered from memory; they never touch the store) -------

    void on_stats(const std::string& identity, const Reader& r) {
        auto req = r.u64("req");
        StatsReply rep;
        rep.req = req;
        rep.time = now;
        rep.started_at = started_at;
        rep.workers = workers.size();
        for (const auto& [inst, w] : workers)
            rep.running += w.jobs.size();
        rep.commits = metrics.commit_seconds.count;
        rep.commit_failures = metrics.commit_failures;
        rep.commit_seconds_sum = metrics.commit_seconds.sum;
        rep.commit_jobs_sum = static_cast<std::uint64_t>(metrics.commit_jobs.sum);
        if (!cfg.events_endpoint.empty())
            rep.events_endpoint = pub.get(zmq::sockopt::last_endpoint);
        std::set<std::string> names(paused.begin(), paused.end());
        for (const auto& [q, c] : counts)
            names.insert(q);
        for (const auto& q : names) {
            QueueStats qs;
            qs.name = q;
            qs.paused = paused.count(q) > 0;
            auto c = counts.find(q);
            for (std::size_t i = 0; i < kStates; ++i)
                qs.counts.emplace_back(static_cast<JobState>(i),
                                       c == counts.end() ? 0 : c->second[i]);
            if (auto m = metrics.queues.find(q); m != metrics.queues.end()) {
                qs.submitted = m->second.submitted;
                qs.succeeded = m->second.succeeded;
                qs.failed = m->second.failed;
                qs.dead = m->second.dead;
                qs.cancelled = m->second.cancelled;
                qs.finished_per_second = m->second.finished.per_second(now);
                qs.submitted_per_second = m->second.submitted_rate.per_second(now);
            }
            rep.queues.push_back(std::move(qs));
        }
        reply(identity, cmd::kStats, encode(rep), req, OnFail::send);
    }

    void on_workers(const std::string& identity, const Reader& r) {
        auto req = r.u64("req");
        reply(identity, cmd::kWorkers, encode_workers(req, worker_infos()), req, OnFail::send);
    }

    // The workers by name, each with its running jobs by id (WORKERS, the HTTP snapshot).
    std::vector<WorkerInfo> worker_infos() const {
        std::vector<WorkerInfo> out;
        for (const auto& [inst, w] : workers) {
            WorkerInfo x{w.name,        inst,       w.host,   w.pid,       w.queues,
                         w.concurrency, w.prefetch, w.credit, w.last_seen, {}};
            for (const auto& [id, seq] : w.jobs)
                if (auto l = live.find(id); l != live.end())
                    x.jobs.push_back({id, l->second.queue, l->second.attempts, since(l->second)});
            std::sort(x.jobs.begin(), x.jobs.end(),
                      [](const auto& a, const auto& b) { return a.id < b.id; });
            out.push_back(std::move(x));
        }
        std::sort(out.begin(), out.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        return out;
    }

    // When the oldest job at the head of `queue`'s priority lanes was created.
    std::optional<Millis> oldest_ready(const std::string& queue) const {
        std::optional<Millis> oldest;
        for (JobId id : ready.heads(queue))
            if (auto l = live.find(id); l != live.end())
                if (!oldest || l->second.created_at < *oldest) oldest = l->second.created_at;
        return oldest;
    }

    // The latest committed events (this broker run only), oldest first.
    void on_feed(const std::string& identity, const Reader& r) {
        auto m = decode_feed(r);
        std::vector<JobEvent> out;
        for (auto it = recent.rbegin(); it != recent.rend() && out.size() < m.limit; ++it) {
            if (it->seq <= m.after) break;
            if (m.queue && it->queue != *m.queue) continue;
            out.push_back(*it);
        }
        std::reverse(out.begin(), out.end());
        reply(identity, cmd::kFeed, encode_feed(m.req, out), m.req, OnFail::send);
    }

    // ---- handlers: workers ----------------------------------------------------------------

    void on_register(const std::string& identity, const Reader& r) {
        auto m = decode_register(r);
        auto [it, fresh] = workers.try_emplace(m.instance);
        auto& w = it->second;
        if (!fresh && w.identity != identity) instance_of.erase(w.identity);
        if (auto old = instance_of.find(identity);
            old != instance_of.end() && old->second != m.instance) {
            // The same connection registers as another instance: the old one is gone.
            auto prev = workers.find(old->second);
            if (prev != workers.end()) {
                drop_worker_jobs(prev->second, "worker lost");
                workers.erase(prev);
            }
        }
        w.identity = identity;
        w.instance = m.instance;
        if (!w.instance_ref) w.instance_ref = std::make_shared<const std::string>(m.instance);
        w.name = m.name;
        w.host = m.host;
        w.pid = m.pid;
        w.queues = m.queues;
        w.concurrency = m.concurrency;
        w.prefetch = m.prefetch;
        w.commands = m.commands;
        w.weights = m.weights;
        w.credit = 0;
        w.draining = false;
        w.last_seen = now;
        w.seq = 0;
        instance_of[identity] = m.instance;

        RegisteredReply rep;
        rep.req = m.req;
        rep.heartbeat_ms = cfg.heartbeat_ms;
        rep.expiry_ms = cfg.worker_timeout_ms;
        std::unordered_set<JobId> kept;
        for (const auto& h : m.held) {
            auto l = live.find(h.id);
            bool ok =
                l != live.end() && l->second.state == JobState::running &&
                l->second.attempts == h.attempt &&
                (l->second.worker_instance.empty() || l->second.worker_instance == m.instance);
            if (ok) {
                l->second.worker_instance = w.instance_ref;
                l->second.orphan_deadline = 0;
                kept.insert(h.id);
                rep.held_ok.push_back(h.id);
            } else {
                rep.held_rejected.push_back(h.id);
            }
        }
        // Jobs this registration was given but no longer holds never reached it.
        drop_worker_jobs(w, "worker lost", &kept);
        for (JobId id : kept)
            w.jobs[id] = 0;
        std::erase_if(orphans, [&](JobId id) { return kept.count(id) > 0; });
        spdlog::info("worker {} registered: host={} pid={} queues=[{}] concurrency={} held={}/{}",
                     w.name, w.host, w.pid, fmt::join(w.queues, ","), w.concurrency,
                     rep.held_ok.size(), m.held.size());
        reply(identity, cmd::kRegistered, encode(rep), m.req);
    }

    void on_credit(const std::string& identity, const Reader& r) {
        auto n = decode_credit(r);
        auto& w = registered(identity);
        if (w.draining) return;
        // Credit never exceeds the slots the worker declared (concurrency + prefetch) minus the
        // jobs it holds, whatever a confused worker sends.
        std::uint32_t slots = w.concurrency + w.prefetch;
        auto busy = static_cast<std::uint32_t>(std::min<std::size_t>(w.jobs.size(), slots));
        w.credit = std::min(w.credit + n, slots - busy);
        dispatch_dirty = true;
    }

    void on_heartbeat(const std::string& identity, const Reader& r) {
        auto m = decode_worker_heartbeat(r);
        auto& w = registered(identity);
        std::unordered_set<JobId> running(m.running.begin(), m.running.end());
        std::vector<JobId> missing;
        for (const auto& [id, seq] : w.jobs)
            if (seq != 0 && seq <= m.seq && !running.count(id)) missing.push_back(id);
        for (JobId id : missing) {
            w.jobs.erase(id);
            auto l = live.find(id);
            if (l != live.end() && l->second.state == JobState::running) {
                spdlog::warn("{}: worker {} does not hold it (dispatch lost)",
                             job_fields(id, l->second.queue.str(), l->second.attempts), w.name);
                lose_attempt(id, l->second, "dispatch lost");
            }
        }
    }

    void on_result(const std::string& identity, const Reader& r, bool ok) {
        auto m = decode_result(r, ok, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        Acks acks;
        apply_result(identity, std::move(m), acks);
        for (const auto& a : acks.again)
            reply(identity, cmd::kAck, encode(a), std::nullopt, OnFail::send);
        for (const auto& a : acks.fresh)
            reply(identity, cmd::kAck, encode(a), std::nullopt, OnFail::drop);
    }

    // RESULTS: the same as one DONE/FAIL per element, answered with one ACKS (per kind of ack).
    void on_results(const std::string& identity, const Reader& r) {
        auto results = decode_results(r, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        Acks acks;
        for (auto& m : results)
            apply_result(identity, std::move(m), acks);
        if (!acks.again.empty())
            reply(identity, cmd::kAcks, encode_acks(acks.again), std::nullopt, OnFail::send);
        if (!acks.fresh.empty())
            reply(identity, cmd::kAcks, encode_acks(acks.fresh), std::nullopt, OnFail::drop);
    }

    // Acknowledgements owed for results: `again` for results applied before (sent even if this
    // pass fails), `fresh` for those this pass applies (dropped if it fails: the worker resends).
    struct Acks {
        std::vector<Ack> again, fresh;
    };

    void apply_result(const std::string& identity, JobResult m, Acks& acks) {
        const bool ok = m.ok;
        auto l = live.find(m.id);
        if (l == live.end() || l->second.state != JobState::running ||
            l->second.attempts != m.attempt) {
            // A resent result of an attempt that was already applied is acknowledged again.
            auto job = store->get_job(m.id);
            if (job && is_terminal(job->state) && job->attempts == m.attempt &&
                (job->state == JobState::succeeded) == m.ok) {
                acks.again.push_back({m.id, m.attempt});
                return;
            }
            spdlog::warn("{}: rejected stale {} (job is {} at attempt {})",
                         job_fields(m.id, job ? job->queue : "", m.attempt), ok ? "DONE" : "FAIL",
                         job ? to_string(job->state) : "gone", job ? job->attempts : 0);
            reply_error(identity, std::nullopt, ErrorCode::stale,
                        fmt::format("job {} attempt {} is no longer current", m.id, m.attempt),
                        m.id, m.attempt);
            return;
        }
        Live& job = l->second;
        if (auto w = workers.find(job.worker_instance); w != workers.end())
            w->second.jobs.erase(m.id);
        Transition t;
        t.set_outcome = true;
        t.exit_code = m.exit_code;
        t.result = std::move(m.result);
        if (ok) {
            t.reason = "done";
            transition(m.id, job, JobState::succeeded, std::move(t));
        } else {
            // The event's reason carries the first line of the error, shortened.
            auto line = std::string_view(m.error).substr(0, m.error.find('\n'));
            t.reason = fmt::format("{}: {}", m.permanent ? "failed permanently" : "failed",
                                   line.substr(0, 120));
            if (!m.permanent && job.attempts >= job.max_attempts)
                t.reason = fmt::format("no attempts left: {}", line.substr(0, 120));
            t.error = m.error;
            fail_attempt(m.id, job, std::move(t), m.permanent);
        }
        acks.fresh.push_back({m.id, m.attempt});
    }

    // DRAIN: the worker is stopping. It gets no more jobs, whatever credit it had or sends.
    void on_drain(const std::string& identity, const Reader&) {
        auto& w = registered(identity);
        w.draining = true;
        w.credit = 0;
        spdlog::info("worker {} is draining: {} jobs running, no more will be dispatched to it",
                     w.name, w.jobs.size());
    }

    // RELEASE: a draining worker hands back an attempt it did not finish (never started, or
    // stopped). The job goes back to ready uncharged: `attempts` stays, so the next dispatch is
    // attempt+1 and this attempt's results stay fenced off, and max_attempts grows by one so the
    // job keeps as many attempts as it had. Accepted from any connection, like results.
    void on_release(const std::string& identity, const Reader& r) {
        auto m = decode_ack(r);  // the same two fields: id, attempt
        auto l = live.find(m.id);
        if (l == live.end() || l->second.state != JobState::running ||
            l->second.attempts != m.attempt) {
            reply_error(identity, std::nullopt, ErrorCode::stale,
                        fmt::format("job {} attempt {} is no longer current", m.id, m.attempt),
                        m.id, m.attempt);
            return;
        }
        Live& job = l->second;
        std::string by = "unknown worker";
        if (auto w = workers.find(job.worker_instance); w != workers.end()) {
            w->second.jobs.erase(m.id);
            by = w->second.name;
        }
        std::erase(orphans, m.id);
        spdlog::info("{}: released by {} (draining), back to ready without counting the attempt",
                     job_fields(m.id, job.queue.str(), m.attempt), by);
        Transition t;
        t.max_attempts = job.max_attempts + 1;
        job.max_attempts = *t.max_attempts;
        t.reason = "released by worker";
        transition(m.id, job, JobState::ready, std::move(t));
        reply(identity, cmd::kAck, encode(Ack{m.id, m.attempt}), std::nullopt, OnFail::drop);
    }

    void on_done(const std::string& identity, const Reader& r) { on_result(identity, r, true); }
    void on_fail(const std::string& identity, const Reader& r) { on_result(identity, r, false); }

    void on_progress(const std::string&, const Reader& r) {
        auto m = decode_progress(r);
        auto l = live.find(m.id);
        if (l == live.end() || l->second.state != JobState::running ||
            l->second.attempts != m.attempt)
            return;  // progress of an attempt that is over: nothing to record
        ensure_txn();
        store->set_progress(m.id, m.percent, m.message);
    }

    // ---- the dispatch boundary ------------------------------------------------------------

    void handle(const Envelope& env) {
        if (auto* w = worker_of(env.identity)) w->last_seen = now;
        std::optional<std::uint64_t> req;
        try {
            if (env.frames != 3)
                throw ProtocolError(
                    ErrorCode::bad_frame,
                    fmt::format("expected 3 frames (version, command, body), got {}", env.frames));
            if (env.version != kProtocolVersion) {
                req = peek_req(env.body);
                throw ProtocolError(ErrorCode::bad_version,
                                    fmt::format("unsupported protocol version '{}', expected '{}'",
                                                env.version.substr(0, 32), kProtocolVersion));
            }
            const Command* found = nullptr;
            for (const auto& c : kCommands)
                if (c.name == env.command) found = &c;
            if (!found) {
                req = peek_req(env.body);
                throw ProtocolError(ErrorCode::unknown_command,
                                    fmt::format("unknown command '{}'", env.command.substr(0, 32)));
            }
            Body body(env.body);  // throws bad_frame
            req = body.reader().peek_u64("req");
            check_access(*found, env);
            (this->*(found->handler))(env.identity, body.reader());
        } catch (const ProtocolError& e) {
            spdlog::debug("error reply {} to {}: {}", to_string(e.code()),
                          env.command.substr(0, 32), e.what());
            reply_error(env.identity, req, e.code(), e.what());
        } catch (const StoreError& e) {
            txn_failed = true;
            txn_error = e.what();
            reply_error(env.identity, req, ErrorCode::storage,
                        fmt::format("storage failure: {}", e.what()));
        } catch (const std::exception& e) {
            spdlog::error("internal error handling {}: {}", env.command.substr(0, 32), e.what());
            reply_error(env.identity, req, ErrorCode::internal, e.what());
        }
    }

    void forget_wait(const std::string& identity) {
        auto it = waits_of.find(identity);
        if (it != waits_of.end() && --it->second == 0) waits_of.erase(it);
    }

    // With CURVE, a key's role limits what it may do (docs/SECURITY.md).
    void check_access(const Command& c, const Envelope& env) {
        if (!cfg.authorized_keys || c.access == Access::everyone) return;
        auto role = cfg.authorized_keys->role_of(env.user_id).value_or(Role::any);
        bool ok = role == Role::any || (c.access == Access::clients && role == Role::client) ||
                  (c.access == Access::workers && role == Role::worker);
        if (!ok)
            throw ProtocolError(
                ErrorCode::forbidden,
                fmt::format("key '{}' has the {} role and may not send {}", env.user_id,
                            role == Role::client ? "client" : "worker", c.name));
    }

    // ---- tick: everything that happens because time passed -------------------------------

    void tick() {
        while (!timers.empty() && timers.top().at <= now) {
            auto d = timers.top();
            timers.pop();
            auto l = live.find(d.id);
            if (l == live.end() || l->second.run_at != d.at) continue;
            if (l->second.state == JobState::retrying || l->second.state == JobState::scheduled) {
                Transition t;
                t.reason = l->second.state == JobState::retrying ? "retry delay over" : "due";
                transition(d.id, l->second, JobState::ready, std::move(t));
            }
        }
        while (!leases.empty() && leases.top().at <= now) {
            auto d = leases.top();
            leases.pop();
            auto l = live.find(d.id);
            if (l == live.end() || l->second.state != JobState::running ||
                l->second.attempts != d.attempt)
                continue;
            auto timeout = format_duration(l->second.timeout_ms.value_or(0));
            spdlog::warn("{}: no result {} after its {} timeout",
                         job_fields(d.id, l->second.queue.str(), d.attempt),
                         format_duration(cfg.timeout_grace_ms), timeout);
            abort_on_worker(d.id, l->second, "timed out");
            std::erase(orphans, d.id);
            Transition t;
            t.error = fmt::format("timed out after {} (no result from the worker)", timeout);
            t.reason = "timed out";
            fail_attempt(d.id, l->second, std::move(t), false);
        }
        // Dispatches the store holds back from the jobs' rows (see Store::apply) reach the rows
        // within a second, for readers of the database file (the HTTP API).
        if (now >= next_materialize) {
            if (store->held_back() > 0) {
                ensure_txn();
                store->materialize();
            }
            next_materialize = now + kMaterializeEveryMs;
        }
        if (now >= next_retention) {
            ensure_txn();
            auto removed = store->remove_finished(std::nullopt, std::nullopt,
                                                  now - cfg.retention_ms, cfg.retention_batch);
            std::uint64_t n = 0;
            forget_removed(removed, &n);
            if (n > 0) {
                store->reclaim_space(256);
                spdlog::debug("retention: deleted {} finished jobs", n);
            }
            // A full batch means more are due: carry on next pass, else look again in a second.
            next_retention = n >= cfg.retention_batch ? now : now + 1000;
        }
        for (auto it = workers.begin(); it != workers.end();) {
            auto& w = it->second;
            if (now - w.last_seen > cfg.worker_timeout_ms) {
                spdlog::warn("worker {} lost: silent for {} ms, {} jobs return to the queue",
                             w.name, now - w.last_seen, w.jobs.size());
                drop_worker_jobs(w, "worker lost");
                instance_of.erase(w.identity);
                it = workers.erase(it);
            } else {
                ++it;
            }
        }
        std::erase_if(orphans, [&](JobId id) {
            auto l = live.find(id);
            if (l == live.end() || l->second.state != JobState::running ||
                !l->second.worker_instance.empty())
                return true;
            if (l->second.orphan_deadline > now) return false;
            spdlog::warn("{}: no worker reclaimed it after the restart",
                         job_fields(id, l->second.queue.str(), l->second.attempts));
            lose_attempt(id, l->second, "worker lost");
            return true;
        });
        while (!wait_deadlines.empty() && wait_deadlines.top().at <= now) {
            auto d = wait_deadlines.top();
            wait_deadlines.pop();
            auto it = waiters.find(d.id);
            if (it == waiters.end()) continue;
            std::erase_if(it->second, [&](const Waiter& w) {
                if (w.deadline > now) return false;
                reply_error(w.identity, w.req, ErrorCode::timeout,
                            fmt::format("job {} did not finish in time", d.id));
                forget_wait(w.identity);
                return true;
            });
            if (it->second.empty()) waiters.erase(it);
        }
        if (now >= next_heartbeat) {
            auto body = encode_hb();
            for (auto& [inst, w] : workers)
                outbox.push_back({w.identity, cmd::kHeartbeat, body, OnFail::send, std::nullopt});
            next_heartbeat = now + cfg.heartbeat_ms;
        }
    }

    std::string encode_hb() const { return Writer(1).str("instance", instance).take(); }

    Millis next_deadline() const {
        Millis next = std::min({next_heartbeat, now + 1000, next_retention});
        if (cfg.snapshots && snapshot_dirty) next = std::min(next, next_snapshot);
        if (cfg.on_status) next = std::min(next, next_status);
        if (!timers.empty()) next = std::min(next, timers.top().at);
        if (!leases.empty()) next = std::min(next, leases.top().at);
        if (!wait_deadlines.empty()) next = std::min(next, wait_deadlines.top().at);
        for (const auto& [inst, w] : workers)
            next = std::min(next, w.last_seen + cfg.worker_timeout_ms + 1);
        for (JobId id : orphans)
            if (auto l = live.find(id); l != live.end())
                next = std::min(next, l->second.orphan_deadline);
        return next;
    }

    // ---- dispatch -------------------------------------------------------------------------

    // The queue a worker takes its next job from: strict order, or weighted random choice
    // among the queues that have work for it. Paused queues are skipped.
    const std::string* pick_queue(const WorkerRec& w) {
        if (w.weights.empty()) {
            for (const auto& q : w.queues)
                if (!paused.count(q) && ready.has_ready(q, w.commands)) return &q;
            return nullptr;
        }
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < w.queues.size(); ++i)
            if (!paused.count(w.queues[i]) && ready.has_ready(w.queues[i], w.commands))
                total += w.weights[i];
        if (total == 0) return nullptr;
        std::uint64_t pick = std::uniform_int_distribution<std::uint64_t>(0, total - 1)(rng);
        for (std::size_t i = 0; i < w.queues.size(); ++i) {
            if (paused.count(w.queues[i]) || !ready.has_ready(w.queues[i], w.commands)) continue;
            if (pick < w.weights[i]) return &w.queues[i];
            pick -= w.weights[i];
        }
        return nullptr;
    }

    void dispatch() {
        if (!dispatch_dirty) return;
        dispatch_dirty = false;
        for (auto& [inst, w] : workers) {
            while (w.credit > 0) {
                const std::string* q = pick_queue(w);
                if (!q) break;
                auto id = ready.pop(*q, w.commands);
                if (!id) break;
                auto l = live.find(*id);
                if (l == live.end() || l->second.state != JobState::ready) continue;
                auto data = store->dispatch_data(*id);
                if (!data) continue;
                Transition t;
                t.attempts = l->second.attempts + 1;
                t.worker = w.name;
                t.started_at = now;
                t.reason = "dispatched";
                transition(*id, l->second, JobState::running, std::move(t));
                l->second.worker_instance = w.instance_ref;
                if (l->second.timeout_ms)
                    leases.push({now + *l->second.timeout_ms + cfg.timeout_grace_ms, *id,
                                 l->second.attempts});
                w.jobs[*id] = ++w.seq;
                --w.credit;
                Dispatch d{*id,
                           *q,
                           l->second.attempts,
                           std::move(data->payload),
                           std::move(data->argv),
                           w.seq,
                           l->second.timeout_ms};
                outbox.push_back(
                    {w.identity, cmd::kDispatch, encode(d), OnFail::drop, std::nullopt});
            }
        }
    }

    // ---- end of pass: commit, then reply --------------------------------------------------

    void flush() {
        if (in_txn) {
            if (!txn_failed) {
                try {
                    auto t0 = std::chrono::steady_clock::now();
                    store->commit();
                    metrics.on_commit(
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                            .count(),
                        pending.size());
                    publish_committed();
                } catch (const StoreError& e) {
                    txn_failed = true;
                    txn_error = e.what();
                }
            }
            if (txn_failed) {
                store->rollback();
                ++metrics.commit_failures;
            }
            in_txn = false;
        }
        pending.clear();  // a failed pass's changes never happened
        if (txn_failed) {
            spdlog::error("commit failed, nothing of this pass was applied: {}", txn_error);
            for (auto& o : outbox) {
                if (o.on_fail == OnFail::error) {
                    o.command = cmd::kError;
                    o.body = encode(ErrorReply{o.req, ErrorCode::storage,
                                               "storage failure, nothing was changed: " + txn_error,
                                               std::nullopt, std::nullopt});
                }
            }
            std::erase_if(outbox, [](const Outgoing& o) { return o.on_fail == OnFail::drop; });
            finished.clear();
            try {
                rebuild();
            } catch (const StoreError& e) {
                spdlog::critical("cannot reload state after a failed commit: {}", e.what());
                throw;
            }
            txn_failed = false;
            submit_waits.clear();
        }
        // Committed: SUBMITs with wait_ms now wait like WAITs (if their job finished in this very
        // pass, `finished` below answers them).
        for (const auto& w : submit_waits)
            add_waiter(w.identity, w.req, w.id, w.timeout_ms, w.queue, 0, false);
        submit_waits.clear();
        for (const auto& o : outbox)
            send(o.identity, o.command, o.body);
        outbox.clear();
        for (JobId id : finished) {
            auto it = waiters.find(id);
            if (it == waiters.end()) continue;
            if (auto job = store->get_job(id)) {
                for (const auto& w : it->second)
                    send(w.identity, cmd::kJob, encode_job(*job, w.req));
            }
            for (const auto& w : it->second)
                forget_wait(w.identity);
            waiters.erase(it);
        }
        finished.clear();
    }

    // Every message leaves through here: onto the socket, or into `captured` (the test seam).
    std::vector<Envelope>* captured = nullptr;
    void send(const std::string& identity, std::string_view command, const std::string& body) {
        if (captured) {
            captured->push_back(
                Envelope{identity, std::string(kProtocolVersion), std::string(command), body, 3});
            return;
        }
        if (identity.size() > kAdminPrefix.size() && identity.starts_with(kAdminPrefix)) {
            send_message(admin, std::string_view(identity).substr(kAdminPrefix.size()), command,
                         body);
            return;
        }
        send_message(sock, identity, command, body);
    }

    void pass(bool readable, bool admin_readable = false) {
        now = clock.now_ms();
        if (readable) {
            for (std::size_t i = 0; i < cfg.max_messages_per_pass; ++i) {
                auto env = recv_message(sock, true);
                if (!env) break;
                handle(*env);
            }
        }
        if (admin_readable) {
            for (std::size_t i = 0; i < cfg.max_messages_per_pass; ++i) {
                auto env = recv_message(admin, true);
                if (!env) break;
                env->identity = kAdminPrefix + env->identity;
                env->user_id.clear();  // in-process: the HTTP side, trusted like the operator
                handle(*env);
            }
        }
        try {
            tick();
            dispatch();
        } catch (const StoreError& e) {
            txn_failed = true;
            txn_error = e.what();
        }
        flush();
        if (cfg.snapshots && (now >= next_snapshot || (snapshot_dirty && next_snapshot == 0)))
            publish_snapshot();
        if (cfg.on_status && now >= next_status) {
            cfg.on_status(status());
            next_status = now + cfg.status_interval_ms;
        }
    }

    BrokerStatus status() const {
        BrokerStatus st;
        for (const auto& [q, c] : counts) {
            st.ready += c[index_of(JobState::ready)];
            st.running += c[index_of(JobState::running)];
            st.scheduled += c[index_of(JobState::scheduled)] + c[index_of(JobState::retrying)];
        }
        st.workers = workers.size();
        return st;
    }

    // After the last pass: waiters get ERROR shutting_down instead of silence, workers get
    // SHUTDOWN so they reconnect as soon as a broker is back instead of after expiry_ms.
    void shutdown() {
        std::size_t n = 0;
        for (const auto& [id, list] : waiters)
            for (const auto& w : list) {
                send(w.identity, cmd::kError,
                     encode(ErrorReply{w.req, ErrorCode::shutting_down,
                                       fmt::format("the broker is shutting down; job {} is not "
                                                   "finished, wait again once it is back",
                                                   id),
                                       std::nullopt, std::nullopt}));
                ++n;
            }
        waiters.clear();
        waits_of.clear();
        auto body = encode_hb();
        for (const auto& [inst, w] : workers)
            send(w.identity, cmd::kShutdown, body);
        spdlog::info("told {} waiters and {} workers that the broker is stopping", n,
                     workers.size());
        // Give those last messages time to leave: the socket is closed with linger 0 otherwise.
        if (!captured) sock.set(zmq::sockopt::linger, 1000);
    }
};

// The command table: every command the broker accepts and its handler. Generic checks (frames,
// version, decoding, error replies) happen once in handle(), before any handler runs.
// clang-format off
const Broker::State::Command Broker::State::kCommands[24] = {
    {cmd::kSubmit,    &State::on_submit},
    {cmd::kStatus,    &State::on_status},
    {cmd::kWait,      &State::on_wait},
    {cmd::kList,      &State::on_list},
    {cmd::kPing,      &State::on_ping},
    {cmd::kQueues,    &State::on_queues},
    {cmd::kHistory,   &State::on_history},
    {cmd::kStats,     &State::on_stats},
    {cmd::kWorkers,   &State::on_workers},
    {cmd::kFeed,      &State::on_feed},
    {cmd::kCancel,    &State::on_cancel,    Access::clients},
    {cmd::kRetry,     &State::on_retry,     Access::clients},
    {cmd::kPause,     &State::on_pause,     Access::clients},
    {cmd::kResume,    &State::on_resume,    Access::clients},
    {cmd::kPurge,     &State::on_purge,     Access::clients},
    {cmd::kRegister,  &State::on_register,  Access::workers},
    {cmd::kCredit,    &State::on_credit,    Access::workers},
    {cmd::kHeartbeat, &State::on_heartbeat, Access::workers},
    {cmd::kDone,      &State::on_done,      Access::workers},
    {cmd::kFail,      &State::on_fail,      Access::workers},
    {cmd::kResults,   &State::on_results,   Access::workers},
    {cmd::kProgress,  &State::on_progress,  Access::workers},
    {cmd::kDrain,     &State::on_drain,     Access::workers},
    {cmd::kRelease,   &State::on_release,   Access::workers},
};
// clang-format on

Broker::Broker(BrokerConfig config, std::unique_ptr<Store> store, const Clock& clock)
    : s_(std::make_unique<State>(std::move(config), std::move(store), clock)) {
    s_->now = clock.now_ms();
    s_->rebuild();
    auto& sock = s_->sock;
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 100000);
    sock.set(zmq::sockopt::rcvhwm, 100000);
    sock.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(s_->cfg.max_message));
    if (s_->cfg.curve_secret_key) {
        if (!s_->cfg.authorized_keys)
            throw std::invalid_argument("CURVE needs a set of authorized keys");
        s_->zap = std::make_unique<ZapHandler>(s_->ctx, s_->cfg.authorized_keys);
        sock.set(zmq::sockopt::zap_domain, "errand");
        sock.set(zmq::sockopt::curve_server, true);
        sock.set(zmq::sockopt::curve_secretkey, *s_->cfg.curve_secret_key);
    }
    if (!s_->cfg.listen.empty()) sock.bind(s_->cfg.listen);
    s_->started_at = s_->now;
    if (!s_->cfg.admin_endpoint.empty()) {
        s_->admin.set(zmq::sockopt::linger, 0);
        s_->admin.bind(s_->cfg.admin_endpoint);
    }
    if (!s_->cfg.events_endpoint.empty()) {
        // Same CURVE server key as the main socket: a subscriber needs an authorized key too.
        auto& pub = s_->pub;
        pub.set(zmq::sockopt::linger, 0);
        pub.set(zmq::sockopt::sndhwm, 100000);
        if (s_->cfg.curve_secret_key) {
            pub.set(zmq::sockopt::zap_domain, "errand");
            pub.set(zmq::sockopt::curve_server, true);
            pub.set(zmq::sockopt::curve_secretkey, *s_->cfg.curve_secret_key);
        }
        pub.bind(s_->cfg.events_endpoint);
    }
    spdlog::info("recovered {} unfinished jobs ({} ready, {} running awaiting their workers)",
                 s_->live.size(), s_->ready.size(), s_->orphans.size());
}

Broker::~Broker() = default;

std::vector<Envelope> Broker::process(const Envelope& message, Millis now) {
    std::vector<Envelope> out;
    s_->captured = &out;
    s_->now = now;
    s_->handle(message);
    try {
        s_->tick();
        s_->dispatch();
    } catch (const StoreError& e) {
        s_->txn_failed = true;
        s_->txn_error = e.what();
    }
    s_->flush();
    s_->captured = nullptr;
    return out;
}

std::string Broker::endpoint() const {
    return s_->sock.get(zmq::sockopt::last_endpoint);
}

std::string Broker::events_endpoint() const {
    if (s_->cfg.events_endpoint.empty()) return "";
    return s_->pub.get(zmq::sockopt::last_endpoint);
}

zmq::context_t& Broker::context() {
    return s_->ctx;
}

void Broker::run() {
    zmq::pollitem_t items[2] = {{s_->sock.handle(), 0, ZMQ_POLLIN, 0},
                                {s_->admin.handle(), 0, ZMQ_POLLIN, 0}};
    std::size_t n_items = s_->cfg.admin_endpoint.empty() ? 1 : 2;
    while (!stopping_.load(std::memory_order_relaxed)) {
        s_->now = s_->clock.now_ms();
        Millis wait = std::clamp<Millis>(s_->next_deadline() - s_->now, 0, 1000);
        items[0].revents = items[1].revents = 0;
        try {
            zmq::poll(items, n_items, std::chrono::milliseconds(wait));
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
        s_->pass((items[0].revents & ZMQ_POLLIN) != 0, (items[1].revents & ZMQ_POLLIN) != 0);
    }
    spdlog::info("broker stopping");
    s_->shutdown();
}

}  // namespace errand::broker
