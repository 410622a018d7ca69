// Batches in the job engine (docs/LIFECYCLE.md "Batches"): a batch is opened, jobs are submitted
// into it while it is open, and it is sealed; once sealed and every member has finished, its
// callbacks are submitted, each exactly once:
//   on_complete  when every member has finished, whatever the outcome (Sidekiq's on_complete)
//   on_success   when every member has succeeded; a dead member revived later that then
//                succeeds still makes it fire
// The batch's row counts its members per terminal state, changed in the transaction of each
// member's change (never a scan of the members; the changes of one pass to one batch are one
// UPDATE, flush_batches()): the pass that finishes the last member, or the seal when they all
// had, sees the counters complete and submits the callback before it commits,
// which also marks the batch fired (completed_at, succeeded_at). So a callback fires once across
// restarts (the pass commits both or neither) and across brokers on one database (the counter's
// UPDATE locks the batch's row until the commit: of two brokers finishing the last two members,
// the second sees the first's counts). The callback's token ("batch:ID:complete") is the backstop
// against a second insert.
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "engine.hpp"
#include "errand/clock.hpp"

namespace errand::broker {
namespace {

[[noreturn]] void no_batch(JobId id) {
    throw ProtocolError(ErrorCode::not_found, fmt::format("no batch {}", id));
}

}  // namespace

std::string batch_callback_key(JobId batch, bool success) {
    return fmt::format("batch:{}:{}", batch, success ? "success" : "complete");
}

BatchInfo JobEngine::open_batch(BatchInfo b, const std::optional<std::string>& token, Millis now) {
    now_ = now;
    std::vector<JobSpec> callbacks;  // their queues, counted together against max_queues
    for (const auto* cb : {&b.on_complete, &b.on_success})
        if (*cb) callbacks.push_back(**cb);
    check_queue_bound(callbacks);
    b.created_at = to_time(now);
    auto ins = store_.insert_batch(b, token);
    if (ins.duplicate) {  // a resent BATCH_OPEN: the batch it opened, as it is now
        flush_batches();
        auto known = store_.get_batch(ins.id, true);
        if (!known) no_batch(ins.id);
        with_batch_state(*known);
        return *known;
    }
    b.id = ins.id;
    with_batch_state(b);
    return b;
}

// The seal is written with the pass's other changes to the batch (flush_batches(), in id order:
// no row lock mid-pass); the callbacks then fire if every member had finished.
void JobEngine::seal_batch(JobId id, Millis now) {
    now_ = now;
    auto b = store_.get_batch(id, false);
    if (!b) no_batch(id);
    if (b->sealed_at) return;
    auto& m = batch_moves_[id];
    if (!m.delta.seal) m.delta.seal = now;
    m.entered = true;  // look at the counters once sealed
}

std::optional<BatchInfo> JobEngine::batch(JobId id) {
    auto b = store_.get_batch(id, true);
    if (b) with_batch_state(*b);
    return b;
}

std::vector<BatchInfo> JobEngine::batches(std::size_t limit, std::optional<JobId> before) {
    auto all = store_.list_batches(limit, before);
    for (auto& b : all)
        with_batch_state(b);
    return all;
}

// Before a SUBMIT writes anything: each batch its jobs name exists and is open. Read without a
// lock: the members are counted at the end of the pass (flush_batches()), by an UPDATE that
// counts them only while the batch is open.
void JobEngine::check_batches(const std::vector<JobSpec>& specs) {
    std::optional<JobId> last;  // a SUBMIT's jobs mostly name one batch: looked up once
    for (const auto& s : specs) {
        if (!s.batch || s.batch == last) continue;
        auto b = store_.get_batch(*s.batch, false);
        if (!b) no_batch(*s.batch);
        auto m = batch_moves_.find(*s.batch);  // sealed earlier in this pass
        if (b->sealed_at || (m != batch_moves_.end() && m->second.delta.seal))
            throw ProtocolError(ErrorCode::invalid_state,
                                fmt::format("batch {} is sealed: it takes no more jobs", *s.batch));
        last = s.batch;
    }
}

// A member of `batch` went from `from` to `to`, one of them terminal (revive() leaves dead):
// counted by flush_batches(), before the pass commits.
void JobEngine::batch_step(JobId batch, JobState from, JobState to) {
    auto& m = batch_moves_[batch];
    if (is_terminal(from)) m.delta.add(from, -1);
    if (is_terminal(to)) {
        m.delta.add(to, 1);
        m.entered = true;
    }
}

// The pass's changes to batches' counters, one statement per batch in id order: brokers that
// finish members of the same batches lock their rows in one order (no deadlock between their
// passes), each row once per pass, for as short a time as the commit after it takes.
void JobEngine::flush_batches() {
    while (!batch_moves_.empty()) {  // a callback is no member: the loop ends after one round
        auto moves = std::exchange(batch_moves_, {});
        for (const auto& [id, m] : moves) {
            auto b = store_.batch_moved(id, m.delta);
            // Sealed through another broker after this pass found it open (SUBMIT reads it
            // without a lock): the pass must not commit members the batch no longer counts.
            if (!b && m.delta.total > 0)
                throw StoreError(fmt::format("batch {} was sealed while jobs were submitted into "
                                             "it; nothing of this pass was applied",
                                             id),
                                 false);
            if (b && m.entered) fire_batch(*b);
        }
    }
}

// The callbacks whose moment has come, each the first time it comes.
void JobEngine::fire_batch(const BatchInfo& b) {
    if (!b.sealed_at || batch_members_finished(b) < b.total) return;
    const bool complete = !b.completed_at;
    const bool success = b.succeeded == b.total && !b.succeeded_at;
    if (!complete && !success) return;
    std::optional<BatchInfo> full;
    try {
        full = store_.get_batch(b.id, true);
    } catch (const ProtocolError& e) {
        // A stored callback that no longer decodes (damage, or a check this errand added): the
        // batch fires without it rather than fail every pass that finishes one of its members.
        spdlog::error("batch {}: its callbacks cannot be read ({}); they count as fired", b.id,
                      e.what());
        full = b;
        full->on_complete.reset();
        full->on_success.reset();
    }
    if (!full) return;
    full->succeeded = b.succeeded;  // the counts as of this change
    full->dead = b.dead;
    full->cancelled = b.cancelled;
    full->expired = b.expired;
    if (complete)
        store_.batch_fired(b.id, false, submit_callback(*full, false, full->on_complete), now_);
    if (success)
        store_.batch_fired(b.id, true, submit_callback(*full, true, full->on_success), now_);
}

// A callback's job: its spec as given, with the batch's summary as payload. A callback the
// broker cannot submit (its queue is one too many now) is logged and counts as fired.
std::optional<JobId> JobEngine::submit_callback(const BatchInfo& b, bool success,
                                                const std::optional<JobSpec>& spec) {
    const char* which = success ? "on_success" : "on_complete";
    if (!spec) {
        spdlog::info("batch {} {} ({} of {} succeeded)", b.id, success ? "succeeded" : "complete",
                     b.succeeded, b.total);
        return std::nullopt;
    }
    auto failed = store_.batch_failed(b.id, limits::kMaxBatchSummaryIds + 1);
    const bool truncated = failed.size() > limits::kMaxBatchSummaryIds;
    if (truncated) failed.resize(limits::kMaxBatchSummaryIds);
    nlohmann::json summary = {{"batch", b.id},
                              {"callback", success ? "success" : "complete"},
                              {"description", b.description},
                              {"total", b.total},
                              {"succeeded", b.succeeded},
                              {"dead", b.dead},
                              {"cancelled", b.cancelled},
                              {"expired", b.expired},
                              {"failed_ids", failed},
                              {"failed_ids_truncated", truncated}};
    JobSpec job = *spec;
    job.payload = summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    job.token = batch_callback_key(b.id, success);
    job.batch.reset();
    try {
        auto sub = submit(std::move(job), now_);
        spdlog::info("batch {}: {} job {} {}", b.id, which, sub.id,
                     sub.duplicate ? "(already submitted)" : "submitted");
        return sub.id;
    } catch (const ProtocolError& e) {
        spdlog::warn("batch {}: {} submitted no job: {}", b.id, which, e.what());
        return std::nullopt;
    }
}

}  // namespace errand::broker
