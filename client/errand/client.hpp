// errand's C++ client: submit jobs, ask for their status, wait for their results.
//
//   errand::Client client({.endpoint = "tcp://127.0.0.1:7744"});
//   auto id = client.submit({.queue = "email", .payload = "hello"}).id;
//   if (auto job = client.wait(id, std::chrono::seconds(30)))
//       std::cout << job->result.value_or("") << "\n";
//
// A Client is not thread-safe; use one per thread. Requests that get no reply are resent with the
// same idempotency tokens, so a retried submit never creates a second job.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "errand/curve.hpp"
#include "errand/messages.hpp"
#include "errand/protocol.hpp"

namespace errand {

struct ClientOptions {
    // The broker; or several, comma-separated, that share one PostgreSQL database.
    std::string endpoint = std::string(kDefaultEndpoint);
    // Brokers sharing one database, in order of preference; when not empty, `endpoint` is not
    // used. A request whose broker's connection is down for `failover`, or that has had no
    // reply for two `resend` periods, moves to the next one and is sent again there (with the
    // same idempotency tokens: a job is never submitted twice). The client stays with the
    // broker that answers. Brokers with separate databases (SQLite) must not be listed together.
    std::vector<std::string> endpoints{};
    // Give up on a request after this long without a reply (ConnectionError).
    std::chrono::milliseconds timeout{5000};
    std::chrono::milliseconds resend{1000};  // resend an unanswered request this often
    std::chrono::milliseconds failover{250};
    std::optional<CurveClient> curve{};  // encrypt and authenticate (see docs/SECURITY.md)
};

// The broker answered with ERROR.
class BrokerError : public std::runtime_error {
  public:
    BrokerError(ErrorCode code, const std::string& message)
        : std::runtime_error(message), code_(code) {}
    ErrorCode code() const { return code_; }

  private:
    ErrorCode code_;
};

// No reply within the timeout: "cannot reach broker at tcp://…: timed out after 5s".
class ConnectionError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct Submitted {
    JobId id = 0;
    bool duplicate = false;  // the token matched an existing job
};

struct ListFilter {
    std::optional<std::string> queue{};
    std::optional<JobState> state{};
    std::uint32_t limit = limits::kDefaultListLimit;
};

class Client {
  public:
    explicit Client(ClientOptions options = {});
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Submits one job; fills in a random token unless the spec has one.
    Submitted submit(JobSpec spec);
    // Submits many jobs, committed together (chunks of limits::kMaxBatch per message).
    std::vector<Submitted> submit_batch(std::vector<JobSpec> specs);
    JobInfo status(JobId id);
    // The finished job, or nullopt when `timeout` passed first (at most a day). Throws
    // ConnectionError once no broker has been connected for ClientOptions::timeout (a WAIT
    // legitimately goes unanswered for long; a dropped connection does not).
    std::optional<JobInfo> wait(JobId id, std::chrono::milliseconds timeout);
    // submit() and wait() in one round trip: the finished job, or nullopt if it did not finish
    // within `timeout`. `submitted` gets the id once the broker has committed the job.
    std::optional<JobInfo> submit_and_wait(JobSpec spec, std::chrono::milliseconds timeout,
                                           Submitted* submitted = nullptr);
    std::vector<JobInfo> list(const ListFilter& filter = {});
    Pong ping();

    // Cancels an unfinished job (a running one is stopped on its worker); returns it, cancelled.
    // BrokerError invalid_state when it has already finished.
    JobInfo cancel(JobId id);
    // Puts a dead job back in its queue with fresh attempts; returns its id.
    JobId retry(JobId id);
    // Puts every dead job (of `queue`, if given) back; returns their ids.
    std::vector<JobId> retry_dead(const std::optional<std::string>& queue = std::nullopt);
    // A paused queue accepts jobs but dispatches none, until resumed (survives restarts).
    // With `for_` (more than 0): resumed by itself then (a timed pause, also stored).
    void pause(const std::string& queue,
               std::optional<std::chrono::milliseconds> for_ = std::nullopt);
    void resume(const std::string& queue);
    // Deletes finished jobs in `state` (that finished at least `older_than` ago); returns how
    // many.
    std::uint64_t purge(JobState state, const std::optional<std::string>& queue = std::nullopt,
                        std::optional<std::chrono::milliseconds> older_than = std::nullopt);
    std::vector<QueueInfo> queues();
    // A scheduled or retrying job goes to ready at once (its run_at or backoff skipped);
    // returns it. BrokerError invalid_state for a job in any other state.
    JobInfo run_now(JobId id);
    // Deletes a finished job with its history and payload; the id is then unknown (not_found).
    // An unfinished job is BrokerError invalid_state, unless `force`: it is cancelled first (a
    // running one is stopped on its worker).
    void remove(JobId id, bool force = false);
    // Cron schedules: each tick of `s.cron` in `s.zone` submits `s.job` (docs/PROTOCOL.md,
    // SCHEDULE_ADD). Bad input (a cron field, a zone, a taken name) is a BrokerError that
    // says what; the returned schedule has its next tick.
    Schedule schedule_add(const Schedule& s);
    std::vector<Schedule> schedules();
    // BrokerError not_found for an unknown name (also for the calls below).
    Schedule schedule(const std::string& name);
    void schedule_remove(const std::string& name);
    // A paused schedule fires nothing; resumed, it fires from the next tick after now.
    Schedule schedule_pause(const std::string& name);
    Schedule schedule_resume(const std::string& name);
    // Batches (docs/LIFECYCLE.md "Batches"): jobs submitted with JobSpec::batch while it is
    // open; once sealed and every member has finished, `on_complete` is submitted (whatever
    // the outcome), and `on_success` when every member succeeded, each exactly once, with the
    // batch's summary (JSON) as its payload. Callbacks take no payload, token, unique, run_at,
    // expires_at, after or batch (BrokerError bad_request).
    BatchInfo batch_open(const std::string& description = {},
                         const std::optional<JobSpec>& on_complete = std::nullopt,
                         const std::optional<JobSpec>& on_success = std::nullopt);
    // Takes no more members (again: no change). BrokerError not_found for an unknown id (also
    // for batch()).
    BatchInfo batch_seal(JobId id);
    BatchInfo batch(JobId id);
    // Newest first; `before`: ids below it (the next page).
    std::vector<BatchInfo> batches(std::uint32_t limit = limits::kDefaultListLimit,
                                   std::optional<JobId> before = std::nullopt);
    // The job's state changes, oldest first.
    std::vector<Event> history(JobId id);
    // The broker's live picture: totals, per-queue counts and rates, commit stats.
    StatsReply stats();
    // Registered workers with the jobs they hold.
    std::vector<WorkerInfo> workers();
    // `errand worker quiet|stop|resume|concurrency`: `action` (kWorkerActions) applied to the
    // workers `worker` names (a name: all its instances; or an instance id); returns them as
    // they are now. BrokerError not_found for an unknown worker; bad_request for a bad action
    // or a concurrency out of 1-1024 (`concurrency` is for that action only).
    std::vector<WorkerInfo> control_worker(const std::string& worker, const std::string& action,
                                           std::uint32_t concurrency = 0);
    // A queue's limits (docs/PROTOCOL.md, QUEUE_SET): the ones `s` sets (max_running; rate with
    // rate_per) replace the queue's, the others stay; returns the queue's settings now.
    // BrokerError bad_request for a value out of range or none given (nothing changes).
    QueueSettings queue_set(const QueueSettings& s);
    // Removes the named settings (kQueueSettingNames: "max_running", "rate").
    QueueSettings queue_unset(const std::string& queue, const std::vector<std::string>& names);
    QueueSettings queue_settings(const std::string& queue);
    // Recent committed job events (this broker run), oldest first: seq > after, of `queue`.
    std::vector<JobEvent> feed(const std::optional<std::string>& queue, std::uint32_t limit,
                               std::uint64_t after = 0);

    // The broker that answered last (or that the next request goes to).
    const std::string& endpoint() const;
    // Times a request moved to another broker.
    std::uint64_t failovers() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// A token no other call returns (in any thread or process), 32 hex digits, for JobSpec::token:
// the time in ms, 52 random bits fixed per thread, then a per-thread counter.
std::string unique_token();

}  // namespace errand
