// How a broker's cost per job grows with what a user does not think of as load
// (docs/PERFORMANCE.md, "How cost grows"; issue 16):
//   bytes    bytes the broker writes per job (its /proc/PID/io write_bytes, WAL and checkpoints
//            included) against the payload: --mode once (a job that succeeds at once), long (runs
//            1.5 s) or retry (fails 5 times, then succeeds)
//   history  CPU and bytes per state change of jobs that live 5 changes, against the changes
//            beyond those of jobs that live about --transitions changes (both fail until dead)
//   purge    -n finished jobs purged: the file before, right after and once the broker has given
//            the space back, and PING round trips meanwhile
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

// Waits until the broker has written nothing for 1 s (its checkpoints of the run included), at
// most 15 s.
void settle_writes(const BrokerProcess& broker) {
    auto last = write_bytes(broker.pid());
    auto quiet_since = Clock::now();
    const auto until = Clock::now() + std::chrono::seconds(15);
    while (Clock::now() < until && seconds_since(quiet_since) < 1.0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto now = write_bytes(broker.pid());
        if (now != last) {
            last = now;
            quiet_since = Clock::now();
        }
    }
}

// A library worker on its own thread with `handler`.
class OneWorker {
  public:
    OneWorker(const std::string& endpoint, const std::string& queue, unsigned concurrency,
              Handler handler)
        : w_(WorkerOptions{
              .endpoint = endpoint, .name = "bench-growth", .concurrency = concurrency}) {
        w_.handle(queue, std::move(handler));
        t_ = std::thread([this] { w_.run(); });
    }
    ~OneWorker() {
        w_.stop();
        t_.join();
    }

  private:
    Worker w_;
    std::thread t_;
};

void require_own_broker(const BrokerProcess& broker, const char* scenario) {
    if (broker.external())
        throw std::runtime_error(fmt::format(
            "{}: needs a broker of its own (it reads the broker's /proc/PID/io)", scenario));
}

}  // namespace

Result run_bytes(const Options& opt) {
    const std::string mode = opt.mode.empty() ? "once" : opt.mode;
    if (mode != "once" && mode != "long" && mode != "retry")
        throw std::runtime_error("bytes: --mode once|long|retry");
    const std::uint64_t n = opt.n ? opt.n : (mode == "long" ? 20 : 200);
    const std::size_t size = opt.payload_size ? opt.payload_size : 65536;
    BrokerProcess broker(opt);
    require_own_broker(broker, "bytes");
    const Deadline deadline(opt.max_seconds);
    const std::string queue = unique_queue("bytes");
    Client client(client_options(broker.endpoint()));
    settle_writes(broker);
    const auto w0 = write_bytes(broker.pid());
    const double c0 = broker.cpu_seconds();
    {
        OneWorker worker(broker.endpoint(), queue, mode == "long" ? 20 : 4, [&](const Job& j) {
            if (mode == "long") std::this_thread::sleep_for(std::chrono::milliseconds(1500));
            if (mode == "retry" && j.attempt <= 5) return Outcome::failure("again");
            return Outcome::success("ok");
        });
        JobSpec job = noop_job(queue, std::string(size, 'p'));
        job.max_attempts = 6;
        job.backoff = std::chrono::milliseconds(1);
        job.backoff_cap = std::chrono::milliseconds(1);
        for (std::uint64_t i = 0; i < n; ++i)
            client.submit(job);  // one at a time: each job its own commit, as most clients do
        wait_succeeded(client, queue, n, deadline);
    }
    settle_writes(broker);
    const double bytes = static_cast<double>(write_bytes(broker.pid()) - w0);
    const double cpu = broker.cpu_seconds() - c0;

    Result r;
    r.scenario = "bytes";
    r.config["mode"] = mode;
    r.config["jobs"] = n;
    r.config["payload_bytes"] = size;
    r.config["broker"] = broker_label(opt);
    r.add("written_per_job", bytes / static_cast<double>(n), "bytes (write_bytes, checkpoints in)");
    r.add("written_per_payload_byte", bytes / static_cast<double>(n * size), "x");
    r.add("beyond_payload_per_job", bytes / static_cast<double>(n) - static_cast<double>(size),
          "bytes");
    r.add("broker_cpu_per_job", cpu / static_cast<double>(n) * 1e6, "us");
    return r;
}

Result run_history(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 300;
    // After its submit, a job of A attempts that fails each changes state 3A - 1 times
    // (dispatched, failed, due again; the last failure ends it dead). Short jobs live 5 changes
    // (A = 2), long ones about --transitions.
    const std::uint32_t long_attempts = std::max<std::uint32_t>(3, (opt.transitions + 1) / 3);
    BrokerProcess broker(opt);
    require_own_broker(broker, "history");
    const Deadline deadline(opt.max_seconds);
    Client client(client_options(broker.endpoint()));
    struct Phase {
        std::uint32_t attempts;
        double bytes = 0, cpu = 0, changes = 0;
    };
    std::vector<Phase> phases{{2}, {long_attempts}};
    for (auto& ph : phases) {
        const std::string queue = unique_queue("history");
        JobSpec job = noop_job(queue, "h");
        job.max_attempts = ph.attempts;
        job.backoff = std::chrono::milliseconds(1);
        job.backoff_cap = std::chrono::milliseconds(1);
        for (std::uint64_t done = 0; done < n;) {
            const std::uint64_t k = std::min<std::uint64_t>(n - done, 1000);
            client.submit_batch(std::vector<JobSpec>(k, job));
            done += k;
        }
        settle_writes(broker);
        const auto w0 = write_bytes(broker.pid());
        const double c0 = broker.cpu_seconds();
        {
            OneWorker worker(broker.endpoint(), queue, 8,
                             [](const Job&) { return Outcome::failure("again"); });
            while (count_in_state(client, queue, JobState::dead) < n) {
                deadline.check("waiting for the jobs to end dead");
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        }
        settle_writes(broker);
        ph.bytes = static_cast<double>(write_bytes(broker.pid()) - w0);
        ph.cpu = broker.cpu_seconds() - c0;
        ph.changes = static_cast<double>(n) * (3.0 * ph.attempts - 1);
    }
    const auto& s = phases[0];
    const auto& l = phases[1];
    Result r;
    r.scenario = "history";
    r.config["jobs"] = n;
    r.config["short_changes_per_job"] = 3 * s.attempts - 1;
    r.config["long_changes_per_job"] = 3 * l.attempts - 1;
    r.config["broker"] = broker_label(opt);
    // The long jobs' changes beyond the short jobs' 5: what a change costs late in a life.
    const double sb = s.bytes / s.changes, sc = s.cpu / s.changes * 1e6;
    const double late_b = (l.bytes - s.bytes) / (l.changes - s.changes);
    const double late_c = (l.cpu - s.cpu) / (l.changes - s.changes) * 1e6;
    r.add("first5_bytes_per_change", sb, "bytes (jobs of 5 changes)");
    r.add("later_bytes_per_change", late_b, "bytes (changes 6 to the last, from the difference)");
    r.add("later_over_first5_bytes", sb > 0 ? late_b / sb : 0, "x");
    r.add("first5_cpu_per_change", sc, "us");
    r.add("later_cpu_per_change", late_c, "us");
    r.add("later_over_first5_cpu", sc > 0 ? late_c / sc : 0, "x");
    return r;
}

Result run_purge(const Options& opt) {
    const std::uint64_t n = opt.n ? opt.n : 200000;
    BrokerProcess broker(opt);
    require_own_broker(broker, "purge");
    const Deadline deadline(opt.max_seconds);
    const std::string queue = unique_queue("purge");
    Client client(client_options(broker.endpoint()));
    const JobSpec job = noop_job(queue, payload_for(opt, 100));
    {
        WorkerPool pool(broker.endpoint(), queue, 2, 8, 256);
        submit_jobs(broker.endpoint(), job, n, SubmitMode::batch, opt, deadline);
        wait_succeeded(client, queue, n, deadline);
    }
    settle_writes(broker);
    const double before = static_cast<double>(broker.db_bytes());
    std::atomic<bool> stop{false};
    std::vector<double> pings;
    std::thread pinger([&] {
        Client c(client_options(broker.endpoint()));
        while (!stop.load() && pings.size() < 1'000'000) {
            const auto t0 = Clock::now();
            c.ping();
            pings.push_back(seconds_since(t0) * 1e6);
        }
    });
    const auto t0 = Clock::now();
    std::uint64_t purged = 0;
    for (;;) {  // PURGE deletes a bounded batch per request: repeat until none is left
        const auto k = client.purge(JobState::succeeded, queue);
        purged += k;
        if (k == 0) break;
        deadline.check("purging");
    }
    const double purge_s = seconds_since(t0);
    const double right_after = static_cast<double>(broker.db_bytes());
    // Space comes back in slices after the deletes: until the file stops shrinking for 2 s.
    auto last = broker.db_bytes();
    auto still = Clock::now();
    while (seconds_since(still) < 2.0 && !deadline.passed()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (auto b = broker.db_bytes(); b != last) {
            last = b;
            still = Clock::now();
        }
    }
    const double shrink_s = seconds_since(t0) - 2.0;
    stop = true;
    pinger.join();
    std::sort(pings.begin(), pings.end());
    // What the file holds when only the schema is left: a fresh broker's database.
    BrokerProcess empty(opt);
    const double floor = static_cast<double>(empty.db_bytes());

    Result r;
    r.scenario = "purge";
    r.config["jobs"] = n;
    r.config["broker"] = broker_label(opt);
    r.add("purged", static_cast<double>(purged), "jobs");
    r.add("purge_s", purge_s, "s (PURGE requests until none is left)");
    r.add("file_before_mib", before / 1048576, "MiB (database + WAL)");
    r.add("file_right_after_mib", right_after / 1048576, "MiB");
    r.add("file_settled_mib", static_cast<double>(last) / 1048576, "MiB");
    r.add("file_empty_mib", floor / 1048576, "MiB (a new database, for scale)");
    r.add("space_back_s", shrink_s, "s from the first PURGE until the file stopped shrinking");
    r.add("ping_p99_us", quantile(pings, 0.99), "us (while purging and shrinking)");
    r.add("ping_max_us", pings.empty() ? 0 : pings.back(), "us");
    return r;
}

}  // namespace errand::bench
