// The storage seam. The job engine talks to its database only through Store, and the read-only
// commands through JobReads, so a second engine (PostgreSQL, shared by several brokers) can sit
// behind the same interface as SQLite. The store decides what only it can know: it assigns ids,
// and it applies a transition only when the job is still in the state and attempt the engine
// expects (compare-and-set), saying whether it did. What one engine does for speed (SQLite's
// held-back dispatch log, incremental vacuum) stays inside it, behind maintain().
//
// Transactions: every write opens one implicitly; all writes until commit() (or rollback()) form
// it. The broker commits once per event-loop pass, after all of the pass's writes (group commit),
// and only then replies. A pass that wrote nothing commits nothing.
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "errand/codec.hpp"
#include "errand/protocol.hpp"

namespace errand::broker {

// Any storage failure. `disk` is true for conditions an operator can fix (full, read-only, I/O).
class StoreError : public std::runtime_error {
  public:
    StoreError(const std::string& message, bool disk) : std::runtime_error(message), disk_(disk) {}
    bool disk() const { return disk_; }

  private:
    bool disk_;
};

// A new job as SUBMIT inserts it: the request as the client sent it (validated by the codec), and
// what the broker decided of it. A field added to JobSpec reaches the store through here.
struct NewJob {
    JobSpec spec;                      // its delay is folded into run_at
    JobState state = JobState::ready;  // ready, or scheduled (run_at in the future)
    std::optional<Millis> run_at;      // scheduled: when due
    Millis created_at = 0;
    std::optional<Millis> expires_at;  // not dispatched by then: expired (expires_in folded in)
};

// One state change of one job, written together with its event (in the same row write). Fields that
// are nullopt keep their stored value, except run_at and finished_at which are always written.
// `from` and `from_attempts` are the compare-and-set: the change applies only to a job that is in
// state `from` with `from_attempts` attempts, so a decision made on stale memory cannot land.
struct Transition {
    JobId id = 0;
    std::optional<JobState> from;     // the state the job must be in
    std::uint32_t from_attempts = 0;  // and the attempts it must have
    JobState to = JobState::ready;
    std::optional<std::uint32_t> attempts;  // nullopt: unchanged
    // nullopt: unchanged. Raising it remembers the job's first max_attempts as its budget.
    std::optional<std::uint32_t> max_attempts;
    Millis at = 0;
    std::optional<std::string> worker;
    std::optional<Millis> run_at;
    std::optional<Millis> started_at;
    std::optional<Millis> finished_at;
    bool set_outcome = false;  // write exit_code, result and error (even when nullopt)
    std::optional<std::int64_t> exit_code;
    std::optional<std::string> result;
    std::optional<std::string> error;
    std::string reason;       // for the event row
    std::uint32_t epoch = 0;  // a dispatch (to running): the store's epoch() when it was made
    // The job's queue, for a store that counts jobs by it (valid while apply() runs).
    std::string_view queue;
};

// A stored job that is not finished, as the engine rebuilds its memory from it (the engine's
// in-memory entry, Live, is a compact copy of this).
struct LiveJob {
    JobId id = 0;
    std::string queue;
    JobState state = JobState::ready;
    std::uint32_t attempts = 0;
    std::uint32_t max_attempts = 0;
    std::int32_t priority = 0;
    bool has_argv = false;
    std::optional<Millis> run_at;
    std::optional<std::string> worker;
    Millis created_at = 0;
    std::optional<Millis> started_at;
    std::optional<Millis> timeout_ms;
    std::optional<Millis> backoff_ms;
    std::optional<Millis> backoff_cap_ms;
    std::optional<std::string> unique;
    std::uint32_t attempt_budget = 0;  // the max_attempts the job was submitted with
    std::uint32_t epoch = 0;           // running: the epoch its attempt was dispatched in
    std::optional<Millis> expires_at;  // not dispatched by then: expired
    JobId batch = 0;                   // the batch it is a member of; 0: none
};

// A blocked job waiting for a parent (Store::take_children).
struct ChildEdge {
    JobId child = 0;
    bool any = false;  // after_any: runs whatever the parent's outcome
};

// Rows removed by purge or retention, per queue and state (to keep counters right).
struct Removed {
    std::string queue;
    JobState state = JobState::succeeded;
    std::uint64_t count = 0;
};

struct QueueStateCount {
    std::string queue;
    JobState state = JobState::ready;
    std::uint64_t count = 0;
};

// What a dispatch carries that memory does not hold (payloads stay on disk until dispatched).
struct DispatchData {
    std::string payload;
    std::optional<std::vector<std::string>> argv;
};

// What insert_job did: a new job with its id, or (duplicate) the job that already has the token.
struct Inserted {
    JobId id = 0;
    bool duplicate = false;
};

// A queue's settings (QUEUE_SET), as stored: limits on starting its jobs (unset: no limit) and
// defaults for the jobs submitted without their own (unset: the broker's).
struct QueueLimits {
    std::optional<std::uint32_t> max_running;
    std::optional<std::uint32_t> rate;  // with rate_per_ms
    std::optional<Millis> rate_per_ms;
    std::optional<std::uint32_t> max_attempts;
    std::optional<Millis> timeout_ms;
    std::optional<std::int32_t> priority;
    std::optional<Millis> retention_ms;   // finished (not dead) jobs kept this long
    std::optional<Millis> expires_in_ms;  // jobs without an expiry expire this long after submit
    bool limits_starts() const { return max_running || rate; }
    bool any() const {
        return limits_starts() || max_attempts || timeout_ms || priority || retention_ms ||
               expires_in_ms;
    }
};

// ---- shared stores (several brokers on one database) ---------------------------------------

// A claim: ready -> running for up to `limit` jobs of `queue`, in one statement, for one or
// several workers of the broker.
struct ClaimRequest {
    std::string queue;
    bool commands = false;  // argv jobs too
    std::size_t limit = 1;
    // The workers' names, for the rows and the events, one per slot: the i-th job claimed (in
    // the order the claim returns them) goes to workers[i]. At most `limit` jobs are claimed,
    // and `limit` is at most workers.size().
    std::vector<std::string> workers;
    Millis now = 0;
    // The queue has limits (as the engine last read them): the claim reads them again from the
    // queue's row, locked for the transaction, and takes no more than they allow; `held` is set
    // to why it took fewer than `limit` (kHeldMaxRunning), when that is why. Without, a queue
    // that has limits gives nothing (the engine reads them at its next refresh).
    bool limited = false;
    std::string* held = nullptr;
    // Set when the rate held jobs back: when its window has room again (wall time).
    Millis* wake = nullptr;
};

// A job a claim moved to running: its row after the claim (attempts already incremented by the
// database) and what the worker is sent.
struct ClaimedJob {
    LiveJob job;
    DispatchData data;
};

// A job a due timer moved to ready (scheduled or retrying before).
struct Promoted {
    JobId id = 0;
    std::string queue;
    JobState from = JobState::scheduled;
    std::uint32_t attempts = 0;
    JobId batch = 0;  // expire_due: the batch it is a member of (0: none)
};

// A schedule's cursor after the engine fired (or skipped) its due ticks.
struct ScheduleAdvance {
    std::optional<Millis> next_at;  // the next tick not yet handled (nullopt: never again)
    std::optional<Millis> last_at;  // the last tick that submitted a job
    std::optional<JobId> last_job;
};

// A batch's members that have finished, whatever the outcome.
inline std::uint64_t batch_members_finished(const BatchInfo& b) {
    return b.succeeded + b.dead + b.cancelled + b.expired;
}

// How a batch's counters change: members that joined, and that entered (+1) or left (-1, a
// revived dead member) each terminal state.
struct BatchDelta {
    std::int64_t total = 0;  // members that joined
    std::int64_t succeeded = 0;
    std::int64_t dead = 0;
    std::int64_t cancelled = 0;
    std::int64_t expired = 0;
    std::optional<Millis> seal;  // sealed at this time, unless it was already
    // One member more (+1) or less (-1) in terminal state `s`.
    void add(JobState s, std::int64_t n) {
        switch (s) {
            case JobState::succeeded:
                succeeded += n;
                break;
            case JobState::dead:
                dead += n;
                break;
            case JobState::cancelled:
                cancelled += n;
                break;
            case JobState::expired:
                expired += n;
                break;
            default:
                break;
        }
    }
};

// A batch's `state` and `pending`, derived from what a store keeps (its counters and seal): the
// one derivation, for the engine's replies and the HTTP side's reads alike.
inline void with_batch_state(BatchInfo& b) {
    b.pending = b.total - std::min(b.total, batch_members_finished(b));
    if (!b.sealed_at)
        b.state = "open";
    else if (b.pending > 0)
        b.state = "sealed";
    else if (b.succeeded == b.total)
        b.state = "succeeded";
    else
        b.state = "complete";
}

// Reads of jobs for the read-only commands (STATUS, WAIT, LIST, HISTORY): they see every write
// of the current transaction and everything committed.
class JobReads {
  public:
    virtual ~JobReads() = default;
    virtual std::optional<JobInfo> get_job(JobId id) = 0;
    virtual std::vector<JobInfo> list_jobs(const ListRequest& filter) = 0;
    virtual std::vector<Event> events(JobId id) = 0;
};

class Store : public JobReads {
  public:
    // Makes every write since the last commit() or rollback() durable (nothing, when nothing was
    // written). Throws StoreError, after which the writes are rolled back.
    virtual void commit() = 0;
    virtual void rollback() = 0;
    // True while writes are waiting for commit().
    virtual bool writing() const = 0;

    // ---- writes --------------------------------------------------------------------------
    // Creates the job and its first event (`reason`) with an id the store assigns, increasing
    // and never reused once committed; or, when a job with the same token exists (in a shared
    // store also: when an unfinished job holds its unique key), writes nothing and returns that
    // job's id as a duplicate.
    virtual Inserted insert_job(const NewJob& job, const std::string& reason) = 0;
    // insert_job for each of `jobs` (with reasons[i]), in order; a store that can writes them
    // in one statement. None of them may have a unique key (those go one by one).
    virtual std::vector<Inserted> insert_jobs(const std::vector<NewJob>& jobs,
                                              const std::vector<std::string>& reasons) {
        std::vector<Inserted> out;
        out.reserve(jobs.size());
        for (std::size_t i = 0; i < jobs.size(); ++i)
            out.push_back(insert_job(jobs[i], reasons[i]));
        return out;
    }
    // Applies the transition (and its event) when the job is in (t.from, t.from_attempts);
    // false, with nothing written, when it is not.
    virtual bool apply(const Transition& t) = 0;
    virtual void set_progress(JobId id, std::uint32_t percent, const std::string& message) = 0;
    // Paused or resumed for good (a timed pause's deadline is cleared).
    virtual void set_paused(const std::string& queue, bool paused) = 0;
    // Paused until `until` (PAUSE with for_ms): resume_due() resumes it then.
    virtual void pause_until(const std::string& queue, Millis until) = 0;
    // Resumes the queue if it is still paused until exactly `until` (compare-and-set: a pause
    // made since, through this or another broker, stays); whether it did.
    virtual bool resume_due(const std::string& queue, Millis until) = 0;
    // Deletes up to `limit` jobs in `state` (any terminal state when nullopt) that finished
    // before `finished_before`, of `queue` when given. `skip_own_retention`: not of the queues
    // that have a retention of their own (QUEUE_SET retention_ms; retention's pass over the
    // others).
    virtual std::vector<Removed> remove_finished(std::optional<JobState> state,
                                                 const std::optional<std::string>& queue,
                                                 Millis finished_before, std::size_t limit,
                                                 bool skip_own_retention = false) = 0;
    // Deletes one finished job with all of it (events, payload, its count among the finished):
    // DELETE. nullopt, with nothing written, when there is no such job or it is not finished.
    // Its id is never given out again.
    virtual std::optional<Removed> remove_job(JobId id) = 0;
    // The engine's own housekeeping, called by the loop every pass (cheap when there is
    // nothing to do); may write, in the current transaction.
    virtual void maintain(Millis now) = 0;
    // maintain() has more to do at once (the loop should not sleep until its next timer).
    virtual bool maintenance_due() const { return false; }

    // ---- reads the engine needs ------------------------------------------------------------
    virtual std::optional<JobId> find_token(const std::string& token) = 0;
    // ---- job dependencies (SUBMIT after; docs/LIFECYCLE.md "Dependencies") ----
    // The state of each of `ids` that exists. A shared store locks their rows until the commit
    // (a parent finishing elsewhere meanwhile then finds the edges add_parents() writes).
    virtual std::vector<std::pair<JobId, JobState>> parent_states(
        const std::vector<JobId>& ids) = 0;
    // Writes the edges of `child` (blocked) to its unfinished `parents` and its count of them.
    virtual void add_parents(JobId child, const std::vector<JobId>& parents, bool any) = 0;
    // The children waiting for `parent`, their edges deleted (each edge is handed out once).
    virtual std::vector<ChildEdge> take_children(JobId parent) = 0;
    // One parent of `child` finished: its count of unfinished parents goes down by one in one
    // statement; returns the count left, nullopt when the child is no longer blocked.
    virtual std::optional<std::uint32_t> parent_finished(JobId child) = 0;
    // The jobs that have children waiting (rebuild).
    virtual std::vector<JobId> parents() = 0;
    virtual std::optional<DispatchData> dispatch_data(JobId id) = 0;
    // Every job that is not in a terminal state, in id order.
    virtual void scan_live(const std::function<void(LiveJob&&)>& fn) = 0;
    // One job as scan_live would return it (any state).
    virtual std::optional<LiveJob> load_live(JobId id) = 0;
    virtual std::vector<QueueStateCount> count_jobs() = 0;
    virtual std::vector<std::string> paused_queues() = 0;
    // The paused queues that resume by themselves, with when.
    virtual std::vector<std::pair<std::string, Millis>> pause_deadlines() = 0;
    // Stores the queue's limits, all of them (an unset one is removed); its pause is kept.
    virtual void set_queue_limits(const std::string& queue, const QueueLimits& limits) = 0;
    // Every queue that has a limit.
    virtual std::vector<std::pair<std::string, QueueLimits>> queue_limits() = 0;
    // Up to `limit` ids of dead jobs (of `queue` when given), oldest first.
    virtual std::vector<JobId> dead_jobs(const std::optional<std::string>& queue,
                                         std::size_t limit) = 0;

    // ---- schedules (rows of errand::Schedule; last_state is the job's, not stored) -----------
    // False, with nothing written, when the name is taken.
    virtual bool insert_schedule(const Schedule& s) = 0;
    // False when there is no such schedule.
    virtual bool remove_schedule(const std::string& name) = 0;
    virtual bool set_schedule_paused(const std::string& name, bool paused,
                                     std::optional<Millis> next_at) = 0;
    virtual std::optional<Schedule> get_schedule(const std::string& name) = 0;
    // By name, at most `limit`.
    virtual std::vector<Schedule> list_schedules(std::size_t limit) = 0;
    // Up to `limit` schedules, not paused, whose next tick is due by `now`, earliest first. A
    // shared store locks them for this transaction; other brokers skip locked rows.
    virtual std::vector<Schedule> due_schedules(Millis now, std::size_t limit) = 0;
    // Moves the cursor of a schedule whose next_at is still `from` (compare-and-set): false,
    // with nothing written, when it is not (another broker handled those ticks, or it is gone).
    virtual bool advance_schedule(const std::string& name, Millis from,
                                  const ScheduleAdvance& to) = 0;
    // The earliest next tick of a schedule that is not paused.
    virtual std::optional<Millis> next_schedule_at() = 0;

    // ---- batches (rows of errand::BatchInfo; state and pending: with_batch_state) -----------
    // A new batch (description, created_at, on_complete, on_success of `b`): its id, from the
    // store, never reused; with a known `token`, that batch's id (duplicate) and nothing written.
    virtual Inserted insert_batch(const BatchInfo& b, const std::optional<std::string>& token) = 0;
    // The batch, its callbacks' jobs with it when `specs`. Read without a lock: changes to a
    // batch are batch_moved()'s, at the end of a pass.
    virtual std::optional<BatchInfo> get_batch(JobId id, bool specs) = 0;
    // Members joined (d.total: only while the batch is open), entered or left terminal states,
    // and the seal (d.seal): the counters change by `d`, in one statement (of several brokers, each
    // sees the counts after its own change). The batch after the change, without specs; nullopt
    // when it is gone, or when it was sealed and d.total is not 0 (nothing changed then).
    virtual std::optional<BatchInfo> batch_moved(JobId id, const BatchDelta& d) = 0;
    // A callback ran: every member finished (`success`: succeeded) for the first time at `now`,
    // and `job` is the callback's job (nullopt: there is none).
    virtual void batch_fired(JobId id, bool success, std::optional<JobId> job, Millis now) = 0;
    // Up to `limit` ids of members that ended dead, cancelled or expired, in id order.
    virtual std::vector<JobId> batch_failed(JobId id, std::size_t limit) = 0;
    // Newest first, ids below `before` when given, at most `limit`; without specs.
    virtual std::vector<BatchInfo> list_batches(std::size_t limit, std::optional<JobId> before) = 0;
    // Deletes up to `limit` batches whose every member has finished and that completed before
    // `before` (`dead_before` when a member is dead): retention. How many.
    virtual std::size_t remove_batches(Millis before, Millis dead_before, std::size_t limit) = 0;

    // ---- shared stores -----------------------------------------------------------------------
    // A shared store is the only truth about jobs (other brokers change them too): the engine
    // keeps in memory only the attempts its own workers hold, and claims, promotes and times
    // out jobs through the calls below. A store that is not shared (SQLite) leaves the engine's
    // memory authoritative and does not implement them.
    virtual bool shared() const { return false; }
    // This start of the broker, durably counted (docs/RELIABILITY.md, fencing across a power
    // cut): with the attempt, a dispatch's fencing token. 0: the store's commits are durable
    // before they return (PostgreSQL), so a dispatch cannot be lost and attempts alone fence.
    virtual std::uint32_t epoch() const { return 0; }
    // Claims jobs that are ready, in priority then id order, skipping rows another broker is
    // claiming; nothing when the queue is paused (read in the same statement). Each claimed
    // job gets its dispatch event.
    virtual std::vector<ClaimedJob> claim(const ClaimRequest&) { throw not_shared(); }
    // Moves up to `limit` scheduled or retrying jobs due by `now` to ready, with their events.
    virtual std::vector<Promoted> promote_due(Millis, std::size_t) { throw not_shared(); }
    // Moves up to `limit` ready, scheduled or retrying jobs whose expires_at has come by `now` to
    // expired, with their events and terminal counts (`from` of each: the state it left).
    virtual std::vector<Promoted> expire_due(Millis, std::size_t) { throw not_shared(); }
    // Up to `limit` running attempts whose timeout_ms + `grace` have passed by `now`.
    virtual std::vector<LiveJob> expired_attempts(Millis, Millis, std::size_t) {
        throw not_shared();
    }
    // Running attempts whose broker has not been heard from for `silent_ms` (it died or was cut
    // off; on the database's clock) and that no worker reclaimed through another broker.
    virtual std::vector<LiveJob> orphaned_attempts(Millis, std::size_t) { throw not_shared(); }
    // This broker holds the running attempt from now on (its worker registered here with it):
    // false when the job is no longer at that attempt.
    virtual bool hold(JobId, std::uint32_t) { throw not_shared(); }
    // One job as load_live() reads it, if its running attempt is held by this broker (a shared
    // store: another broker may have taken it over).
    virtual std::optional<LiveJob> load_held(JobId id) { return load_live(id); }
    // Whether this broker does the cluster's chores (retention, the rescue of silent brokers'
    // attempts); a store of one broker always does.
    virtual bool leader() const { return true; }
    // This broker's id in the cluster, and the cluster's live brokers (a shared store).
    virtual std::optional<std::string> broker_name() const { return std::nullopt; }
    virtual std::vector<BrokerInfo> cluster() { return {}; }
    // The unfinished job holding a unique key.
    virtual std::optional<JobId> find_unique(const std::string&) { throw not_shared(); }
    // Waits across brokers. Tells the other brokers, when this transaction commits, that these
    // jobs finished; and, without waiting, which jobs other brokers said finished since the
    // last call (possibly not all: a dropped connection loses them, see finished_among).
    virtual void announce(const std::vector<JobId>&) {}
    virtual std::vector<JobId> finished_elsewhere() { return {}; }
    // Which of `ids` are finished (the slow backstop of the notifications).
    virtual std::vector<JobId> finished_among(const std::vector<JobId>&) { throw not_shared(); }
    // Control of running workers across brokers (WORKER_CONTROL): tells the other brokers, when
    // this transaction commits, one command (an opaque line of text, no NUL bytes); and, without
    // waiting, the commands other brokers sent since the last call.
    virtual void announce_control(const std::string&) {}
    virtual std::vector<std::string> controls_elsewhere() { return {}; }
    // A file descriptor that becomes readable when a notification may have arrived; -1: none.
    virtual int notify_fd() const { return -1; }
    // The creation time of each queue's oldest ready job.
    virtual std::vector<std::pair<std::string, Millis>> oldest_ready() { throw not_shared(); }

  private:
    static std::logic_error not_shared() {
        return std::logic_error("only a shared store claims, promotes and expires jobs");
    }
};

// ---- Reads for the HTTP API (CQRS) --------------------------------------------------------

// One page of jobs, newest first: ids below `before` (the cursor of the previous page). The
// search fields narrow it further: `unique_key` exactly (its index), `error_contains` as a
// substring of the error text (a scan, bounded by the store: see QueryStore).
struct JobPage {
    std::optional<std::string> queue;
    std::optional<JobState> state;
    std::size_t limit = 50;
    std::optional<JobId> before;
    std::optional<std::string> unique_key;
    std::optional<std::string> error_contains;
};

// Read-only queries on a connection of their own, used by the HTTP thread so that browsing jobs
// and histories never runs on (or waits for) the broker loop. It sees committed data only; not
// thread-safe (the caller serialises). A query that would scan too much (an error-text search
// over millions of rows) is cut off by the store and throws StoreError, so one request cannot
// hold the connection (SQLite: a progress-handler budget; PostgreSQL: statement_timeout).
class QueryStore {
  public:
    virtual ~QueryStore() = default;
    virtual std::optional<JobInfo> get_job(JobId id) = 0;
    virtual std::vector<Event> events(JobId id) = 0;
    virtual std::vector<JobInfo> jobs(const JobPage& page) = 0;
    // How many jobs match `page` (its cursor and limit aside), counting at most `cap`.
    virtual std::uint64_t count(const JobPage& page, std::uint64_t cap) = 0;
    // The first `max` bytes of the job's payload (any bytes); nullopt when there is no such job.
    virtual std::optional<std::string> payload(JobId id, std::size_t max) = 0;
    // Bytes of the database (pages in use and free) plus its WAL, when known.
    virtual std::optional<std::uint64_t> size_bytes() = 0;
    // Up to `limit` cron schedules by name, as Store::list_schedules (last_state not set).
    virtual std::vector<Schedule> schedules(std::size_t limit) = 0;
    // Batches as Store::list_batches (newest first, without specs) and Store::get_batch (with
    // specs); state and pending not set (with_batch_state).
    virtual std::vector<BatchInfo> batches(std::size_t limit, std::optional<JobId> before) = 0;
    virtual std::optional<BatchInfo> batch(JobId id) = 0;
};

}  // namespace errand::broker
