// Scenario `daemon`: N jobs running /bin/true through one errand-worker daemon with concurrency
// C, against `seq N | xargs -P C -n 1 /bin/true` (the same processes, the same parallelism, no
// queue). Mode `argv` (default): jobs carry argv ["/bin/true"] (run directly, --allow-commands);
// mode `shell`: the queue's command is /bin/true, run through /bin/sh -c as the daemon does.
// The errand time runs from the first submit until QUEUES shows all N succeeded.
#include <fmt/format.h>
#include <unistd.h>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {

using namespace std::chrono_literals;

Result run_daemon(const Options& opt) {
    const std::string mode = opt.mode.empty() ? "argv" : opt.mode;
    if (mode != "argv" && mode != "shell")
        throw std::invalid_argument("daemon mode must be argv or shell, not '" + mode + "'");
    const std::uint64_t n = opt.n ? opt.n : 10'000;
    const std::string worker_bin = opt.worker_bin.empty() ? default_worker_bin() : opt.worker_bin;
    if (::access(worker_bin.c_str(), X_OK) != 0)
        throw std::runtime_error("no worker binary at " + worker_bin + " (give --worker-bin)");
    const Deadline deadline(opt.max_seconds);

    // The baseline first, while nothing else of ours runs.
    TempDir dir(opt.tmpdir, opt.keep_tmp);
    double shell_seconds = 0;
    {
        const auto t0 = Clock::now();
        Child xargs({"/bin/sh", "-c",
                     fmt::format("seq {} | xargs -P {} -n 1 /bin/true", n, opt.concurrency)},
                    dir.path() / "xargs.log");
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::duration<double>(opt.max_seconds));
        const std::optional<int> rc = xargs.wait_exit(left);
        if (!rc) deadline.check("running the shell baseline");
        if (rc && *rc != 0) throw std::runtime_error(fmt::format("xargs exited with {}", *rc));
        shell_seconds = seconds_since(t0);
    }

    BrokerProcess broker(opt);
    const std::string queue = unique_queue("daemon");
    std::vector<std::string> argv{worker_bin,
                                  "--broker",
                                  broker.endpoint(),
                                  "--queue",
                                  mode == "shell" ? queue + "=/bin/true" : queue,
                                  "--concurrency",
                                  std::to_string(opt.concurrency),
                                  "--prefetch",
                                  std::to_string(opt.daemon_prefetch),
                                  "--log-level",
                                  "warn",
                                  "--name",
                                  "bench-daemon"};
    if (mode == "argv") argv.push_back("--allow-commands");
    Child daemon(argv, dir.path() / "worker.log");

    JobSpec job = noop_job(queue, {});
    if (mode == "argv") job.argv = std::vector<std::string>{"/bin/true"};
    Client client(client_options(broker.endpoint()));
    // One job first: once it has run, the daemon is registered and serving.
    const std::optional<JobInfo> first =
        client.wait(client.submit(job).id, std::chrono::seconds(30));
    if (!first || first->state != JobState::succeeded)
        throw std::runtime_error("the errand-worker daemon did not run a first job within 30 s");

    const auto t0 = Clock::now();
    const std::uint64_t done =
        submit_jobs(broker.endpoint(), job, n, SubmitMode::batch, opt, deadline);
    if (done < n) deadline.check("submitting");
    wait_succeeded(client, queue, n + 1, deadline);
    const double errand_seconds = seconds_since(t0);

    Result r;
    r.scenario = "daemon";
    r.config["mode"] = mode;
    r.config["jobs"] = n;
    r.config["concurrency"] = opt.concurrency;
    r.config["prefetch"] = opt.daemon_prefetch;
    r.config["baseline"] = fmt::format("seq {} | xargs -P {} -n 1 /bin/true", n, opt.concurrency);
    r.config["broker"] = broker_label(opt);
    r.add("errand_s", errand_seconds, "s (errand-worker)");
    r.add("shell_s", shell_seconds, "s (xargs -P)");
    r.add("ratio", errand_seconds / shell_seconds, "x (errand / shell)");
    r.add("errand_jobs_per_s", static_cast<double>(n) / errand_seconds, "jobs/s");
    return r;
}

}  // namespace errand::bench
