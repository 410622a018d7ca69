// Scenario `recovery`: preload --backlog jobs (1M by default, 100-byte payloads, no workers), then
// SIGKILL the broker and restart it on the same database, --restarts times; the time from spawn
// until it answers PING, and until it acknowledges a SUBMIT.
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_recovery(const Options& opt) {
    if (!opt.broker.empty())
        throw std::invalid_argument("recovery kills and restarts its own broker: drop --broker");
    const std::uint64_t backlog = opt.backlog;
    const std::string payload = payload_for(opt, 100);
    const Deadline deadline(opt.max_seconds);

    BrokerProcess broker(opt);
    const std::string queue = unique_queue("recovery");
    const auto t_load = Clock::now();
    const std::uint64_t loaded = submit_jobs(broker.endpoint(), noop_job(queue, payload), backlog,
                                             SubmitMode::batch, opt, deadline);
    if (loaded < backlog) deadline.check("preloading the backlog");
    const double preload_rate = static_cast<double>(loaded) / seconds_since(t_load);
    const double db_mb = static_cast<double>(broker.db_bytes()) / 1e6;

    std::vector<double> to_pong, to_submit;
    for (unsigned i = 0; i < std::max(1u, opt.restarts); ++i) {
        deadline.check("restarting");
        broker.kill9();
        const auto t0 = Clock::now();
        to_pong.push_back(broker.start());
        Client client(client_options(broker.endpoint()));
        client.submit(noop_job(queue, payload));
        to_submit.push_back(seconds_since(t0));
    }
    Client client(client_options(broker.endpoint()));
    const std::uint64_t ready = count_in_state(client, queue, JobState::ready);

    Result r;
    r.scenario = "recovery";
    r.config["backlog"] = backlog;
    r.config["restarts"] = to_pong.size();
    r.config["payload_bytes"] = payload.size();
    r.config["broker"] = broker_label(opt);
    r.add("restart_to_pong_s", median(to_pong), "s (median over the restarts)");
    r.add("restart_to_pong_max_s", *std::max_element(to_pong.begin(), to_pong.end()), "s");
    r.add("restart_to_submit_s", median(to_submit), "s (spawn until a SUBMIT is acknowledged)");
    r.add("first_restart_s", to_pong.front(), "s (the first, right after the load: large WAL)");
    r.add("db_mb", db_mb, "MB (db + wal + shm before the first kill)");
    r.add("preload_jobs_per_s", preload_rate, "jobs/s");
    if (ready < backlog)
        r.notes.push_back("only " + std::to_string(ready) + " jobs ready after the restarts");
    return r;
}

}  // namespace errand::bench
