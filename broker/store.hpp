// The broker's storage interface. The broker talks to its database only through Store, so a
// second engine (PostgreSQL) can follow SQLite. All writes between begin() and commit() form one
// transaction: the broker groups every mutation of one event-loop pass into it (group commit).
#pragma once

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

// A new job as inserted by SUBMIT.
struct NewJob {
    JobId id = 0;
    std::optional<std::string> token;
    std::string queue;
    std::string payload;
    std::optional<std::vector<std::string>> argv;
    std::int32_t priority = 0;
    std::uint32_t max_attempts = limits::kDefaultMaxAttempts;
    JobState state = JobState::ready;
    std::optional<Millis> run_at;
    Millis created_at = 0;
    std::optional<Millis> timeout_ms;
    std::optional<Millis> backoff_ms;
    std::optional<Millis> backoff_cap_ms;
    std::optional<std::string> unique;
};

// One state change of one job, written together with its event (in the same row write). Fields that
// are nullopt keep their stored value, except run_at and finished_at which are always written.
struct Transition {
    JobId id = 0;
    std::optional<JobState> from;  // nullopt: the job is being created
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
    std::string reason;  // for the event row
};

// What the broker keeps in memory for a job that is not finished (rebuilt at start).
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

struct DispatchData {
    std::string payload;
    std::optional<std::vector<std::string>> argv;
};

class Store {
  public:
    virtual ~Store() = default;

    virtual void begin() = 0;
    virtual void commit() = 0;
    virtual void rollback() = 0;

    // Inserts the job and its creation event; false (and nothing written) when a job with the
    // same token exists already.
    virtual bool insert_job(const NewJob& job, const std::string& reason) = 0;
    // Durable once commit() returns, like every write. An engine may keep a dispatch (a
    // transition to running) out of the job's row for a while, in a log written by the same
    // commit, and fold it into the row with the job's next change (SqliteStore does: one row
    // write per dispatched job instead of two). Every read of this interface sees such held-back
    // transitions; readers of the database itself (QueryStore) see them after materialize().
    virtual void apply(const Transition& t) = 0;
    // Writes every held-back transition into its job's row, in the current transaction.
    virtual void materialize() = 0;
    // How many transitions are held back.
    virtual std::size_t held_back() const = 0;
    virtual std::optional<JobId> find_token(const std::string& token) = 0;

    virtual std::optional<JobInfo> get_job(JobId id) = 0;
    virtual std::vector<JobInfo> list_jobs(const ListRequest& filter) = 0;
    virtual std::optional<DispatchData> dispatch_data(JobId id) = 0;

    // Every job that is not in a terminal state, in id order.
    virtual void scan_live(const std::function<void(LiveJob&&)>& fn) = 0;
    // One job as scan_live would return it (any state).
    virtual std::optional<LiveJob> load_live(JobId id) = 0;
    virtual JobId max_job_id() = 0;
    virtual std::vector<QueueStateCount> count_jobs() = 0;

    virtual void set_progress(JobId id, std::uint32_t percent, const std::string& message) = 0;
    virtual std::vector<Event> events(JobId id) = 0;

    virtual void set_paused(const std::string& queue, bool paused) = 0;
    virtual std::vector<std::string> paused_queues() = 0;

    // Up to `limit` ids of dead jobs (of `queue` when given), oldest first.
    virtual std::vector<JobId> dead_jobs(const std::optional<std::string>& queue,
                                         std::size_t limit) = 0;
    // Deletes up to `limit` jobs (and their events) in `state` (any terminal state when nullopt)
    // that finished before `finished_before`, of `queue` when given.
    virtual std::vector<Removed> remove_finished(std::optional<JobState> state,
                                                 const std::optional<std::string>& queue,
                                                 Millis finished_before, std::size_t limit) = 0;
    // Returns free pages to the file system, a few at a time (no-op where unsupported).
    virtual void reclaim_space(int pages) = 0;
};

// ---- Reads for the HTTP API (CQRS) --------------------------------------------------------

// One page of jobs, newest first: ids below `before` (the cursor of the previous page).
struct JobPage {
    std::optional<std::string> queue;
    std::optional<JobState> state;
    std::size_t limit = 50;
    std::optional<JobId> before;
};

// Read-only queries on a connection of their own, used by the HTTP thread so that browsing jobs
// and histories never runs on (or waits for) the broker loop. It sees committed data only; not
// thread-safe (the caller serialises).
class QueryStore {
  public:
    virtual ~QueryStore() = default;
    virtual std::optional<JobInfo> get_job(JobId id) = 0;
    virtual std::vector<Event> events(JobId id) = 0;
    virtual std::vector<JobInfo> jobs(const JobPage& page) = 0;
    // Bytes of the database (pages in use and free) plus its WAL, when known.
    virtual std::optional<std::uint64_t> size_bytes() = 0;
};

}  // namespace errand::broker
