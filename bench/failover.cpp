// Scenario `failover`: --brokers N (at least 2; default 2) on one PostgreSQL database (--pg or
// --db) and one client given all of them, with the library's default timeouts, submitting one
// job at a time (a token each). --restarts times, the broker the client is using is SIGKILLed
// between two submits and started again after; the figure is the time from the SIGKILL until
// the next submit is acknowledged (through another broker). A SIGKILL in the middle of a request
// costs the same: the client learns of it from the dropped connection either way. Afterwards
// every acknowledged job must be in the database once. Each kill's gap is listed in the config
// (gaps_ms), in order.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "brokers.hpp"
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_failover(const Options& opt) {
    if (!opt.pg && opt.db.empty())
        throw std::invalid_argument("failover needs brokers on PostgreSQL: --pg or --db");
    Options o = opt;
    o.brokers = std::max(2u, opt.brokers);
    const Deadline deadline(opt.max_seconds);
    const unsigned rounds = std::max(1u, opt.restarts);
    const std::uint64_t per_round = opt.n ? std::max<std::uint64_t>(1, opt.n / rounds) : 200;
    const std::string payload = payload_for(opt, 16);

    Brokers brokers(o);
    ClientOptions copt;  // the defaults a user gets: 5 s timeout, 1 s resend, 250 ms failover
    for (std::size_t i = 0; i < brokers.size(); ++i)
        copt.endpoints.push_back(brokers.endpoint(i));
    Client client(copt);
    const std::string queue = unique_queue("failover");
    std::uint64_t acked = 0;
    auto submit_one = [&] {
        auto spec = noop_job(queue, payload);
        spec.token = unique_token();
        client.submit(std::move(spec));
        ++acked;
    };

    std::vector<double> gaps_ms, sync_rates;
    for (unsigned round = 0; round < rounds; ++round) {
        const auto t0 = Clock::now();
        for (std::uint64_t i = 0; i < per_round; ++i) {
            deadline.check("submitting between failovers");
            submit_one();
        }
        sync_rates.push_back(static_cast<double>(per_round) / seconds_since(t0));
        std::size_t victim = 0;
        for (std::size_t i = 0; i < brokers.size(); ++i)
            if (brokers.endpoint(i) == client.endpoint()) victim = i;
        brokers.at(victim).kill9();
        const auto killed = Clock::now();
        submit_one();
        gaps_ms.push_back(seconds_since(killed) * 1000);
        if (brokers.endpoint(victim) == client.endpoint())
            throw std::runtime_error("the submit after the SIGKILL went to the dead broker");
        brokers.at(victim).start();
    }
    const auto counts = brokers.counts(queue);

    Result r;
    r.scenario = "failover";
    r.config["brokers"] = brokers.label();
    r.config["rounds"] = rounds;
    r.config["submits_per_round"] = per_round;
    r.config["client"] = "library defaults: timeout 5 s, resend 1 s, failover 250 ms";
    std::vector<double> gaps_rounded;  // each kill's gap, in the order of the kills
    for (double g : gaps_ms)
        gaps_rounded.push_back(std::round(g * 10) / 10);
    r.config["gaps_ms"] = gaps_rounded;
    r.add("failover_median_ms", median(gaps_ms), "ms (SIGKILL to the next acknowledged submit)");
    std::vector<double> sorted = gaps_ms;
    std::sort(sorted.begin(), sorted.end());
    r.add("failover_p99_ms", quantile(sorted, 0.99), "ms (nearest rank: the max below 100 kills)");
    r.add("failover_max_ms", sorted.back(), "ms");
    r.add("failover_min_ms", *std::min_element(gaps_ms.begin(), gaps_ms.end()), "ms");
    r.add("sync_submits_per_s", median(sync_rates), "jobs/s (one client, between failovers)");
    r.add("acknowledged", static_cast<double>(acked), "jobs");
    r.add("in_database", static_cast<double>(counts.total), "jobs");
    if (counts.total != acked)
        r.notes.push_back(
            fmt::format("MISMATCH: {} acknowledged, {} in the database", acked, counts.total));
    return r;
}

}  // namespace errand::bench
