// errand's C++ worker: register a handler per queue, then run() until stop().
//
//   errand::Worker worker({.endpoint = "tcp://127.0.0.1:7744", .concurrency = 4});
//   worker.handle("email", [](const errand::Job& job) {
//       send_mail(job.payload);
//       return errand::Outcome::success("sent");
//   });
//   worker.run();
//
// Handlers run on `concurrency` threads of their own; heartbeats and results travel on the
// worker's network thread, so a long or CPU-bound handler never makes the worker look dead.
// A handler that throws fails its attempt with the exception's message.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errand/curve.hpp"
#include "errand/log.hpp"
#include "errand/protocol.hpp"

namespace errand {

struct JobControl;  // shared between a running job and the worker's network thread

struct Job {
    JobId id = 0;
    std::string queue{};
    std::uint32_t attempt = 0;
    std::string payload{};
    std::optional<std::vector<std::string>> argv{};
    std::optional<std::chrono::milliseconds> timeout{};  // the job's own timeout, if it has one
    // The most result bytes the broker takes (its --max-result, learnt from REGISTERED, and at
    // most WorkerOptions::max_result). A longer result is cut to this before it is sent; a
    // handler that wants to mark the cut (the daemon does) cuts it itself.
    std::size_t max_result = limits::kDefaultMaxResult;

    // True once the broker cancelled this attempt (or it timed out there): stop soon.
    bool cancelled() const;
    // The flag behind cancelled(), for code that polls an atomic (e.g. a process runner).
    const std::atomic<bool>* cancel_flag() const;
    // Reports progress (0-100 and a short message); the latest value is sent to the broker
    // within ~100 ms. Thread-safe.
    void progress(std::uint32_t percent, std::string message = {}) const;

    std::shared_ptr<JobControl> control{};
};

struct Outcome {
    bool ok = true;
    std::string result{};  // on success: the job's result; on failure: optional partial output
    std::string error{};   // on failure
    std::int64_t exit_code = 0;
    bool permanent = false;  // failure that no retry can fix: the job goes straight to dead

    static Outcome success(std::string result, std::int64_t exit_code = 0) {
        return {true, std::move(result), {}, exit_code, false};
    }
    static Outcome failure(std::string error, std::int64_t exit_code = -1, bool permanent = false,
                           std::string result = {}) {
        return {false, std::move(result), std::move(error), exit_code, permanent};
    }
};

using Handler = std::function<Outcome(const Job&)>;

// What the worker is doing, for a service manager's status line (systemd STATUS=).
struct WorkerStatus {
    std::uint32_t busy = 0;          // jobs held: running or waiting locally (prefetched)
    std::uint32_t slots = 0;         // concurrency + prefetch
    std::size_t unacknowledged = 0;  // results the broker has not acknowledged yet
    bool connected = false;          // registered with the broker
    std::string broker{};            // the broker it is registered with, or trying
    std::uint64_t reconnects = 0;    // times it lost its registration and registered again
    bool draining = false;           // stop() was called (or the broker said stop)
    bool quiet = false;              // the broker said quiet (`errand worker quiet`)
    std::uint32_t concurrency = 0;   // jobs run at once now (the broker may change it)
};

// The most jobs WorkerOptions::adaptive_prefetch holds beyond concurrency.
inline constexpr std::uint32_t kAdaptivePrefetch = 8;

struct WorkerOptions {
    // The broker; or several, comma-separated, that share one PostgreSQL database.
    std::string endpoint = std::string(kDefaultEndpoint);
    // Brokers sharing one database, in order of preference; when not empty, `endpoint` is not
    // used. When the broker's connection is down for `failover` (or it is silent past its
    // expiry, or it shuts down), the worker registers with the next one, handing over the jobs
    // it holds (they keep running, not re-run) and resending results not yet acknowledged.
    std::vector<std::string> endpoints{};
    std::chrono::milliseconds failover{250};
    std::string name{};  // default: host:pid
    std::uint32_t concurrency = 1;
    // Jobs held beyond `concurrency`, waiting locally so a handler never waits for the network.
    // Raises throughput with many short jobs; prefetched jobs count as running (and their
    // timeouts run) from dispatch, so keep it 0 for long jobs.
    std::uint32_t prefetch = 0;
    // With prefetch 0: hold up to kAdaptivePrefetch jobs beyond concurrency while jobs run short
    // (under 5 ms on average, over the last few dozen), and none once they run long (over
    // 50 ms). Short jobs then never wait for the broker's round trip and commit between them;
    // a prefetched job waits at most a few short jobs' time, its timeout running from dispatch.
    // False: with prefetch 0, a job is fetched only when a handler is free.
    bool adaptive_prefetch = true;
    bool accept_commands = false;  // take jobs that carry their own argv
    // Results are cut to this, or to the broker's --max-result when that is smaller.
    std::size_t max_result = limits::kDefaultMaxResult;
    std::optional<CurveClient> curve{};  // encrypt and authenticate (see docs/SECURITY.md)
    // How long stop() lets running jobs finish before it cancels them (Job::cancelled()) and
    // hands them back to the broker; nullopt: as long as they take.
    std::optional<std::chrono::milliseconds> drain_timeout{};
    // Called on the network thread at least every status_interval while run() serves. It
    // also shows that thread is alive (a watchdog). Must not block.
    std::function<void(const WorkerStatus&)> on_status{};
    std::chrono::milliseconds status_interval{1000};
    // The worker's log lines (errand/log.hpp): stderr at info and above unless replaced; an
    // empty function ({} or nullptr) silences them.
    LogFn log = stderr_log();
};

class Worker {
  public:
    explicit Worker(WorkerOptions options);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Serve `queue` with `handler`. Without weights, queues are served in strict order (the
    // first added first, the next only when it has nothing ready). With a weight (1-1000) on any
    // queue, the broker picks among queues with ready jobs at random in proportion to their
    // weights (queues added without one weigh 1), so no queue starves.
    void handle(const std::string& queue, Handler handler, std::uint32_t weight = 0);
    // Connects, registers and serves until stop() (or `errand worker stop`, which drains the
    // same way); returns once running jobs are reported. The broker may also quiet it, resume
    // it or change its concurrency while it runs (`errand worker`, docs/PROTOCOL.md CONTROL):
    // on_status reports the current state.
    void run();
    // Drains, then makes run() return: takes no more jobs (DRAIN), hands jobs that have not
    // started back to the broker at once (RELEASE: the attempt is not counted), lets running
    // jobs finish for up to drain_timeout, then cancels them and hands back those that do
    // not succeed anyway. A second call ends the drain at once. Async-signal-safe: it only
    // touches an atomic.
    void stop();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace errand
