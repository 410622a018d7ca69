// SQLite implementation of Store: one file, WAL mode, prepared statements made once.
#pragma once

#include <sqlite3.h>

#include <msgpack.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>

#include "store.hpp"

namespace errand::broker {

struct SqliteOptions {
    bool synchronous_full = true;  // PRAGMA synchronous=FULL (else NORMAL)
    int cache_mib = 64;            // page cache of the broker's connection
    // WAL checkpoints run on a thread of their own every this often, so a commit never waits
    // for one (0: SQLite's automatic checkpoints inside commits instead).
    int checkpoint_interval_ms = 100;
};

// Opening fails with StoreError (a corrupt or foreign file, a newer schema, no permission).
class SqliteStore final : public Store {
  public:
    SqliteStore(const std::string& path, SqliteOptions options = {});
    ~SqliteStore() override;

    void commit() override;
    void rollback() override;
    bool writing() const override;

    Inserted insert_job(const NewJob& job, const std::string& reason) override;
    bool apply(const Transition& t) override;
    void set_progress(JobId id, std::uint32_t percent, const std::string& message) override;
    void set_paused(const std::string& queue, bool paused) override;
    void pause_until(const std::string& queue, Millis until) override;
    bool resume_due(const std::string& queue, Millis until) override;
    std::vector<Removed> remove_finished(std::optional<JobState> state,
                                         const std::optional<std::string>& queue,
                                         Millis finished_before, std::size_t limit,
                                         bool skip_own_retention = false) override;
    std::optional<Removed> remove_job(JobId id) override;
    // Writes held-back dispatches into their rows once a second, and gives pages that deletions
    // freed back to the file system, a few at a time.
    void maintain(Millis now) override;
    std::uint32_t epoch() const override { return epoch_; }

    std::optional<JobInfo> get_job(JobId id) override;
    std::vector<JobInfo> list_jobs(const ListRequest& filter) override;
    std::vector<Event> events(JobId id) override;

    std::optional<JobId> find_token(const std::string& token) override;
    std::vector<std::pair<JobId, JobState>> parent_states(const std::vector<JobId>& ids) override;
    void add_parents(JobId child, const std::vector<JobId>& parents, bool any) override;
    std::vector<ChildEdge> take_children(JobId parent) override;
    std::optional<std::uint32_t> parent_finished(JobId child) override;
    std::vector<JobId> parents() override;
    std::optional<DispatchData> dispatch_data(JobId id) override;
    void scan_live(const std::function<void(LiveJob&&)>& fn) override;
    std::optional<LiveJob> load_live(JobId id) override;
    std::vector<QueueStateCount> count_jobs() override;
    std::vector<std::string> paused_queues() override;
    void set_queue_limits(const std::string& queue, const QueueLimits& limits) override;
    std::vector<std::pair<std::string, QueueLimits>> queue_limits() override;
    std::vector<std::pair<std::string, Millis>> pause_deadlines() override;
    std::vector<JobId> dead_jobs(const std::optional<std::string>& queue,
                                 std::size_t limit) override;

    bool insert_schedule(const Schedule& s) override;
    bool remove_schedule(const std::string& name) override;
    bool set_schedule_paused(const std::string& name, bool paused,
                             std::optional<Millis> next_at) override;
    std::optional<Schedule> get_schedule(const std::string& name) override;
    std::vector<Schedule> list_schedules(std::size_t limit) override;
    std::vector<Schedule> due_schedules(Millis now, std::size_t limit) override;
    bool advance_schedule(const std::string& name, Millis from, const ScheduleAdvance& to) override;
    std::optional<Millis> next_schedule_at() override;

    Inserted insert_batch(const BatchInfo& b, const std::optional<std::string>& token) override;
    std::optional<BatchInfo> get_batch(JobId id, bool specs) override;
    std::optional<BatchInfo> batch_moved(JobId id, const BatchDelta& d) override;
    void batch_fired(JobId id, bool success, std::optional<JobId> job, Millis now) override;
    std::vector<JobId> batch_failed(JobId id, std::size_t limit) override;
    std::vector<BatchInfo> list_batches(std::size_t limit, std::optional<JobId> before) override;
    std::size_t remove_batches(Millis before, Millis dead_before, std::size_t limit) override;

    // SQLite's own mechanics, public for its tests (the engine reaches them through maintain()):
    // Opens the write transaction now (every write does so anyway).
    void begin();
    // Writes every held-back dispatch into its job's row, in the current transaction.
    void materialize();
    // How many dispatches are held back from their rows.
    std::size_t held_back() const;
    // Returns up to `pages` free pages to the file system; how many are left.
    int reclaim_space(int pages);
    bool maintenance_due() const override { return reclaim_due_; }
    // The largest id in the database (or below it: deleted ones), 0 when empty.
    JobId max_job_id();

    // Virtual-machine steps the reads of a start (scan_live, count_jobs) took so far: what
    // they cost, whatever the machine, for the tests of "flat as it grows".
    std::uint64_t start_steps() const { return start_steps_; }
    // Virtual-machine steps of every batch_moved() so far: a member's change costs its batch's
    // row, never a look at the other members (tests/test_store.cpp).
    std::uint64_t batch_steps() const { return batch_steps_; }

    int schema_version();
    static constexpr int kSchemaVersion = 15;

  private:
    struct Statements;
    struct ScheduleStatements;
    ScheduleStatements& sched();
    struct BatchStatements;
    BatchStatements& batch();
    void exec(const char* sql);
    bool check_identity();  // true for a new, empty file
    void migrate();
    void count_epoch(bool synchronous_full);

    // Held-back dispatches (see store_sqlite.cpp).
    struct Held {
        Transition t;
        Event event;
    };
    // What a row must hold for write_row to change it (the compare-and-set of apply()).
    struct RowIs {
        std::optional<JobState> state;
        std::uint32_t attempts = 0;
    };
    // False when `expect` is given and the row does not match it.
    bool write_row(const Transition& t, std::span<const Event> events, bool reset_progress,
                   std::optional<RowIs> expect);
    void write_event(JobId job, const Event& e);
    // job_counts: terminal jobs per queue and state, changed by this transaction (written by
    // flush_counts(), at commit).
    void count(std::string_view queue, JobState state, std::int64_t by);
    void flush_counts();
    void write_held(std::unordered_map<JobId, Held>::iterator it);
    void reload_held();
    void overlay(JobInfo& j) const;
    void overlay(LiveJob& j) const;

    void start_checkpointer(const std::string& path, int interval_ms);
    void cut_wal();
    void stop_checkpointer();

    sqlite3* db_ = nullptr;
    std::unique_ptr<Statements> st_;
    std::uint32_t epoch_ = 0;  // this open's broker_epoch (count_epoch)
    std::unique_ptr<ScheduleStatements> sched_;
    std::unique_ptr<BatchStatements> batch_;
    JobId next_id_ = 1;            // the id insert_job gives next (from the file at open/rollback)
    Millis next_materialize_ = 0;  // maintain(): when held-back dispatches go into their rows
    bool reclaim_due_ = false;     // maintain(): rows were deleted, pages may be free
    bool incremental_vacuum_ = false;  // PRAGMA auto_vacuum = INCREMENTAL (a file errand made)
    int wal_frames_ = 0;               // WAL size after the last commit (sqlite3_wal_hook)
    // maintain(): a WAL file left large by a burst (up to journal_size_limit) is cut to nothing
    // once no commit came for a second.
    std::string wal_path_;                          // empty: no checkpointer, nothing to cut
    std::uint64_t commits_ = 0, commits_seen_ = 0;  // commits that wrote to the WAL
    Millis quiet_since_ = 0;
    bool wal_cut_ = true;  // nothing committed since the last cut (or the open)
    std::uint64_t start_steps_ = 0;
    std::uint64_t batch_steps_ = 0;
    std::int64_t next_event_ = 0;   // the next events row's id (event_seq)
    std::int64_t saved_event_ = 0;  // event_seq as this transaction found it
    struct NameHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const {
            return std::hash<std::string_view>{}(s);
        }
    };
    using StateDeltas = std::array<std::int64_t, kStateCount>;
    std::unordered_map<std::string, StateDeltas, NameHash, std::equal_to<>> count_delta_;
    std::unordered_map<JobId, Held> held_;
    msgpack::sbuffer log_{1024};  // this transaction's dispatches, for dispatch_log
    std::size_t logged_ = 0;      // dispatches in dispatch_log and log_ (0: the log is empty)
    std::thread checkpointer_;
    std::mutex ckpt_mu_;
    std::condition_variable ckpt_cv_;
    bool ckpt_stop_ = false;
};

// QueryStore over a read-only connection (SQLITE_OPEN_READONLY) to the broker's WAL database:
// readers see the latest committed snapshot and never block the broker's writes.
class SqliteQueryStore final : public QueryStore {
  public:
    // `scan_budget`: how far one query may scan, in units of 1000 SQLite virtual-machine steps
    // (the default, 20000: about 2 s on a loaded 2-core machine, ~4 million rows scanned for a
    // state, ~2 million for an error text); past it the query throws StoreError.
    static constexpr int kDefaultScanBudget = 20000;
    explicit SqliteQueryStore(const std::string& path, int scan_budget = kDefaultScanBudget);
    ~SqliteQueryStore() override;
    SqliteQueryStore(const SqliteQueryStore&) = delete;
    SqliteQueryStore& operator=(const SqliteQueryStore&) = delete;

    std::optional<JobInfo> get_job(JobId id) override;
    std::vector<Event> events(JobId id) override;
    std::vector<JobInfo> jobs(const JobPage& page) override;
    std::uint64_t count(const JobPage& page, std::uint64_t cap) override;
    std::optional<std::string> payload(JobId id, std::size_t max) override;
    std::optional<std::uint64_t> size_bytes() override;
    std::vector<Schedule> schedules(std::size_t limit) override;
    std::vector<BatchInfo> batches(std::size_t limit, std::optional<JobId> before) override;
    std::optional<BatchInfo> batch(JobId id) override;

  private:
    struct Statements;
    int scan_budget_;
    int budget_ = 0;  // progress-handler calls left to the running query (QueryStore)
    std::string path_;
    sqlite3* db_ = nullptr;
    std::unique_ptr<Statements> st_;
};

}  // namespace errand::broker
