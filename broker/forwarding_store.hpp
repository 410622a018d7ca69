// A Store that forwards every call to another: the base of the fault-injecting stores of the
// tests and fuzzers, which override only the calls they make fail.
#pragma once

#include "store.hpp"

namespace errand::broker {

class ForwardingStore : public Store {
  public:
    explicit ForwardingStore(Store& inner) : inner_(inner) {}

    void commit() override { inner_.commit(); }
    void rollback() override { inner_.rollback(); }
    bool writing() const override { return inner_.writing(); }
    Inserted insert_job(const NewJob& j, const std::string& r) override {
        return inner_.insert_job(j, r);
    }
    bool apply(const Transition& t) override { return inner_.apply(t); }
    void set_progress(JobId id, std::uint32_t p, const std::string& m) override {
        inner_.set_progress(id, p, m);
    }
    void set_paused(const std::string& q, bool p) override { inner_.set_paused(q, p); }
    void pause_until(const std::string& q, Millis until) override { inner_.pause_until(q, until); }
    bool resume_due(const std::string& q, Millis until) override {
        return inner_.resume_due(q, until);
    }
    std::vector<Removed> remove_finished(std::optional<JobState> s,
                                         const std::optional<std::string>& q, Millis before,
                                         std::size_t n, bool skip_own = false) override {
        return inner_.remove_finished(s, q, before, n, skip_own);
    }
    std::optional<Removed> remove_job(JobId id) override { return inner_.remove_job(id); }
    void maintain(Millis now) override { inner_.maintain(now); }
    bool maintenance_due() const override { return inner_.maintenance_due(); }

    std::optional<JobInfo> get_job(JobId id) override { return inner_.get_job(id); }
    std::vector<JobInfo> list_jobs(const ListRequest& f) override { return inner_.list_jobs(f); }
    std::vector<Event> events(JobId id) override { return inner_.events(id); }
    std::optional<JobId> find_token(const std::string& t) override { return inner_.find_token(t); }
    std::vector<std::pair<JobId, JobState>> parent_states(const std::vector<JobId>& ids) override {
        return inner_.parent_states(ids);
    }
    void add_parents(JobId c, const std::vector<JobId>& p, bool any) override {
        inner_.add_parents(c, p, any);
    }
    std::vector<ChildEdge> take_children(JobId p) override { return inner_.take_children(p); }
    std::optional<std::uint32_t> parent_finished(JobId c) override {
        return inner_.parent_finished(c);
    }
    std::vector<JobId> parents() override { return inner_.parents(); }
    std::optional<DispatchData> dispatch_data(JobId id) override {
        return inner_.dispatch_data(id);
    }
    void scan_live(const std::function<void(LiveJob&&)>& fn) override { inner_.scan_live(fn); }
    std::optional<LiveJob> load_live(JobId id) override { return inner_.load_live(id); }
    std::vector<QueueStateCount> count_jobs() override { return inner_.count_jobs(); }
    std::vector<std::string> paused_queues() override { return inner_.paused_queues(); }
    void set_queue_limits(const std::string& q, const QueueLimits& l) override {
        inner_.set_queue_limits(q, l);
    }
    std::vector<std::pair<std::string, QueueLimits>> queue_limits() override {
        return inner_.queue_limits();
    }
    std::vector<std::pair<std::string, Millis>> pause_deadlines() override {
        return inner_.pause_deadlines();
    }
    std::vector<JobId> dead_jobs(const std::optional<std::string>& q, std::size_t n) override {
        return inner_.dead_jobs(q, n);
    }
    bool insert_schedule(const Schedule& s) override { return inner_.insert_schedule(s); }
    bool remove_schedule(const std::string& n) override { return inner_.remove_schedule(n); }
    bool set_schedule_paused(const std::string& n, bool p, std::optional<Millis> next) override {
        return inner_.set_schedule_paused(n, p, next);
    }
    std::optional<Schedule> get_schedule(const std::string& n) override {
        return inner_.get_schedule(n);
    }
    std::vector<Schedule> list_schedules(std::size_t n) override {
        return inner_.list_schedules(n);
    }
    std::vector<Schedule> due_schedules(Millis now, std::size_t n) override {
        return inner_.due_schedules(now, n);
    }
    bool advance_schedule(const std::string& n, Millis from, const ScheduleAdvance& to) override {
        return inner_.advance_schedule(n, from, to);
    }
    std::optional<Millis> next_schedule_at() override { return inner_.next_schedule_at(); }
    Inserted insert_batch(const BatchInfo& b, const std::optional<std::string>& token) override {
        return inner_.insert_batch(b, token);
    }
    std::optional<BatchInfo> get_batch(JobId id, bool specs) override {
        return inner_.get_batch(id, specs);
    }
    std::optional<BatchInfo> batch_moved(JobId id, const BatchDelta& d) override {
        return inner_.batch_moved(id, d);
    }
    void batch_fired(JobId id, bool success, std::optional<JobId> job, Millis now) override {
        inner_.batch_fired(id, success, job, now);
    }
    std::vector<JobId> batch_failed(JobId id, std::size_t n) override {
        return inner_.batch_failed(id, n);
    }
    std::vector<BatchInfo> list_batches(std::size_t n, std::optional<JobId> before) override {
        return inner_.list_batches(n, before);
    }
    std::size_t remove_batches(Millis before, Millis dead_before, std::size_t n) override {
        return inner_.remove_batches(before, dead_before, n);
    }
    bool shared() const override { return inner_.shared(); }
    std::uint32_t epoch() const override { return inner_.epoch(); }
    std::vector<ClaimedJob> claim(const ClaimRequest& c) override { return inner_.claim(c); }
    std::vector<Promoted> promote_due(Millis now, std::size_t n) override {
        return inner_.promote_due(now, n);
    }
    std::vector<Promoted> expire_due(Millis now, std::size_t n) override {
        return inner_.expire_due(now, n);
    }
    std::vector<LiveJob> expired_attempts(Millis now, Millis grace, std::size_t n) override {
        return inner_.expired_attempts(now, grace, n);
    }
    std::vector<LiveJob> orphaned_attempts(Millis silent, std::size_t n) override {
        return inner_.orphaned_attempts(silent, n);
    }
    bool hold(JobId id, std::uint32_t attempt) override { return inner_.hold(id, attempt); }
    std::optional<LiveJob> load_held(JobId id) override { return inner_.load_held(id); }
    bool leader() const override { return inner_.leader(); }
    std::optional<std::string> broker_name() const override { return inner_.broker_name(); }
    std::vector<BrokerInfo> cluster() override { return inner_.cluster(); }
    void announce(const std::vector<JobId>& ids) override { inner_.announce(ids); }
    std::vector<JobId> finished_elsewhere() override { return inner_.finished_elsewhere(); }
    std::vector<JobId> finished_among(const std::vector<JobId>& ids) override {
        return inner_.finished_among(ids);
    }
    void announce_control(const std::string& line) override { inner_.announce_control(line); }
    std::vector<std::string> controls_elsewhere() override { return inner_.controls_elsewhere(); }
    int notify_fd() const override { return inner_.notify_fd(); }
    std::optional<JobId> find_unique(const std::string& key) override {
        return inner_.find_unique(key);
    }
    std::vector<std::pair<std::string, Millis>> oldest_ready() override {
        return inner_.oldest_ready();
    }

  protected:
    Store& inner_;
};

}  // namespace errand::broker
