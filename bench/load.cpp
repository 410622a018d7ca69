// No-op jobs, submitters, the in-process worker pool and queue-count waits (load.hpp).
#include "load.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <future>
#include <stdexcept>
#include <thread>

#include "errand/async_client.hpp"

namespace errand::bench {

using namespace std::chrono_literals;

void Deadline::check(const char* what) const {
    if (passed()) throw OutOfTime(fmt::format("{}: stopped at --max-seconds {}", what, seconds_));
}

std::string unique_queue(const std::string& prefix) {
    static std::atomic<unsigned> counter{0};
    return fmt::format("{}-{}-{}", prefix, ::getpid(), counter++);
}

ClientOptions client_options(const std::string& endpoint) {
    ClientOptions o;
    o.endpoint = endpoint;
    o.timeout = std::chrono::minutes(2);
    o.resend = std::chrono::minutes(1);
    return o;
}

JobSpec noop_job(const std::string& queue, const std::string& payload) {
    JobSpec s;
    s.queue = queue;
    s.payload = payload;
    return s;
}

SubmitMode parse_submit_mode(const std::string& text) {
    if (text == "sync") return SubmitMode::sync;
    if (text == "pipelined") return SubmitMode::pipelined;
    if (text == "batch") return SubmitMode::batch;
    throw std::invalid_argument("mode must be sync, pipelined or batch, not '" + text + "'");
}

void sqlite_exec(sqlite3* db, const std::string& sql, std::string_view what) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : "?";
        sqlite3_free(err);
        throw std::runtime_error(
            fmt::format("sqlite: {}: {}", what.empty() ? std::string_view(sql) : what, msg));
    }
}

Pacer::Pacer(double rate, unsigned producers)
    : rate_(rate), producers_(std::max(1u, producers)), t0_(Clock::now() + 50ms) {}

Clock::time_point Pacer::wait(unsigned p, std::uint64_t k) const {
    const double at = (static_cast<double>(k) * producers_ + p) / rate_;
    const auto due =
        t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at));
    std::this_thread::sleep_until(due);
    return due;
}

void Pacer::acknowledged(Clock::time_point due) {
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - due).count();
    std::lock_guard lock(mu_);
    us_.push_back(us);
}

void Pacer::report(Result& r, const char* what) {
    std::vector<double> sorted;
    {
        std::lock_guard lock(mu_);
        sorted = us_;
    }
    std::sort(sorted.begin(), sorted.end());
    r.config["paced"] = rate_;
    const std::string unit = fmt::format("us ({}, from the moment it was due)", what);
    r.add("p50_us", quantile(sorted, 0.50), unit);
    r.add("p99_us", quantile(sorted, 0.99), "us");
    r.add("p999_us", quantile(sorted, 0.999), "us");
    r.add("max_us", sorted.empty() ? 0 : sorted.back(), "us");
}

std::uint64_t submit_jobs(const std::string& endpoint, const JobSpec& job, std::uint64_t n,
                          SubmitMode mode, const Options& opt, const Deadline& deadline,
                          const std::atomic<bool>* stop, Pacer* pacer, unsigned producer) {
    auto stopped = [&] { return deadline.passed() || (stop && stop->load()); };
    std::uint64_t done = 0;
    if (mode == SubmitMode::sync) {
        Client client(client_options(endpoint));
        while (done < n && !stopped()) {
            if (pacer)
                pacer->paced(producer, done, [&] { client.submit(job); });
            else
                client.submit(job);
            ++done;
        }
        return done;
    }
    if (pacer && pacer->on())
        throw std::invalid_argument("--paced needs --mode sync (one job per request)");
    AsyncClient client(client_options(endpoint));
    const std::uint64_t per_request = mode == SubmitMode::batch ? opt.batch : 1;
    const std::size_t window = mode == SubmitMode::batch ? opt.batch_window : opt.window;
    std::deque<std::future<std::vector<Submitted>>> inflight;
    std::uint64_t sent = 0;
    while (done < n) {
        while (sent < n && inflight.size() < window && !stopped()) {
            const std::uint64_t k = std::min<std::uint64_t>(per_request, n - sent);
            std::vector<JobSpec> jobs(k, job);
            inflight.push_back(client.submit(std::move(jobs)));
            sent += k;
        }
        if (inflight.empty()) break;
        done += inflight.front().get().size();
        inflight.pop_front();
    }
    return done;
}

WorkerPool::WorkerPool(const std::vector<std::string>& endpoints, const std::string& queue,
                       unsigned workers, unsigned concurrency, unsigned prefetch,
                       Observer observe) {
    for (unsigned i = 0; i < workers; ++i) {
        WorkerOptions o;
        o.endpoint = endpoints[i % endpoints.size()];
        o.name = fmt::format("bench-{}-{}", ::getpid(), i);
        o.concurrency = concurrency;
        o.adaptive_prefetch = prefetch == kLibraryPrefetch;
        o.prefetch = o.adaptive_prefetch ? 0 : prefetch;
        auto w = std::make_unique<Worker>(o);
        w->handle(queue, [this, observe](const Job& job) {
            if (observe) observe(job);
            handled_.fetch_add(1, std::memory_order_relaxed);
            return Outcome::success({});
        });
        workers_.push_back(std::move(w));
    }
    for (auto& w : workers_)
        threads_.emplace_back([&w] { w->run(); });
}

WorkerPool::~WorkerPool() {
    for (auto& w : workers_)
        w->stop();
    for (auto& t : threads_)
        t.join();
}

void WorkerPool::wait_handled(std::uint64_t n, const Deadline& deadline) const {
    while (handled() < n) {
        deadline.check("waiting for the workers");
        std::this_thread::sleep_for(1ms);
    }
}

std::uint64_t count_in_state(Client& client, const std::string& queue, JobState state) {
    for (const QueueInfo& q : client.queues()) {
        if (q.name != queue) continue;
        for (const auto& [s, count] : q.counts)
            if (s == state) return count;
    }
    return 0;
}

void wait_succeeded(Client& client, const std::string& queue, std::uint64_t n,
                    const Deadline& deadline) {
    while (count_in_state(client, queue, JobState::succeeded) < n) {
        deadline.check("waiting for the jobs to succeed");
        std::this_thread::sleep_for(10ms);
    }
}

}  // namespace errand::bench
