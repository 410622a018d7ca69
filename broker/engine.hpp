// The job engine: every rule of a job's life, and the only code that changes a job's state. On
// SQLite it owns the unfinished jobs in memory (the fast path: ready index, timers, leases) and
// writes each change through the Store. On a shared store (PostgreSQL, several brokers) the
// database is the only truth: memory holds the attempts this broker's workers run (a cache,
// fenced by compare-and-set), and claims, due timers and timeouts are statements of the store.
// It knows nothing of sockets, connections or messages to send. Each edge of the state diagram
// (docs/LIFECYCLE.md) is one function below and answers with a decision (applied / already applied
// / stale, the ids it made, the attempts to abort); the sessions (broker.cpp) turn decisions into
// replies.
//
// Every change is an event (PendingEvent), kept until the loop has committed the pass: then the
// loop publishes them (committed()), or, when the commit failed, the engine forgets the pass and
// reloads its memory from the store (rolled_back()).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "deadline.hpp"
#include "errand/codec.hpp"
#include "live.hpp"
#include "ready_index.hpp"
#include "snapshot.hpp"
#include "start_window.hpp"
#include "store.hpp"

namespace errand::broker {

struct EngineConfig {
    Millis retry_delay_ms = 1000;     // default backoff base
    Millis retry_cap_ms = 600'000;    // default backoff cap
    Millis timeout_grace_ms = 10000;  // a timed-out attempt without a result fails after this
    // A job running when the broker started, that no worker claims (REGISTER held) within this,
    // counts as lost.
    Millis orphan_grace_ms = 5000;
    Millis retention_ms = 7 * 86'400'000LL;         // finished jobs are deleted after this
    Millis dead_retention_ms = 180 * 86'400'000LL;  // but dead ones after this
    std::size_t retention_batch = 500;              // rows deleted per pass at most
    // Shared store only: how often a broker looks for work other brokers made (jobs submitted
    // or due there, in queues it found empty), and refreshes its counts and pauses.
    Millis poll_ms = 50;
    Millis refresh_ms = 1000;
    std::size_t promote_batch = 1000;  // due jobs made ready (and timeouts, losses) per pass
    std::size_t max_queues = 10'000;   // distinct queues at once (SUBMIT to one more: too_large)
    // Cron schedules (broker/schedules.cpp): the work of one pass is bounded.
    std::size_t max_schedules = limits::kMaxSchedules;  // SCHEDULE_ADD of one more: too_large
    std::size_t schedule_batch = 20;                    // due schedules handled per pass at most
    std::size_t schedule_steps = 1000;  // ticks stepped over per schedule and pass at most
    std::size_t catch_up_all = 100;     // `all`: the most missed ticks one outage fires
    // `none`: a tick handled later than this after its time was missed, and is skipped.
    Millis schedule_grace_ms = 5000;
};

using StateCounts = std::array<std::uint64_t, kStateCount>;

// A state change of the current pass, published (PUB, recent ring, metrics) only once the
// pass's commit has succeeded.
struct PendingEvent {
    EventView event;
    std::optional<Millis> waited_ms;  // ready -> running: how long it waited
    std::optional<Millis> ran_ms;     // running -> *: how long the attempt ran
    bool failed_attempt = false;
};

// SUBMIT's answer for one job.
struct Submitted {
    JobId id = 0;
    bool duplicate = false;  // the job that already has the token or holds the unique key
};

// ready -> running: what the worker is sent.
struct Claim {
    JobId id = 0;
    std::uint32_t attempt = 0;
    std::string payload;
    std::optional<std::vector<std::string>> argv;
    std::optional<Millis> timeout_ms;
    std::uint32_t epoch = 0;  // with `attempt`, the fencing token (Store::epoch)
};

// What a result (or a release) did. `holder`: who held the attempt (applied only).
enum class Verdict { applied, already_applied, stale };
struct Finished {
    Verdict verdict = Verdict::stale;
    HolderRef holder;
};

// An attempt the engine stopped (cancel, timeout): its holder must be told (ABORT).
struct Aborted {
    JobId id = 0;
    std::uint32_t attempt = 0;
    HolderRef holder;
    std::string reason;
};

// The token and unique key of the job a schedule's tick submits (broker/schedules.cpp).
std::string schedule_tick_key(const std::string& name, Millis tick);
// The token of a batch's callback job (broker/batches.cpp).
std::string batch_callback_key(JobId batch, bool success);

class JobEngine {
  public:
    JobEngine(EngineConfig config, Store& store);

    // (Re)builds memory from the store: at start-up, and after a failed commit. `held` names
    // the holder of each running job a registered worker holds; other running jobs are orphans.
    void rebuild(const std::unordered_map<JobId, HolderRef>& held, Millis now);

    // The pass's time: `wall` for what users see and what is stored (run_at, event times),
    // `mono` (Clock::monotonic_ms) for durations: timeouts, orphan grace, the engine's own
    // periodic work. The edges' `now` is wall time.
    void set_clock(Millis wall, Millis mono) {
        now_ = wall;
        mono_ = mono;
    }

    // ---- the edges ---------------------------------------------------------------------------
    // (new) -> ready | scheduled; or the existing job for a known token or a held unique key.
    Submitted submit(JobSpec spec, Millis now);
    // The jobs of one SUBMIT, in order, as submit() each; on a shared store written together.
    std::vector<Submitted> submit(std::vector<JobSpec> specs, Millis now);
    // ready -> running: the next jobs of `queue` for a worker (argv jobs only with `commands`),
    // up to `max`, in priority then ready order; none when the queue has none.
    std::vector<Claim> claim(const std::string& queue, bool commands, std::size_t max,
                             const HolderRef& by, Millis now);
    // The same for several workers at once: up to one job per slot, and the i-th claim is
    // slots[i]'s. On a shared store one statement claims them all.
    std::vector<Claim> claim(const std::string& queue, bool commands,
                             const std::vector<HolderRef>& slots, Millis now);
    // running -> succeeded (DONE) | retrying | dead (FAIL), fenced by (id, attempt).
    Finished finish(JobResult result, Millis now);
    // running -> ready without charging the attempt (RELEASE of a draining worker).
    Finished release(JobId id, std::uint32_t attempt, Millis now);
    // running -> ready | dead: the attempt ended without a result (worker lost, dispatch lost).
    // Only when `instance` (if given) holds it; false when nothing changed.
    bool lose(JobId id, const std::string* instance, const std::string& reason, Millis now);
    // ready | scheduled | retrying | running -> cancelled. Throws not_found / invalid_state.
    // Returns the stopped attempt, when it was running and held.
    std::optional<Aborted> cancel(JobId id, Millis now);
    // dead -> ready with a fresh budget of attempts. Throws not_found / invalid_state.
    void revive(JobId id, Millis now);
    // revive() for up to `limit` dead jobs (of `queue`); those that cannot be are left dead.
    std::vector<JobId> revive_dead(const std::optional<std::string>& queue, std::size_t limit,
                                   Millis now);
    // scheduled | retrying -> ready at once (RUN_NOW): its run_at or backoff is skipped. Throws
    // not_found / invalid_state (any other state).
    void run_now(JobId id, Millis now);
    // Deletes a finished job with everything of it (DELETE). An unfinished one is refused
    // (invalid_state) unless `force`, which cancels it first (cancel(), the same edge); returns
    // the attempt that stopped. Throws not_found.
    std::optional<Aborted> remove(JobId id, bool force, Millis now);
    // Everything that happens because time passed: ready/scheduled/retrying -> expired (its
    // expires_at came before a dispatch), scheduled/retrying -> ready (due), running -> retrying |
    // dead (timed out), orphans lost, retention, the store's maintenance. Returns the attempts it
    // timed out.
    std::vector<Aborted> tick(Millis now);

    // ---- other rules -------------------------------------------------------------------------
    // REGISTER's held jobs: `by` keeps (id, attempt) when that attempt runs and is unheld or its
    // own. False: the worker must drop it.
    bool adopt(JobId id, std::uint32_t attempt, const HolderRef& by);
    void set_paused(const std::string& queue, bool paused);
    // Paused until `until` (wall time), then resumed by tick() (a timed pause, PAUSE for_ms).
    void pause_until(const std::string& queue, Millis until);
    std::optional<Millis> paused_until(const std::string& queue) const;
    // A queue's limits (QUEUE_SET, QUEUE_UNSET): stored, and from this pass on obeyed by claim()
    // (docs/LIFECYCLE.md "Queue limits"); other brokers read them at their next refresh, and
    // until then claim nothing of the queue.
    void set_limits(const std::string& queue, const QueueLimits& limits);
    QueueLimits limits(const std::string& queue) const;
    const std::unordered_map<std::string, QueueLimits>& all_limits() const { return limits_; }
    // Why the queue's ready jobs wait although workers may take them: kHeldMaxRunning when as
    // many run as its max_running allows, kHeldRate when its rate window is full (on a shared
    // store: as the last claim or refresh saw).
    std::optional<std::string> held(const std::string& queue) const;
    // Forgets the queues that have no job (in any state), no pause and for which `in_use` is
    // false (a worker serves it, it had recent activity): what a queue costs in memory is
    // given back. Returns the queues forgotten.
    std::vector<std::string> sweep_queues(const std::function<bool(const std::string&)>& in_use);
    // Deletes finished jobs (PURGE); how many.
    std::uint64_t purge(JobState state, const std::optional<std::string>& queue, Millis before,
                        std::size_t limit);
    // Progress of the current attempt only; false (nothing written) for any other.
    bool progress(const Progress& p);

    // ---- schedules (broker/schedules.cpp; docs/LIFECYCLE.md "Schedules") ---------------------
    // Stores a schedule whose first tick is the first after `now`. Throws bad_request (a bad
    // cron field, an unknown zone; the message says which), invalid_state (the name is taken),
    // too_large (max_schedules), and what SUBMIT would refuse of its job's queue.
    Schedule add_schedule(Schedule s, Millis now);
    // Throws not_found.
    void remove_schedule(const std::string& name);
    // Paused: no tick fires. Resumed: ticks from `now` on (those of the pause do not fire).
    // Returns the schedule; throws not_found.
    Schedule pause_schedule(const std::string& name, bool paused, Millis now);
    // With the last job's state (nullopt: no such schedule).
    std::optional<Schedule> schedule(const std::string& name);
    std::vector<Schedule> schedules();

    // ---- batches (broker/batches.cpp; docs/LIFECYCLE.md "Batches") ------------------------
    // A new open batch (description, on_complete, on_success of `b`). Throws too_large when a
    // callback's queue would be one too many.
    // A known `token`: the batch it opened (nothing new).
    BatchInfo open_batch(BatchInfo b, const std::optional<std::string>& token, Millis now);
    // Sealed (takes no more members; idempotent): its callbacks fire once every member has
    // finished, in this pass when they all have. Written before the pass commits
    // (before_commit()): read the batch after that for the reply. Throws not_found.
    void seal_batch(JobId id, Millis now);
    // With its callbacks' specs; nullopt: no such batch.
    std::optional<BatchInfo> batch(JobId id);
    // Newest first, ids below `before` when given; without the callbacks' specs.
    std::vector<BatchInfo> batches(std::size_t limit, std::optional<JobId> before);

    // ---- the pass ----------------------------------------------------------------------------
    // This pass's events and the jobs it finished (for waiters), until committed()/rolled_back().
    const std::vector<PendingEvent>& events() const { return pending_; }
    std::vector<PendingEvent>& events() { return pending_; }
    const std::vector<JobId>& finished() const { return finished_; }
    // Before the pass commits: what its members' changes did to their batches (counters, the
    // callbacks that fire). Throws StoreError as any write.
    void before_commit() { flush_batches(); }
    void committed();
    void rolled_back(const std::unordered_map<JobId, HolderRef>& held, Millis now);
    // True once since the last call when a job became ready or a queue was resumed.
    bool take_dispatch_hint() { return std::exchange(dispatch_hint_, false); }

    // ---- reads for the sessions (memory only) -----------------------------------------------
    // A shared store: the database decides, other brokers change jobs too (see the top).
    bool shared() const { return shared_; }
    // Whether claim() may find a job (on a shared store: it has not found the queue empty
    // since the last poll; in memory: also, the queue is below its max_running).
    bool claimable(const std::string& queue, bool commands) const;
    bool is_paused(const std::string& queue) const { return paused_.count(queue) > 0; }
    const std::unordered_set<std::string>& paused() const { return paused_; }
    const std::unordered_map<std::string, StateCounts>& counts() const { return counts_; }
    std::optional<Millis> oldest_ready(const std::string& queue) const;
    // A shared store: the cluster's live brokers as of the last refresh (each second).
    const std::vector<BrokerInfo>& cluster() const { return cluster_; }
    // The job's running attempt as WORKERS shows it; nullopt when it is not running.
    std::optional<WorkerJob> running(JobId id) const;
    // Shared store: of `ids` (jobs other brokers report finished), the attempts held here that
    // are over (cancelled or otherwise ended through another broker). They are forgotten; their
    // workers are to be told (ABORT).
    std::vector<Aborted> ended_elsewhere(const std::vector<JobId>& ids);
    // The queue of an unfinished job.
    std::optional<std::string> queue_of(JobId id) const;
    // The job has not finished (on a shared store: as far as this pass knows).
    bool unfinished(JobId id);
    std::size_t live_count() const { return live_.size(); }
    std::size_t ready_count() const { return ready_.size(); }
    std::size_t orphan_count() const { return orphans_.size(); }
    // When tick() has something to do next (wall time).
    Millis next_deadline(Millis bound) const;

  private:
    // submit() of one job, its batch (if any) checked by the caller.
    Submitted submit_one(JobSpec spec, Millis now);
    // Batches: SUBMIT's check (each batch named exists and is open; throws not_found,
    // invalid_state), a member's terminal step (entered or left a terminal state), the callbacks
    // that step (or the seal) makes due, and one callback's job.
    void check_batches(const std::vector<JobSpec>& specs);
    void batch_step(JobId batch, JobState from, JobState to);
    void flush_batches();
    void fire_batch(const BatchInfo& b);
    std::optional<JobId> submit_callback(const BatchInfo& b, bool success,
                                         const std::optional<JobSpec>& spec);
    // A submitted spec as the store writes it (ready, or scheduled for later).
    NewJob new_job(JobSpec spec, Millis now) const;
    // submit() of a job with parents (spec.after).
    Submitted submit_after(JobSpec spec);
    // A job reached a terminal state `how`: its blocked children are cancelled (a parent that
    // did not succeed, without after_any) or count one parent less, and the last makes them
    // ready (or scheduled).
    void release_children(JobId parent, JobState how);
    // Memory's share of a job the store has just inserted with `id`.
    void admit(const NewJob& job, JobId id, const char* reason);
    Name intern(const std::string& name) { return Name(&*names_.insert(name).first); }
    // Throws too_large when `queue` would be one queue more than max_queues.
    void check_queue_bound(const std::string& queue) const;
    void check_queue_bound(const std::vector<JobSpec>& specs) const;
    // The one place a job changes state: store (compare-and-set), event, counts, and where
    // the job lives in memory (place()).
    // False (nothing changed) only on a shared store, when another broker changed the job
    // first; on SQLite memory is the truth and a refused change fails the pass.
    bool transition(JobId id, Live& l, JobState to, Transition t);
    // Puts a job where its state keeps it: the ready index, the timers, or (finished) nowhere.
    void place(JobId id, Live& l);
    void note_event(JobId id, const Live& l, const Transition& t);
    // A failed attempt: retrying after the backoff, or dead when no attempts are left.
    bool fail_attempt(JobId id, Live& l, Transition t, bool permanent);
    bool lose_attempt(JobId id, Live& l, const std::string& reason);
    // ready | scheduled | retrying -> expired: not dispatched by its expires_at.
    bool expire(JobId id, Live& l);
    // The job's expires_at has come by now_ (memory only).
    bool past_expiry(JobId id) const;
    std::optional<Claim> claim_one(const std::string& queue, bool commands, const HolderRef& by);
    std::vector<Claim> claim_shared(const std::string& queue, bool commands,
                                    const std::vector<HolderRef>& slots);
    // The job to decide on: memory's entry; on a shared store the cached entry while it is the
    // running attempt `attempt`, else the row as stored now (in scratch_ unless it is cached).
    Live* current(JobId id, std::optional<std::uint32_t> attempt = std::nullopt);
    Live* from_row(const LiveJob& row);
    void tick_shared(Millis now, std::vector<Aborted>& aborted);
    void tick_memory(Millis now, std::vector<Aborted>& aborted);
    void refresh();
    void load_pauses();
    // tick()'s part for timed pauses: those due resume (at most promote_batch per pass).
    void resume_due(Millis now);
    // In memory: how many more of the queue's jobs may start now under its rate (the most when
    // it has none), and a wake-up when that is none.
    std::size_t rate_room(const std::string& queue);
    bool result_applied(const JobInfo& job, bool ok);
    // tick()'s part for schedules: the due ticks of up to schedule_batch schedules.
    void fire_schedules(Millis now);
    void fire_schedule(const Schedule& s, Millis now);
    void with_last_state(Schedule& s);
    Millis backoff(const Live& l);
    void forget_removed(const std::vector<Removed>& removed, std::uint64_t* total);
    static Millis since(const Live& l);
    // A wall time (a stored started_at + timeout) as the monotonic time it falls at.
    Millis mono_at(Millis wall) const { return mono_ + (wall - now_); }

    EngineConfig cfg_;
    Store& store_;
    Millis now_ = 0;
    Millis mono_ = 0;
    std::unordered_map<JobId, Live> live_;
    std::unordered_set<std::string> names_;  // queue names, interned (never shrinks)
    ReadyIndex ready_;
    DeadlineHeap timers_;  // retrying/scheduled jobs by run_at (stale entries skipped)
    DeadlineHeap leases_;  // running attempts with a timeout, by timeout + grace (monotonic)
    std::unordered_map<std::string, JobId> unique_live_;  // unique key -> unfinished job
    // Running attempts dispatched before this start under another epoch (Store::epoch), from the
    // store; every other running attempt is of this start's epoch. Kept out of Live (its size).
    std::unordered_map<JobId, std::uint32_t> prior_epoch_;
    // Unfinished jobs with an expiry: id -> expires_at (wall time). Few jobs have one, so it is
    // kept out of Live (its size). expiries_ holds their deadlines while they wait (ready,
    // scheduled, retrying; stale entries skipped); a running job's is dropped, and pushed again
    // should the job come back to waiting.
    std::unordered_map<JobId, Millis> expiry_;
    DeadlineHeap expiries_;
    // In memory: the jobs some blocked job waits for, so that a finishing job without children
    // costs no look-up (a shared store looks each time: other brokers add children too).
    std::unordered_set<JobId> has_children_;
    std::vector<std::pair<JobId, JobState>> releasing_;    // release_children()'s work list
    std::unordered_map<std::string, StateCounts> counts_;  // queue -> jobs per state
    std::unordered_set<std::string> paused_;
    std::unordered_map<std::string, Millis> pause_until_;  // timed pauses: queue -> resume at
    std::unordered_map<std::string, QueueLimits> limits_;  // queues with limits
    // Shared store: queue -> why its last claim took fewer jobs than asked (a limit).
    std::unordered_map<std::string, std::string> held_;
    // In memory: the recent starts of each queue with a rate (a shared store keeps them in the
    // queue's row).
    std::unordered_map<std::string, StartWindow> rate_windows_;
    // Queues whose rate held jobs back, with when the window has room again (wall time): then
    // a dispatch is tried (a shared store also polls).
    std::unordered_map<std::string, Millis> rate_wake_;
    // Batches whose members changed in this pass, by id (flush_batches()).
    struct BatchMove {
        BatchDelta delta;
        bool entered = false;  // a member finished: callbacks may be due
    };
    std::map<JobId, BatchMove> batch_moves_;
    std::vector<JobId> orphans_;   // running, no holder since the restart
    Millis orphans_deadline_ = 0;  // monotonic: when orphans_ still without a holder are lost
    std::mt19937_64 rng_{std::random_device{}()};
    Millis next_retention_ = 0;
    std::vector<PendingEvent> pending_;
    std::vector<JobId> finished_;
    bool dispatch_hint_ = true;
    // Shared store only.
    bool shared_ = false;
    Live scratch_;  // a row read for one decision, not kept
    // queue -> workers for whom it was found empty since the last poll (1 plain, 2 all)
    std::unordered_map<std::string, int> empty_;
    std::unordered_map<std::string, Millis> oldest_;  // queue -> oldest ready job's creation
    std::vector<BrokerInfo> cluster_;
    Millis next_poll_ = 0;
    Millis next_refresh_ = 0;
    bool promote_more_ = false;
    bool expire_more_ = false;
    // Schedules: the earliest next tick as last read from the store (a shared store: other
    // brokers add and fire schedules too, so it is read again at each refresh), and when to
    // look again.
    std::optional<Millis> next_schedule_;
    Millis schedule_retry_ = 0;  // wall time; a shared store's due rows were locked elsewhere
};

}  // namespace errand::broker
