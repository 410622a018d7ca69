// Scenario `stats`: --queues Q queues with one ready job each (no workers), and one client asking
// STATS (or QUEUES, --mode queues) back to back while another PINGs the broker: what a PING
// waits meanwhile (p50, p99, max) against PINGs with nobody asking, and what a STATS costs its
// caller. docs/PERFORMANCE.md, "How cost grows": the broker answers STATS and QUEUES off its
// loop, so their cost grows with the queues but a PING's does not.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

// Sequential PINGs until `enough` says so (checked after each), at most 100,000.
template <typename Enough>
std::vector<double> pings_until(Client& c, Enough enough, const Deadline& deadline) {
    std::vector<double> us;
    us.reserve(100000);
    while (us.size() < 100000 && !deadline.passed() && !enough(us.size())) {
        const auto t0 = Clock::now();
        c.ping();
        us.push_back(seconds_since(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());
    return us;
}

}  // namespace

Result run_stats(const Options& opt) {
    const std::uint64_t queues = opt.n ? opt.n : 10000;
    constexpr std::size_t kIdlePings = 2000;
    constexpr std::size_t kAsks = 20;
    constexpr std::size_t kPingers = 4;
    const bool ask_queues = opt.mode == "queues";
    if (!opt.mode.empty() && opt.mode != "queues" && opt.mode != "stats")
        throw std::runtime_error("stats: --mode stats|queues");
    BrokerProcess broker(opt);
    const Deadline deadline(opt.max_seconds);
    const std::string prefix = unique_queue("stats");
    {
        Client c(client_options(broker.endpoint()));
        std::vector<JobSpec> batch;
        for (std::uint64_t i = 0; i < queues && !deadline.passed(); ++i) {
            batch.push_back(noop_job(fmt::format("{}-{}", prefix, i), "x"));
            if (batch.size() == 500 || i + 1 == queues) {
                c.submit_batch(std::move(batch));
                batch.clear();
            }
        }
        deadline.check("submitting one job per queue");
    }
    Client pinger(client_options(broker.endpoint()));
    for (unsigned i = 0; i < opt.warmup; ++i)
        pinger.ping();
    const auto idle = pings_until(
        pinger, [](std::size_t n) { return n >= kIdlePings; }, deadline);

    std::atomic<bool> stop{false};
    std::vector<double> asks;
    std::atomic<std::size_t> asked{0};
    std::size_t seen = 0;
    std::thread asker([&] {
        Client c(client_options(broker.endpoint()));
        while (!stop.load() && !deadline.passed()) {
            const auto t0 = Clock::now();
            seen = ask_queues ? c.queues().size() : c.stats().queues.size();
            asks.push_back(seconds_since(t0) * 1e6);
            ++asked;
        }
    });
    // PINGs from kPingers clients while the other one asks, for at least 3 s and 20 of its
    // replies: several pingers, so that a stall of the loop is met by as many PINGs as are
    // sent meanwhile (one sequential pinger would see each stall once, whatever its length).
    const auto busy_from = Clock::now();
    std::vector<std::vector<double>> each(kPingers);
    std::vector<std::thread> pingers;
    for (std::size_t i = 0; i < kPingers; ++i)
        pingers.emplace_back([&, i] {
            Client c(client_options(broker.endpoint()));
            each[i] = pings_until(
                c,
                [&](std::size_t) {
                    return asked.load() >= kAsks && seconds_since(busy_from) >= 3.0;
                },
                deadline);
        });
    for (auto& t : pingers)
        t.join();
    std::vector<double> busy;
    for (const auto& e : each)
        busy.insert(busy.end(), e.begin(), e.end());
    std::sort(busy.begin(), busy.end());
    stop = true;
    asker.join();
    deadline.check("pinging");
    std::sort(asks.begin(), asks.end());

    Result r;
    r.scenario = "stats";
    r.config["queues"] = queues;
    r.config["asking"] = ask_queues ? "QUEUES" : "STATS";
    r.config["broker"] = broker_label(opt);
    r.add("queues_in_reply", static_cast<double>(seen), "queues");
    r.add("ping_idle_p50_us", quantile(idle, 0.50), "us");
    r.add("ping_idle_p99_us", quantile(idle, 0.99), "us");
    r.add("ping_busy_p50_us", quantile(busy, 0.50), "us");
    r.add("ping_busy_p99_us", quantile(busy, 0.99), "us");
    r.add("ping_busy_max_us", busy.empty() ? 0 : busy.back(), "us");
    r.add("ping_busy_over_5ms",
          static_cast<double>(
              std::count_if(busy.begin(), busy.end(), [](double us) { return us > 5000; })),
          "round trips");
    r.add("ping_busy_n", static_cast<double>(busy.size()), "round trips");
    r.add("asks", static_cast<double>(asks.size()), "replies while pinging");
    r.add("ask_p50_us", quantile(asks, 0.50), "us");
    r.add("ask_p99_us", quantile(asks, 0.99), "us");
    return r;
}

}  // namespace errand::bench
