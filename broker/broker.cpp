// The broker's event loop, command table, job transitions, worker tracking and group commit.
#include "broker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <queue>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "errand/codec.hpp"
#include "errand/transport.hpp"
#include "lifecycle.hpp"
#include "ready_index.hpp"

namespace errand::broker {
namespace {

// A job that is not finished. Terminal jobs live only in the store.
struct Live {
    std::string queue;
    JobState state = JobState::ready;
    std::uint32_t attempts = 0;
    std::uint32_t max_attempts = 0;
    std::int32_t priority = 0;
    bool has_argv = false;
    Millis run_at = 0;
    std::string worker_instance;  // running: the registration that holds it; empty = orphan
    Millis orphan_deadline = 0;   // running with no known worker (after a restart)
};

struct WorkerRec {
    std::string identity;
    std::string instance;
    std::string name;
    std::string host;
    std::uint64_t pid = 0;
    std::vector<std::string> queues;
    std::uint32_t concurrency = 1;
    bool commands = false;
    std::uint32_t credit = 0;
    Millis last_seen = 0;
    std::uint64_t seq = 0;                         // last DISPATCH.seq sent
    std::unordered_map<JobId, std::uint64_t> jobs;  // job -> its DISPATCH.seq (0: adopted)
};

struct Waiter {
    std::string identity;
    std::uint64_t req = 0;
    Millis deadline = 0;
};

struct Deadline {
    Millis at = 0;
    JobId id = 0;
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
    struct Command {
        std::string_view name;
        Handler handler;
    };

    BrokerConfig cfg;
    std::unique_ptr<Store> store;
    const Clock& clock;
    zmq::context_t ctx{1};
    zmq::socket_t sock{ctx, zmq::socket_type::router};
    std::string instance = random_hex(8);

    std::unordered_map<JobId, Live> live;
    ReadyIndex ready;
    DeadlineHeap timers;         // retrying/scheduled jobs by run_at (stale entries skipped)
    DeadlineHeap wait_deadlines;  // waiters by deadline
    std::unordered_map<std::string, WorkerRec> workers;        // by instance
    std::unordered_map<std::string, std::string> instance_of;  // identity -> instance
    std::unordered_map<JobId, std::vector<Waiter>> waiters;
    std::vector<JobId> orphans;
    JobId last_id = 0;

    // State of the current pass.
    Millis now = 0;
    bool in_txn = false;
    bool txn_failed = false;
    std::string txn_error;
    std::vector<Outgoing> outbox;
    std::vector<JobId> finished;
    bool dispatch_dirty = true;
    Millis next_heartbeat = 0;

    static const Command kCommands[10];

    State(BrokerConfig c, std::unique_ptr<Store> s, const Clock& clk)
        : cfg(std::move(c)), store(std::move(s)), clock(clk) {}

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
        orphans.clear();
        std::unordered_map<JobId, std::string> holder;
        for (auto& [inst, w] : workers)
            for (auto& [id, seq] : w.jobs) holder[id] = inst;
        store->scan_live([&](LiveJob&& j) {
            Live l{j.queue, j.state, j.attempts, j.max_attempts, j.priority, j.has_argv,
                   j.run_at.value_or(0), {}, 0};
            switch (j.state) {
                case JobState::ready: ready.push(j.queue, j.id, j.priority, j.has_argv); break;
                case JobState::scheduled:
                case JobState::retrying: timers.push({l.run_at, j.id}); break;
                case JobState::running:
                    if (auto h = holder.find(j.id); h != holder.end()) {
                        l.worker_instance = h->second;
                    } else {
                        l.orphan_deadline = now + cfg.worker_timeout_ms;
                        orphans.push_back(j.id);
                    }
                    break;
                default: break;
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

    // The one place that changes a job's state: memory, index, timers, store and event row.
    void transition(JobId id, Live& l, JobState to, Transition t) {
        if (!transition_allowed(l.state, to))
            throw std::logic_error(fmt::format("job {}: no transition {} -> {}", id,
                                               to_string(l.state), to_string(to)));
        ensure_txn();
        t.id = id;
        t.from = l.state;
        t.to = to;
        t.at = now;
        if (t.attempts == 0) t.attempts = l.attempts;
        if (is_terminal(to)) t.finished_at = now;
        store->apply(t);
        spdlog::debug("job {} queue={} attempt={}: {} -> {} ({})", id, l.queue, t.attempts,
                      to_string(l.state), to_string(to), t.reason);
        l.state = to;
        l.attempts = t.attempts;
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
            case JobState::running: break;
            case JobState::succeeded:
            case JobState::dead:
            case JobState::cancelled:
                finished.push_back(id);
                live.erase(id);  // `l` dangles from here on
                break;
        }
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
        auto m = decode_submit(r, {cfg.max_payload, cfg.max_result});
        ensure_txn();
        SubmitReply rep;
        rep.req = m.req;
        for (auto& spec : m.jobs) {
            if (spec.token) {
                if (auto existing = store->find_token(*spec.token)) {
                    rep.ids.push_back(*existing);
                    rep.duplicate.push_back(true);
                    continue;
                }
            }
            NewJob job;
            job.id = ++last_id;
            job.token = std::move(spec.token);
            job.queue = spec.queue;
            job.payload = std::move(spec.payload);
            job.argv = std::move(spec.argv);
            job.max_attempts = spec.max_attempts;
            job.created_at = now;
            store->insert_job(job, "submitted");
            live.emplace(job.id, Live{job.queue, JobState::ready, 0, job.max_attempts, 0,
                                      job.argv.has_value(), 0, {}, 0});
            ready.push(job.queue, job.id, 0, job.argv.has_value());
            dispatch_dirty = true;
            rep.ids.push_back(job.id);
            rep.duplicate.push_back(false);
        }
        reply(identity, cmd::kSubmitted, encode(rep), m.req);
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
        auto& list = waiters[m.id];
        Millis deadline = now + m.timeout_ms;
        auto same = std::find_if(list.begin(), list.end(), [&](const Waiter& w) {
            return w.identity == identity && w.req == m.req;
        });
        if (same != list.end())
            same->deadline = deadline;  // a resent WAIT extends the first
        else
            list.push_back({identity, m.req, deadline});
        wait_deadlines.push({deadline, m.id});
    }

    void on_list(const std::string& identity, const Reader& r) {
        auto m = decode_list(r);
        reply(identity, cmd::kJobs, encode_jobs(store->list_jobs(m), m.req), m.req, OnFail::send);
    }

    void on_ping(const std::string& identity, const Reader& r) {
        auto req = r.u64("req");
        reply(identity, cmd::kPong, encode(Pong{req, "0.1.0", now}), req, OnFail::send);
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
        w.name = m.name;
        w.host = m.host;
        w.pid = m.pid;
        w.queues = m.queues;
        w.concurrency = m.concurrency;
        w.commands = m.commands;
        w.credit = 0;
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
            bool ok = l != live.end() && l->second.state == JobState::running &&
                      l->second.attempts == h.attempt &&
                      (l->second.worker_instance.empty() ||
                       l->second.worker_instance == m.instance);
            if (ok) {
                l->second.worker_instance = m.instance;
                l->second.orphan_deadline = 0;
                kept.insert(h.id);
                rep.held_ok.push_back(h.id);
            } else {
                rep.held_rejected.push_back(h.id);
            }
        }
        // Jobs this registration was given but no longer holds never reached it.
        drop_worker_jobs(w, "worker lost", &kept);
        for (JobId id : kept) w.jobs[id] = 0;
        std::erase_if(orphans, [&](JobId id) { return kept.count(id) > 0; });
        spdlog::info("worker {} registered: host={} pid={} queues=[{}] concurrency={} held={}/{}",
                     w.name, w.host, w.pid, fmt::join(w.queues, ","), w.concurrency,
                     rep.held_ok.size(), m.held.size());
        reply(identity, cmd::kRegistered, encode(rep), m.req);
    }

    void on_credit(const std::string& identity, const Reader& r) {
        auto n = decode_credit(r);
        auto& w = registered(identity);
        auto busy = static_cast<std::uint32_t>(std::min<std::size_t>(w.jobs.size(), w.concurrency));
        w.credit = std::min(w.credit + n, w.concurrency - busy);
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
                spdlog::warn("job {}: worker {} does not hold it (dispatch lost)", id, w.name);
                lose_attempt(id, l->second, "dispatch lost");
            }
        }
    }

    void on_result(const std::string& identity, const Reader& r, bool ok) {
        auto m = decode_result(r, ok, {cfg.max_payload, cfg.max_result});
        auto l = live.find(m.id);
        if (l == live.end() || l->second.state != JobState::running ||
            l->second.attempts != m.attempt) {
            // A resent result of an attempt that was already applied is acknowledged again.
            auto job = store->get_job(m.id);
            if (job && is_terminal(job->state) && job->attempts == m.attempt &&
                (job->state == JobState::succeeded) == m.ok) {
                reply(identity, cmd::kAck, encode(Ack{m.id, m.attempt}), std::nullopt,
                      OnFail::send);
                return;
            }
            spdlog::warn("job {}: rejected stale {} for attempt {} (job is {} at attempt {})",
                         m.id, ok ? "DONE" : "FAIL", m.attempt,
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
            t.error = m.error;
            if (m.permanent || job.attempts >= job.max_attempts) {
                t.reason = m.permanent ? "failed permanently" : "failed, no attempts left";
                transition(m.id, job, JobState::dead, std::move(t));
            } else {
                t.reason = "failed";
                t.run_at = now + cfg.retry_delay_ms;
                transition(m.id, job, JobState::retrying, std::move(t));
            }
        }
        reply(identity, cmd::kAck, encode(Ack{m.id, m.attempt}), std::nullopt, OnFail::drop);
    }

    void on_done(const std::string& identity, const Reader& r) { on_result(identity, r, true); }
    void on_fail(const std::string& identity, const Reader& r) { on_result(identity, r, false); }

    // ---- the dispatch boundary ------------------------------------------------------------

    void handle(const Envelope& env) {
        if (auto* w = worker_of(env.identity)) w->last_seen = now;
        std::optional<std::uint64_t> req;
        try {
            if (env.frames != 3)
                throw ProtocolError(ErrorCode::bad_frame,
                                    fmt::format("expected 3 frames (version, command, body), got {}",
                                                env.frames));
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
            (this->*(found->handler))(env.identity, body.reader());
        } catch (const ProtocolError& e) {
            spdlog::debug("error reply {} to {}: {}", to_string(e.code()), env.command.substr(0, 32),
                          e.what());
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
            spdlog::warn("job {}: no worker reclaimed it after the restart", id);
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
        Millis next = std::min(next_heartbeat, now + 1000);
        if (!timers.empty()) next = std::min(next, timers.top().at);
        if (!wait_deadlines.empty()) next = std::min(next, wait_deadlines.top().at);
        for (const auto& [inst, w] : workers)
            next = std::min(next, w.last_seen + cfg.worker_timeout_ms + 1);
        for (JobId id : orphans)
            if (auto l = live.find(id); l != live.end())
                next = std::min(next, l->second.orphan_deadline);
        return next;
    }

    // ---- dispatch -------------------------------------------------------------------------

    void dispatch() {
        if (!dispatch_dirty) return;
        dispatch_dirty = false;
        for (auto& [inst, w] : workers) {
            for (const auto& q : w.queues) {
                while (w.credit > 0) {
                    auto id = ready.pop(q, w.commands);
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
                    l->second.worker_instance = w.instance;
                    w.jobs[*id] = ++w.seq;
                    --w.credit;
                    Dispatch d{*id, q, l->second.attempts, std::move(data->payload),
                               std::move(data->argv), w.seq};
                    outbox.push_back({w.identity, cmd::kDispatch, encode(d), OnFail::drop,
                                      std::nullopt});
                }
            }
        }
    }

    // ---- end of pass: commit, then reply --------------------------------------------------

    void flush() {
        if (in_txn) {
            if (!txn_failed) {
                try {
                    store->commit();
                } catch (const StoreError& e) {
                    txn_failed = true;
                    txn_error = e.what();
                }
            }
            if (txn_failed) store->rollback();
            in_txn = false;
        }
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
        }
        for (const auto& o : outbox) send_message(sock, o.identity, o.command, o.body);
        outbox.clear();
        for (JobId id : finished) {
            auto it = waiters.find(id);
            if (it == waiters.end()) continue;
            if (auto job = store->get_job(id)) {
                for (const auto& w : it->second)
                    send_message(sock, w.identity, cmd::kJob, encode_job(*job, w.req));
            }
            waiters.erase(it);
        }
        finished.clear();
    }

    void pass(bool readable) {
        now = clock.now_ms();
        if (readable) {
            for (std::size_t i = 0; i < cfg.max_messages_per_pass; ++i) {
                auto env = recv_message(sock, true);
                if (!env) break;
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
    }
};

const Broker::State::Command Broker::State::kCommands[10] = {
    {cmd::kSubmit, &State::on_submit},     {cmd::kStatus, &State::on_status},
    {cmd::kWait, &State::on_wait},         {cmd::kList, &State::on_list},
    {cmd::kPing, &State::on_ping},         {cmd::kRegister, &State::on_register},
    {cmd::kCredit, &State::on_credit},     {cmd::kHeartbeat, &State::on_heartbeat},
    {cmd::kDone, &State::on_done},         {cmd::kFail, &State::on_fail},
};

Broker::Broker(BrokerConfig config, std::unique_ptr<Store> store, const Clock& clock)
    : s_(std::make_unique<State>(std::move(config), std::move(store), clock)) {
    s_->now = clock.now_ms();
    s_->rebuild();
    auto& sock = s_->sock;
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 100000);
    sock.set(zmq::sockopt::rcvhwm, 100000);
    sock.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(s_->cfg.max_message));
    sock.bind(s_->cfg.listen);
    spdlog::info("recovered {} unfinished jobs ({} ready, {} running awaiting their workers)",
                 s_->live.size(), s_->ready.size(), s_->orphans.size());
}

Broker::~Broker() = default;

std::string Broker::endpoint() const { return s_->sock.get(zmq::sockopt::last_endpoint); }

void Broker::run() {
    zmq::pollitem_t item{s_->sock.handle(), 0, ZMQ_POLLIN, 0};
    while (!stopping_.load(std::memory_order_relaxed)) {
        s_->now = s_->clock.now_ms();
        Millis wait = std::clamp<Millis>(s_->next_deadline() - s_->now, 0, 1000);
        bool readable = false;
        try {
            readable = zmq::poll(&item, 1, std::chrono::milliseconds(wait)) > 0;
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
        s_->pass(readable);
    }
    spdlog::info("broker stopping");
}

}  // namespace errand::broker
