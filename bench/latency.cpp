// Scenario `latency`: an idle broker and one library worker; one client does sequential round
// trips submit -> run -> result. Mode `separate` (the default): Client::submit, then Client::wait
// (two requests); mode `submit-wait`: Client::submit_and_wait (one request, two replies).
// Percentiles of the round trip in microseconds, after a warm-up.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_latency(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 2000;
    const std::string payload = payload_for(opt, 16);

    BrokerProcess broker(opt);
    const std::string queue = unique_queue("latency");
    const Deadline deadline(opt.max_seconds);
    WorkerPool pool(broker.endpoint(), queue, 1, 1);
    Client client(client_options(broker.endpoint()));
    const JobSpec job = noop_job(queue, payload);
    const std::string mode = opt.mode.empty() ? "separate" : opt.mode;
    if (mode != "submit-wait" && mode != "separate")
        throw std::invalid_argument("latency: --mode is submit-wait or separate");

    auto round_trip = [&] {
        std::optional<JobInfo> info;
        Submitted submitted;
        if (mode == "separate") {
            submitted = client.submit(job);
            info = client.wait(submitted.id, std::chrono::seconds(10));
        } else {
            info = client.submit_and_wait(job, std::chrono::seconds(10), &submitted);
        }
        if (!info || info->state != JobState::succeeded)
            throw std::runtime_error(
                fmt::format("job {} did not succeed within 10 s", submitted.id));
    };
    for (unsigned i = 0; i < opt.warmup; ++i) {
        deadline.check("warming up");
        round_trip();
    }
    std::vector<double> us;
    us.reserve(n);
    for (std::uint64_t i = 0; i < n && !deadline.passed(); ++i) {
        const auto t0 = Clock::now();
        round_trip();
        us.push_back(seconds_since(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());

    Result r;
    r.scenario = "latency";
    r.config["mode"] = mode;
    r.config["round_trips"] = n;
    r.config["warmup"] = opt.warmup;
    r.config["workers"] = 1;
    r.config["payload_bytes"] = payload.size();
    r.config["broker"] = broker_label(opt);
    r.add("p50_us", quantile(us, 0.50), "us");
    r.add("p99_us", quantile(us, 0.99), "us");
    r.add("p999_us", quantile(us, 0.999), "us");
    r.add("mean_us", us.empty() ? 0 : std::accumulate(us.begin(), us.end(), 0.0) / us.size(), "us");
    r.add("max_us", us.empty() ? 0 : us.back(), "us");
    if (us.size() < n) r.notes.push_back("stopped at --max-seconds before all round trips");
    return r;
}

}  // namespace errand::bench
