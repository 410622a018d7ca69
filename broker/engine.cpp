// The job engine's rules: one function per edge of the state diagram (docs/LIFECYCLE.md), all
// changing state through transition().
#include "engine.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/log_fields.hpp"
#include "lifecycle.hpp"

namespace errand::broker {
namespace {

std::size_t index_of(JobState s) {
    return static_cast<std::size_t>(s);
}

// The store's own chores in slices (space given back after a purge): one slice per this often,
// so requests between them are served at once.
constexpr Millis kMaintenanceEveryMs = 10;

[[noreturn]] void conflict(JobId id, const Transition& t) {
    // Memory and the store disagree: the pass is rolled back and memory reloaded from the store.
    throw StoreError(fmt::format("job {} is no longer {} at attempt {} in the store", id,
                                 t.from ? to_string(*t.from) : "new", t.from_attempts),
                     false);
}

}  // namespace

JobEngine::JobEngine(EngineConfig config, Store& store)
    : cfg_(config), store_(store), shared_(store.shared()) {}

// ---- memory from the store ----------------------------------------------------------------

void JobEngine::rebuild(const std::unordered_map<JobId, HolderRef>& held, Millis now) {
    now_ = now;
    live_.clear();
    prior_epoch_.clear();
    has_children_.clear();
    releasing_.clear();
    if (!shared_)
        for (JobId p : store_.parents())
            has_children_.insert(p);
    expiry_.clear();
    expiries_ = {};
    ready_.clear();
    timers_ = {};
    leases_ = {};
    orphans_.clear();
    orphans_deadline_ = mono_ + cfg_.orphan_grace_ms;
    unique_live_.clear();
    counts_.clear();
    for (const auto& c : store_.count_jobs())
        counts_[c.queue][index_of(c.state)] = c.count;
    load_pauses();
    next_schedule_ = store_.next_schedule_at();
    dispatch_hint_ = true;
    if (shared_) {
        // Only the attempts this broker's workers hold are kept; the rest stays in the database.
        refresh();
        empty_.clear();
        for (const auto& [id, holder] : held) {
            auto row = store_.load_held(id);
            if (!row || row->state != JobState::running) continue;
            Live* l = from_row(*row);
            Live& kept = live_.insert_or_assign(id, std::move(*l)).first->second;
            kept.holder = holder;
            if (kept.timeout_ms && row->started_at)
                leases_.push({mono_at(*row->started_at + *kept.timeout_ms + cfg_.timeout_grace_ms),
                              id, kept.attempts});
        }
        return;
    }
    store_.scan_live([&](LiveJob&& j) {
        Live l = Live::from(j, intern(j.queue));
        if (!l.unique.empty()) unique_live_[l.unique] = j.id;
        if (j.expires_at) expiry_[j.id] = *j.expires_at;
        if (j.state == JobState::running) {
            if (j.epoch != store_.epoch()) prior_epoch_[j.id] = j.epoch;
            if (j.timeout_ms && j.started_at)
                leases_.push({mono_at(*j.started_at + *j.timeout_ms + cfg_.timeout_grace_ms), j.id,
                              j.attempts});
            l.run_at = j.started_at.value_or(0);  // see since()
            if (auto h = held.find(j.id); h != held.end()) {
                l.holder = h->second;
            } else {
                orphans_.push_back(j.id);
            }
        }
        auto& entry = live_.emplace(j.id, std::move(l)).first->second;
        place(j.id, entry);
    });
}

// A stored row as the engine's entry, in scratch_ (the caller moves it on to keep it).
Live* JobEngine::from_row(const LiveJob& row) {
    scratch_ = Live::from(row, intern(row.queue));
    if (row.state == JobState::running) scratch_.run_at = row.started_at.value_or(0);
    return &scratch_;
}

Live* JobEngine::current(JobId id, std::optional<std::uint32_t> attempt) {
    auto it = live_.find(id);
    if (!shared_) return it == live_.end() ? nullptr : &it->second;
    // A cached attempt can only have been ended by another broker since, which the
    // compare-and-set of the change catches.
    if (it != live_.end() && attempt && it->second.attempts == *attempt) return &it->second;
    auto row = store_.load_live(id);
    if (!row || is_terminal(row->state)) {
        if (it != live_.end()) live_.erase(it);
        return nullptr;
    }
    Live* l = from_row(*row);
    if (it != live_.end() && row->state == JobState::running &&
        it->second.attempts == row->attempts)
        l->holder = it->second.holder;
    return l;
}

// Counts, pauses and the oldest ready jobs as the database has them (other brokers change them
// too); between two refreshes this broker's own changes keep them current.
void JobEngine::refresh() {
    counts_.clear();
    for (const auto& c : store_.count_jobs())
        counts_[c.queue][index_of(c.state)] = c.count;
    load_pauses();
    oldest_.clear();
    for (auto& [q, at] : store_.oldest_ready())
        oldest_[q] = at;
    cluster_ = store_.cluster();
    next_schedule_ = store_.next_schedule_at();
}

void JobEngine::load_pauses() {
    paused_.clear();
    for (auto& q : store_.paused_queues())
        paused_.insert(std::move(q));
    pause_until_.clear();
    for (auto& [q, until] : store_.pause_deadlines())
        pause_until_[q] = until;
    limits_.clear();
    for (auto& [q, l] : store_.queue_limits())
        limits_[q] = l;
}

// ---- the one transition path --------------------------------------------------------------

//   (submit) ──► ready ◄──────────── retrying ◄─┐   submit(); due: tick()
//      │          │  ▲                           │ FAIL, attempts left: finish()
//      ▼          │  └─ lose(), release()        │ timed out: tick()
//   scheduled ────┘                              │
//   (due: tick())   claim() ▼                    │
//              running ──────────────────────────┘
//                 │ DONE: finish() ──► succeeded
//                 │ FAIL permanent / last attempt: finish(); lost on the last attempt: lose();
//                 │ timed out on the last attempt: tick() ──► dead
//   ready, scheduled, retrying, running ── cancel() ──► cancelled
//   dead ── revive() ──► ready
//   scheduled, retrying ── run_now() ──► ready
//   ready, scheduled, retrying ── expire() (tick(), or claim() meeting it past its expiry) ──►
//   expired
//   succeeded, dead, cancelled, expired ── remove() ──► (deleted; force: cancel() first)
bool JobEngine::transition(JobId id, Live& l, JobState to, Transition t) {
    check_transition(l.state, to);
    t.id = id;
    t.from = l.state;
    t.from_attempts = l.attempts;
    t.to = to;
    t.at = now_;
    if (!t.attempts) t.attempts = l.attempts;
    t.queue = l.queue.str();
    if (is_terminal(to)) t.finished_at = now_;
    if (!t.worker && l.state == JobState::running && l.holder) t.worker = l.holder->name;
    const JobState from = l.state;
    const JobId batch = l.batch;
    if (!store_.apply(t)) {
        if (!shared_) conflict(id, t);
        live_.erase(id);  // another broker changed it: forget what this one thought
        return false;
    }
    if (spdlog::should_log(spdlog::level::debug))  // per job: build nothing unless logged
        spdlog::debug("{}: {} -> {} ({}){}", job_fields(id, l.queue.str(), *t.attempts),
                      to_string(l.state), to_string(to), t.reason,
                      t.worker ? " worker=" + *t.worker : std::string());
    note_event(id, l, t);
    auto& c = counts_[l.queue];
    if (c[index_of(l.state)] > 0) --c[index_of(l.state)];
    ++c[index_of(to)];
    if (auto lim = l.state == JobState::running && !limits_.empty() ? limits_.find(l.queue.str())
                                                                    : limits_.end();
        lim != limits_.end() && lim->second.limits_starts()) {
        // Room under the queue's max_running: its waiting jobs may start now.
        dispatch_hint_ = true;
        if (shared_) empty_.erase(l.queue.str());
    }
    l.state = to;
    l.attempts = *t.attempts;
    // run_at of a ready or running job: when it entered that state (see since()).
    if (to == JobState::ready || to == JobState::running) l.run_at = now_;
    if (to == JobState::scheduled || to == JobState::retrying) l.run_at = t.run_at.value_or(now_);
    if (to != JobState::running) l.holder.reset();
    place(id, l);  // `l` may dangle from here on
    if (is_terminal(to)) release_children(id, to);
    if (batch && (is_terminal(to) || is_terminal(from))) batch_step(batch, from, to);
    return true;
}

// A job finished: its blocked children each take one step (docs/LIFECYCLE.md "Dependencies").
// A child cancelled here finishes too, so its own children follow; the work list (not
// recursion) keeps a long chain's stack flat. The store hands each edge out once (take_children
// deletes it) and counts a child's unfinished parents down in one statement, so of several
// brokers finishing parents at once exactly one sees the count reach 0; the blocked -> ready
// change is then compare-and-set as any other.
void JobEngine::release_children(JobId parent, JobState how) {
    if (!shared_ && !has_children_.erase(parent)) return;  // memory knows who has children
    releasing_.push_back({parent, how});
    if (releasing_.size() > 1) return;  // an outer call is working through the list
    struct Clear {
        std::vector<std::pair<JobId, JobState>>& v;
        ~Clear() { v.clear(); }
    } clear{releasing_};
    for (std::size_t i = 0; i < releasing_.size(); ++i) {
        auto [p, outcome] = releasing_[i];
        for (const auto& c : store_.take_children(p)) {
            Live* l = current(c.child);
            if (!l || l->state != JobState::blocked) continue;
            if (outcome != JobState::succeeded && !c.any) {
                Transition t;
                t.reason = fmt::format("parent {} {}", p, to_string(outcome));
                t.set_outcome = true;
                t.error = t.reason;
                transition(c.child, *l, JobState::cancelled, std::move(t));
                continue;
            }
            auto left = store_.parent_finished(c.child);
            if (!left || *left > 0) continue;
            if (shared_) l = current(c.child);  // the row as counted
            if (!l || l->state != JobState::blocked) continue;
            Transition t;
            t.reason = "unblocked";
            JobState to = JobState::ready;
            if (l->run_at > now_) {
                to = JobState::scheduled;
                t.run_at = l->run_at;
            }
            transition(c.child, *l, to, std::move(t));
        }
    }
}

void JobEngine::place(JobId id, Live& l) {
    if (shared_) {
        // The database holds the ready jobs and the timers; memory only hints at when to look.
        switch (l.state) {
            case JobState::ready:
                empty_.erase(l.queue);
                dispatch_hint_ = true;
                break;
            case JobState::scheduled:
            case JobState::retrying:
                timers_.push({l.run_at, id});
                break;
            case JobState::running:
                return;
            case JobState::blocked:
                break;  // the database holds its edges; a finishing parent looks for it
            case JobState::succeeded:
            case JobState::dead:
            case JobState::cancelled:
            case JobState::expired:
                finished_.push_back(id);
                break;
        }
        live_.erase(id);  // `l` may be scratch_ or this entry: either way not kept
        return;
    }
    if (is_terminal(l.state)) {
        expiry_.erase(id);
    } else if (l.state != JobState::running) {
        if (auto e = expiry_.find(id); e != expiry_.end()) expiries_.push({e->second, id});
    }
    switch (l.state) {
        case JobState::ready:
            ready_.push(l.queue, id, l.priority, l.has_argv);
            dispatch_hint_ = true;
            break;
        case JobState::scheduled:
        case JobState::retrying:
            timers_.push({l.run_at, id});
            break;
        case JobState::running:
            break;  // with its holder (and its lease, set by claim() or rebuild())
        case JobState::blocked:
            break;  // waits in live_ for its parents (release_children())
        case JobState::succeeded:
        case JobState::dead:
        case JobState::cancelled:
        case JobState::expired:
            finished_.push_back(id);
            if (!l.unique.empty()) unique_live_.erase(l.unique);
            live_.erase(id);
            break;
    }
}

// When a ready job became ready, or a running job was dispatched: Live::run_at, which has no
// other use in those states, holds it (set by transition(); 0 after a restart for running
// jobs, the creation time for ready ones). Keeps Live small for the metrics' sake.
Millis JobEngine::since(const Live& l) {
    if (l.state == JobState::ready && l.run_at == 0) return l.created_at;
    return l.run_at;
}

void JobEngine::note_event(JobId id, const Live& l, const Transition& t) {
    PendingEvent p;
    p.event = EventView{
        0,        id,      l.queue, t.from, t.to, t.attempts.value_or(l.attempts), to_time(t.at),
        t.worker, t.reason};
    if (t.from == JobState::ready && t.to == JobState::running)
        p.waited_ms = std::max<Millis>(0, now_ - since(l));
    if (t.from == JobState::running && since(l) > 0)
        p.ran_ms = std::max<Millis>(0, now_ - since(l));
    // An attempt that ended with an outcome other than success or cancellation failed (FAIL,
    // timeout, worker lost); a drained worker's RELEASE sets no outcome and is not counted.
    p.failed_attempt = t.from == JobState::running && t.set_outcome &&
                       t.to != JobState::succeeded && t.to != JobState::cancelled;
    pending_.push_back(std::move(p));
}

// ---- submit ---------------------------------------------------------------------------------

void JobEngine::check_queue_bound(const std::string& queue) const {
    if (counts_.count(queue) || paused_.count(queue)) return;
    std::size_t known = counts_.size();
    for (const auto& q : paused_)
        if (!counts_.count(q)) ++known;
    if (known >= cfg_.max_queues)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("the broker has {} queues, its most (--max-queues); a "
                                        "queue without jobs, workers or pause is forgotten after "
                                        "a minute",
                                        known));
}

// The queues of one SUBMIT together: each new one counts (checked one by one, the later jobs'
// new queues would be refused after the earlier jobs were written).
void JobEngine::check_queue_bound(const std::vector<JobSpec>& specs) const {
    std::unordered_set<std::string_view> fresh;
    for (const auto& s : specs)
        if (!counts_.count(s.queue) && !paused_.count(s.queue)) fresh.insert(s.queue);
    if (fresh.size() < 2) {
        if (!fresh.empty()) check_queue_bound(std::string(*fresh.begin()));
        return;
    }
    std::size_t known = counts_.size();
    for (const auto& q : paused_)
        if (!counts_.count(q)) ++known;
    if (known + fresh.size() > cfg_.max_queues)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("the SUBMIT names {} new queues and the broker has {}; at "
                                        "most {} (--max-queues)",
                                        fresh.size(), known, cfg_.max_queues));
}

std::vector<std::string> JobEngine::sweep_queues(
    const std::function<bool(const std::string&)>& in_use) {
    std::vector<std::string> gone;
    for (auto it = counts_.begin(); it != counts_.end();) {
        const auto& [q, c] = *it;
        bool empty = std::all_of(c.begin(), c.end(), [](auto n) { return n == 0; });
        if (!empty || paused_.count(q) || in_use(q)) {
            ++it;
            continue;
        }
        gone.push_back(q);
        it = counts_.erase(it);
    }
    for (const auto& q : gone) {
        ready_.erase(q);  // stale entries of jobs that left ready by other ways than claim()
        empty_.erase(q);
        oldest_.erase(q);
    }
    // A name no entry refers to any more: in memory, every unfinished job is counted in its
    // queue, so a queue without counts has none; on a shared store only the cached attempts
    // (and the scratch entry) hold names.
    if (shared_) {
        std::unordered_set<const std::string*> held;
        for (const auto& [id, l] : live_)
            held.insert(&l.queue.str());
        if (!scratch_.queue.empty()) held.insert(&scratch_.queue.str());
        std::erase_if(names_, [&](const std::string& n) {
            return !held.count(&n) && !counts_.count(n) && !paused_.count(n);
        });
    } else {
        for (const auto& q : gone)
            if (!(!scratch_.queue.empty() && scratch_.queue.str() == q)) names_.erase(q);
    }
    return gone;
}

Submitted JobEngine::submit(JobSpec spec, Millis now) {
    if (!spec.batch) return submit_one(std::move(spec), now);
    std::vector<JobSpec> one;
    one.push_back(std::move(spec));
    return submit(std::move(one), now).front();
}

Submitted JobEngine::submit_one(JobSpec spec, Millis now) {
    now_ = now;
    check_queue_bound(spec.queue);
    // A known token wins (a resent request gets its own job back), then a unique key held by an
    // unfinished job. The token is checked by the insert itself, so the common case costs no
    // extra lookup.
    if (spec.unique) {
        // A shared store asks the database (and its insert checks again, for a broker
        // inserting the same key at the same time).
        std::optional<JobId> holder;
        if (shared_) {
            holder = store_.find_unique(*spec.unique);
        } else if (auto u = unique_live_.find(*spec.unique); u != unique_live_.end()) {
            holder = u->second;
        }
        if (holder) {
            std::optional<JobId> existing;
            if (spec.token) existing = store_.find_token(*spec.token);
            return {existing.value_or(*holder), true};
        }
    }
    if (!spec.after.empty()) return submit_after(std::move(spec));
    NewJob job = new_job(std::move(spec), now);
    const char* reason = job.state == JobState::scheduled ? "scheduled" : "submitted";
    auto ins = store_.insert_job(job, reason);
    if (ins.duplicate) return {ins.id, true};
    if (job.spec.batch) ++batch_moves_[*job.spec.batch].delta.total;
    admit(job, ins.id, reason);
    return {ins.id, false};
}

// A job with parents: each must exist (not_found, nothing written, before the insert). Parents
// already succeeded count at once; one already dead, cancelled or expired cancels the job at
// once (after_any: counts too). The rest are its edges; with none left it is an ordinary job.
// On a shared store parent_states() locks the parents' rows until the commit, so a parent
// finishing on another broker meanwhile waits and then finds this job's edge.
Submitted JobEngine::submit_after(JobSpec spec) {
    const std::vector<JobId> after = spec.after;
    const bool any = spec.after_any;
    auto states = store_.parent_states(after);
    std::vector<JobId> waiting;
    std::optional<std::pair<JobId, JobState>> failed;
    for (JobId p : after) {
        auto st = std::find_if(states.begin(), states.end(),
                               [&](const auto& ps) { return ps.first == p; });
        if (st == states.end())
            throw ProtocolError(ErrorCode::not_found,
                                fmt::format("no job {} (a parent in 'after')", p));
        if (!is_terminal(st->second))
            waiting.push_back(p);
        else if (st->second != JobState::succeeded && !failed)
            failed = *st;
    }
    NewJob job = new_job(std::move(spec), now_);
    const bool cancel_now = failed && !any;
    // A delay still to run is kept in run_at: once unblocked, the job is scheduled until then.
    if (!waiting.empty() || cancel_now) job.state = JobState::blocked;
    const char* reason = job.state == JobState::blocked     ? "blocked"
                         : job.state == JobState::scheduled ? "scheduled"
                                                            : "submitted";
    auto ins = store_.insert_job(job, reason);
    if (ins.duplicate) return {ins.id, true};
    if (job.spec.batch) ++batch_moves_[*job.spec.batch].delta.total;
    if (job.state == JobState::blocked && !cancel_now) {
        store_.add_parents(ins.id, waiting, any);
        if (!shared_)
            for (JobId p : waiting)
                has_children_.insert(p);
    }
    admit(job, ins.id, reason);
    if (cancel_now) {
        Live* l = current(ins.id);
        Transition t;
        t.reason = fmt::format("parent {} {}", failed->first, to_string(failed->second));
        t.set_outcome = true;
        t.error = t.reason;
        if (l) transition(ins.id, *l, JobState::cancelled, std::move(t));
    }
    return {ins.id, false};
}

std::vector<Submitted> JobEngine::submit(std::vector<JobSpec> specs, Millis now) {
    now_ = now;
    // A missing parent refuses the whole SUBMIT: looked for before any job of it is written.
    for (const auto& s : specs)
        if (!s.after.empty() && specs.size() > 1) {
            auto found = store_.parent_states(s.after);
            for (JobId p : s.after)
                if (std::none_of(found.begin(), found.end(),
                                 [&](const auto& ps) { return ps.first == p; }))
                    throw ProtocolError(ErrorCode::not_found,
                                        fmt::format("no job {} (a parent in 'after')", p));
        }
    check_batches(specs);      // so does a batch that is gone or sealed
    check_queue_bound(specs);  // and queues one too many: before the first job is written
    std::vector<Submitted> out;
    out.reserve(specs.size());
    // A unique key, or a queue not counted yet (the queue bound counts each new one), goes one
    // by one.
    auto simple = [&] {
        return std::all_of(specs.begin(), specs.end(), [&](const JobSpec& s) {
            return !s.unique && s.after.empty() &&
                   (counts_.count(s.queue) || paused_.count(s.queue));
        });
    };
    if (!shared_ || specs.size() < 2 || !simple()) {
        // One by one: in memory that is as cheap.
        for (auto& s : specs)
            out.push_back(submit_one(std::move(s), now));
        return out;
    }
    // A shared store writes the batch in one statement (one round trip, one plan).
    std::vector<NewJob> jobs;
    std::vector<const char*> reason_of;  // string literals: events keep a view of them
    std::vector<std::string> reasons;
    jobs.reserve(specs.size());
    for (auto& s : specs) {
        jobs.push_back(new_job(std::move(s), now));
        reason_of.push_back(jobs.back().state == JobState::scheduled ? "scheduled" : "submitted");
        reasons.emplace_back(reason_of.back());
    }
    auto inserted = store_.insert_jobs(jobs, reasons);
    for (std::size_t i = 0; i < jobs.size(); ++i)
        if (jobs[i].spec.batch && !inserted[i].duplicate)
            ++batch_moves_[*jobs[i].spec.batch].delta.total;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (!inserted[i].duplicate) admit(jobs[i], inserted[i].id, reason_of[i]);
        out.push_back({inserted[i].id, inserted[i].duplicate});
    }
    return out;
}

NewJob JobEngine::new_job(JobSpec spec, Millis now) const {
    // Precedence: the job's own value, else its queue's default (QUEUE_SET), else the broker's.
    auto d = limits_.find(spec.queue);
    const QueueLimits none;
    const QueueLimits& q = d == limits_.end() ? none : d->second;
    if (!spec.max_attempts)
        spec.max_attempts = q.max_attempts.value_or(limits::kDefaultMaxAttempts);
    if (!spec.priority) spec.priority = q.priority.value_or(0);
    if (!spec.timeout && q.timeout_ms) spec.timeout = std::chrono::milliseconds(*q.timeout_ms);
    Millis run_at = spec.run_at ? to_ms(*spec.run_at) : now + to_ms(spec.delay).value_or(0);
    NewJob job;
    if (spec.expires_at)
        job.expires_at = to_ms(*spec.expires_at);
    else if (spec.expires_in)
        job.expires_at = now + spec.expires_in->count();
    else if (q.expires_in_ms)
        job.expires_at = now + *q.expires_in_ms;
    job.spec = std::move(spec);
    job.created_at = now;
    if (run_at > now) {
        job.state = JobState::scheduled;
        job.run_at = run_at;
    }
    return job;
}

void JobEngine::admit(const NewJob& job, JobId id, const char* reason) {
    const Millis now = job.created_at;
    const JobSpec& js = job.spec;
    const Millis run_at = js.run_at ? to_ms(*js.run_at) : now + to_ms(js.delay).value_or(0);
    Live l;
    l.queue = intern(js.queue);
    l.unique = UniqueKey(js.unique);
    l.run_at = run_at;
    l.created_at = now;
    l.timeout_ms = to_ms(js.timeout);
    l.backoff_ms = to_ms(js.backoff);
    l.backoff_cap_ms = to_ms(js.backoff_cap);
    l.max_attempts = js.max_attempts.value_or(limits::kDefaultMaxAttempts);
    l.priority = static_cast<std::int16_t>(js.priority.value_or(0));
    l.state = job.state;
    l.has_argv = js.argv.has_value();
    l.batch = js.batch.value_or(0);
    if (js.unique && !shared_) unique_live_[*js.unique] = id;
    if (job.expires_at) {
        if (shared_)
            timers_.push({*job.expires_at, id});  // when to look (expire_due) sooner than a poll
        else
            expiry_[id] = *job.expires_at;
    }
    ++counts_[js.queue][index_of(job.state)];
    pending_.push_back(
        {EventView{0, id, js.queue, std::nullopt, job.state, 0, to_time(now), std::nullopt, reason},
         std::nullopt, std::nullopt});
    place(id, live_.emplace(id, std::move(l)).first->second);
}

// ---- dispatch -------------------------------------------------------------------------------

bool JobEngine::claimable(const std::string& queue, bool commands) const {
    if (paused_.count(queue)) return false;
    if (!shared_) return ready_.has_ready(queue, commands) && !held(queue);
    auto e = empty_.find(queue);
    return e == empty_.end() || e->second < (commands ? 2 : 1);
}

std::vector<Claim> JobEngine::claim(const std::string& queue, bool commands, std::size_t max,
                                    const HolderRef& by, Millis now) {
    now_ = now;
    if (shared_) return claim_shared(queue, commands, std::vector<HolderRef>(max, by));
    std::vector<Claim> out;
    while (out.size() < max) {
        auto c = claim_one(queue, commands, by);
        if (!c) break;
        out.push_back(std::move(*c));
    }
    return out;
}

std::vector<Claim> JobEngine::claim(const std::string& queue, bool commands,
                                    const std::vector<HolderRef>& slots, Millis now) {
    now_ = now;
    if (shared_) return claim_shared(queue, commands, slots);
    std::vector<Claim> out;
    for (const auto& by : slots) {
        auto c = claim_one(queue, commands, by);
        if (!c) break;
        out.push_back(std::move(*c));
    }
    return out;
}

// One statement claims the batch for all the slots; the database counted each attempt and
// wrote its event, naming the slot's worker.
std::vector<Claim> JobEngine::claim_shared(const std::string& queue, bool commands,
                                           const std::vector<HolderRef>& slots) {
    if (slots.empty()) return {};
    const std::size_t max = slots.size();
    std::string held;
    ClaimRequest req{queue, commands, max, {}, now_};
    req.workers.reserve(max);
    for (const auto& h : slots)
        req.workers.push_back(h->name);
    auto lim = limits_.find(queue);
    req.limited = lim != limits_.end() && lim->second.limits_starts();
    req.held = &held;
    Millis wake = 0;
    req.wake = &wake;
    auto rows = store_.claim(req);
    if (rows.size() > max)  // the pass rolls back: no worker is sent more than its credit
        throw StoreError(
            fmt::format("a claim of {} returned {} jobs for {} slots", queue, rows.size(), max),
            false);
    if (wake > 0) rate_wake_[queue] = wake;  // the window is full once these started
    if (held.empty()) {
        held_.erase(queue);
    } else {
        held_[queue] = std::move(held);
    }
    if (rows.size() < max) {
        int& e = empty_[queue];
        e = std::max(e, commands ? 2 : 1);
    }
    std::vector<Claim> out;
    auto& c = counts_[queue];
    std::size_t slot = 0;
    for (auto& [row, data] : rows) {
        const HolderRef& by = slots[slot++];
        Live* scratch = from_row(row);
        Live& l = live_.insert_or_assign(row.id, std::move(*scratch)).first->second;
        l.holder = by;
        l.run_at = now_;
        if (c[index_of(JobState::ready)] > 0) --c[index_of(JobState::ready)];
        ++c[index_of(JobState::running)];
        PendingEvent p;
        p.event =
            EventView{0,          row.id,        l.queue.str(), JobState::ready, JobState::running,
                      l.attempts, to_time(now_), by->name,      "dispatched"};
        p.waited_ms = std::max<Millis>(0, now_ - l.created_at);
        pending_.push_back(std::move(p));
        if (l.timeout_ms)
            leases_.push({mono_ + *l.timeout_ms + cfg_.timeout_grace_ms, row.id, l.attempts});
        out.push_back(
            Claim{row.id, l.attempts, std::move(data.payload), std::move(data.argv), l.timeout_ms});
    }
    return out;
}

std::optional<Claim> JobEngine::claim_one(const std::string& queue, bool commands,
                                          const HolderRef& by) {
    Millis now = now_;
    if (held(queue) || rate_room(queue) == 0) return std::nullopt;
    while (auto id = ready_.pop(queue, commands)) {
        auto l = live_.find(*id);
        if (l == live_.end() || l->second.state != JobState::ready) continue;  // stale entry
        if (past_expiry(*id)) {  // tick() has not come to it yet (its slice was full)
            expire(*id, l->second);
            continue;
        }
        auto data = store_.dispatch_data(*id);
        if (!data) continue;
        Live& job = l->second;
        Transition t;
        t.attempts = job.attempts + 1;
        t.worker = by->name;
        t.started_at = now;
        t.reason = "dispatched";
        t.epoch = store_.epoch();
        transition(*id, job, JobState::running, std::move(t));
        job.holder = by;
        prior_epoch_.erase(*id);
        if (auto w = rate_windows_.find(queue); w != rate_windows_.end()) {
            w->second.started(now, 1, limits_[queue].rate_per_ms.value_or(1));
            rate_room(queue);  // full now: a wake-up for when it has room again
        }
        if (job.timeout_ms)
            leases_.push({mono_ + *job.timeout_ms + cfg_.timeout_grace_ms, *id, job.attempts});
        return Claim{*id,
                     job.attempts,
                     std::move(data->payload),
                     std::move(data->argv),
                     job.timeout_ms,
                     store_.epoch()};
    }
    return std::nullopt;
}

// ---- results --------------------------------------------------------------------------------

// Whether attempt `job.attempts` ended by a result of this kind: DONE left the job succeeded; a
// FAIL wrote an event out of running with a FAIL's reason (finish() below). An attempt that was
// cancelled, timed out, lost or released ended otherwise, and a late result of it is stale.
bool JobEngine::result_applied(const JobInfo& job, bool ok) {
    if (ok) return job.state == JobState::succeeded;
    if (job.state == JobState::succeeded || job.state == JobState::cancelled) return false;
    auto events = store_.events(job.id);
    for (auto e = events.rbegin(); e != events.rend(); ++e) {
        if (e->from != JobState::running || e->attempt != job.attempts) continue;
        return e->reason.starts_with("failed") || e->reason.starts_with("no attempts left: ");
    }
    return false;
}

Finished JobEngine::finish(JobResult m, Millis now) {
    now_ = now;
    const bool ok = m.ok;
    Live* l = current(m.id, m.attempt);
    // The fencing token is (epoch, attempt): the same attempt number dispatched again after a
    // power cut lost the first dispatch has a new epoch, and a result of the lost one is stale.
    // A result without an epoch (a worker that predates it) is fenced by the attempt alone.
    if (l && l->state == JobState::running && l->attempts == m.attempt && m.epoch != 0) {
        auto prior = prior_epoch_.find(m.id);
        const std::uint32_t epoch = prior != prior_epoch_.end() ? prior->second : store_.epoch();
        if (epoch != 0 && m.epoch != epoch) {
            spdlog::warn(
                "{}: rejected stale {} (attempt {} of broker start {}, the running one "
                "is of start {}: dispatched again after a power cut)",
                job_fields(m.id, l->queue.str(), m.attempt), ok ? "DONE" : "FAIL", m.attempt,
                m.epoch, epoch);
            return {Verdict::stale, nullptr};
        }
    }
    if (!l || l->state != JobState::running || l->attempts != m.attempt) {
        // A resent result of an attempt that was already applied is acknowledged again.
        auto job = store_.get_job(m.id);
        if (job && job->attempts == m.attempt && result_applied(*job, m.ok))
            return {Verdict::already_applied, nullptr};
        spdlog::warn("{}: rejected stale {} (job is {} at attempt {})",
                     job_fields(m.id, job ? job->queue : "", m.attempt), ok ? "DONE" : "FAIL",
                     job ? to_string(job->state) : "gone", job ? job->attempts : 0);
        return {Verdict::stale, nullptr};
    }
    Live& job = *l;
    HolderRef holder = job.holder;
    Transition t;
    t.set_outcome = true;
    t.exit_code = m.exit_code;
    t.result = std::move(m.result);
    bool applied = true;
    if (ok) {
        t.reason = "done";
        applied = transition(m.id, job, JobState::succeeded, std::move(t));
    } else {
        // The event's reason carries the first line of the error, shortened.
        auto line = std::string_view(m.error).substr(0, m.error.find('\n'));
        t.reason = fmt::format("{}: {}", m.permanent ? "failed permanently" : "failed",
                               line.substr(0, 120));
        if (!m.permanent && job.attempts >= job.max_attempts)
            t.reason = fmt::format("no attempts left: {}", line.substr(0, 120));
        t.error = m.error;
        applied = fail_attempt(m.id, job, std::move(t), m.permanent);
    }
    if (!applied) {  // another broker ended the attempt first (shared store)
        spdlog::warn("{}: rejected stale {} (the attempt was ended through another broker)",
                     job_fields(m.id, "", m.attempt), ok ? "DONE" : "FAIL");
        return {Verdict::stale, nullptr};
    }
    return {Verdict::applied, std::move(holder)};
}

// The job goes back to ready uncharged: `attempts` stays, so the next dispatch is attempt+1 and
// this attempt's results stay fenced off, and max_attempts grows by one so the job keeps as many
// attempts as it had.
Finished JobEngine::release(JobId id, std::uint32_t attempt, Millis now) {
    now_ = now;
    Live* l = current(id, attempt);
    if (!l || l->state != JobState::running || l->attempts != attempt)
        return {Verdict::stale, nullptr};
    Live& job = *l;
    HolderRef holder = job.holder;
    std::erase(orphans_, id);
    spdlog::info("{}: released by {} (draining), back to ready without counting the attempt",
                 job_fields(id, job.queue.str(), attempt),
                 holder ? holder->name : std::string("unknown worker"));
    Transition t;
    t.max_attempts = job.max_attempts + 1;
    job.max_attempts = *t.max_attempts;
    t.reason = "released by worker";
    if (!transition(id, job, JobState::ready, std::move(t))) return {Verdict::stale, nullptr};
    return {Verdict::applied, std::move(holder)};
}

bool JobEngine::fail_attempt(JobId id, Live& l, Transition t, bool permanent) {
    t.set_outcome = true;
    if (permanent || l.attempts >= l.max_attempts) {
        if (t.reason.empty()) t.reason = permanent ? "failed permanently" : "no attempts left";
        return transition(id, l, JobState::dead, std::move(t));
    }
    if (t.reason.empty()) t.reason = "failed";
    t.run_at = now_ + backoff(l);
    return transition(id, l, JobState::retrying, std::move(t));
}

// Retry delay after the n-th failed attempt: d/2 + random(0, d/2), d = min(cap, base·2^(n-1)).
// Gaps never shrink as attempts go on (equal jitter).
Millis JobEngine::backoff(const Live& l) {
    Millis base = l.backoff_ms.value_or(cfg_.retry_delay_ms);
    Millis cap = std::max(base, l.backoff_cap_ms.value_or(cfg_.retry_cap_ms));
    Millis d = base;
    for (std::uint32_t i = 1; i < l.attempts && d < cap; ++i)
        d *= 2;
    d = std::min(d, cap);
    if (d <= 1) return d;
    std::uniform_int_distribution<Millis> jitter(0, d / 2);
    return d - d / 2 + jitter(rng_);
}

bool JobEngine::lose_attempt(JobId id, Live& l, const std::string& reason) {
    Transition t;
    t.set_outcome = true;
    t.error = reason;
    t.reason = reason;
    return transition(id, l, l.attempts >= l.max_attempts ? JobState::dead : JobState::ready,
                      std::move(t));
}

bool JobEngine::lose(JobId id, const std::string* instance, const std::string& reason, Millis now) {
    now_ = now;
    auto l = live_.find(id);
    if (l == live_.end() || l->second.state != JobState::running) return false;
    if (instance && !(l->second.holder && l->second.holder->instance == *instance)) return false;
    return lose_attempt(id, l->second, reason);
}

bool JobEngine::expire(JobId id, Live& l) {
    Transition t;
    t.reason = "expired";
    t.set_outcome = true;
    t.error = "expired: not started by its expiry";
    return transition(id, l, JobState::expired, std::move(t));
}

bool JobEngine::past_expiry(JobId id) const {
    auto e = expiry_.find(id);
    return e != expiry_.end() && e->second <= now_;
}

// ---- requests -------------------------------------------------------------------------------

std::optional<Aborted> JobEngine::cancel(JobId id, Millis now) {
    now_ = now;
    Live* l = current(id);
    if (!l) {
        auto job = store_.get_job(id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("job {} is already {}; only unfinished jobs can be "
                                        "cancelled",
                                        id, to_string(job->state)));
    }
    std::optional<Aborted> stopped;
    if (l->state == JobState::running) {
        if (l->holder) stopped = Aborted{id, l->attempts, l->holder, "cancelled"};
        std::erase(orphans_, id);
    }
    Transition t;
    t.reason = "cancelled";
    t.set_outcome = true;
    t.error = "cancelled";
    if (!transition(id, *l, JobState::cancelled, std::move(t)))
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("job {} changed through another broker while being "
                                        "cancelled: look again",
                                        id));
    return stopped;
}

void JobEngine::revive(JobId id, Millis now) {
    now_ = now;
    auto j = store_.load_live(id);
    if (!j) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
    if (j->state != JobState::dead)
        throw ProtocolError(
            ErrorCode::invalid_state,
            fmt::format("job {} is {}; only dead jobs can be retried", id, to_string(j->state)));
    if (j->unique) {
        std::optional<JobId> holder;
        if (shared_) {
            holder = store_.find_unique(*j->unique);
        } else if (auto u = unique_live_.find(*j->unique); u != unique_live_.end()) {
            holder = u->second;
        }
        if (holder)
            throw ProtocolError(
                ErrorCode::invalid_state,
                fmt::format("job {} cannot be retried: job {} holds its unique key", id, *holder));
    }
    Live* l = from_row(*j);
    if (!shared_) {
        l = &live_.emplace(id, std::move(*l)).first->second;
        if (!l->unique.empty()) unique_live_[l->unique] = id;
        // Its expiry still holds: a job retried after it expires at once.
        if (j->expires_at) expiry_[id] = *j->expires_at;
    }
    // Attempts only grow, so a late result of an old attempt can never match a new dispatch:
    // the job gets its first budget of attempts on top of those it has used.
    Transition t;
    t.max_attempts = j->attempts + j->attempt_budget;
    l->max_attempts = *t.max_attempts;
    t.reason = "retried by request";
    if (!transition(id, *l, JobState::ready, std::move(t)))
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("job {} changed through another broker while being "
                                        "retried: look again",
                                        id));
}

void JobEngine::run_now(JobId id, Millis now) {
    now_ = now;
    Live* l = current(id);
    const auto refuse = [&](std::string_view state) {
        return ProtocolError(ErrorCode::invalid_state,
                             fmt::format("job {} is {}; only scheduled or retrying jobs can be "
                                         "run now",
                                         id, state));
    };
    if (!l) {
        auto job = store_.get_job(id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
        throw refuse(to_string(job->state));
    }
    if (l->state != JobState::scheduled && l->state != JobState::retrying)
        throw refuse(to_string(l->state));
    Transition t;
    t.reason = "run now by request";
    // Its timer entry stays on the heap, stale (tick_memory skips it: the job is not waiting).
    if (!transition(id, *l, JobState::ready, std::move(t)))
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("job {} changed through another broker while being "
                                        "made ready: look again",
                                        id));
}

std::optional<Aborted> JobEngine::remove(JobId id, bool force, Millis now) {
    now_ = now;
    std::optional<Aborted> stopped;
    if (Live* l = current(id)) {
        if (!force)
            throw ProtocolError(ErrorCode::invalid_state,
                                fmt::format("job {} is {}; only finished jobs can be deleted "
                                            "(force cancels it first)",
                                            id, to_string(l->state)));
        stopped = cancel(id, now);
    }
    auto removed = store_.remove_job(id);
    if (!removed) {
        auto job = store_.get_job(id);
        if (!job) throw ProtocolError(ErrorCode::not_found, fmt::format("no job {}", id));
        // Unfinished again: only another broker can have done that since the lines above.
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("job {} is {} (changed through another broker): look "
                                        "again",
                                        id, to_string(job->state)));
    }
    std::uint64_t n = 0;
    forget_removed({*removed}, &n);
    return stopped;
}

std::vector<JobId> JobEngine::revive_dead(const std::optional<std::string>& queue,
                                          std::size_t limit, Millis now) {
    std::vector<JobId> ids;
    for (JobId id : store_.dead_jobs(queue, limit)) {
        try {
            revive(id, now);
            ids.push_back(id);
        } catch (const ProtocolError&) {
            // a unique key now held by another job: leave this one dead
        }
    }
    return ids;
}

std::vector<Aborted> JobEngine::ended_elsewhere(const std::vector<JobId>& ids) {
    std::vector<Aborted> out;
    if (!shared_) return out;
    for (JobId id : ids) {
        auto l = live_.find(id);
        if (l == live_.end() || l->second.state != JobState::running || !l->second.holder) continue;
        auto row = store_.get_job(id);
        if (row && row->state == JobState::running && row->attempts == l->second.attempts)
            continue;  // still this broker's attempt
        std::string reason(row ? to_string(row->state) : std::string_view("removed"));
        spdlog::info("{}: ended through another broker ({}); stopping it on its worker",
                     job_fields(id, l->second.queue.str(), l->second.attempts), reason);
        out.push_back({id, l->second.attempts, l->second.holder, std::move(reason)});
        live_.erase(l);
    }
    return out;
}

bool JobEngine::adopt(JobId id, std::uint32_t attempt, const HolderRef& by) {
    if (shared_) {
        // The attempt may have been dispatched through another broker: this one holds it now.
        Live* l = current(id, attempt);
        if (!l || l->state != JobState::running || l->attempts != attempt) return false;
        if (l->holder && l->holder->instance != by->instance) return false;
        if (!store_.hold(id, attempt)) {
            live_.erase(id);
            return false;
        }
        Live& kept = live_.insert_or_assign(id, std::move(*l)).first->second;
        kept.holder = by;
        if (kept.timeout_ms && kept.run_at)  // run_at of a running row: its start
            leases_.push(
                {mono_at(kept.run_at + *kept.timeout_ms + cfg_.timeout_grace_ms), id, attempt});
        return true;
    }
    auto l = live_.find(id);
    bool ok = l != live_.end() && l->second.state == JobState::running &&
              l->second.attempts == attempt &&
              (!l->second.holder || l->second.holder->instance == by->instance);
    if (!ok) return false;
    l->second.holder = by;
    std::erase(orphans_, id);
    return true;
}

void JobEngine::pause_until(const std::string& queue, Millis until) {
    store_.pause_until(queue, until);
    paused_.insert(queue);
    pause_until_[queue] = until;
}

std::optional<Millis> JobEngine::paused_until(const std::string& queue) const {
    auto it = pause_until_.find(queue);
    if (it == pause_until_.end()) return std::nullopt;
    return it->second;
}

void JobEngine::resume_due(Millis now) {
    std::vector<std::pair<std::string, Millis>> due;
    for (const auto& [q, until] : pause_until_)
        if (until <= now && due.size() < cfg_.promote_batch) due.emplace_back(q, until);
    for (const auto& [q, until] : due) {
        pause_until_.erase(q);
        // False: paused again (or resumed) since, here or through another broker; the next
        // refresh reads what it is now.
        if (!store_.resume_due(q, until)) continue;
        paused_.erase(q);
        dispatch_hint_ = true;
        spdlog::info("queue {} resumed: its timed pause is over", q);
    }
}

void JobEngine::set_limits(const std::string& queue, const QueueLimits& limits) {
    store_.set_queue_limits(queue, limits);
    if (limits.any()) {
        limits_[queue] = limits;
    } else {
        limits_.erase(queue);
        held_.erase(queue);
    }
    if (!limits.rate) {
        rate_windows_.erase(queue);
        rate_wake_.erase(queue);
    }
    dispatch_hint_ = true;  // a limit raised or removed: waiting jobs may start
    empty_.erase(queue);
}

QueueLimits JobEngine::limits(const std::string& queue) const {
    auto l = limits_.find(queue);
    return l == limits_.end() ? QueueLimits{} : l->second;
}

std::optional<std::string> JobEngine::held(const std::string& queue) const {
    auto l = limits_.find(queue);
    if (l == limits_.end()) return std::nullopt;
    auto c = counts_.find(queue);
    if (c == counts_.end() || c->second[index_of(JobState::ready)] == 0) return std::nullopt;
    if (l->second.max_running && c->second[index_of(JobState::running)] >= *l->second.max_running)
        return std::string(kHeldMaxRunning);
    if (shared_) {
        if (auto h = held_.find(queue); h != held_.end()) return h->second;
        return std::nullopt;
    }
    if (l->second.rate) {
        auto w = rate_windows_.find(queue);
        if (w != rate_windows_.end() &&
            w->second.room(now_, *l->second.rate, l->second.rate_per_ms.value_or(1)) == 0)
            return std::string(kHeldRate);
    }
    return std::nullopt;
}

std::size_t JobEngine::rate_room(const std::string& queue) {
    auto l = limits_.find(queue);
    if (l == limits_.end() || !l->second.rate) return SIZE_MAX;
    const Millis per = l->second.rate_per_ms.value_or(1);
    auto& w = rate_windows_[queue];
    auto room = w.room(now_, *l->second.rate, per);
    if (room == 0)
        if (auto at = w.frees_at(per)) rate_wake_[queue] = *at;
    return room;
}

void JobEngine::set_paused(const std::string& queue, bool paused) {
    store_.set_paused(queue, paused);
    pause_until_.erase(queue);
    if (paused) {
        paused_.insert(queue);
    } else {
        paused_.erase(queue);
        dispatch_hint_ = true;
    }
}

void JobEngine::forget_removed(const std::vector<Removed>& removed, std::uint64_t* total) {
    for (const auto& rm : removed) {
        auto& c = counts_[rm.queue][index_of(rm.state)];
        c -= std::min(c, rm.count);
        *total += rm.count;
    }
}

std::uint64_t JobEngine::purge(JobState state, const std::optional<std::string>& queue,
                               Millis before, std::size_t limit) {
    std::uint64_t total = 0;
    forget_removed(store_.remove_finished(state, queue, before, limit), &total);
    return total;
}

bool JobEngine::progress(const Progress& p) {
    Live* l = current(p.id, p.attempt);
    if (!l || l->state != JobState::running || l->attempts != p.attempt)
        return false;  // progress of an attempt that is over: nothing to record
    store_.set_progress(p.id, p.percent, p.message);
    return true;
}

// ---- time -----------------------------------------------------------------------------------

std::vector<Aborted> JobEngine::tick(Millis now) {
    now_ = now;
    std::vector<Aborted> aborted;
    if (shared_) {
        tick_shared(now, aborted);
    } else {
        tick_memory(now, aborted);
    }
    fire_schedules(now);
    if (!pause_until_.empty()) resume_due(now);
    for (auto it = rate_wake_.begin(); it != rate_wake_.end();) {
        if (it->second > now) {
            ++it;
            continue;
        }
        dispatch_hint_ = true;  // the rate window has room again
        empty_.erase(it->first);
        it = rate_wake_.erase(it);
    }
    store_.maintain(now);
    if (mono_ >= next_retention_ && store_.leader()) {
        // Each terminal state on its own clock (dead jobs are kept longer, so that failures are
        // still there to look at), retention_batch rows in all per pass. A queue with its own
        // retention (QUEUE_SET) keeps its finished jobs that long instead, but not its dead
        // ones: --dead-retention is for failures wherever they are.
        std::uint64_t n = 0;
        for (JobState s : kAllStates) {
            if (!is_terminal(s) || n >= cfg_.retention_batch) continue;
            if (s == JobState::dead) {
                forget_removed(store_.remove_finished(s, std::nullopt, now - cfg_.dead_retention_ms,
                                                      cfg_.retention_batch - n),
                               &n);
                continue;
            }
            forget_removed(store_.remove_finished(s, std::nullopt, now - cfg_.retention_ms,
                                                  cfg_.retention_batch - n, true),
                           &n);
            for (const auto& [queue, l] : limits_) {
                if (!l.retention_ms || n >= cfg_.retention_batch) continue;
                forget_removed(store_.remove_finished(s, queue, now - *l.retention_ms,
                                                      cfg_.retention_batch - n),
                               &n);
            }
        }
        if (n > 0) spdlog::debug("retention: deleted {} finished jobs", n);
        // Batches whose members have all finished: as long as a success is kept, or a dead job
        // when one of them died (its revival still counts in the batch).
        if (n < cfg_.retention_batch)
            n += store_.remove_batches(now - cfg_.retention_ms, now - cfg_.dead_retention_ms,
                                       cfg_.retention_batch - n);
        // A full batch means more are due: carry on next pass, else look again in a second.
        next_retention_ = n >= cfg_.retention_batch ? mono_ : mono_ + 1000;
    }
    return aborted;
}

// A shared store: due jobs, timeouts and attempts of dead brokers are rows any broker may act on
// (the others skip the rows it locked, or find them changed); memory's timers only say when to
// look sooner than the next poll.
void JobEngine::tick_shared(Millis now, std::vector<Aborted>& aborted) {
    const bool poll = mono_ >= next_poll_;
    bool due = poll || promote_more_ || expire_more_;
    while (!timers_.empty() && timers_.top().at <= now) {
        timers_.pop();
        due = true;
    }
    if (due) {
        // Expired first: a job both due and past its expiry expires rather than becoming ready.
        auto expired = store_.expire_due(now, cfg_.promote_batch);
        expire_more_ = expired.size() >= cfg_.promote_batch;
        for (const auto& p : expired) {
            auto& c = counts_[p.queue];
            if (c[index_of(p.from)] > 0) --c[index_of(p.from)];
            ++c[index_of(JobState::expired)];
            finished_.push_back(p.id);
            pending_.push_back({EventView{0, p.id, p.queue, p.from, JobState::expired, p.attempts,
                                          to_time(now), std::nullopt, "expired"},
                                std::nullopt, std::nullopt});
        }
        for (const auto& p : expired) {
            release_children(p.id, JobState::expired);
            if (p.batch) batch_step(p.batch, p.from, JobState::expired);
        }
        auto promoted = store_.promote_due(now, cfg_.promote_batch);
        promote_more_ = promoted.size() >= cfg_.promote_batch;
        for (const auto& p : promoted) {
            auto& c = counts_[p.queue];
            if (c[index_of(p.from)] > 0) --c[index_of(p.from)];
            ++c[index_of(JobState::ready)];
            empty_.erase(p.queue);
            dispatch_hint_ = true;
            pending_.push_back(
                {EventView{0, p.id, p.queue, p.from, JobState::ready, p.attempts, to_time(now),
                           std::nullopt, p.from == JobState::retrying ? "retry delay over" : "due"},
                 std::nullopt, std::nullopt});
        }
    }
    // This broker's attempts time out on its monotonic clock (a step of the wall clock does not
    // end them); the attempts of other brokers, once a second, by their stored start (the
    // brokers' wall clocks are the only time they share), should their broker not do it.
    std::vector<LiveJob> expired;
    while (!leases_.empty() && leases_.top().at <= mono_) {
        auto d = leases_.top();
        leases_.pop();
        auto l = live_.find(d.id);
        if (l == live_.end() || l->second.state != JobState::running ||
            l->second.attempts != d.attempt)
            continue;
        if (auto row = store_.load_held(d.id); row && row->attempts == d.attempt)
            expired.push_back(std::move(*row));
    }
    if (mono_ >= next_refresh_)
        for (auto& row : store_.expired_attempts(now, cfg_.timeout_grace_ms, cfg_.promote_batch))
            expired.push_back(std::move(row));
    {
        for (const auto& row : expired) {
            auto cached = live_.find(row.id);
            HolderRef holder;
            if (cached != live_.end() && cached->second.attempts == row.attempts)
                holder = cached->second.holder;
            Live* l = from_row(row);
            l->holder = holder;
            auto timeout = format_duration(l->timeout_ms.value_or(0));
            spdlog::warn("{}: no result {} after its {} timeout",
                         job_fields(row.id, row.queue, row.attempts),
                         format_duration(cfg_.timeout_grace_ms), timeout);
            Transition t;
            t.error = fmt::format("timed out after {} (no result from the worker)", timeout);
            t.reason = "timed out";
            if (fail_attempt(row.id, *l, std::move(t), false) && holder)
                aborted.push_back({row.id, row.attempts, holder, "timed out"});
        }
    }
    if (mono_ >= next_refresh_ && store_.leader()) {
        // Attempts of a broker that went silent, that no worker took to another broker.
        for (const auto& row : store_.orphaned_attempts(cfg_.orphan_grace_ms, cfg_.promote_batch)) {
            if (live_.count(row.id)) continue;  // held here: this broker is alive
            spdlog::warn("{}: its broker went silent and no worker reclaimed it",
                         job_fields(row.id, row.queue, row.attempts));
            lose_attempt(row.id, *from_row(row), "worker lost");
        }
    }
    if (mono_ >= next_refresh_) {
        refresh();
        next_refresh_ = mono_ + cfg_.refresh_ms;
    }
    if (poll) {
        empty_.clear();  // other brokers may have made jobs ready there
        dispatch_hint_ = true;
        next_poll_ = mono_ + cfg_.poll_ms;
    }
}

// Each kind of chore does at most cfg_.promote_batch changes per pass, in due order: the rest
// waits for the next pass (next_deadline() says "now" while any is due), so the commit of one
// pass, and the replies behind it, stay small whatever the backlog.
void JobEngine::tick_memory(Millis now, std::vector<Aborted>& aborted) {
    std::size_t budget = cfg_.promote_batch;
    // Expired first: a job both due and past its expiry expires rather than becoming ready.
    while (!expiries_.empty() && expiries_.top().at <= now && budget > 0) {
        auto d = expiries_.top();
        expiries_.pop();
        auto l = live_.find(d.id);
        auto e = expiry_.find(d.id);
        if (l == live_.end() || e == expiry_.end() || e->second != d.at) continue;
        // Running: it finishes as it may (a dispatched job is never expired); should it come
        // back to waiting, place() pushes its deadline again.
        if (l->second.state == JobState::running) continue;
        expire(d.id, l->second);
        --budget;
    }
    budget = cfg_.promote_batch;
    while (!timers_.empty() && timers_.top().at <= now && budget > 0) {
        auto d = timers_.top();
        timers_.pop();
        auto l = live_.find(d.id);
        if (l == live_.end() || l->second.run_at != d.at) continue;
        if (l->second.state == JobState::retrying || l->second.state == JobState::scheduled) {
            Transition t;
            t.reason = l->second.state == JobState::retrying ? "retry delay over" : "due";
            transition(d.id, l->second, JobState::ready, std::move(t));
            --budget;
        }
    }
    budget = cfg_.promote_batch;
    while (!leases_.empty() && leases_.top().at <= mono_ && budget > 0) {
        auto d = leases_.top();
        leases_.pop();
        auto l = live_.find(d.id);
        if (l == live_.end() || l->second.state != JobState::running ||
            l->second.attempts != d.attempt)
            continue;
        --budget;
        auto timeout = format_duration(l->second.timeout_ms.value_or(0));
        spdlog::warn("{}: no result {} after its {} timeout",
                     job_fields(d.id, l->second.queue.str(), d.attempt),
                     format_duration(cfg_.timeout_grace_ms), timeout);
        if (l->second.holder)
            aborted.push_back({d.id, l->second.attempts, l->second.holder, "timed out"});
        std::erase(orphans_, d.id);
        Transition t;
        t.error = fmt::format("timed out after {} (no result from the worker)", timeout);
        t.reason = "timed out";
        fail_attempt(d.id, l->second, std::move(t), false);
    }
    budget = cfg_.promote_batch;
    std::erase_if(orphans_, [&](JobId id) {
        auto l = live_.find(id);
        if (l == live_.end() || l->second.state != JobState::running || l->second.holder)
            return true;
        if (orphans_deadline_ > mono_ || budget == 0) return false;
        --budget;
        spdlog::warn("{}: no worker reclaimed it after the restart",
                     job_fields(id, l->second.queue.str(), l->second.attempts));
        lose_attempt(id, l->second, "worker lost");
        return true;
    });
}

Millis JobEngine::next_deadline(Millis bound) const {
    // Monotonic deadlines, as wall time from now.
    auto wall = [&](Millis mono) { return now_ + (mono - mono_); };
    Millis next = std::min(bound, wall(next_retention_));
    if (shared_)
        next = std::min({next, wall(next_poll_), wall(next_refresh_), promote_more_ ? now_ : next});
    if (!timers_.empty()) next = std::min(next, timers_.top().at);
    if (!expiries_.empty()) next = std::min(next, expiries_.top().at);
    if (expire_more_) next = now_;
    for (const auto& [q, until] : pause_until_)
        next = std::min(next, until);
    for (const auto& [q, at] : rate_wake_)
        next = std::min(next, at);
    if (store_.maintenance_due()) next = std::min(next, now_ + kMaintenanceEveryMs);
    if (next_schedule_) next = std::min(next, std::max(*next_schedule_, schedule_retry_));
    if (!leases_.empty()) next = std::min(next, wall(leases_.top().at));
    if (!orphans_.empty()) next = std::min(next, wall(orphans_deadline_));
    return next;
}

// ---- the pass -------------------------------------------------------------------------------

void JobEngine::committed() {
    pending_.clear();
    finished_.clear();
}

void JobEngine::rolled_back(const std::unordered_map<JobId, HolderRef>& held, Millis now) {
    pending_.clear();  // a failed pass's changes never happened
    batch_moves_.clear();
    finished_.clear();
    rebuild(held, now);
}

// ---- reads ----------------------------------------------------------------------------------

std::optional<Millis> JobEngine::oldest_ready(const std::string& queue) const {
    if (shared_) {
        auto o = oldest_.find(queue);
        if (o == oldest_.end()) return std::nullopt;
        return o->second;
    }
    std::optional<Millis> oldest;
    for (JobId id : ready_.heads(queue))
        if (auto l = live_.find(id); l != live_.end())
            if (!oldest || l->second.created_at < *oldest) oldest = l->second.created_at;
    return oldest;
}

std::optional<WorkerJob> JobEngine::running(JobId id) const {
    auto l = live_.find(id);
    if (l == live_.end() || l->second.state != JobState::running) return std::nullopt;
    return WorkerJob{id, l->second.queue, l->second.attempts, to_time(since(l->second))};
}

bool JobEngine::unfinished(JobId id) {
    if (!shared_) return live_.count(id) > 0;
    auto job = store_.get_job(id);
    return job && !is_terminal(job->state);
}

std::optional<std::string> JobEngine::queue_of(JobId id) const {
    auto l = live_.find(id);
    if (l == live_.end()) return std::nullopt;
    return l->second.queue.str();
}

}  // namespace errand::broker
