// Fuzz logic for the broker: a script of messages from fuzz bytes through Broker::process.
//
// Input layout (read with Input; running out of bytes just ends the script):
//   config:  heartbeat, worker timeout, retry delay and cap, timeout grace, retention (a few bytes)
//   then up to kMaxSteps steps, each:
//     advance  1 byte: < 0x80 adds that many ms to the fake clock, else (b & 0x7f) seconds
//     identity 1 byte: one of kIdentities (clients and workers share one small pool)
//     op       1 byte: a command built with the real encoders from the bytes that follow, a raw
//                      body, a raw envelope, a broker restart over the same database, or a fault
//                      armed for the next step (a failing write or commit)
// Ids, attempts and queues are drawn mostly from what the broker has handed out (SUBMITTED,
// DISPATCH), so scripts reach running jobs, results, retries, timeouts and lost workers.
//
// Oracles: every message the broker sends must be a well-formed body its peer can decode; the
// broker never answers `internal` (a bug by definition); a new job never gets an id handed out
// before; no (id, attempt) fencing token is dispatched twice; at the end the per-queue counts
// that QUEUES reports from memory must equal what the database holds; and the whole script holds
// at most broker_heap_bound(size) heap bytes at once (entries.hpp). Batches (oracle `batch`): a
// BATCH_OPEN never gets a batch id seen before; every batch object adds up (its finished counts
// at most its total, pending the rest, its state what they say, completed_at once complete);
// what is set once stays (sealed_at, completed_at, succeeded_at, complete_job, success_job, the
// total once sealed); and at the end each batch counts at least the members the database holds
// per state.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker.hpp"
#include "entries.hpp"
#include "errand/codec.hpp"
#include "forwarding_store.hpp"
#include "heap_meter.hpp"
#include "input.hpp"
#include "script.hpp"
#include "store_sqlite.hpp"

namespace errand::fuzz {
namespace {

using broker::Broker;
using broker::BrokerConfig;
using broker::SqliteStore;
using broker::Store;
using broker::StoreError;

constexpr Millis kStart = 1'700'000'000'000;

using script::kCommandNames;
using script::kIdentities;
using script::kInstances;
using script::kQueues;
constexpr std::array<std::string_view, 4> kTokens = {"t0", "t1", "t2", "t3"};
constexpr std::array<std::string_view, 3> kUniques = {"u0", "u1", "u2"};
constexpr std::array<JobState, 3> kTerminal = {JobState::succeeded, JobState::dead,
                                               JobState::cancelled};

[[noreturn]] void fail(std::string_view what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_broker: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

// ERRAND_FUZZ_SKIP=name,name turns off oracles by name (id-reuse, fence, internal, counts, batch)
// so a run can go on past a known bug that awaits its fix.
bool skipped(std::string_view oracle) {
    static const std::string skip = [] {
        const char* s = std::getenv("ERRAND_FUZZ_SKIP");
        return std::string(",").append(s ? s : "").append(",");
    }();
    // Appends, not "," + ...: GCC 12 at -O3 warns (-Wrestrict, a false positive) on the latter.
    std::string key(",");
    key.append(oracle).append(",");
    return skip.find(key) != std::string::npos;
}

class FixedClock final : public Clock {
  public:
    Millis now_ms() const override { return t; }
    Millis t = kStart;
};

// Faults armed for one step: the n-th write of the step throws, or its commit fails.
struct Faults {
    int fail_write_at = -1;
    bool fail_commit = false;
    int writes = 0;
    void disarm() { *this = Faults{}; }
};

// Forwards to a SqliteStore that outlives broker restarts, injecting the armed faults the way a
// full or failing disk would (StoreError with disk = true).
class FaultyStore final : public broker::ForwardingStore {
  public:
    FaultyStore(SqliteStore& inner, Faults& faults) : ForwardingStore(inner), f_(faults) {}

    void commit() override {
        if (f_.fail_commit) throw StoreError("database or disk is full (injected)", true);
        inner_.commit();
    }
    broker::Inserted insert_job(const broker::NewJob& j, const std::string& r) override {
        write();
        return inner_.insert_job(j, r);
    }
    bool apply(const broker::Transition& t) override {
        write();
        return inner_.apply(t);
    }
    void set_progress(JobId id, std::uint32_t p, const std::string& m) override {
        write();
        inner_.set_progress(id, p, m);
    }
    void set_paused(const std::string& q, bool p) override {
        write();
        inner_.set_paused(q, p);
    }
    void pause_until(const std::string& q, Millis until) override {
        write();
        inner_.pause_until(q, until);
    }
    bool resume_due(const std::string& q, Millis until) override {
        write();
        return inner_.resume_due(q, until);
    }
    std::vector<broker::Removed> remove_finished(std::optional<JobState> s,
                                                 const std::optional<std::string>& q, Millis before,
                                                 std::size_t n, bool skip_own = false) override {
        write();
        return inner_.remove_finished(s, q, before, n, skip_own);
    }
    std::optional<broker::Removed> remove_job(JobId id) override {
        write();
        return inner_.remove_job(id);
    }
    // Batches: the writes of BATCH_OPEN, a pass's members joining and changing, BATCH_SEAL and
    // a callback firing (not retention's remove_batches, which every pass may run).
    broker::Inserted insert_batch(const BatchInfo& b,
                                  const std::optional<std::string>& token) override {
        write();
        return inner_.insert_batch(b, token);
    }
    std::optional<BatchInfo> batch_moved(JobId id, const broker::BatchDelta& d) override {
        write();
        return inner_.batch_moved(id, d);
    }
    void batch_fired(JobId id, bool success, std::optional<JobId> job, Millis now) override {
        write();
        inner_.batch_fired(id, success, job, now);
    }

  private:
    void write() {
        if (f_.fail_write_at >= 0 && f_.writes++ == f_.fail_write_at)
            throw StoreError("disk I/O error (injected)", true);
    }
    Faults& f_;
};

// A job attempt the broker handed to a worker.
struct Handed {
    JobId id = 0;
    std::uint32_t attempt = 0;
    std::uint64_t seq = 0;
};

class Script {
  public:
    Script(const std::uint8_t* data, std::size_t size)
        : in_(data, size), db_(":memory:", broker::SqliteOptions{false, 1, 0}) {
        cfg_.listen = "";
        cfg_.heartbeat_ms = static_cast<Millis>(in_.range(1, 2000));
        cfg_.worker_timeout_ms = static_cast<Millis>(in_.range(1, 10000));
        cfg_.retry_delay_ms = static_cast<Millis>(in_.range(0, 5000));
        cfg_.retry_cap_ms = static_cast<Millis>(in_.range(0, 60000));
        cfg_.timeout_grace_ms = static_cast<Millis>(in_.range(0, 5000));
        cfg_.retention_ms = static_cast<Millis>(in_.range(0, 600000));
        cfg_.retention_batch = in_.range(1, 4);
        std::uint8_t tight = in_.byte();  // small limits, to reach the too_large paths
        if (tight & 1) cfg_.max_payload = cfg_.max_result = 16;
        if (tight & 2) cfg_.max_waits = 1;
        if (tight & 4) cfg_.max_batch = 2;
        start();
    }

    void run() {
        for (std::size_t step = 0; step < script::kMaxSteps && !in_.empty(); ++step)
            this->step();
        audit();
    }

  private:
    void start() {
        clock_.t = now_;
        broker_.reset();  // the old broker lets go of the store first
        broker_ =
            std::make_unique<Broker>(cfg_, std::make_unique<FaultyStore>(db_, faults_), clock_);
    }

    void step() {
        std::uint8_t adv = in_.byte();
        now_ += adv < 0x80 ? adv : static_cast<Millis>(adv & 0x7f) * 1000;
        std::string identity(kIdentities[in_.pick(kIdentities.size())]);
        auto op = static_cast<script::Op>(in_.byte() % static_cast<std::uint8_t>(script::Op::kOps));
        switch (op) {
            case script::Op::kRaw: {  // (reads in sequence: argument order is unspecified)
                std::size_t name = in_.pick(kCommandNames.size());
                if (name >= script::command_index(cmd::kBatchOpen)) batch_sent_ = true;
                std::string command(kCommandNames[name]);
                std::string body = in_.bytes(script::kMaxRawBody);
                send(identity, std::move(command), std::move(body));
                return;
            }
            case script::Op::kRawEnvelope: {
                Envelope e{identity, in_.boolean() ? std::string(kProtocolVersion) : in_.bytes(12),
                           in_.bytes(12), in_.bytes(32), in_.range(0, 4)};
                deliver(e);
                return;
            }
            case script::Op::kRestart:
                if (trace_)
                    std::fprintf(stderr, "t+%lld restart\n", static_cast<long long>(now_ - kStart));
                start();
                return;
            case script::Op::kFault:  // armed until the next delivery
                faults_.disarm();
                if (in_.boolean())
                    faults_.fail_commit = true;
                else
                    faults_.fail_write_at = static_cast<int>(in_.range(0, 3));
                return;
            default:
                break;
        }
        std::string_view command;
        std::string body = build(op, command);
        send(identity, std::string(command), std::move(body));
    }

    // ---- building requests from fuzz bytes --------------------------------------------------

    std::uint64_t req() { return in_.range(0, 7) == 0 ? in_.bits(8) : next_req_++; }
    std::string queue() {
        return in_.range(0, 15) == 0 ? in_.bytes(8)
                                     : std::string(kQueues[in_.pick(kQueues.size())]);
    }
    JobId job_id() {
        switch (in_.range(0, 3)) {
            case 0:
                return in_.range(0, 4);
            case 1:
                if (!handed_.empty()) return handed_[in_.pick(handed_.size())].id;
                [[fallthrough]];
            default:
                return ids_.empty() ? in_.range(0, 4) : ids_[in_.pick(ids_.size())];
        }
    }
    // A handed-out attempt, right or slightly off.
    Handed attempt() {
        Handed h;
        if (!handed_.empty() && in_.range(0, 7) != 0) {
            h = handed_[in_.pick(handed_.size())];
            if (in_.range(0, 7) == 0) h.attempt += static_cast<std::uint32_t>(in_.range(0, 2)) - 1;
        } else {
            h.id = job_id();
            h.attempt = static_cast<std::uint32_t>(in_.range(0, 3));
        }
        return h;
    }
    // A batch id handed out by a BATCH or BATCHES reply, or a made-up one (0 is bad_request).
    JobId batch_id() {
        if (batch_ids_.empty() || in_.range(0, 3) == 0) return in_.range(0, 4);
        return batch_ids_[in_.pick(batch_ids_.size())];
    }
    std::optional<Millis> maybe_ms(Millis max) {
        if (!in_.boolean()) return std::nullopt;
        return static_cast<Millis>(in_.range(0, static_cast<std::uint64_t>(max)));
    }

    JobSpec job_spec() {
        JobSpec s;
        s.queue = queue();
        s.payload = in_.bytes(in_.boolean() ? 4 : 24);
        std::uint8_t flags = in_.byte();
        std::uint8_t more = in_.byte();
        if (flags & 1) s.argv = std::vector<std::string>{"sh", "-c", in_.bytes(6)};
        if (flags & 2) s.max_attempts = static_cast<std::uint32_t>(in_.range(1, 4));
        if (flags & 4) s.token = std::string(kTokens[in_.pick(kTokens.size())]);
        if (flags & 8) s.priority = static_cast<std::int32_t>(in_.srange(-3, 3));
        if (flags & 16)
            s.run_at = to_time(now_ + in_.srange(-2000, 20000));
        else if (flags & 32)
            s.delay = std::chrono::milliseconds(in_.range(0, 20000));
        if (flags & 64) s.timeout = std::chrono::milliseconds(in_.range(1, 20000));
        if (flags & 128) s.unique = std::string(kUniques[in_.pick(kUniques.size())]);
        if (more & 1) s.backoff = std::chrono::milliseconds(in_.range(0, 5000));
        if (more & 2) s.backoff_cap = std::chrono::milliseconds(in_.range(0, 20000));
        if (more & 4) s.max_attempts = static_cast<std::uint32_t>(in_.range(0, 1001));
        if (more & 8) s.run_at = to_time(in_.srange(INT64_MIN, INT64_MAX));
        // Expiry: either, or both (bad_request), around the job's run_at and the fake clock.
        if (more & 16) s.expires_in = std::chrono::milliseconds(in_.range(0, 20000));
        if (more & 32) s.expires_at = to_time(now_ + in_.srange(-2000, 20000));
        // Dependencies: one or two parents among the first ids (unknown ones: not_found), and
        // after_any, also alone (bad_request).
        if (more & 64) {
            s.after.push_back(in_.range(0, 6));
            if (in_.boolean()) s.after.push_back(in_.range(0, 6));
        }
        if (more & 128) s.after_any = true;
        return s;
    }

    // A batch's callback job (BATCH_OPEN): a queue of kQueues (now and then fuzz bytes), attempts
    // and the fields a callback may carry, their values from `how`.
    JobSpec callback() {
        JobSpec s;
        s.queue = queue();
        s.max_attempts = static_cast<std::uint32_t>(in_.range(1, 3));
        std::uint8_t how = in_.byte();
        if (how & 1) s.argv = std::vector<std::string>{"sh", "-c", in_.bytes(6)};
        if (how & 2) s.delay = std::chrono::milliseconds(in_.range(0, 5000));
        if (how & 4) s.expires_in = std::chrono::milliseconds(in_.range(0, 5000));  // 0: refused
        if (how & 8) s.timeout = std::chrono::milliseconds(in_.range(1, 5000));
        if (how & 16) s.priority = static_cast<std::int32_t>(in_.srange(-3, 3));
        return s;
    }

    // A DONE (ok) or FAIL for a handed-out attempt, right or slightly off.
    JobResult result(bool ok) {
        auto h = attempt();
        JobResult m;
        m.ok = ok;
        m.id = h.id;
        m.attempt = h.attempt;
        m.exit_code = in_.srange(-2, 2);
        if (m.ok || in_.boolean()) m.result = in_.bytes(in_.boolean() ? 4 : 24);
        if (!m.ok) {
            m.error = in_.bytes(16);
            m.permanent = in_.boolean();
        }
        return m;
    }

    std::string build(script::Op op, std::string_view& command) {
        switch (op) {
            case script::Op::kSubmit:
            case script::Op::kSubmit2:
            case script::Op::kSubmit3: {
                command = cmd::kSubmit;
                SubmitRequest m{req(), {}};
                std::size_t n = in_.range(0, 7) == 0 ? in_.range(0, 6) : 1;
                for (std::size_t i = 0; i < n; ++i)
                    m.jobs.push_back(job_spec());
                if (in_.range(0, 3) == 0) m.wait_ms = static_cast<Millis>(in_.range(0, 60000));
                // Members of a batch (script.hpp): read only once the script has sent a batch
                // command, so scripts without batches read as before.
                if (batch_sent_) {
                    std::uint8_t b = in_.byte();
                    if (b & 1) {
                        JobId id = (b & 2) || batch_ids_.empty()
                                       ? in_.range(0, 4)
                                       : batch_ids_[in_.pick(batch_ids_.size())];
                        for (auto& j : m.jobs) {
                            j.batch = id;
                            if (b & 4) break;
                        }
                    }
                }
                return encode(m);
            }
            case script::Op::kStatus:
                command = cmd::kStatus;
                return encode(IdRequest{req(), job_id()});
            case script::Op::kWait:
                command = cmd::kWait;
                return encode(
                    WaitRequest{req(), job_id(), static_cast<Millis>(in_.range(0, 60000))});
            case script::Op::kList: {
                command = cmd::kList;
                ListRequest m;
                m.req = req();
                if (in_.boolean()) m.queue = queue();
                if (in_.boolean()) m.state = kAllStates[in_.pick(kAllStates.size())];
                m.limit = static_cast<std::uint32_t>(in_.range(0, 5));
                if (m.limit == 0) m.limit = limits::kDefaultListLimit;
                return encode(m);
            }
            case script::Op::kPing:
                command = cmd::kPing;
                return encode_req(req());
            case script::Op::kCancel:
                command = cmd::kCancel;
                return encode(IdRequest{req(), job_id()});
            case script::Op::kRetry: {
                command = cmd::kRetry;
                RetryRequest m;
                m.req = req();
                if (in_.boolean()) {
                    m.id = job_id();
                } else {
                    m.dead = true;
                    if (in_.boolean()) m.queue = queue();
                }
                return encode(m);
            }
            case script::Op::kPause: {
                command = cmd::kPause;
                PauseRequest m{req(), queue(), std::nullopt};
                // A timed pause, resumed by the broker itself (0: refused, bad_request).
                if (in_.boolean()) m.for_ms = static_cast<Millis>(in_.range(0, 5000));
                return encode(m);
            }
            case script::Op::kResume:
                command = cmd::kResume;
                return encode(QueueRequest{req(), queue()});
            case script::Op::kPurge: {
                command = cmd::kPurge;
                PurgeRequest m;
                m.req = req();
                m.state = kTerminal[in_.pick(kTerminal.size())];
                if (in_.boolean()) m.queue = queue();
                m.older_than_ms = maybe_ms(100000);
                return encode(m);
            }
            case script::Op::kQueues:
                command = cmd::kQueues;
                return encode_req(req());
            case script::Op::kHistory:
                command = cmd::kHistory;
                return encode(IdRequest{req(), job_id()});
            case script::Op::kRegister: {
                command = cmd::kRegister;
                RegisterRequest m;
                m.req = req();
                m.instance = std::string(kInstances[in_.pick(kInstances.size())]);
                m.name = m.instance;
                m.host = "fuzz";
                m.pid = in_.range(0, 3);
                std::uint8_t qmask = in_.byte();
                for (std::size_t i = 0; i < kQueues.size(); ++i)
                    if (qmask & (1u << i)) m.queues.emplace_back(kQueues[i]);
                if (m.queues.empty() || (qmask & 8)) m.queues.push_back(queue());
                m.concurrency = static_cast<std::uint32_t>(in_.range(1, 3));
                m.prefetch = static_cast<std::uint32_t>(in_.range(0, 2));
                m.commands = qmask & 16;
                if (qmask & 64) m.state = std::string(kWorkerQuiet);  // quieted before a reconnect
                if (qmask & 32)
                    for (std::size_t i = 0; i < m.queues.size(); ++i)
                        m.weights.push_back(static_cast<std::uint32_t>(in_.range(1, 5)));
                std::size_t held = in_.range(0, 3);
                for (std::size_t i = 0; i < held; ++i) {
                    auto h = attempt();
                    m.held.push_back({h.id, h.attempt});
                }
                return encode(m);
            }
            case script::Op::kCredit:
                command = cmd::kCredit;
                return encode_credit(static_cast<std::uint32_t>(in_.range(0, 4)));
            case script::Op::kHeartbeat: {
                command = cmd::kHeartbeat;
                WorkerHeartbeat m;
                m.seq = in_.range(0, 6);
                std::uint8_t keep = in_.byte();
                for (std::size_t i = 0; i < handed_.size() && i < 8; ++i)
                    if (keep & (1u << i)) m.running.push_back(handed_[i].id);
                return encode(m);
            }
            case script::Op::kDone:
            case script::Op::kFail:
                command = op == script::Op::kDone ? cmd::kDone : cmd::kFail;
                return encode(result(op == script::Op::kDone));
            case script::Op::kResults: {
                command = cmd::kResults;
                std::vector<std::string> bodies;
                std::size_t n = in_.range(0, 4);
                for (std::size_t i = 0; i < n; ++i)
                    bodies.push_back(encode(result(in_.boolean())));
                // The credit riding on them: none, a little, or over the limit (refused whole).
                const std::uint8_t c = in_.byte();
                const std::uint32_t credit = c < 128 ? 0 : c < 250 ? c % 4 : 1025;
                return encode_results(std::vector<std::string_view>(bodies.begin(), bodies.end()),
                                      credit);
            }
            case script::Op::kDrain:
                command = cmd::kDrain;
                return in_.boolean() ? encode_empty() : encode_req(req());
            case script::Op::kRelease: {
                command = cmd::kRelease;
                auto h = attempt();
                return encode(Ack{h.id, h.attempt});
            }
            case script::Op::kStats:
                command = cmd::kStats;
                return encode_req(req());
            case script::Op::kWorkers:
                command = cmd::kWorkers;
                return encode_req(req());
            case script::Op::kFeed: {
                command = cmd::kFeed;
                FeedRequest m;
                m.req = req();
                if (in_.boolean()) m.queue = queue();
                // 0 and over kMaxFeed are refused; `after` up to a few dozen events.
                m.limit = static_cast<std::uint32_t>(in_.range(0, 7) == 0 ? in_.range(0, 600)
                                                                          : in_.range(1, 8));
                m.after = in_.range(0, 40);
                return encode(m);
            }
            case script::Op::kScheduleAdd: {
                command = cmd::kScheduleAdd;
                ScheduleAddRequest m;
                m.req = req();
                m.schedule.name =
                    std::string(script::kSchedules[in_.pick(script::kSchedules.size())]);
                m.schedule.cron = in_.boolean()
                                      ? std::string(script::kCrons[in_.pick(script::kCrons.size())])
                                      : in_.bytes(24);
                m.schedule.zone = std::string(script::kZones[in_.pick(script::kZones.size())]);
                m.schedule.catch_up =
                    std::string(script::kCatchUps[in_.pick(script::kCatchUps.size())]);
                m.schedule.job.queue = queue();
                m.schedule.job.payload = in_.bytes(8);
                m.schedule.job.max_attempts = static_cast<std::uint32_t>(in_.range(1, 3));
                if (in_.boolean())
                    m.schedule.job.timeout = std::chrono::milliseconds(in_.range(1, 5000));
                m.schedule.paused = in_.range(0, 7) == 0;
                return encode(m);
            }
            case script::Op::kScheduleList:
                command = cmd::kScheduleList;
                return encode_req(req());
            case script::Op::kScheduleShow:
            case script::Op::kScheduleRemove:
            case script::Op::kSchedulePause:
            case script::Op::kScheduleResume: {
                command = op == script::Op::kScheduleShow     ? cmd::kScheduleShow
                          : op == script::Op::kScheduleRemove ? cmd::kScheduleRemove
                          : op == script::Op::kSchedulePause  ? cmd::kSchedulePause
                                                              : cmd::kScheduleResume;
                return encode(ScheduleRequest{
                    req(), std::string(script::kSchedules[in_.pick(script::kSchedules.size())])});
            }
            case script::Op::kWorkerControl: {
                command = cmd::kWorkerControl;
                WorkerControlRequest m;
                m.req = req();
                // The fuzz workers' names are their instance ids; "nobody" is not_found.
                m.worker = in_.range(0, 3) == 0
                               ? std::string("nobody")
                               : std::string(kInstances[in_.pick(kInstances.size())]);
                m.action = std::string(kWorkerActions[in_.pick(kWorkerActions.size())]);
                // 1-3 for `concurrency`; now and then 0 or a value where none belongs (refused).
                if (m.action == "concurrency" || in_.range(0, 7) == 0)
                    m.concurrency = static_cast<std::uint32_t>(in_.range(0, 3));
                return encode(m);
            }
            case script::Op::kRunNow:
                command = cmd::kRunNow;
                return encode(IdRequest{req(), job_id()});
            case script::Op::kDelete: {
                command = cmd::kDelete;
                JobId id = job_id();
                return encode(DeleteRequest{req(), id, in_.boolean()});
            }
            case script::Op::kQueueSet: {
                command = cmd::kQueueSet;
                QueueSetRequest m{req(), queue(), std::nullopt, std::nullopt, std::nullopt};
                if (in_.boolean()) m.max_running = static_cast<std::uint32_t>(in_.range(0, 4));
                if (in_.boolean()) m.rate = static_cast<std::uint32_t>(in_.range(0, 4));
                if (in_.boolean()) m.rate_per_ms = static_cast<Millis>(in_.range(0, 2000));
                return encode(m);
            }
            case script::Op::kQueueUnset: {
                command = cmd::kQueueUnset;
                QueueUnsetRequest m{req(), queue(), {}};
                for (auto name : kQueueSettingNames)
                    if (in_.boolean()) m.unset.emplace_back(name);
                if (in_.boolean()) m.unset.emplace_back("nonsense");
                return encode(m);
            }
            case script::Op::kQueueShow:
                command = cmd::kQueueShow;
                return encode(QueueRequest{req(), queue()});
            case script::Op::kBatchOpen: {
                command = cmd::kBatchOpen;
                batch_sent_ = true;
                BatchOpenRequest m;
                m.req = req();
                // Now and then a description of exactly the most bytes, or one over (refused).
                m.description =
                    in_.range(0, 15) == 0
                        ? std::string(limits::kMaxBatchDescription + in_.range(0, 1), 'd')
                        : in_.bytes(16);
                std::uint8_t f = in_.byte();
                if (f & 1) m.on_complete = callback();
                if (f & 2) m.on_success = callback();
                if (f & 4) {  // a bad callback: a field that is the broker's (bad_request)
                    auto& cb = (f & 2) && !(f & 1) ? m.on_success : m.on_complete;
                    if (!cb) cb = callback();
                    switch (in_.range(0, 7)) {
                        case 0:
                        case 1:
                            cb->token = std::string(kTokens[in_.pick(kTokens.size())]);
                            break;
                        case 2:
                            cb->unique = std::string(kUniques[in_.pick(kUniques.size())]);
                            break;
                        case 3:
                            cb->run_at = to_time(now_ + 1000);
                            break;
                        case 4:
                            cb->after.push_back(in_.range(1, 4));
                            break;
                        case 5:
                            cb->batch = batch_id();
                            break;
                        default:
                            cb->payload = "p" + in_.bytes(4);
                            break;
                    }
                }
                return encode(m);
            }
            case script::Op::kBatchSeal:
            case script::Op::kBatchShow:
                command = op == script::Op::kBatchSeal ? cmd::kBatchSeal : cmd::kBatchShow;
                batch_sent_ = true;
                return encode(BatchRequest{req(), batch_id()});
            case script::Op::kBatchList: {
                command = cmd::kBatchList;
                batch_sent_ = true;
                BatchListRequest m;
                m.req = req();
                // 0 and over kMaxBatchList are refused.
                m.limit = static_cast<std::uint32_t>(in_.range(0, 7) == 0 ? in_.range(0, 1200)
                                                                          : in_.range(1, 4));
                if (in_.boolean()) m.before = in_.boolean() ? batch_id() : in_.range(0, 6);
                return encode(m);
            }
            case script::Op::kProgress: {
                command = cmd::kProgress;
                auto h = attempt();
                return encode(Progress{
                    h.id, h.attempt, static_cast<std::uint32_t>(in_.range(0, 100)), in_.bytes(8)});
            }
            default:
                command = cmd::kPing;
                return encode_req(req());
        }
    }

    // ---- delivery and the oracles on what comes back ----------------------------------------

    void send(const std::string& identity, std::string command, std::string body) {
        deliver(Envelope{identity, std::string(kProtocolVersion), std::move(command),
                         std::move(body), 3});
    }

    std::vector<Envelope> deliver(const Envelope& e) {
        bool faulty = faults_.fail_commit || faults_.fail_write_at >= 0;
        std::vector<Envelope> out = broker_->process(e, now_);
        faults_.disarm();  // faults last one step
        if (trace_)
            std::fprintf(stderr, "t+%lld %s -> %s (%zu bytes)%s\n",
                         static_cast<long long>(now_ - kStart), e.identity.c_str(),
                         e.command.c_str(), e.body.size(), faulty ? " [store fault]" : "");
        const bool opened = e.command == cmd::kBatchOpen;
        for (const auto& o : out) {
            check(o, opened);
            if (trace_)
                std::fprintf(stderr, "    <- %s %s\n", o.identity.c_str(), describe(o).c_str());
        }
        return out;
    }

    static std::string describe(const Envelope& o) {
        if (o.command != cmd::kError && o.command != cmd::kDispatch && o.command != cmd::kBatch)
            return o.command;
        Body b(o.body);
        if (o.command == cmd::kBatch) {
            auto i = decode_batch(b.reader());
            auto job = [](const std::optional<JobId>& id) {
                return id ? std::to_string(*id) : std::string("-");
            };
            return fmt::format("BATCH id={} {} total={} pending={} complete_job={} success_job={}",
                               i.id, i.state, i.total, i.pending, job(i.complete_job),
                               job(i.success_job));
        }
        if (o.command == cmd::kDispatch) {
            auto d = decode_dispatch(b.reader());
            return fmt::format("DISPATCH id={} attempt={}", d.id, d.attempt);
        }
        auto e = decode_error(b.reader());
        return fmt::format("ERROR {}: {}", to_string(e.code), e.message);
    }

    // Everything the broker sends must decode on the other side; `internal` is always a bug.
    void check(const Envelope& o, bool opened = false) {
        if (o.version != kProtocolVersion || o.frames != 3) fail(o.command, "bad envelope");
        try {
            Body b(o.body);
            const Reader& r = b.reader();
            std::string_view c = o.command;
            if (c == cmd::kSubmitted) {
                auto m = decode_submitted(r);
                if (m.ids.size() != m.duplicate.size()) fail(c, "ids and duplicate differ");
                for (std::size_t i = 0; i < m.ids.size(); ++i) {
                    JobId id = m.ids[i];
                    bool known = std::find(ids_.begin(), ids_.end(), id) != ids_.end();
                    // PROTOCOL.md: a job id is never reused.
                    if (known && !m.duplicate[i] && !skipped("id-reuse"))
                        fail(c, fmt::format("job id {} was handed out a second time", id));
                    if (!known && id != 0) ids_.push_back(id);
                }
            } else if (c == cmd::kJob) {
                decode_job_info(r.map("job"));
            } else if (c == cmd::kJobs) {
                const auto& jobs = r.array("jobs");
                for (std::uint32_t i = 0; i < jobs.size; ++i)
                    decode_job_info(Reader(jobs.ptr[i]));
            } else if (c == cmd::kPong) {
                decode_pong(r);
            } else if (c == cmd::kRegistered) {
                decode_registered(r);
            } else if (c == cmd::kDispatch) {
                auto d = decode_dispatch(r);
                // (id, attempt) is the fencing token: handing the same one out twice lets a
                // stale result pass for the current attempt's.
                for (const auto& h : all_handed_)
                    if (h.first == d.id && h.second == d.attempt && !skipped("fence"))
                        fail(c, fmt::format("job {} attempt {} was dispatched a second time", d.id,
                                            d.attempt));
                all_handed_.emplace_back(d.id, d.attempt);
                if (handed_.size() < 64) handed_.push_back({d.id, d.attempt, d.seq});
            } else if (c == cmd::kAbort) {
                decode_abort(r);
            } else if (c == cmd::kRetried) {
                decode_ids(r);
            } else if (c == cmd::kOk) {
                r.u64("req");
            } else if (c == cmd::kPurged) {
                decode_count(r);
            } else if (c == cmd::kQueues) {
                decode_queues(r);
            } else if (c == cmd::kEvents) {
                decode_events(r);
            } else if (c == cmd::kAck) {
                decode_ack(r);
            } else if (c == cmd::kAcks) {
                decode_acks(r);
            } else if (c == cmd::kStats) {
                decode_stats(r);
            } else if (c == cmd::kWorkers) {
                decode_workers(r);
            } else if (c == cmd::kFeed) {
                decode_feed_reply(r);
            } else if (c == cmd::kSchedule) {
                decode_schedule(r);
            } else if (c == cmd::kSchedules) {
                decode_schedules(r);
            } else if (c == cmd::kHeartbeat) {
                r.opt_str("instance", 64);
            } else if (c == cmd::kControl) {
                decode_worker_control(r);
            } else if (c == cmd::kQueue) {
                decode_queue(r);
            } else if (c == cmd::kBatch) {
                auto b = decode_batch(r);
                // PROTOCOL.md: a batch id is never given out twice.
                if (opened && batches_.count(b.id) && !skipped("batch"))
                    fail(c, fmt::format("batch id {} was handed out a second time", b.id));
                observe(c, b);
            } else if (c == cmd::kBatches) {
                std::optional<JobId> last;
                for (const auto& b : decode_batches(r)) {
                    if (last && b.id >= *last && !skipped("batch"))
                        fail(c, fmt::format("batch {} listed after batch {}: not newest first",
                                            b.id, *last));
                    last = b.id;
                    observe(c, b);
                }
            } else if (c == cmd::kError) {
                auto e = decode_error(r);
                if (e.code == ErrorCode::internal && !skipped("internal"))
                    fail("ERROR internal", e.message);
            } else {
                fail(c, "the broker sent an unknown command");
            }
        } catch (const ProtocolError& e) {
            fail(o.command,
                 std::string("the broker sent a body its peer cannot decode: ") + e.what());
        }
    }

    // A batch object must add up, and what is set once in it must stay (see the file's head).
    // Remembers it, its id (for the ops) and its callbacks' jobs (ids never reused).
    void observe(std::string_view c, const BatchInfo& b) {
        auto bad = [&](std::string_view what) {
            if (!skipped("batch")) fail(c, fmt::format("batch {}: {}", b.id, what));
        };
        const std::uint64_t finished = b.succeeded + b.dead + b.cancelled + b.expired;
        if (finished > b.total)
            bad(fmt::format("{} members finished of {}", finished, b.total));
        else if (b.pending != b.total - finished)
            bad(fmt::format("pending {} of {} with {} finished", b.pending, b.total, finished));
        const char* state = !b.sealed_at             ? "open"
                            : b.pending > 0          ? "sealed"
                            : b.succeeded == b.total ? "succeeded"
                                                     : "complete";
        if (b.state != state) bad(fmt::format("state {}, its counts say {}", b.state, state));
        if ((b.state == "complete" || b.state == "succeeded") && !b.completed_at)
            bad("every member finished and no completed_at");
        if (b.state == "succeeded" && !b.succeeded_at)
            bad("every member succeeded and no succeeded_at");
        if (b.complete_job && !b.completed_at) bad("a complete_job and no completed_at");
        if (b.success_job && !b.succeeded_at) bad("a success_job and no succeeded_at");
        if (auto it = batches_.find(b.id); it != batches_.end()) {
            const BatchInfo& was = it->second;
            auto once = [&](const auto& before, const auto& now, std::string_view field) {
                if (before && now != before) bad(fmt::format("{} changed once set", field));
            };
            once(was.sealed_at, b.sealed_at, "sealed_at");
            once(was.completed_at, b.completed_at, "completed_at");
            once(was.succeeded_at, b.succeeded_at, "succeeded_at");
            once(was.complete_job, b.complete_job, "complete_job");
            once(was.success_job, b.success_job, "success_job");
            if (b.created_at != was.created_at) bad("created_at changed");
            if (b.description != was.description) bad("description changed");
            if (b.total < was.total)
                bad(fmt::format("total went from {} to {}", was.total, b.total));
            if (was.sealed_at && b.total != was.total)
                bad(fmt::format("total went from {} to {} after the seal", was.total, b.total));
        } else if (batch_ids_.size() < 64) {
            batch_ids_.push_back(b.id);
        }
        batches_[b.id] = b;
        for (const auto& job : {b.complete_job, b.success_job})
            if (job && std::find(ids_.begin(), ids_.end(), *job) == ids_.end())
                ids_.push_back(*job);
    }

    // The per-queue, per-state counts QUEUES reports from memory must be what the database holds
    // (read through LIST). QUEUES is asked twice around the LIST; when a timer fires in between
    // the two answers differ and nothing is compared.
    void audit() {
        faults_.disarm();
        using Counts = std::map<std::string, std::map<JobState, std::uint64_t>>;
        auto queues = [&]() {
            Counts c;
            for (const auto& e : deliver(Envelope{"auditor", std::string(kProtocolVersion),
                                                  std::string(cmd::kQueues), encode_req(1), 3})) {
                if (e.command != cmd::kQueues) continue;
                Body b(e.body);
                for (const auto& q : decode_queues(b.reader()))
                    for (const auto& [s, n] : q.counts)
                        if (n > 0) c[q.name][s] = n;
            }
            return c;
        };
        // Every batch, as BATCH_LIST reports it (its encoding, to compare two answers).
        auto batches = [&]() {
            std::pair<std::map<JobId, BatchInfo>, std::string> out;
            for (const auto& e : deliver(Envelope{
                     "auditor", std::string(kProtocolVersion), std::string(cmd::kBatchList),
                     encode(BatchListRequest{3, limits::kMaxBatchList, std::nullopt}), 3})) {
                if (e.command != cmd::kBatches) continue;
                Body b(e.body);
                for (auto& info : decode_batches(b.reader()))
                    out.first.emplace(info.id, info);
                out.second = e.body;
            }
            return out;
        };
        auto batches_before = batches();
        Counts before = queues();
        Counts stored;
        std::map<JobId, std::map<JobState, std::uint64_t>> members;  // per batch, per state
        for (const auto& e : deliver(Envelope{
                 "auditor", std::string(kProtocolVersion), std::string(cmd::kList),
                 encode(ListRequest{2, std::nullopt, std::nullopt, limits::kMaxListLimit}), 3})) {
            if (e.command != cmd::kJobs) continue;
            Body b(e.body);
            const auto& jobs = b.reader().array("jobs");
            for (std::uint32_t i = 0; i < jobs.size; ++i) {
                auto j = decode_job_info(Reader(jobs.ptr[i]));
                ++stored[j.queue][j.state];
                if (j.batch) ++members[*j.batch][j.state];
            }
        }
        Counts after = queues();
        if (batches().second == batches_before.second) audit_batches(batches_before.first, members);
        if (before != after) return;
        if (before != stored && !skipped("counts")) {
            std::string detail;
            for (const auto* side : {&before, &stored}) {
                detail += side == &before ? "QUEUES:" : " database:";
                for (const auto& [q, m] : *side)
                    for (const auto& [s, n] : m)
                        detail +=
                            " " + q + "/" + std::string(to_string(s)) + "=" + std::to_string(n);
            }
            fail("QUEUES counts differ from the database", detail);
        }
    }

    // Each batch counts every member it ever had (one deleted early stays counted): at least the
    // members the database holds per terminal state, and pending at least those not finished.
    void audit_batches(const std::map<JobId, BatchInfo>& listed,
                       const std::map<JobId, std::map<JobState, std::uint64_t>>& members) {
        if (skipped("batch")) return;
        for (const auto& [id, states] : members) {
            auto it = listed.find(id);
            if (it == listed.end()) continue;  // deleted by retention; its members stay a while
            const BatchInfo& b = it->second;
            std::uint64_t all = 0, waiting = 0;
            for (const auto& [s, n] : states) {
                all += n;
                const std::uint64_t counted = s == JobState::succeeded   ? b.succeeded
                                              : s == JobState::dead      ? b.dead
                                              : s == JobState::cancelled ? b.cancelled
                                              : s == JobState::expired   ? b.expired
                                                                         : 0;
                if (!is_terminal(s))
                    waiting += n;
                else if (n > counted)
                    fail("batch counts differ from the database",
                         fmt::format("batch {} counts {} {}, the database holds {} such members",
                                     id, counted, to_string(s), n));
            }
            if (all > b.total || waiting > b.pending)
                fail("batch counts differ from the database",
                     fmt::format("batch {}: total {}, pending {}; the database holds {} members, "
                                 "{} not finished",
                                 id, b.total, b.pending, all, waiting));
        }
    }

    Input in_;
    FixedClock clock_;
    SqliteStore db_;
    Faults faults_;
    BrokerConfig cfg_;
    std::unique_ptr<Broker> broker_;
    Millis now_ = kStart;
    bool trace_ = std::getenv("ERRAND_FUZZ_TRACE") != nullptr;  // print the script as it runs
    std::uint64_t next_req_ = 1;
    std::vector<JobId> ids_;
    std::vector<Handed> handed_;
    std::vector<std::pair<JobId, std::uint32_t>> all_handed_;  // every (id, attempt) dispatched
    bool batch_sent_ = false;             // a batch command was sent: SUBMIT reads its batch byte
    std::vector<JobId> batch_ids_;        // from BATCH and BATCHES replies, at most 64
    std::map<JobId, BatchInfo> batches_;  // the last seen of each batch ever seen
};

}  // namespace

void quiet_logs() {
    spdlog::set_level(spdlog::level::off);
}

std::size_t broker_heap_bound(std::size_t size) {
    return kBrokerHeapBase + kBrokerHeapPerByte * size;
}

void run_broker(const std::uint8_t* data, std::size_t size) {
    HeapMeter meter;
    {
        Script script(data, size);
        script.run();
    }
    check_heap("fuzz_broker", meter.peak(), size, broker_heap_bound(size));
}

}  // namespace errand::fuzz
