// Scenario `due`: --jobs N scheduled jobs (no workers) all due at the same moment, while one
// client PINGs the broker back to back from before that moment until every job is ready: how long
// the broker takes to make them ready, and what a PING waits meanwhile (p50, p99, max, and how
// many took over 50 ms), beside the same PINGs before the jobs came due. docs/PERFORMANCE.md,
// "How cost grows": the broker promotes due jobs in slices per pass, so a PING never waits for
// the whole backlog.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "errand/clock.hpp"
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

Millis wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Ping {
    Millis at = 0;  // wall time when it was sent
    double us = 0;  // its round trip
};

}  // namespace

Result run_due(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 200000;
    BrokerProcess broker(opt);
    const Deadline deadline(opt.max_seconds);
    const std::string queue = unique_queue("due");
    // Due once they are all in: time for the load at ~50k jobs/s, and at least 3 s.
    const Millis lead_ms = std::max<Millis>(3000, static_cast<Millis>(n / 50));
    JobSpec job = noop_job(queue, payload_for(opt, 16));
    const Millis due_at = wall_ms() + lead_ms;
    job.run_at = to_time(due_at);
    const auto t_load = Clock::now();
    const std::uint64_t loaded =
        submit_jobs(broker.endpoint(), job, n, SubmitMode::batch, opt, deadline);
    if (loaded < n) deadline.check("submitting");
    const double load_s = seconds_since(t_load);

    std::atomic<bool> stop{false};
    std::vector<Ping> pings;
    pings.reserve(1 << 20);
    std::thread pinger([&] {
        Client c(client_options(broker.endpoint()));
        while (!stop.load() && pings.size() < (1u << 22)) {
            const Millis at = wall_ms();
            const auto t0 = Clock::now();
            c.ping();
            pings.push_back({at, seconds_since(t0) * 1e6});
        }
    });
    Client watch(client_options(broker.endpoint()));
    Millis all_ready_at = 0;
    while (!deadline.passed()) {
        if (wall_ms() >= due_at && count_in_state(watch, queue, JobState::ready) >= n) {
            all_ready_at = wall_ms();
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop = true;
    pinger.join();
    if (all_ready_at == 0) deadline.check("waiting for the jobs to become ready");

    std::vector<double> before, during;
    // A PING is "during" when it came back after the due moment (one sent just before it may
    // have waited through all of the promotion).
    for (const auto& p : pings)
        (p.at + static_cast<Millis>(p.us / 1000) < due_at ? before : during).push_back(p.us);
    std::sort(before.begin(), before.end());
    std::sort(during.begin(), during.end());
    const auto over_50ms =
        std::count_if(during.begin(), during.end(), [](double us) { return us > 50'000; });
    const double promote_s = static_cast<double>(all_ready_at - due_at) / 1000.0;

    Result r;
    r.scenario = "due";
    r.config["jobs"] = n;
    r.config["lead_ms"] = lead_ms;
    r.config["broker"] = broker_label(opt);
    r.add("load_s", load_s, "s");
    r.add("promote_s", promote_s, "s (due moment to every job ready, polled every 50 ms)");
    r.add("promoted_per_s", promote_s > 0 ? static_cast<double>(n) / promote_s : 0, "jobs/s");
    r.add("ping_before_p99_us", quantile(before, 0.99), "us");
    r.add("ping_during_p50_us", quantile(during, 0.50), "us");
    r.add("ping_during_p99_us", quantile(during, 0.99), "us");
    r.add("ping_during_max_us", during.empty() ? 0 : during.back(), "us");
    r.add("ping_during_n", static_cast<double>(during.size()), "round trips");
    r.add("ping_during_over_50ms", static_cast<double>(over_50ms), "round trips");
    if (wall_ms() - lead_ms > due_at)
        r.notes.push_back("the load took longer than the lead: some jobs were due on arrival");
    return r;
}

}  // namespace errand::bench
