// Scenario `submit`: one client submits N no-op jobs (no workers), one at a time (sync),
// pipelined (W one-job requests in flight) or in batches; jobs acknowledged per second. Every
// acknowledged job has been committed by the broker. With --producers P, P clients (threads)
// share the N jobs, each submitting as above.
//
// In sync mode the disk's own limit is measured in the same run, interleaved in rounds with the
// submits (the same number of one-row SQLite commits, same directory, same synchronous setting),
// because this machine's fsync rate moves by an order of magnitude from minute to minute: the
// ratio of the two, round by round, is the figure that means something.
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

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
    const unsigned producers = std::max(1u, opt.producers);
    const bool interleave =
        mode == SubmitMode::sync && !broker.external() && producers == 1 && opt.paced == 0;
    Pacer pacer(opt.paced, producers);
    const std::uint64_t rounds = interleave ? 5 : 1;
    const std::uint64_t per_round = std::max<std::uint64_t>(1, n / rounds);
    std::vector<double> limit_rates, ratios;
    TempDir limit_dir(opt.tmpdir, false);
    double seconds = 0;
    std::uint64_t done = 0;
    for (std::uint64_t round = 0; round < rounds && !deadline.passed(); ++round) {
        const std::uint64_t want = round + 1 == rounds ? n - done : per_round;
        const auto t0 = Clock::now();
        std::atomic<std::uint64_t> got{0};
        {
            FirstFailure failures;
            std::vector<std::jthread> threads;
            for (unsigned p = 0; p < producers; ++p) {
                const std::uint64_t share = want / producers + (p < want % producers ? 1 : 0);
                threads.emplace_back(failures.guard([&, share, p] {
                    got += submit_jobs(broker.endpoint(), noop_job(queue, payload), share, mode,
                                       opt, deadline, &failures.stop, &pacer, p);
                }));
            }
            threads.clear();
            failures.rethrow();
        }
        const double s = seconds_since(t0);
        seconds += s;
        done += got;
        if (interleave && got > 0) {
            const double limit = sqlite_commit_rate((limit_dir.path() / "limit.db").string(),
                                                    opt.synchronous, got, deadline);
            limit_rates.push_back(limit);
            ratios.push_back(limit / (static_cast<double>(got) / s));
        }
    }

    Result r;
    r.scenario = "submit";
    r.config["mode"] = mode_name;
    r.config["jobs"] = n;
    r.config["producers"] = producers;
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
    if (!ratios.empty()) {
        auto median = [](std::vector<double> v) {
            std::sort(v.begin(), v.end());
            return v[v.size() / 2];
        };
        r.add("limit_commits_per_s", median(limit_rates),
              "one-row SQLite commits/s, interleaved (median of rounds)");
        r.add("x_of_limit", median(ratios),
              "time per submit / time per one-row commit (median of rounds; 1.0 = the limit)");
    }
    if (pacer.on()) pacer.report(r, "submit -> ack");
    if (done < n) r.notes.push_back("stopped at --max-seconds before all jobs were submitted");
    return r;
}

}  // namespace errand::bench
