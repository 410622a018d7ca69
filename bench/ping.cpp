// Scenario `ping`: one client, sequential PING -> PONG round trips to an idle broker. No disk, no
// job: the floor under every synchronous request (the client's and broker's ZeroMQ I/O threads,
// the broker's loop, the wake-ups between them), against which `submit --mode sync` and the
// sync e2e and latency figures can be read.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_ping(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 5000;
    BrokerProcess broker(opt);
    const Deadline deadline(opt.max_seconds);
    Client client(client_options(broker.endpoint()));
    for (unsigned i = 0; i < opt.warmup; ++i) {
        deadline.check("warming up");
        client.ping();
    }
    std::vector<double> us;
    us.reserve(n);
    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < n && !deadline.passed(); ++i) {
        const auto t0 = Clock::now();
        client.ping();
        us.push_back(seconds_since(t0) * 1e6);
    }
    const double seconds = seconds_since(start);
    std::sort(us.begin(), us.end());

    Result r;
    r.scenario = "ping";
    r.config["round_trips"] = n;
    r.config["warmup"] = opt.warmup;
    r.config["broker"] = broker_label(opt);
    r.add("per_s", seconds > 0 ? static_cast<double>(us.size()) / seconds : 0, "round trips/s");
    r.add("p50_us", quantile(us, 0.50), "us");
    r.add("p99_us", quantile(us, 0.99), "us");
    r.add("p999_us", quantile(us, 0.999), "us");
    r.add("mean_us", us.empty() ? 0 : std::accumulate(us.begin(), us.end(), 0.0) / us.size(), "us");
    if (us.size() < n) r.notes.push_back("stopped at --max-seconds before all round trips");
    return r;
}

}  // namespace errand::bench
