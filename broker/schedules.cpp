// Cron schedules in the job engine: adding, pausing and removing them, and firing their ticks
// (tick()'s part). A tick submits one job whose token and unique key are "schedule:NAME:TICK"
// (TICK in ms since the epoch), in the pass that moves the schedule's cursor (next_at) past the
// tick. So a tick fires exactly once across restarts (the pass commits both or neither) and
// across brokers on one database (a broker locks the due rows it fires, the cursor moves by
// compare-and-set, and a second insert of a tick's token finds the first job).
//
// Ticks missed while no broker ran, per schedule (catch_up):
//   none    only ticks at most schedule_grace_ms old fire; older ones are skipped
//   latest  the most recent due tick fires, the older ones are skipped (the default)
//   all     every missed tick fires, oldest first, but at most catch_up_all of them (the most
//           recent ones)
// The work is bounded per pass: schedule_batch schedules, schedule_steps ticks stepped over
// each; a schedule with more due ticks (an every-second schedule after a week down) keeps its
// cursor where it stopped and carries on in the next pass.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>

#include "cron.hpp"
#include "engine.hpp"
#include "errand/clock.hpp"

namespace errand::broker {
namespace {

CronSchedule parse_cron(const Schedule& s) {
    try {
        return CronSchedule::parse(s.cron, s.zone);
    } catch (const CronError& e) {
        throw ProtocolError(ErrorCode::bad_request, e.what());
    }
}

[[noreturn]] void no_schedule(const std::string& name) {
    throw ProtocolError(ErrorCode::not_found, fmt::format("no schedule named '{}'", name));
}

}  // namespace

std::string schedule_tick_key(const std::string& name, Millis tick) {
    return fmt::format("schedule:{}:{}", name, tick);
}

void JobEngine::with_last_state(Schedule& s) {
    s.last_state.reset();
    if (!s.last_job) return;
    if (auto job = store_.get_job(*s.last_job)) s.last_state = job->state;
}

Schedule JobEngine::add_schedule(Schedule s, Millis now) {
    now_ = now;
    auto cron = parse_cron(s);
    if (s.job.batch)  // every tick would join it, and the first after its seal fail
        throw ProtocolError(ErrorCode::bad_request, "a schedule's job takes no 'batch'");
    check_queue_bound(s.job.queue);
    if (store_.get_schedule(s.name))
        throw ProtocolError(
            ErrorCode::invalid_state,
            fmt::format("a schedule named '{}' exists already (remove it first)", s.name));
    if (store_.list_schedules(cfg_.max_schedules).size() >= cfg_.max_schedules)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("{} schedules exist, the limit", cfg_.max_schedules));
    s.created_at = to_time(now);
    s.next_at = to_time(cron.next_after(now));
    s.last_at.reset();
    s.last_job.reset();
    s.last_state.reset();
    if (!store_.insert_schedule(s))  // another broker added the name in the meantime
        throw ProtocolError(ErrorCode::invalid_state,
                            fmt::format("a schedule named '{}' exists already", s.name));
    if (!s.paused && s.next_at && (!next_schedule_ || to_ms(*s.next_at) < *next_schedule_))
        next_schedule_ = to_ms(s.next_at);
    return s;
}

void JobEngine::remove_schedule(const std::string& name) {
    if (!store_.remove_schedule(name)) no_schedule(name);
}

Schedule JobEngine::pause_schedule(const std::string& name, bool paused, Millis now) {
    now_ = now;
    auto s = store_.get_schedule(name);
    if (!s) no_schedule(name);
    if (s->paused != paused) {
        // Resumed: from now on; the ticks of the pause are not caught up.
        if (!paused) s->next_at = to_time(parse_cron(*s).next_after(now));
        store_.set_schedule_paused(name, paused, to_ms(s->next_at));
        s->paused = paused;
        if (!paused && s->next_at && (!next_schedule_ || to_ms(*s->next_at) < *next_schedule_))
            next_schedule_ = to_ms(s->next_at);
    }
    with_last_state(*s);
    return *s;
}

std::optional<Schedule> JobEngine::schedule(const std::string& name) {
    auto s = store_.get_schedule(name);
    if (s) with_last_state(*s);
    return s;
}

std::vector<Schedule> JobEngine::schedules() {
    auto all = store_.list_schedules(cfg_.max_schedules);
    for (auto& s : all)
        with_last_state(s);
    return all;
}

void JobEngine::fire_schedules(Millis now) {
    if (!next_schedule_ || *next_schedule_ > now || schedule_retry_ > now) return;
    auto due = store_.due_schedules(now, cfg_.schedule_batch);
    for (const auto& s : due)
        fire_schedule(s, now);
    next_schedule_ = store_.next_schedule_at();
    // Still due: more schedules than one batch, or more ticks than one pass steps over (carry
    // on next pass); or, when nothing was due here, rows another broker has locked (look again
    // after a poll interval, when it has committed).
    schedule_retry_ = due.empty() ? now + cfg_.poll_ms : now;
}

void JobEngine::fire_schedule(const Schedule& s, Millis now) {
    const Millis from = to_ms(*s.next_at);
    ScheduleAdvance to{std::nullopt, to_ms(s.last_at), s.last_job};
    std::optional<CronSchedule> cron;
    try {
        cron = CronSchedule::parse(s.cron, s.zone);
    } catch (const CronError& e) {
        // Stored by an errand that accepted it (a zone this system's tzdata no longer has):
        // the schedule stops, and shows no next tick.
        spdlog::error("schedule {} stops: {}", s.name, e.what());
    }
    if (cron) {
        const std::size_t keep = s.catch_up == "latest" ? 1 : cfg_.catch_up_all;
        const std::size_t max_steps = std::max(cfg_.schedule_steps, keep + 1);
        std::deque<Millis> window;  // the last `keep` due ticks seen
        std::optional<Millis> cur = from;
        for (std::size_t steps = 0; cur && *cur <= now && steps < max_steps; ++steps) {
            window.push_back(*cur);
            if (window.size() > keep) window.pop_front();
            cur = cron->next_after(*cur);
        }
        to.next_at = cur;
        if (cur && *cur <= now) {
            // Out of steps with ticks still due: resume at the oldest that may still fire.
            to.next_at = window.front();
            window.clear();
        }
        for (Millis tick : window) {
            if (s.catch_up == "none" && now - tick > cfg_.schedule_grace_ms) continue;
            JobSpec spec = s.job;
            spec.token = schedule_tick_key(s.name, tick);
            spec.unique = spec.token;
            // A schedule's expires_in_ms counts from its tick, not from when the tick fires (a
            // tick caught up late expires as if it had fired on time).
            if (spec.expires_in) {
                spec.expires_at = to_time(tick + spec.expires_in->count());
                spec.expires_in.reset();
            }
            try {
                auto sub = submit(std::move(spec), now);
                to.last_at = tick;
                to.last_job = sub.id;
                spdlog::debug("schedule {}: tick {} {} job {}", s.name, tick,
                              sub.duplicate ? "had" : "submitted", sub.id);
            } catch (const ProtocolError& e) {  // its queue is one too many, say
                spdlog::warn("schedule {}: the tick at {} submitted no job: {}", s.name, tick,
                             e.what());
            }
        }
    }
    // The row is this transaction's (locked, or the only writer's): the cursor must move.
    if (!store_.advance_schedule(s.name, from, to))
        throw StoreError(
            fmt::format("schedule {} is no longer at tick {} in the store", s.name, from), false);
}

}  // namespace errand::broker
