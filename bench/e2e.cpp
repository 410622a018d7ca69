// Scenario `e2e`: P producer threads submit N no-op jobs (sync: one at a time; pipelined; batch)
// while K library workers (errand::Worker, concurrency C each) run them. Time from the first
// submit until QUEUES shows all N succeeded (the worker's handler count reaching N is waited for
// first, so QUEUES is polled only at the end).
#include <exception>
#include <mutex>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_e2e(const Options& opt) {
    const std::string mode_name = opt.mode.empty() ? "sync" : opt.mode;
    const SubmitMode mode = parse_submit_mode(mode_name);
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const unsigned producers = std::max(1u, opt.producers);
    const std::string payload = payload_for(opt, 16);

    BrokerProcess broker(opt);
    const std::string queue = unique_queue("e2e");
    const Deadline deadline(opt.max_seconds);
    WorkerPool pool(broker.endpoint(), queue, opt.workers, opt.concurrency, opt.prefetch);

    std::atomic<std::uint64_t> submitted{0};
    std::exception_ptr failure;
    std::mutex failure_mu;
    std::atomic<double> submit_seconds{0};
    const auto t0 = Clock::now();
    {
        std::vector<std::jthread> threads;
        for (unsigned p = 0; p < producers; ++p) {
            const std::uint64_t share = n / producers + (p < n % producers ? 1 : 0);
            threads.emplace_back([&, share] {
                try {
                    submitted += submit_jobs(broker.endpoint(), noop_job(queue, payload), share,
                                             mode, opt, deadline);
                } catch (...) {
                    std::lock_guard lock(failure_mu);
                    failure = std::current_exception();
                }
            });
        }
    }
    submit_seconds = seconds_since(t0);
    if (failure) std::rethrow_exception(failure);
    if (submitted < n) deadline.check("submitting");
    pool.wait_handled(n, deadline);
    Client client(client_options(broker.endpoint()));
    wait_succeeded(client, queue, n, deadline);
    const double seconds = seconds_since(t0);

    Result r;
    r.scenario = "e2e";
    r.config["mode"] = mode_name;
    r.config["jobs"] = n;
    r.config["producers"] = producers;
    r.config["workers"] = opt.workers;
    r.config["concurrency"] = opt.concurrency;
    r.config["prefetch"] = opt.prefetch;
    r.config["payload_bytes"] = payload.size();
    if (mode == SubmitMode::pipelined) r.config["window"] = opt.window;
    if (mode == SubmitMode::batch) {
        r.config["batch"] = opt.batch;
        r.config["batch_window"] = opt.batch_window;
    }
    r.config["broker"] = broker_label(opt);
    r.add("jobs_per_s", static_cast<double>(n) / seconds, "jobs/s");
    r.add("seconds", seconds, "s");
    r.add("submit_seconds", submit_seconds.load(), "s (until the last submit was acknowledged)");
    return r;
}

}  // namespace errand::bench
