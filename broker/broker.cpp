// The broker's loop and its sessions: sockets, the command table, connections and workers,
// waiters, the outbox, group commit and snapshots for other threads. The job rules are the
// engine's (engine.hpp); a handler here decodes a request, asks the engine or the sessions, and
// queues the reply. docs/ARCHITECTURE.md follows one job through it.
#include "broker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <deque>
#include <limits>
#include <random>
#include <unordered_set>

#include "engine.hpp"
#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/log_fields.hpp"
#include "errand/transport.hpp"
#include "errand/utf8.hpp"
#include "reads.hpp"
#include "waiters.hpp"
#include "workers.hpp"

namespace errand::broker {
namespace {

// Most rows one PURGE or RETRY --dead touches; clients repeat until fewer come back.
constexpr std::size_t kAdminBatch = 10000;
constexpr std::size_t kRecentEvents = 500;
// STATS and QUEUES waiting for the read side at most, and how often their view is taken at most.
constexpr std::size_t kMaxWaitingReads = 10000;
constexpr Millis kReadViewEveryMs = 5;

// What becomes of a queued message when the pass's commit fails. A reply that reports a write
// (SUBMITTED, OK, a fresh ACK) must not leave as if the write happened.
enum class OnFail {
    send,   // it does not depend on the commit (reads, errors, acks of results applied before)
    error,  // it becomes ERROR storage (a client's request: the client is told)
    drop,   // it is not sent (a worker resends its result; a dispatch never happened)
};

struct Outgoing {
    std::string identity;
    std::string_view command;
    std::string body;
    OnFail on_fail = OnFail::send;
    std::optional<std::uint64_t> req;
};

// A BATCH_SEAL of the current pass, answered once the pass's batch changes are written.
struct SealReply {
    std::string identity;
    std::uint64_t req = 0;
    JobId id = 0;
};

// A SUBMIT with wait_ms of the current pass, waiting for the commit.
struct SubmitWait {
    std::string identity;
    std::uint64_t req = 0;
    JobId id = 0;
    Millis timeout_ms = 0;
};

// Identities of messages that came in on the admin (inproc) socket. ROUTER-generated identities
// are 5 bytes starting with 0 and peers cannot choose one that starts with 0, so no peer of the
// main socket can have this prefix.
const std::string kAdminPrefix("\0admin/", 7);

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

EngineConfig engine_config(const BrokerConfig& c) {
    EngineConfig e;
    e.retry_delay_ms = c.retry_delay_ms;
    e.retry_cap_ms = c.retry_cap_ms;
    e.timeout_grace_ms = c.timeout_grace_ms;
    e.orphan_grace_ms = c.worker_timeout_ms;
    e.retention_ms = c.retention_ms;
    e.dead_retention_ms = c.dead_retention_ms;
    e.retention_batch = c.retention_batch;
    e.max_queues = c.max_queues;
    return e;
}

// A WORKER_CONTROL as it travels to the other brokers of a shared database (NOTIFY payloads are
// text): "ACTION CONCURRENCY HEX(WORKER)", the worker name in hex as it may hold any bytes.
std::string control_line(const WorkerControlRequest& m) {
    std::string line = fmt::format("{} {} ", m.action, m.concurrency);
    for (unsigned char c : m.worker)
        line += fmt::format("{:02x}", c);
    return line;
}

// The request a control line stands for, checked as WORKER_CONTROL is; nullopt when it is not one.
std::optional<WorkerControlRequest> parse_control_line(std::string_view line) {
    auto a = line.find(' ');
    auto b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    if (b == std::string_view::npos || (line.size() - b - 1) % 2 != 0) return std::nullopt;
    WorkerControlRequest m;
    m.action = std::string(line.substr(0, a));
    auto n = line.substr(a + 1, b - a - 1);
    if (std::from_chars(n.data(), n.data() + n.size(), m.concurrency).ec != std::errc())
        return std::nullopt;
    for (std::size_t i = b + 1; i + 1 < line.size(); i += 2) {
        unsigned v = 0;
        if (std::from_chars(line.data() + i, line.data() + i + 2, v, 16).ec != std::errc())
            return std::nullopt;
        m.worker += static_cast<char>(v);
    }
    try {  // the same checks as the command's: a bad line changes nothing
        Body body(encode(m));
        return decode_worker_control_request(body.reader());
    } catch (const ProtocolError&) {
        return std::nullopt;
    }
}

}  // namespace

struct Broker::State {
    // One request as a handler sees it. `worker`: the sender's registration (commands that need
    // one get it checked before the handler runs; others may find it null).
    struct Request {
        const std::string& identity;
        const Reader& body;
        WorkerRec* worker;
    };
    using Handler = void (State::*)(const Request& rq);
    // Which keys may send a command when CURVE roles are in force.
    enum class Access { everyone, clients, workers };
    // The command table's row: everything the generic path checks and decides before (and
    // after) the handler, so no handler repeats it.
    struct Command {
        std::string_view name;
        Handler handler;
        Access access;
        bool needs_worker;  // only from a registered connection (else ERROR not_registered)
        bool writes;        // may change jobs or queues: its replies wait for the pass's commit
        OnFail on_fail;     // what its replies become if that commit fails (writes only)
    };
    static const Command kCommands[40];

    BrokerConfig cfg;
    std::unique_ptr<Store> store;
    const Clock& clock;
    zmq::context_t ctx{1};
    std::unique_ptr<ZapHandler> zap;  // started before sock binds, so no handshake escapes it
    zmq::socket_t sock{ctx, zmq::socket_type::router};
    zmq::socket_t admin{ctx, zmq::socket_type::router};  // bound only with cfg.admin_endpoint
    zmq::socket_t pub{ctx, zmq::socket_type::pub};       // bound only with cfg.events_endpoint
    std::string instance = random_hex(8);

    JobEngine engine;
    Workers workers;
    Waiters waiters;

    // Observability: metrics from committed events, the recent-events ring, snapshots.
    Metrics metrics;
    std::deque<EventView> recent;
    std::uint64_t event_seq = 0;
    Millis started_at = 0;
    Millis next_snapshot = 0;
    bool snapshot_dirty = true;

    // State of the current pass: wall time, and monotonic time for every duration (worker
    // expiry, heartbeats, waits, job timeouts), so a step of the wall clock expires nothing.
    Millis now = 0;
    Millis mono = 0;
    void set_time(Millis wall, Millis monotonic) {
        now = wall;
        mono = monotonic;
        engine.set_clock(wall, monotonic);
    }
    // A monotonic deadline as wall time from now (the loop's poll timeout is computed in it).
    Millis wall_of(Millis at) const { return now + (at - mono); }
    OnFail fate = OnFail::send;  // of reply(): set from the command being handled
    bool txn_failed = false;
    std::string txn_error;
    std::vector<Outgoing> outbox;
    std::vector<SealReply> seal_replies;  // this pass's BATCH_SEALs (answer_seals())
    std::vector<SubmitWait> submit_waits;
    Millis next_heartbeat = 0;
    Millis next_status = 0;
    bool credit_added = true;    // a worker got credit: dispatch() looks for jobs for it
    bool needs_rebuild = false;  // a shared store was unreachable when the engine reloaded
    Millis next_sweep = 0;
    Millis next_wait_poll = 0;
    // Every message leaves through send(): onto the socket, or into `captured` (the test seam).
    std::vector<Envelope>* captured = nullptr;

    // STATS and QUEUES of this pass, answered after its commit from a ReadView (reads.hpp): on
    // the read side's thread, or inline when captured. `changes` counts what may alter a view;
    // a view is taken again only when it moved (or a second passed: rates decay).
    struct PendingRead {
        std::string identity;
        std::string_view command;
        std::uint64_t req = 0;
    };
    std::vector<PendingRead> pending_reads;
    std::unique_ptr<ReadSide> reads;  // created by run()
    std::shared_ptr<ReadView> read_view;
    std::uint64_t changes = 0;
    std::uint64_t read_view_changes = 0;
    Millis read_view_at = 0;    // monotonic
    Millis next_read_view = 0;  // monotonic: not taken again before

    State(BrokerConfig c, std::unique_ptr<Store> s, const Clock& clk)
        : cfg(std::move(c)),
          store(std::move(s)),
          clock(clk),
          engine(engine_config(cfg), *store),
          waiters(cfg.max_waits, cfg.max_waits_total, cfg.wait_idle_ms) {}

    // ---- outgoing -------------------------------------------------------------------------

    // The reply to the request being handled; the command table decides its fate.
    void reply(const std::string& identity, std::string_view command, std::string body,
               std::optional<std::uint64_t> req) {
        outbox.push_back({identity, command, std::move(body), fate, req});
    }
    // A message whose content does not depend on this pass's commit.
    void reply_anyway(const std::string& identity, std::string_view command, std::string body,
                      std::optional<std::uint64_t> req) {
        outbox.push_back({identity, command, std::move(body), OnFail::send, req});
    }
    void reply_error(const std::string& identity, std::optional<std::uint64_t> req, ErrorCode code,
                     const std::string& message, std::optional<JobId> id = std::nullopt,
                     std::optional<std::uint32_t> attempt = std::nullopt) {
        // The message may quote the request (a command name, a queue name), which may be any
        // bytes: ERROR's message is a str, so it must be UTF-8 for a strict decoder.
        ErrorReply e{req, code, utf8_escaped(message), id, attempt};
        outbox.push_back({identity, cmd::kError, encode(e), OnFail::send, req});
    }
    // `req`: the refused command's, when it carried one (workers need not send any).
    void reply_stale(const std::string& identity, JobId id, std::uint32_t attempt,
                     std::optional<std::uint64_t> req) {
        reply_error(identity, req, ErrorCode::stale,
                    fmt::format("job {} attempt {} is no longer current", id, attempt), id,
                    attempt);
    }

    // ---- sessions and the engine ------------------------------------------------------------

    // An attempt the engine stopped: its worker forgets it and is told (ABORT).
    void abort_on_worker(const Aborted& a) {
        auto* w = workers.by_instance(a.holder->instance);
        if (!w) return;
        w->jobs.erase(a.id);
        outbox.push_back({w->identity, cmd::kAbort, encode(Abort{a.id, a.attempt, a.reason}),
                          OnFail::drop, std::nullopt});
    }

    // Every attempt `w` holds (but those in `keep`) ends without a result.
    void drop_worker_jobs(WorkerRec& w, const std::string& reason,
                          const std::unordered_set<JobId>* keep = nullptr) {
        for (auto it = w.jobs.begin(); it != w.jobs.end();) {
            if (keep && keep->count(it->first)) {
                ++it;
                continue;
            }
            engine.lose(it->first, &w.instance(), reason, now);
            it = w.jobs.erase(it);
        }
    }

    // After a failed commit: the engine reloads from the store, and dispatches of the
    // rolled-back pass never happened, so their credit goes back.
    void rebuild() {
        engine.rolled_back(workers.held(), now);
        for (auto& [inst, w] : workers.all()) {
            for (auto it = w.jobs.begin(); it != w.jobs.end();) {
                if (!engine.running(it->first)) {
                    it = w.jobs.erase(it);
                    ++w.credit;
                } else {
                    ++it;
                }
            }
        }
    }

    // ---- handlers: clients ----------------------------------------------------------------

    void on_submit(const Request& rq) {
        auto m = decode_submit(rq.body, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        if (m.wait_ms) waiters.check_limit(rq.identity);  // before anything is written
        SubmitReply rep;
        rep.req = m.req;
        for (const auto& s : engine.submit(std::move(m.jobs), now)) {
            rep.ids.push_back(s.id);
            rep.duplicate.push_back(s.duplicate);
        }
        reply(rq.identity, cmd::kSubmitted, encode(rep), m.req);
        if (m.wait_ms) {
            // Submit and wait: the same req is answered again when the job finishes. The waiter
            // is added once the pass has committed: a rolled-back job's id is handed out again.
            JobId id = rep.ids.front();
            if (!rep.duplicate.front() || engine.unfinished(id)) {
                submit_waits.push_back({rq.identity, m.req, id, *m.wait_ms});
            } else if (auto job = store->get_job(id)) {  // a duplicate that has finished
                reply_anyway(rq.identity, cmd::kJob, encode_job(*job, m.req), m.req);
            }
        }
    }

    JobInfo need_job(JobId id) {
        auto job = store->get_job(id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
        return std::move(*job);
    }

    void on_status(const Request& rq) {
        auto m = decode_id_request(rq.body);
        reply(rq.identity, cmd::kJob, encode_job(need_job(m.id), m.req), m.req);
    }

    void on_wait(const Request& rq) {
        auto m = decode_wait(rq.body);
        auto job = need_job(m.id);
        if (is_terminal(job.state)) {
            reply(rq.identity, cmd::kJob, encode_job(job, m.req), m.req);
            return;
        }
        waiters.add(rq.identity, m.req, m.id, mono + m.timeout_ms, mono);
        spdlog::debug("{}: a client waits for it (up to {} ms)",
                      job_fields(m.id, job.queue, job.attempts), m.timeout_ms);
    }

    void on_list(const Request& rq) {
        auto m = decode_list(rq.body);
        reply(rq.identity, cmd::kJobs, encode_jobs(store->list_jobs(m), m.req), m.req);
    }

    void on_ping(const Request& rq) {
        auto req = rq.body.u64("req");
        reply(rq.identity, cmd::kPong, encode(Pong{req, "0.1.0", to_time(now)}), req);
    }

    void on_cancel(const Request& rq) {
        auto m = decode_id_request(rq.body);
        if (auto stopped = engine.cancel(m.id, now)) abort_on_worker(*stopped);
        reply(rq.identity, cmd::kJob, encode_job(need_job(m.id), m.req), m.req);
    }

    void on_run_now(const Request& rq) {
        auto m = decode_id_request(rq.body);
        engine.run_now(m.id, now);
        reply(rq.identity, cmd::kJob, encode_job(need_job(m.id), m.req), m.req);
    }

    void on_delete(const Request& rq) {
        auto m = decode_delete(rq.body);
        if (auto stopped = engine.remove(m.id, m.force, now)) abort_on_worker(*stopped);
        spdlog::info("job {} deleted{}", m.id, m.force ? " (force)" : "");
        reply(rq.identity, cmd::kOk, encode_req(m.req), m.req);
    }

    void on_retry(const Request& rq) {
        auto m = decode_retry(rq.body);
        std::vector<JobId> ids;
        if (m.id) {
            engine.revive(*m.id, now);
            ids.push_back(*m.id);
        } else {
            ids = engine.revive_dead(m.queue, kAdminBatch, now);
        }
        reply(rq.identity, cmd::kRetried, encode_ids(m.req, ids), m.req);
    }

    void on_pause(const Request& rq) {
        auto m = decode_pause(rq.body);
        if (m.for_ms) {
            engine.pause_until(m.queue, now + *m.for_ms);
            spdlog::info("queue {} paused for {}", m.queue, format_duration(*m.for_ms));
        } else {
            engine.set_paused(m.queue, true);
            spdlog::info("queue {} paused", m.queue);
        }
        reply(rq.identity, cmd::kOk, encode_req(m.req), m.req);
    }
    void on_resume(const Request& rq) {
        auto m = decode_queue_request(rq.body);
        engine.set_paused(m.queue, false);
        spdlog::info("queue {} resumed", m.queue);
        reply(rq.identity, cmd::kOk, encode_req(m.req), m.req);
    }

    // ---- handlers: queue settings (the engine's limits) ------------------------------------

    QueueSettings queue_settings(const std::string& queue) const {
        auto l = engine.limits(queue);
        QueueSettings s{queue, l.max_running, l.rate, std::nullopt, engine.held(queue)};
        if (l.rate_per_ms) s.rate_per = std::chrono::milliseconds(*l.rate_per_ms);
        s.max_attempts = l.max_attempts;
        if (l.timeout_ms) s.timeout = std::chrono::milliseconds(*l.timeout_ms);
        s.priority = l.priority;
        if (l.retention_ms) s.retention = std::chrono::milliseconds(*l.retention_ms);
        if (l.expires_in_ms) s.expires_in = std::chrono::milliseconds(*l.expires_in_ms);
        return s;
    }
    void on_queue_set(const Request& rq) {
        auto m = decode_queue_set(rq.body);
        auto l = engine.limits(m.queue);
        if (m.max_running) l.max_running = m.max_running;
        if (m.rate) {
            l.rate = m.rate;
            l.rate_per_ms = m.rate_per_ms;
        }
        if (m.max_attempts) l.max_attempts = m.max_attempts;
        if (m.timeout_ms) l.timeout_ms = m.timeout_ms;
        if (m.priority) l.priority = m.priority;
        if (m.retention_ms) l.retention_ms = m.retention_ms;
        if (m.expires_in_ms) l.expires_in_ms = m.expires_in_ms;
        engine.set_limits(m.queue, l);
        spdlog::info(
            "queue {} set:{}{}", m.queue,
            l.max_running ? fmt::format(" max_running={}", *l.max_running) : "",
            l.rate ? fmt::format(" rate={}/{}", *l.rate, format_duration(l.rate_per_ms.value_or(0)))
                   : "");
        reply(rq.identity, cmd::kQueue, encode_queue(m.req, queue_settings(m.queue)), m.req);
    }
    void on_queue_unset(const Request& rq) {
        auto m = decode_queue_unset(rq.body);
        auto l = engine.limits(m.queue);
        for (const auto& name : m.unset) {
            if (name == "max_running") l.max_running.reset();
            if (name == "rate") {
                l.rate.reset();
                l.rate_per_ms.reset();
            }
            if (name == "max_attempts") l.max_attempts.reset();
            if (name == "timeout") l.timeout_ms.reset();
            if (name == "priority") l.priority.reset();
            if (name == "retention") l.retention_ms.reset();
            if (name == "expires_in") l.expires_in_ms.reset();
        }
        engine.set_limits(m.queue, l);
        spdlog::info("queue {} unset: {}", m.queue, fmt::join(m.unset, ", "));
        reply(rq.identity, cmd::kQueue, encode_queue(m.req, queue_settings(m.queue)), m.req);
    }
    void on_queue_show(const Request& rq) {
        auto m = decode_queue_request(rq.body);
        reply(rq.identity, cmd::kQueue, encode_queue(m.req, queue_settings(m.queue)), m.req);
    }

    void on_purge(const Request& rq) {
        auto m = decode_purge(rq.body);
        Millis before = m.older_than_ms ? now - *m.older_than_ms : now + 1;
        auto total = engine.purge(m.state, m.queue, before, kAdminBatch);
        reply(rq.identity, cmd::kPurged, encode_count(m.req, total), m.req);
    }

    // ---- handlers: cron schedules (the engine's broker/schedules.cpp) ----------------------

    void on_schedule_add(const Request& rq) {
        auto m = decode_schedule_add(rq.body, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        auto s = engine.add_schedule(std::move(m.schedule), now);
        spdlog::info("schedule {} added: '{}' in {}, queue {}", s.name, s.cron, s.zone,
                     s.job.queue);
        reply(rq.identity, cmd::kSchedule, encode_schedule(m.req, s), m.req);
    }
    void on_schedule_list(const Request& rq) {
        auto req = rq.body.u64("req");
        // Without payloads (SCHEDULE_SHOW has them): 1000 schedules of 1 MiB each would not fit
        // in a message.
        auto all = engine.schedules();
        for (auto& s : all)
            s.job.payload.clear();
        reply(rq.identity, cmd::kSchedules, encode_schedules(req, all), req);
    }
    void on_schedule_show(const Request& rq) {
        auto m = decode_schedule_request(rq.body);
        auto s = engine.schedule(m.name);
        if (!s)
            throw ProtocolError(ErrorCode::not_found,
                                fmt::format("no schedule named '{}'", m.name));
        reply(rq.identity, cmd::kSchedule, encode_schedule(m.req, *s), m.req);
    }
    void on_schedule_remove(const Request& rq) {
        auto m = decode_schedule_request(rq.body);
        engine.remove_schedule(m.name);
        spdlog::info("schedule {} removed", m.name);
        reply(rq.identity, cmd::kOk, encode_req(m.req), m.req);
    }
    void set_schedule_paused(const Request& rq, bool pause) {
        auto m = decode_schedule_request(rq.body);
        auto s = engine.pause_schedule(m.name, pause, now);
        spdlog::info("schedule {} {}", m.name, pause ? "paused" : "resumed");
        reply(rq.identity, cmd::kSchedule, encode_schedule(m.req, s), m.req);
    }
    // ---- handlers: batches (the engine's broker/batches.cpp) --------------------------------

    void on_batch_open(const Request& rq) {
        auto m = decode_batch_open(rq.body);
        BatchInfo b;
        b.description = std::move(m.description);
        b.on_complete = std::move(m.on_complete);
        b.on_success = std::move(m.on_success);
        auto opened = engine.open_batch(std::move(b), m.token, now);
        spdlog::info("batch {} opened{}", opened.id,
                     opened.description.empty() ? "" : ": " + opened.description);
        reply(rq.identity, cmd::kBatch, encode_batch(m.req, opened), m.req);
    }
    void on_batch_seal(const Request& rq) {
        auto m = decode_batch_request(rq.body);
        engine.seal_batch(m.id, now);
        // Answered once the pass's batch changes are written (answer_seals()).
        seal_replies.push_back({rq.identity, m.req, m.id});
    }
    // BATCH_SEAL's replies: the batches as the pass leaves them (the seal and the callbacks it
    // fired are written by engine.before_commit()). A failed pass answers them with its error.
    void answer_seals() {
        for (const auto& s : seal_replies) {
            if (!txn_failed) {
                try {
                    if (auto b = engine.batch(s.id)) {
                        spdlog::info("batch {} sealed with {} jobs ({} pending)", b->id, b->total,
                                     b->pending);
                        outbox.push_back({s.identity, cmd::kBatch, encode_batch(s.req, *b),
                                          OnFail::error, s.req});
                    } else {
                        reply_error(s.identity, s.req, ErrorCode::not_found,
                                    fmt::format("no batch {}", s.id));
                    }
                    continue;
                } catch (const StoreError& e) {
                    txn_failed = true;
                    txn_error = e.what();
                }
            }
            // The pass failed: flush() turns this into its storage error.
            outbox.push_back({s.identity, cmd::kBatch, std::string(), OnFail::error, s.req});
        }
        seal_replies.clear();
    }
    void on_batch_show(const Request& rq) {
        auto m = decode_batch_request(rq.body);
        auto b = engine.batch(m.id);
        if (!b) throw ProtocolError(ErrorCode::not_found, fmt::format("no batch {}", m.id));
        reply(rq.identity, cmd::kBatch, encode_batch(m.req, *b), m.req);
    }
    void on_batch_list(const Request& rq) {
        auto m = decode_batch_list(rq.body);
        reply(rq.identity, cmd::kBatches, encode_batches(m.req, engine.batches(m.limit, m.before)),
              m.req);
    }

    void on_schedule_pause(const Request& rq) { set_schedule_paused(rq, true); }
    void on_schedule_resume(const Request& rq) { set_schedule_paused(rq, false); }

    // STATS and QUEUES wait for the end of the pass (answer_reads).
    void on_queues(const Request& rq) { defer_read(rq, cmd::kQueues); }
    void on_stats(const Request& rq) { defer_read(rq, cmd::kStats); }
    void defer_read(const Request& rq, std::string_view command) {
        auto req = rq.body.u64("req");
        if (pending_reads.size() + (reads ? reads->waiting() : 0) >= kMaxWaitingReads)
            throw ProtocolError(ErrorCode::too_large,
                                fmt::format("{} STATS and QUEUES requests are waiting already; "
                                            "ask again later",
                                            kMaxWaitingReads));
        pending_reads.push_back({rq.identity, command, req});
    }

    void on_history(const Request& rq) {
        auto m = decode_id_request(rq.body);
        auto events = store->events(m.id);
        if (events.empty()) need_job(m.id);
        reply(rq.identity, cmd::kEvents, encode_events(m.req, m.id, events), m.req);
    }

    // ---- handlers: observability (answered from memory; they never touch the store) -------

    // Every queue the engine counts or has paused, in no order: for STATS and QUEUES (ReadView)
    // and the HTTP side (Snapshot).
    std::vector<QueueView> queue_views() const {
        std::vector<QueueView> out;
        out.reserve(engine.counts().size() + engine.paused().size());
        auto row = [&](const std::string& q, const StateCounts* c) {
            QueueView r;
            r.name = q;
            r.paused = engine.is_paused(q);
            if (c) r.counts = *c;
            r.oldest_ready_at = engine.oldest_ready(q);
            r.paused_until = engine.paused_until(q);
            r.limits = engine.limits(q);
            r.held = engine.held(q);
            if (auto m = metrics.queues.find(q); m != metrics.queues.end()) {
                r.submitted = m->second.submitted;
                r.succeeded = m->second.succeeded;
                r.failed = m->second.failed;
                r.dead = m->second.dead;
                r.cancelled = m->second.cancelled;
                r.finished_per_second = m->second.finished.per_second(now);
                r.submitted_per_second = m->second.submitted_rate.per_second(now);
            }
            out.push_back(std::move(r));
        };
        for (const auto& [q, c] : engine.counts())
            row(q, &c);
        for (const auto& q : engine.paused())
            if (!engine.counts().count(q)) row(q, nullptr);
        for (const auto& [q, l] : engine.all_limits())
            if (!engine.counts().count(q) && !engine.is_paused(q)) row(q, nullptr);
        return out;
    }

    // What STATS and QUEUES report, copied from the loop's state (no store access).
    std::shared_ptr<ReadView> take_read_view() {
        auto v = std::make_shared<ReadView>();
        StatsReply& rep = v->stats;
        rep.time = to_time(now);
        rep.started_at = to_time(started_at);
        rep.workers = workers.size();
        for (const auto& [inst, w] : workers.all())
            rep.running += w.jobs.size();
        rep.waits = waiters.size();
        rep.commits = metrics.commit_seconds.count;
        rep.commit_failures = metrics.commit_failures;
        rep.commit_seconds_sum = metrics.commit_seconds.sum;
        rep.commit_jobs_sum = static_cast<std::uint64_t>(metrics.commit_jobs.sum);
        if (!cfg.events_endpoint.empty())
            rep.events_endpoint = pub.get(zmq::sockopt::last_endpoint);
        if (engine.shared()) {
            rep.broker = store->broker_name();
            rep.brokers = engine.cluster();
        }
        v->queues = queue_views();
        return v;
    }

    // After the pass's commit: the pass's STATS and QUEUES get a view that has seen it.
    void answer_reads() {
        if (pending_reads.empty()) return;
        const bool moved = !read_view || changes != read_view_changes ||
                           mono - read_view_at >= 1000 || engine.shared();
        if (moved) {
            if (mono < next_read_view && !captured) return;  // next_deadline() comes back
            read_view = take_read_view();
            read_view_changes = changes;
            read_view_at = mono;
            next_read_view = mono + kReadViewEveryMs;
        }
        for (auto& r : pending_reads) {
            if (captured || !reads) {
                send(r.identity, r.command,
                     r.command == cmd::kQueues ? answer_queues(*read_view, r.req)
                                               : answer_stats(*read_view, r.req));
            } else {
                reads->ask(r.identity, r.command, r.req, read_view);
            }
        }
        pending_reads.clear();
    }

    void on_workers(const Request& rq) {
        auto req = rq.body.u64("req");
        reply(rq.identity, cmd::kWorkers, encode_workers(req, worker_infos()), req);
    }

    // The workers by name, each with its running jobs by id (WORKERS, the HTTP snapshot).
    std::vector<WorkerInfo> worker_infos() const {
        std::vector<WorkerInfo> out;
        for (const auto& [inst, w] : workers.all()) {
            WorkerInfo x{w.name(),   inst,         w.host,
                         w.pid,      w.queues,     w.concurrency,
                         w.prefetch, w.credit,     to_time(w.last_seen),
                         {},         w.reconnects, std::string(w.state())};
            for (const auto& [id, seq] : w.jobs)
                if (auto r = engine.running(id)) x.jobs.push_back(std::move(*r));
            std::sort(x.jobs.begin(), x.jobs.end(),
                      [](const auto& a, const auto& b) { return a.id < b.id; });
            out.push_back(std::move(x));
        }
        std::sort(out.begin(), out.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        return out;
    }

    // The latest committed events (this broker run only), oldest first.
    void on_feed(const Request& rq) {
        auto m = decode_feed(rq.body);
        std::vector<JobEvent> out;
        for (auto it = recent.rbegin(); it != recent.rend() && out.size() < m.limit; ++it) {
            if (it->seq <= m.after) break;
            if (m.queue && it->queue != *m.queue) continue;
            out.push_back(*it);
        }
        std::reverse(out.begin(), out.end());
        reply(rq.identity, cmd::kFeed, encode_feed(m.req, out), m.req);
    }

    // ---- handlers: workers ----------------------------------------------------------------

    void on_register(const Request& rq) {
        auto m = decode_register(rq.body);
        const WorkerRec* before = workers.by_instance(m.instance);
        if (m.reconnects > 0 && (!before || before->reconnects != m.reconnects))
            ++metrics.worker_reconnects;  // not again for a resent REGISTER
        std::vector<WorkerRec> replaced;
        auto& w = workers.enroll(rq.identity, m, now, &replaced);
        w.last_heard = mono;
        for (auto& old : replaced)
            drop_worker_jobs(old, "worker lost");
        RegisteredReply rep;
        rep.req = m.req;
        rep.heartbeat_ms = cfg.heartbeat_ms;
        rep.expiry_ms = cfg.worker_timeout_ms;
        rep.max_result = cfg.max_result;
        rep.max_message = cfg.max_message;
        rep.max_batch = cfg.max_batch;
        rep.result_credit = true;
        std::unordered_set<JobId> kept;
        for (const auto& h : m.held) {
            if (engine.adopt(h.id, h.attempt, w.holder)) {
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
        spdlog::info("worker {} registered: host={} pid={} queues=[{}] concurrency={} held={}/{}",
                     w.name(), w.host, w.pid, fmt::join(w.queues, ","), w.concurrency,
                     rep.held_ok.size(), m.held.size());
        reply(rq.identity, cmd::kRegistered, encode(rep), m.req);
    }

    void on_credit(const Request& rq) {
        auto n = decode_credit(rq.body);
        if (rq.worker->draining || rq.worker->quiet) return;
        rq.worker->add_credit(n);
        credit_added = true;
    }

    void on_heartbeat(const Request& rq) {
        auto m = decode_worker_heartbeat(rq.body);
        auto& w = *rq.worker;
        std::unordered_set<JobId> running(m.running.begin(), m.running.end());
        std::vector<JobId> missing;
        for (const auto& [id, seq] : w.jobs)
            if (seq != 0 && seq <= m.seq && !running.count(id)) missing.push_back(id);
        for (JobId id : missing) {
            w.jobs.erase(id);
            if (auto r = engine.running(id); r && engine.lose(id, nullptr, "dispatch lost", now))
                spdlog::warn("{}: worker {} does not hold it (dispatch lost)",
                             job_fields(id, r->queue, r->attempt), w.name());
        }
    }

    // Acknowledgements owed for results: `again` for results applied before (sent even if this
    // pass fails), `fresh` for those this pass applies (dropped if it fails: the worker resends).
    struct Acks {
        std::vector<Ack> again, fresh;
    };

    void apply_result(const std::string& identity, JobResult m, Acks& acks,
                      std::optional<std::uint64_t> req) {
        JobId id = m.id;
        std::uint32_t attempt = m.attempt;
        auto f = engine.finish(std::move(m), now);
        switch (f.verdict) {
            case Verdict::applied:
                if (f.holder)
                    if (auto* w = workers.by_instance(f.holder->instance)) w->jobs.erase(id);
                acks.fresh.push_back({id, attempt});
                break;
            case Verdict::already_applied:
                acks.again.push_back({id, attempt});
                break;
            case Verdict::stale:
                reply_stale(identity, id, attempt, req);
                break;
        }
    }

    void on_result(const Request& rq, bool ok) {
        auto m = decode_result(rq.body, ok, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        Acks acks;
        apply_result(rq.identity, std::move(m), acks, rq.body.peek_u64("req"));
        for (const auto& a : acks.again)
            reply_anyway(rq.identity, cmd::kAck, encode(a), std::nullopt);
        for (const auto& a : acks.fresh)
            reply(rq.identity, cmd::kAck, encode(a), std::nullopt);
    }
    void on_done(const Request& rq) { on_result(rq, true); }
    void on_fail(const Request& rq) { on_result(rq, false); }

    // RESULTS: the same as one DONE/FAIL per element, answered with one ACKS (per kind of ack),
    // then its credit added as a CREDIT's would be: after the results, whose slots it refills.
    void on_results(const Request& rq) {
        auto m = decode_results_message(rq.body, {cfg.max_payload, cfg.max_result, cfg.max_batch});
        Acks acks;
        for (auto& r : m.results)
            apply_result(rq.identity, std::move(r), acks, rq.body.peek_u64("req"));
        if (m.credit > 0)
            if (auto* w = workers.of(rq.identity); w && !w->draining && !w->quiet) {
                w->add_credit(m.credit);
                credit_added = true;
            }
        if (!acks.again.empty())
            reply_anyway(rq.identity, cmd::kAcks, encode_acks(acks.again), std::nullopt);
        if (!acks.fresh.empty())
            reply(rq.identity, cmd::kAcks, encode_acks(acks.fresh), std::nullopt);
    }

    // DRAIN: the worker is stopping. It gets no more jobs, whatever credit it had or sends.
    void on_drain(const Request& rq) {
        auto& w = *rq.worker;
        w.draining = true;
        w.credit = 0;
        spdlog::info("worker {} is draining: {} jobs running, no more will be dispatched to it",
                     w.name(), w.jobs.size());
    }

    // WORKER_CONTROL: quiet, stop, resume or resize the workers `worker` names (a name: all its
    // instances; or one instance id), tell each (CONTROL), and answer with them as WORKERS
    // lists them. The broker sets their credit itself; a worker sends no CREDIT for a CONTROL.
    // Nothing is stored: a worker remembers its own state (REGISTER `state`, `concurrency`).
    // On a shared database the command also goes to the other brokers (announce_control), for
    // the workers registered there; this broker cannot know those, so while another broker is
    // alive it answers with its own (perhaps none) rather than not_found.
    void on_worker_control(const Request& rq) {
        auto m = decode_worker_control_request(rq.body);
        auto targets = workers.named(m.worker);
        if (targets.empty() && !others_alive())
            throw ProtocolError(ErrorCode::not_found,
                                fmt::format("no worker named '{}' (nor with that instance id) is "
                                            "registered with this broker",
                                            m.worker));
        if (engine.shared()) {
            try {
                store->announce_control(control_line(m));
            } catch (const StoreError& e) {
                throw ProtocolError(ErrorCode::storage,
                                    fmt::format("cannot reach the other brokers, nothing was "
                                                "changed: {}",
                                                e.what()));
            }
        }
        apply_control(m, targets);
        std::vector<WorkerInfo> changed;
        auto all = worker_infos();
        for (auto& x : all)
            for (WorkerRec* w : targets)
                if (x.instance == w->instance()) changed.push_back(std::move(x));
        reply(rq.identity, cmd::kWorkers, encode_workers(m.req, changed), m.req);
    }

    // Whether other brokers share this one's database (seen within the last minute).
    bool others_alive() {
        if (!engine.shared()) return false;
        try {
            const auto self = store->broker_name();
            for (const auto& b : store->cluster())
                if (!self || b.id != *self) return true;
            return false;
        } catch (const StoreError& e) {
            throw ProtocolError(ErrorCode::storage,
                                fmt::format("cannot read the cluster's brokers: {}", e.what()));
        }
    }

    // Applies one WORKER_CONTROL to `targets` and tells each (CONTROL).
    void apply_control(const WorkerControlRequest& m, const std::vector<WorkerRec*>& targets) {
        for (WorkerRec* w : targets) {
            const auto before = w->state();
            if (m.action == "quiet") {
                if (!w->draining) {
                    w->quiet = true;
                    w->credit = 0;
                }
            } else if (m.action == "resume") {
                // A stopping worker is on its way out: it stays stopping.
                if (!w->draining && w->quiet) {
                    w->quiet = false;
                    w->add_credit(w->concurrency + w->prefetch);
                    credit_added = true;
                }
            } else if (m.action == "stop") {
                w->draining = true;  // as its own DRAIN would
                w->credit = 0;
            } else {  // concurrency
                const std::uint32_t old = w->concurrency;
                w->concurrency = m.concurrency;
                if (w->quiet || w->draining) {
                    w->credit = 0;
                } else if (m.concurrency > old) {
                    w->add_credit(m.concurrency - old);
                    credit_added = true;
                } else {
                    w->cap_credit();
                }
            }
            spdlog::info("worker {} ({}): {}{} -> {}, concurrency {}", w->name(), w->instance(),
                         m.action,
                         m.action == "concurrency" ? fmt::format(" {}", m.concurrency) : "",
                         before == w->state() ? std::string(before)
                                              : fmt::format("{} (was {})", w->state(), before),
                         w->concurrency);
            outbox.push_back({w->identity, cmd::kControl,
                              encode(WorkerControl{std::string(w->state()), w->concurrency}),
                              OnFail::send, std::nullopt});
        }
    }

    // RELEASE: a draining worker hands back an attempt it did not finish (never started, or
    // stopped). Accepted from any connection, like results.
    void on_release(const Request& rq) {
        auto m = decode_ack(rq.body);  // the same two fields: id, attempt
        auto f = engine.release(m.id, m.attempt, now);
        if (f.verdict != Verdict::applied) {
            reply_stale(rq.identity, m.id, m.attempt, rq.body.peek_u64("req"));
            return;
        }
        if (f.holder)
            if (auto* w = workers.by_instance(f.holder->instance)) w->jobs.erase(m.id);
        reply(rq.identity, cmd::kAck, encode(Ack{m.id, m.attempt}), std::nullopt);
    }

    void on_progress(const Request& rq) { engine.progress(decode_progress(rq.body)); }

    // ---- the dispatch boundary: the checks every command shares, then its handler ----------

    void handle(const Envelope& env) {
        auto* sender = workers.of(env.identity);
        if (sender) {
            sender->last_seen = now;
            sender->last_heard = mono;
        }
        std::optional<std::uint64_t> req;
        // An error answering a worker's command about one attempt (DONE, FAIL, PROGRESS,
        // RELEASE) names that attempt, so a worker can tell which of its results it concerns.
        std::optional<JobId> id;
        std::optional<std::uint32_t> attempt;
        fate = OnFail::send;
        const Command* c = env.frames == 3 ? find_command(env.command) : nullptr;
        ++metrics.messages_received[c ? c->name : std::string_view("unknown")];
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
            if (!c) {
                req = peek_req(env.body);
                throw ProtocolError(ErrorCode::unknown_command,
                                    fmt::format("unknown command '{}'", env.command.substr(0, 32)));
            }
            Body body(env.body);  // throws bad_frame
            req = body.reader().peek_u64("req");
            if (c->access == Access::workers) {
                id = body.reader().peek_u64("id");
                if (auto a = body.reader().peek_u64("attempt");
                    a && *a <= std::numeric_limits<std::uint32_t>::max())
                    attempt = static_cast<std::uint32_t>(*a);
            }
            check_access(*c, env);
            // A pass after a failed reload (the shared database was gone): a write now would be
            // applied to a store whose memory is about to be reloaded, and half lost.
            if (c->writes && needs_rebuild)
                throw ProtocolError(ErrorCode::storage,
                                    "storage failure: the broker is reloading its state from the "
                                    "database; nothing was changed, try again");
            if (c->needs_worker && !sender) workers.registered(env.identity);  // throws
            fate = c->writes ? c->on_fail : OnFail::send;
            if (c->handler != &State::on_stats && c->handler != &State::on_queues &&
                c->handler != &State::on_ping)
                ++changes;
            (this->*(c->handler))(Request{env.identity, body.reader(), sender});
        } catch (const ProtocolError& e) {
            spdlog::debug("error reply {} to {}: {}", to_string(e.code()),
                          env.command.substr(0, 32), e.what());
            reply_error(env.identity, req, e.code(), e.what(), id, attempt);
        } catch (const StoreError& e) {
            txn_failed = true;
            txn_error = e.what();
            reply_error(env.identity, req, ErrorCode::storage,
                        fmt::format("storage failure: {}", e.what()), id, attempt);
        } catch (const std::exception& e) {
            spdlog::error("internal error handling {}: {}", env.command.substr(0, 32), e.what());
            reply_error(env.identity, req, ErrorCode::internal, e.what(), id, attempt);
        }
        fate = OnFail::send;
    }

    static const Command* find_command(std::string_view name) {
        for (const auto& c : kCommands)
            if (c.name == name) return &c;
        return nullptr;
    }

    // With CURVE, a key's role limits what it may do (docs/SECURITY.md), and a key revoked since
    // its connection was admitted (its file removed from --authorized-keys) may do nothing.
    // In-process senders (the HTTP side) carry no key and are trusted like the operator.
    void check_access(const Command& c, const Envelope& env) {
        if (!cfg.authorized_keys) return;
        const std::optional<Role> found =
            env.user_id.empty() ? Role::any : cfg.authorized_keys->role_of(env.user_id);
        if (!found)
            throw ProtocolError(ErrorCode::forbidden,
                                fmt::format("key '{}' is no longer authorised (its file is gone "
                                            "from --authorized-keys)",
                                            env.user_id));
        if (c.access == Access::everyone) return;
        const Role role = *found;
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
        for (const auto& a : engine.tick(now))
            abort_on_worker(a);
        for (auto it = workers.all().begin(); it != workers.all().end();) {
            auto& w = it->second;
            if (mono - w.last_heard > cfg.worker_timeout_ms) {
                spdlog::warn("worker {} lost: silent for {} ms, {} jobs return to the queue",
                             w.name(), mono - w.last_heard, w.jobs.size());
                drop_worker_jobs(w, "worker lost");
                ++changes;
                auto inst = it->first;
                ++it;
                workers.remove(inst);
            } else {
                ++it;
            }
        }
        if (mono >= next_sweep) {
            next_sweep = mono + 10'000;
            sweep_queues();
        }
        if (mono >= next_heartbeat) {
            auto body = encode_hb();
            for (auto& [inst, w] : workers.all())
                outbox.push_back({w.identity, cmd::kHeartbeat, body, OnFail::send, std::nullopt});
            next_heartbeat = mono + cfg.heartbeat_ms;
        }
    }

    // What a queue costs is given back once it has no jobs, no pause, no worker serving it and
    // no event for a minute (the rate windows of its metrics are empty): its counts, index
    // entries, name and /metrics series.
    void sweep_queues() {
        std::unordered_set<std::string> served;
        for (const auto& [inst, w] : workers.all())
            served.insert(w.queues.begin(), w.queues.end());
        auto active = [&](const std::string& q) {
            if (served.count(q)) return true;
            auto m = metrics.queues.find(q);
            return m != metrics.queues.end() && (m->second.finished.per_second(now) > 0 ||
                                                 m->second.submitted_rate.per_second(now) > 0);
        };
        auto gone = engine.sweep_queues(active);
        std::size_t series = 0;
        for (auto it = metrics.queues.begin(); it != metrics.queues.end();) {
            if (!engine.counts().count(it->first) && !engine.is_paused(it->first) &&
                !active(it->first)) {
                it = metrics.queues.erase(it);
                ++series;
            } else {
                ++it;
            }
        }
        if (!gone.empty() || series > 0) {
            snapshot_dirty = true;
            ++changes;
            spdlog::debug("forgot {} queues without jobs ({} metrics series)", gone.size(), series);
        }
    }

    std::string encode_hb() const { return Writer(1).str("instance", instance).take(); }

    Millis next_deadline() const {
        Millis next = engine.next_deadline(std::min(wall_of(next_heartbeat), now + 1000));
        next = std::min(next, wall_of(waiters.next_deadline(mono + 1000)));
        if (cfg.snapshots && snapshot_dirty) next = std::min(next, next_snapshot);
        if (!pending_reads.empty()) next = std::min(next, wall_of(next_read_view));
        if (cfg.on_status) next = std::min(next, next_status);
        for (const auto& [inst, w] : workers.all())
            next = std::min(next, wall_of(w.last_heard + cfg.worker_timeout_ms + 1));
        return next;
    }

    // ---- dispatch: free credit takes ready jobs -------------------------------------------

    void dispatch() {
        if (!engine.take_dispatch_hint() && !credit_added) return;
        credit_added = false;
        if (engine.shared()) return dispatch_shared();
        // Memory takes one job at a time, so weighted queues are picked per job.
        for (auto& [inst, w] : workers.all()) {
            while (w.credit > 0) {
                const std::string* q = workers.pick_queue(w, engine);
                if (!q) break;
                auto claims = engine.claim(*q, w.commands, 1, w.holder, now);
                if (claims.empty()) continue;  // the queue is not claimable any more
                send_dispatch(w, *q, std::move(claims.front()));
            }
        }
    }

    // A shared store: one claim per queue for all the workers that want it. In each round every
    // worker with credit picks a queue; the credit of the workers that picked the same queue
    // (and take the same kind of jobs) becomes one claim's slots, taken in turn so that a short
    // queue is spread across them; claim i goes to slot i. A queue that gave fewer jobs than
    // asked is not claimable again in this pass, so the next round's picks go elsewhere: each
    // round spends credit or rules out a queue, and the rounds end when no worker picks one.
    // A claim takes at most kMaxClaimSlots jobs (its statement carries a name per slot); a
    // group with more credit claims again in the next round.
    static constexpr std::size_t kMaxClaimSlots = 1000;
    std::size_t deal_turn = 0;
    void dispatch_shared() {
        struct Group {
            std::string queue;
            bool commands = false;
            std::vector<WorkerRec*> wanting;
        };
        for (;;) {
            std::vector<Group> groups;
            for (auto& [inst, w] : workers.all()) {
                if (w.credit == 0) continue;
                const std::string* q = workers.pick_queue(w, engine);
                if (!q) continue;
                auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
                    return g.commands == w.commands && g.queue == *q;
                });
                if (g == groups.end()) g = groups.insert(groups.end(), {*q, w.commands, {}});
                g->wanting.push_back(&w);
            }
            if (groups.empty()) return;
            for (auto& g : groups) {
                // Dealt from a different worker each time, so a trickle of jobs is spread too.
                std::vector<WorkerRec*> slots;
                const std::size_t n = g.wanting.size();
                const std::size_t first = deal_turn++ % n;
                for (std::uint32_t round = 0; slots.size() < kMaxClaimSlots; ++round) {
                    const std::size_t before = slots.size();
                    for (std::size_t k = 0; k < n && slots.size() < kMaxClaimSlots; ++k)
                        if (WorkerRec* w = g.wanting[(first + k) % n]; w->credit > round)
                            slots.push_back(w);
                    if (slots.size() == before) break;
                }
                std::vector<HolderRef> holders;
                holders.reserve(slots.size());
                for (WorkerRec* w : slots)
                    holders.push_back(w->holder);
                auto claims = engine.claim(g.queue, g.commands, holders, now);
                for (std::size_t i = 0; i < claims.size(); ++i)
                    send_dispatch(*slots[i], g.queue, std::move(claims[i]));
            }
        }
    }

    void send_dispatch(WorkerRec& w, const std::string& queue, Claim c) {
        w.jobs[c.id] = ++w.seq;
        --w.credit;
        Dispatch d{c.id,  queue,        c.attempt, std::move(c.payload), std::move(c.argv),
                   w.seq, c.timeout_ms, c.epoch};
        outbox.push_back({w.identity, cmd::kDispatch, encode(d), OnFail::drop, std::nullopt});
    }

    // ---- end of pass: commit, then reply --------------------------------------------------

    // Waiters of jobs finished through other brokers: told by their notifications, and, as a
    // backstop for notifications lost with a dropped connection, asked every second.
    void answer_remote_waits() {
        try {
            auto ids = store->finished_elsewhere();
            if (now >= next_wait_poll && waiters.size() > 0) {
                auto more = store->finished_among(waiters.ids());
                ids.insert(ids.end(), more.begin(), more.end());
                next_wait_poll = now + 1000;
            }
            for (const auto& a : engine.ended_elsewhere(ids))
                abort_on_worker(a);
            // WORKER_CONTROL sent to another broker, for the workers registered here.
            for (const auto& line : store->controls_elsewhere())
                if (auto m = parse_control_line(line)) apply_control(*m, workers.named(m->worker));
            for (const auto& o : outbox)  // the pass's own replies have gone already
                send(o.identity, o.command, o.body);
            outbox.clear();
            for (JobId id : ids) {
                auto list = waiters.take(id);
                if (list.empty()) continue;
                answer_waiters(id, list);
            }
        } catch (const StoreError& e) {
            spdlog::debug("waits of other brokers' jobs not checked: {}", e.what());
        }
    }

    // The job finished: its waiters get it; or, when it is gone (DELETE with force in the same
    // pass), not_found, as a WAIT for it would get now.
    void answer_waiters(JobId id, const std::vector<Waiter>& list) {
        auto job = store->get_job(id);
        for (const auto& w : list) {
            if (job) {
                send(w.identity, cmd::kJob, encode_job(*job, w.req));
            } else {
                send(w.identity, cmd::kError,
                     encode(ErrorReply{w.req, ErrorCode::not_found,
                                       fmt::format("job {} was deleted", id), std::nullopt,
                                       std::nullopt}));
            }
        }
    }

    void flush() {
        // Other brokers' waiters hear of this pass's finished jobs when it commits.
        if (!txn_failed && engine.shared() && !engine.finished().empty()) {
            try {
                store->announce(engine.finished());
            } catch (const StoreError& e) {
                txn_failed = true;
                txn_error = e.what();
            }
        }
        if (store->writing()) {
            ++changes;
            if (!txn_failed) {
                try {
                    auto t0 = std::chrono::steady_clock::now();
                    store->commit();
                    metrics.on_commit(
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                            .count(),
                        engine.events().size());
                } catch (const StoreError& e) {
                    txn_failed = true;
                    txn_error = e.what();
                }
            }
            if (txn_failed) {
                store->rollback();
                ++metrics.commit_failures;
            }
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
            try {
                rebuild();
                needs_rebuild = false;
            } catch (const StoreError& e) {
                // A shared database that went away: the broker keeps answering (storage
                // errors) and reloads once it is back. SQLite that cannot be read is fatal.
                if (!engine.shared()) {
                    spdlog::critical("cannot reload state after a failed commit: {}", e.what());
                    throw;
                }
                if (!needs_rebuild) spdlog::error("cannot reload state: {}", e.what());
                needs_rebuild = true;
            }
            txn_failed = false;
            submit_waits.clear();
            credit_added = true;
        } else {
            publish_committed();
        }
        // Committed: SUBMITs with wait_ms now wait like WAITs (if their job finished in this very
        // pass, the finished jobs below answer them).
        for (const auto& w : submit_waits)
            waiters.add(w.identity, w.req, w.id, mono + w.timeout_ms, mono, false);
        submit_waits.clear();
        for (const auto& o : outbox)
            send(o.identity, o.command, o.body);
        outbox.clear();
        for (JobId id : engine.finished()) {
            auto list = waiters.take(id);
            if (list.empty()) continue;
            answer_waiters(id, list);
        }
        engine.committed();
        if (engine.shared()) answer_remote_waits();
        // Waits past their deadline time out only now: one whose job finished in this very pass
        // has had its JOB above.
        auto lapsed = waiters.expire(mono, [&](JobId id, const Waiter& w) {
            send(w.identity, cmd::kError,
                 encode(ErrorReply{w.req, ErrorCode::timeout,
                                   fmt::format("job {} did not finish in time", id), std::nullopt,
                                   std::nullopt}));
        });
        if (lapsed) ++changes;
        if (lapsed) spdlog::debug("dropped {} waits whose clients stopped resending them", lapsed);
    }

    // After a successful commit: metrics, the recent ring and the PUB socket see the pass.
    void publish_committed() {
        auto& pending = engine.events();
        for (auto& p : pending) {
            p.event.seq = ++event_seq;
            metrics.on_event(MetricEvent{p.event.queue, p.event.from, p.event.to, to_ms(p.event.at),
                                         p.waited_ms, p.ran_ms, p.failed_attempt, p.event.reason});
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
    }

    // The live picture for the HTTP side; cheap (no store access), a few times a second.
    void publish_snapshot() {
        if (!cfg.snapshots || captured) return;
        auto snap = std::make_shared<Snapshot>();
        snap->at = now;
        snap->started_at = started_at;
        snap->queues = queue_views();
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

    // The state reload a failed commit left to do (the database was gone), before the pass's
    // requests: writes wait for it (handle()).
    void reload_if_needed() {
        if (!needs_rebuild) return;
        try {
            rebuild();
            needs_rebuild = false;
            spdlog::info("state reloaded from the database");
        } catch (const StoreError&) {
            // Still gone: this pass refuses writes; end_pass() tries again.
        }
    }

    // One pass: what arrived, then what time brings, then dispatch; commit; replies.
    void pass(bool readable, bool admin_readable = false) {
        set_time(clock.now_ms(), clock.monotonic_ms());
        reload_if_needed();
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
        end_pass();
        answer_reads();
        if (cfg.snapshots && (now >= next_snapshot || (snapshot_dirty && next_snapshot == 0)))
            publish_snapshot();
        if (cfg.on_status && now >= next_status) {
            cfg.on_status(status());
            next_status = now + cfg.status_interval_ms;
        }
    }

    void end_pass() {
        try {
            if (needs_rebuild) {
                rebuild();
                needs_rebuild = false;
                spdlog::info("state reloaded from the database");
            }
            tick();
            engine.before_commit();  // before dispatch: a callback it submits may go at once
            dispatch();
            engine.before_commit();  // a job dispatch() met past its expiry
        } catch (const StoreError& e) {
            txn_failed = true;
            txn_error = e.what();
        }
        answer_seals();
        flush();
    }

    BrokerStatus status() const {
        BrokerStatus st;
        for (const auto& [q, c] : engine.counts()) {
            st.ready += c[static_cast<std::size_t>(JobState::ready)];
            st.running += c[static_cast<std::size_t>(JobState::running)];
            st.scheduled += c[static_cast<std::size_t>(JobState::scheduled)] +
                            c[static_cast<std::size_t>(JobState::retrying)];
        }
        st.workers = workers.size();
        return st;
    }

    // After the last pass: waiters get ERROR shutting_down instead of silence, workers get
    // SHUTDOWN so they reconnect as soon as a broker is back instead of after expiry_ms.
    void shutdown() {
        std::size_t n = 0;
        waiters.drain([&](JobId id, const Waiter& w) {
            send(w.identity, cmd::kError,
                 encode(ErrorReply{w.req, ErrorCode::shutting_down,
                                   fmt::format("the broker is shutting down; job {} is not "
                                               "finished, wait again once it is back",
                                               id),
                                   std::nullopt, std::nullopt}));
            ++n;
        });
        auto body = encode_hb();
        for (const auto& [inst, w] : workers.all())
            send(w.identity, cmd::kShutdown, body);
        spdlog::info("told {} waiters and {} workers that the broker is stopping", n,
                     workers.size());
        // Give those last messages time to leave: the socket is closed with linger 0 otherwise.
        if (!captured) sock.set(zmq::sockopt::linger, 1000);
    }
};

// The command table: every command the broker accepts, who may send it, whether it needs a
// registered worker, whether it writes, and what its replies become if the pass's commit fails.
// Generic checks (frames, version, decoding, roles, registration, error replies) happen once in
// handle(), before any handler runs.
// clang-format off
const Broker::State::Command Broker::State::kCommands[40] = {
//   name             handler               access            worker writes on a failed commit
    {cmd::kSubmit,    &State::on_submit,    Access::everyone, false, true,  OnFail::error},
    {cmd::kStatus,    &State::on_status,    Access::everyone, false, false, OnFail::send},
    {cmd::kWait,      &State::on_wait,      Access::everyone, false, false, OnFail::send},
    {cmd::kList,      &State::on_list,      Access::everyone, false, false, OnFail::send},
    {cmd::kPing,      &State::on_ping,      Access::everyone, false, false, OnFail::send},
    {cmd::kQueues,    &State::on_queues,    Access::everyone, false, false, OnFail::send},
    {cmd::kHistory,   &State::on_history,   Access::everyone, false, false, OnFail::send},
    {cmd::kStats,     &State::on_stats,     Access::everyone, false, false, OnFail::send},
    {cmd::kWorkers,   &State::on_workers,   Access::everyone, false, false, OnFail::send},
    {cmd::kFeed,      &State::on_feed,      Access::everyone, false, false, OnFail::send},
    {cmd::kCancel,    &State::on_cancel,    Access::clients, false, true,  OnFail::error},
    {cmd::kRetry,     &State::on_retry,     Access::clients, false, true,  OnFail::error},
    {cmd::kPause,     &State::on_pause,     Access::clients, false, true,  OnFail::error},
    {cmd::kResume,    &State::on_resume,    Access::clients, false, true,  OnFail::error},
    {cmd::kPurge,     &State::on_purge,     Access::clients, false, true,  OnFail::error},
    {cmd::kScheduleAdd,    &State::on_schedule_add,    Access::clients,  false, true,  OnFail::error},
    {cmd::kScheduleList,   &State::on_schedule_list,   Access::everyone, false, false, OnFail::send},
    {cmd::kScheduleShow,   &State::on_schedule_show,   Access::everyone, false, false, OnFail::send},
    {cmd::kScheduleRemove, &State::on_schedule_remove, Access::clients,  false, true,  OnFail::error},
    {cmd::kSchedulePause,  &State::on_schedule_pause,  Access::clients,  false, true,  OnFail::error},
    {cmd::kScheduleResume, &State::on_schedule_resume, Access::clients,  false, true,  OnFail::error},
    {cmd::kBatchOpen,      &State::on_batch_open,      Access::clients,  false, true,  OnFail::error},
    {cmd::kBatchSeal,      &State::on_batch_seal,      Access::clients,  false, true,  OnFail::error},
    {cmd::kBatchShow,      &State::on_batch_show,      Access::everyone, false, false, OnFail::send},
    {cmd::kBatchList,      &State::on_batch_list,      Access::everyone, false, false, OnFail::send},
    {cmd::kRegister,  &State::on_register,  Access::workers, false, true,  OnFail::error},
    {cmd::kCredit,    &State::on_credit,    Access::workers, true,  false, OnFail::send},
    {cmd::kHeartbeat, &State::on_heartbeat, Access::workers, true,  true,  OnFail::drop},
    {cmd::kDone,      &State::on_done,      Access::workers, false, true,  OnFail::drop},
    {cmd::kFail,      &State::on_fail,      Access::workers, false, true,  OnFail::drop},
    {cmd::kResults,   &State::on_results,   Access::workers, false, true,  OnFail::drop},
    {cmd::kProgress,  &State::on_progress,  Access::workers, false, true,  OnFail::drop},
    {cmd::kDrain,     &State::on_drain,     Access::workers, true,  false, OnFail::send},
    {cmd::kRelease,   &State::on_release,   Access::workers, false, true,  OnFail::drop},
    {cmd::kWorkerControl, &State::on_worker_control, Access::clients, false, false, OnFail::send},
    {cmd::kRunNow,    &State::on_run_now,   Access::clients, false, true,  OnFail::error},
    {cmd::kDelete,    &State::on_delete,    Access::clients, false, true,  OnFail::error},
    {cmd::kQueueSet,   &State::on_queue_set,   Access::clients,  false, true,  OnFail::error},
    {cmd::kQueueUnset, &State::on_queue_unset, Access::clients,  false, true,  OnFail::error},
    {cmd::kQueueShow,  &State::on_queue_show,  Access::everyone, false, false, OnFail::send},
};
// clang-format on

Broker::Broker(BrokerConfig config, std::unique_ptr<Store> store, const Clock& clock)
    : s_(std::make_unique<State>(std::move(config), std::move(store), clock)) {
    s_->set_time(clock.now_ms(), clock.monotonic_ms());
    s_->engine.rebuild({}, s_->now);
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
                 s_->engine.live_count(), s_->engine.ready_count(), s_->engine.orphan_count());
}

Broker::~Broker() = default;

std::vector<Envelope> Broker::process(const Envelope& message, Millis now) {
    return process(message, now, now);
}

std::vector<Envelope> Broker::process(const Envelope& message, Millis now, Millis mono) {
    std::vector<Envelope> out;
    s_->captured = &out;
    s_->set_time(now, mono);
    s_->reload_if_needed();
    s_->handle(message);
    s_->end_pass();
    s_->answer_reads();
    s_->captured = nullptr;
    if (s_->cfg.snapshots) s_->publish_snapshot();  // what /metrics would render, every pass
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
    const bool admin = !s_->cfg.admin_endpoint.empty();
    s_->reads = std::make_unique<ReadSide>(s_->ctx, "inproc://errand-reads-" + s_->instance);
    std::vector<zmq::pollitem_t> items;
    while (!stopping_.load(std::memory_order_relaxed)) {
        s_->now = s_->clock.now_ms();
        Millis wait = std::clamp<Millis>(s_->next_deadline() - s_->now, 0, 1000);
        items.assign({{s_->sock.handle(), 0, ZMQ_POLLIN, 0},
                      {s_->reads->socket().handle(), 0, ZMQ_POLLIN, 0}});
        if (admin) items.push_back({s_->admin.handle(), 0, ZMQ_POLLIN, 0});
        // A shared store's notifications (other brokers' finished jobs) wake the loop too; its
        // socket changes when it reconnects.
        if (int fd = s_->store->notify_fd(); fd >= 0) items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
        try {
            zmq::poll(items.data(), items.size(), std::chrono::milliseconds(wait));
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
        if (items[1].revents & ZMQ_POLLIN)
            s_->reads->take_replies(
                [&](const std::string& identity, std::string_view command,
                    const std::string& body) { s_->send(identity, command, body); });
        s_->pass((items[0].revents & ZMQ_POLLIN) != 0,
                 admin && (items[2].revents & ZMQ_POLLIN) != 0);
    }
    spdlog::info("broker stopping");
    s_->shutdown();
}

}  // namespace errand::broker
