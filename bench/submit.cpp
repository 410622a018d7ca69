// Scenario `submit`: one client submits N no-op jobs (no workers), one at a time (sync),
// pipelined (W one-job requests in flight) or in batches; jobs acknowledged per second. Every
// acknowledged job has been committed by the broker.
#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

Result run_submit(const Options& opt) {
    const std::string mode_name = opt.mode.empty() ? "batch" : opt.mode;
    const SubmitMode mode = parse_submit_mode(mode_name);
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const std::string payload = payload_for(opt, 16);

    BrokerProcess broker(opt);
    const std::string queue = unique_queue("submit");
    const Deadline deadline(opt.max_seconds);
    const auto t0 = Clock::now();
    const std::uint64_t done =
        submit_jobs(broker.endpoint(), noop_job(queue, payload), n, mode, opt, deadline);
    const double seconds = seconds_since(t0);

    Result r;
    r.scenario = "submit";
    r.config["mode"] = mode_name;
    r.config["jobs"] = n;
    r.config["payload_bytes"] = payload.size();
    if (mode == SubmitMode::pipelined) r.config["window"] = opt.window;
    if (mode == SubmitMode::batch) {
        r.config["batch"] = opt.batch;
        r.config["batch_window"] = opt.batch_window;
    }
    r.config["broker"] = broker_label(opt);
    r.add("jobs_per_s", static_cast<double>(done) / seconds, "jobs/s");
    r.add("us_per_job", seconds * 1e6 / static_cast<double>(done ? done : 1), "us");
    r.add("seconds", seconds, "s");
    r.add("jobs_done", static_cast<double>(done), "jobs");
    if (done < n) r.notes.push_back("stopped at --max-seconds before all jobs were submitted");
    return r;
}

}  // namespace errand::bench
