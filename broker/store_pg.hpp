// PostgreSQL implementation of Store (errand-broker --db postgresql://…): the same state machine,
// CHECK of states and semantics as SqliteStore, on a database that several brokers can share.
// Ids come from a sequence; a transition is an UPDATE … WHERE state = from AND attempts = n
// (the compare-and-set); events are rows of their own (appended, never rewritten). The store is
// shared: several brokers run on one database, each claiming work with FOR UPDATE SKIP LOCKED
// (see Store::shared()). Statements run one round trip each.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "pg.hpp"
#include "store.hpp"

namespace errand::broker {

class PgStore final : public Store {
  public:
    // Connects and migrates the schema (throws StoreError: unreachable, newer schema, …).
    // `listens`: the broker loop's store hears other brokers' finished jobs (LISTEN); the HTTP
    // side's reads do not (notifications nobody reads would pile up in its connection).
    explicit PgStore(const std::string& conninfo, bool listens = true);

    void commit() override;
    void rollback() override;
    bool writing() const override { return in_txn_; }

    Inserted insert_job(const NewJob& job, const std::string& reason) override;
    std::vector<Inserted> insert_jobs(const std::vector<NewJob>& jobs,
                                      const std::vector<std::string>& reasons) override;
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
    // Renews this broker's row (autovacuum does the rest of PostgreSQL's housekeeping).
    void maintain(Millis now) override;

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

    bool shared() const override { return true; }
    std::vector<ClaimedJob> claim(const ClaimRequest& c) override;
    std::vector<Promoted> promote_due(Millis now, std::size_t limit) override;
    std::vector<Promoted> expire_due(Millis now, std::size_t limit) override;
    std::vector<LiveJob> expired_attempts(Millis now, Millis grace, std::size_t limit) override;
    std::vector<LiveJob> orphaned_attempts(Millis silent_ms, std::size_t limit) override;
    bool hold(JobId id, std::uint32_t attempt) override;
    std::optional<LiveJob> load_held(JobId id) override;
    std::optional<std::string> broker_name() const override { return broker_id_; }
    std::vector<BrokerInfo> cluster() override;
    bool leader() const override { return std::chrono::steady_clock::now() < leader_until_; }
    std::optional<JobId> find_unique(const std::string& key) override;
    void announce(const std::vector<JobId>& ids) override;
    std::vector<JobId> finished_elsewhere() override;
    std::vector<JobId> finished_among(const std::vector<JobId>& ids) override;
    void announce_control(const std::string& line) override;
    std::vector<std::string> controls_elsewhere() override;
    int notify_fd() const override { return db_.socket(); }
    // This broker's row in the brokers table.
    const std::string& broker_id() const { return broker_id_; }
    std::vector<std::pair<std::string, Millis>> oldest_ready() override;

    // A page of jobs for the HTTP API (QueryStore::jobs), and the tables' size on disk.
    std::vector<JobInfo> page(const JobPage& page);
    std::uint64_t page_count(const JobPage& page, std::uint64_t cap);
    std::optional<std::string> payload(JobId id, std::size_t max);
    std::uint64_t size_bytes();

    int schema_version();
    static constexpr int kSchemaVersion = 12;
    // job_counts rows per queue and terminal state (see migration 5).
    static constexpr int kCountShards = 16;
    // count_jobs(): the terminal counts, then the unfinished jobs through jobs_live.
    static constexpr const char* kCountJobsSql =
        "SELECT queue, state, sum(n)::bigint FROM job_counts GROUP BY queue, state "
        "HAVING sum(n) <> 0 UNION ALL SELECT queue, state, count(*) FROM jobs "
        "WHERE state IN ('scheduled', 'ready', 'running', 'retrying') GROUP BY queue, state";

  private:
    void begin();
    void connected();
    void join();
    void listen();
    pg::Result run(std::string_view statement, const pg::Params& params = {});
    pg::Result first_of_transaction(std::string_view statement, const pg::Params& params);
    void migrate();
    void prepare();
    void count(std::string_view queue, JobState state, std::int64_t by);
    void flush_counts();
    std::optional<pg::Params> delta_params() const;
    // Reads the notifications that arrived into finished_ and controls_, which
    // finished_elsewhere() and controls_elsewhere() hand out (each call empties its own).
    void read_notifications();

    pg::Connection db_;
    std::vector<JobId> finished_;
    std::vector<std::string> controls_;
    bool in_txn_ = false;
    bool begin_pending_ = false;  // begin() was called; BEGIN goes with the first statement
    bool listens_ = true;
    std::string host_;
    std::string broker_id_;
    std::chrono::steady_clock::time_point next_beat_{}, next_forget_{}, next_reconnect_{};
    std::chrono::steady_clock::time_point leader_until_{};
    std::int64_t count_shard_ = 0;
    // This transaction's changes to job_counts: sent with COMMIT (delta_params()), or at once by
    // flush_counts() where a statement after them must see them.
    std::map<std::pair<std::string, JobState>, std::int64_t> count_delta_;
};

// The HTTP side's reads, on a connection of its own (it never waits for the loop, nor the loop
// for it). Not thread-safe: the caller serialises.
class PgQueryStore final : public QueryStore {
  public:
    explicit PgQueryStore(const std::string& conninfo) : store_(conninfo, false) {}
    std::optional<JobInfo> get_job(JobId id) override { return store_.get_job(id); }
    std::vector<Event> events(JobId id) override { return store_.events(id); }
    std::vector<JobInfo> jobs(const JobPage& page) override { return store_.page(page); }
    std::uint64_t count(const JobPage& page, std::uint64_t cap) override {
        return store_.page_count(page, cap);
    }
    std::optional<std::string> payload(JobId id, std::size_t max) override {
        return store_.payload(id, max);
    }
    std::optional<std::uint64_t> size_bytes() override { return store_.size_bytes(); }
    std::vector<Schedule> schedules(std::size_t limit) override {
        return store_.list_schedules(limit);
    }
    std::vector<BatchInfo> batches(std::size_t limit, std::optional<JobId> before) override {
        return store_.list_batches(limit, before);
    }
    std::optional<BatchInfo> batch(JobId id) override { return store_.get_batch(id, true); }

  private:
    PgStore store_;
};

// True when `db` names a PostgreSQL database (postgresql:// or postgres:// URI) rather than a
// SQLite file.
bool is_postgres_uri(std::string_view db);
// The URI with its password (postgresql://user:PASSWORD@host) replaced by ***, for logs.
std::string redact_uri(const std::string& uri);

}  // namespace errand::broker
