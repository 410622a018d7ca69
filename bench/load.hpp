// The load the errand scenarios share: no-op jobs, submitting them one at a time / pipelined /
// in batches, a pool of library workers in this process, and bounded waits on queue counts.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "errand/client.hpp"
#include "errand/worker.hpp"
#include "options.hpp"
#include "processes.hpp"
#include "report.hpp"

struct sqlite3;

namespace errand::bench {

// Thrown when a run passes --max-seconds; the scenario reports it instead of a figure.
class OutOfTime : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The bound on one run of a scenario.
class Deadline {
  public:
    explicit Deadline(double seconds)
        : until_(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(seconds))),
          seconds_(seconds) {}
    bool passed() const { return Clock::now() >= until_; }
    // Throws OutOfTime naming `what` once the deadline has passed.
    void check(const char* what) const;

  private:
    Clock::time_point until_;
    double seconds_;
};

// For load threads: guard(body) wraps a thread's body so that its exception, the first of all
// threads, is kept for rethrow() and sets `stop`, which the other threads poll.
class FirstFailure {
  public:
    std::atomic<bool> stop{false};

    template <class Body>
    auto guard(Body body) {
        return [this, body] {
            try {
                body();
            } catch (...) {
                std::lock_guard lock(mu_);
                if (!first_) first_ = std::current_exception();
                stop = true;
            }
        };
    }
    void rethrow() const {
        if (first_) std::rethrow_exception(first_);
    }

  private:
    std::mutex mu_;
    std::exception_ptr first_;
};

// A queue name of our own, so runs against a shared (--broker) broker do not mix.
std::string unique_queue(const std::string& prefix);

// Client options for benchmarking: requests may wait behind a long backlog, so resends (which
// only add load; tokens make them harmless) and timeouts are pushed far out.
ClientOptions client_options(const std::string& endpoint);

JobSpec noop_job(const std::string& queue, const std::string& payload);

// --paced RATE: the producers submit on a schedule, RATE jobs/s in all, one at a time, instead
// of as fast as they can. Producer p's k-th job is due at t0 + (k * producers + p) / RATE, and
// its latency counts from that moment to its acknowledgement: a stall counts in full for every
// job it held back, not only for the one it met (no coordinated omission).
class Pacer {
  public:
    Pacer(double rate, unsigned producers);
    bool on() const { return rate_ > 0; }
    // Waits until producer p's k-th job is due; returns that moment.
    Clock::time_point wait(unsigned p, std::uint64_t k) const;
    // The job due at `due` was acknowledged now.
    void acknowledged(Clock::time_point due);
    // Producer p's k-th job: `submit()` (which returns once it is acknowledged) when the job is
    // due, its latency recorded; at once when the pacer is off.
    template <class Submit>
    void paced(unsigned p, std::uint64_t k, Submit&& submit) {
        if (!on()) {
            submit();
            return;
        }
        const auto due = wait(p, k);
        submit();
        acknowledged(due);
    }
    // p50_us, p99_us, p999_us and max_us of what was recorded; "paced" in the config.
    void report(Result& r, const char* what);

  private:
    double rate_;
    unsigned producers_;
    Clock::time_point t0_;
    std::mutex mu_;
    std::vector<double> us_;
};

// sqlite3_exec of `sql` on a database of the bench's own; throws std::runtime_error naming
// `what` (the statement itself when empty) and SQLite's message.
void sqlite_exec(::sqlite3* db, const std::string& sql, std::string_view what = {});

enum class SubmitMode { sync, pipelined, batch };
SubmitMode parse_submit_mode(const std::string& text);  // throws std::invalid_argument

// Submits `n` copies of `job` from this thread and returns how many were
// acknowledged (fewer than n only when the deadline passed; `stop` also ends it early).
//   sync:      Client::submit, one request at a time
//   pipelined: AsyncClient, `window` one-job SUBMITs in flight
//   batch:     AsyncClient, SUBMITs of `batch` jobs, `batch_window` of them in flight
// With a pacer that is on (sync only), this thread is producer `producer` of its schedule.
std::uint64_t submit_jobs(const std::string& endpoint, const JobSpec& job, std::uint64_t n,
                          SubmitMode mode, const Options& opt, const Deadline& deadline,
                          const std::atomic<bool>* stop = nullptr, Pacer* pacer = nullptr,
                          unsigned producer = 0);

// K errand::Worker objects (each with its own connection and `concurrency` handler threads) on
// threads of this process, serving `queue` with a handler that calls `observe` (when given) on
// its handler thread, counts the job and succeeds. With several endpoints, worker i connects to
// endpoints[i mod size].
// `prefetch` of a WorkerPool: the library's own default (WorkerOptions::adaptive_prefetch)
// instead of a fixed number (a fixed number, 0 included, turns adaptive prefetch off).
inline constexpr unsigned kLibraryPrefetch = ~0u;
class WorkerPool {
  public:
    using Observer = std::function<void(const Job&)>;
    WorkerPool(const std::vector<std::string>& endpoints, const std::string& queue,
               unsigned workers, unsigned concurrency, unsigned prefetch = 0,
               Observer observe = {});
    WorkerPool(const std::string& endpoint, const std::string& queue, unsigned workers,
               unsigned concurrency, unsigned prefetch = 0)
        : WorkerPool(std::vector<std::string>{endpoint}, queue, workers, concurrency, prefetch) {}
    ~WorkerPool();  // stops every worker and joins its thread
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    std::uint64_t handled() const { return handled_.load(std::memory_order_relaxed); }
    // Waits until `n` jobs were handled; throws OutOfTime past the deadline.
    void wait_handled(std::uint64_t n, const Deadline& deadline) const;

  private:
    std::atomic<std::uint64_t> handled_{0};
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::thread> threads_;
};

// How many jobs of `queue` are in `state`, from QUEUES.
std::uint64_t count_in_state(Client& client, const std::string& queue, JobState state);

// Polls QUEUES every ~10 ms until `n` jobs of `queue` have succeeded; throws OutOfTime.
void wait_succeeded(Client& client, const std::string& queue, std::uint64_t n,
                    const Deadline& deadline);

}  // namespace errand::bench
