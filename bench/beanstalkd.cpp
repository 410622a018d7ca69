// Scenario `beanstalkd`: the same load shapes driven against a beanstalkd at --addr, over its text
// protocol (put / reserve / delete; see beanstalkd's doc/protocol.txt), so compare.sh can set
// errand's figures beside it. Mode `e2e` (default): P producer connections put N jobs one at a
// time while K consumer connections reserve and delete them; time until all N are deleted.
// Mode `submit`: the puts alone.
// Mode `latency`: one connection, sequential put -> reserve -> delete round trips.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "load.hpp"
#include "scenarios.hpp"
#include "tcp_line.hpp"

namespace errand::bench {
namespace {

// One blocking TCP connection speaking beanstalkd's line protocol. Lines end in "\r\n".
class Beanstalk {
  public:
    explicit Beanstalk(const std::string& addr) : conn_(addr, "beanstalkd") {}

    // Sends a command and returns the reply line (without "\r\n").
    std::string command(const std::string& line) {
        conn_.send_all(line + "\r\n");
        return conn_.read_line();
    }
    void use(const std::string& tube) { expect(command("use " + tube), "USING"); }
    void watch_only(const std::string& tube) {
        expect(command("watch " + tube), "WATCHING");
        expect(command("ignore default"), "WATCHING");
    }
    std::uint64_t put(const std::string& body) {
        conn_.send_all(fmt::format("put 0 0 60 {}\r\n", body.size()) + body + "\r\n");
        const std::string reply = conn_.read_line();
        expect(reply, "INSERTED");
        return std::stoull(reply.substr(9));
    }
    // The id of the reserved job, or 0 on TIMED_OUT.
    std::uint64_t reserve(int timeout_s) {
        const std::string reply = command(fmt::format("reserve-with-timeout {}", timeout_s));
        if (reply == "TIMED_OUT") return 0;
        expect(reply, "RESERVED");
        std::uint64_t id = 0;
        std::size_t bytes = 0;
        if (std::sscanf(reply.c_str(), "RESERVED %lu %zu", &id, &bytes) != 2)
            throw std::runtime_error("beanstalkd: bad reply: " + reply);
        conn_.skip_exact(bytes + 2);
        return id;
    }
    void remove(std::uint64_t id) { expect(command(fmt::format("delete {}", id)), "DELETED"); }

  private:
    static void expect(const std::string& reply, std::string_view word) {
        if (reply.compare(0, word.size(), word) != 0)
            throw std::runtime_error(fmt::format("beanstalkd: expected {}, got '{}'", word, reply));
    }

    TcpLine conn_;
};

// e2e; or, with submit_only, the puts alone (no consumers): time until the last is INSERTED.
Result run_e2e_shape(const Options& opt, const std::string& tube, const std::string& payload,
                     bool submit_only) {
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const unsigned producers = std::max(1u, opt.producers);
    const unsigned consumers = submit_only ? 0 : std::max(1u, opt.workers);
    const Deadline deadline(opt.max_seconds);
    std::atomic<std::uint64_t> deleted{0};
    FirstFailure failures;
    std::atomic<bool>& stop = failures.stop;

    // Connect everyone before the clock starts.
    std::vector<std::unique_ptr<Beanstalk>> prod, cons;
    for (unsigned i = 0; i < producers; ++i) {
        prod.push_back(std::make_unique<Beanstalk>(opt.addr));
        prod.back()->use(tube);
    }
    for (unsigned i = 0; i < consumers; ++i) {
        cons.push_back(std::make_unique<Beanstalk>(opt.addr));
        cons.back()->watch_only(tube);
    }
    Pacer pacer(opt.paced, producers);
    const auto t0 = Clock::now();
    Clock::time_point t_end{};  // written by the consumer that deletes the n-th job
    std::atomic<std::uint64_t> inserted{0};
    {
        std::vector<std::jthread> threads;
        for (unsigned i = 0; i < consumers; ++i) {
            threads.emplace_back(failures.guard([&, c = cons[i].get()] {
                while (deleted.load() < n && !stop && !deadline.passed()) {
                    const std::uint64_t id = c->reserve(1);
                    if (id == 0) continue;
                    c->remove(id);
                    if (++deleted == n) t_end = Clock::now();  // exactly one thread gets here
                }
            }));
        }
        for (unsigned i = 0; i < producers; ++i) {
            const std::uint64_t share = n / producers + (i < n % producers ? 1 : 0);
            threads.emplace_back(failures.guard([&, p = prod[i].get(), share, i] {
                for (std::uint64_t k = 0; k < share && !stop && !deadline.passed(); ++k) {
                    pacer.paced(i, k, [&] { p->put(payload); });
                    if (++inserted == n && submit_only) t_end = Clock::now();
                }
            }));
        }
    }
    failures.rethrow();
    if ((submit_only ? inserted.load() : deleted.load()) < n) deadline.check("beanstalkd e2e");
    const double seconds = std::chrono::duration<double>(t_end - t0).count();

    Result r;
    r.scenario = "beanstalkd";
    r.config["mode"] = submit_only ? "submit" : "e2e";
    r.config["addr"] = opt.addr;
    r.config["jobs"] = n;
    r.config["producers"] = producers;
    r.config["consumers"] = consumers;
    r.config["payload_bytes"] = payload.size();
    r.add("jobs_per_s", static_cast<double>(n) / seconds, "jobs/s");
    r.add("seconds", seconds, "s");
    if (pacer.on()) pacer.report(r, "put -> INSERTED");
    return r;
}

Result run_latency_shape(const Options& opt, const std::string& tube, const std::string& payload) {
    const std::uint64_t n = opt.n ? opt.n : 2000;
    const Deadline deadline(opt.max_seconds);
    Beanstalk c(opt.addr);
    c.use(tube);
    c.watch_only(tube);
    auto round_trip = [&] {
        c.put(payload);
        const std::uint64_t id = c.reserve(5);
        if (id == 0) throw std::runtime_error("beanstalkd: the job just put was not reserved");
        c.remove(id);
    };
    for (unsigned i = 0; i < opt.warmup; ++i)
        round_trip();
    std::vector<double> us;
    for (std::uint64_t i = 0; i < n && !deadline.passed(); ++i) {
        const auto t0 = Clock::now();
        round_trip();
        us.push_back(seconds_since(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());

    Result r;
    r.scenario = "beanstalkd";
    r.config["mode"] = "latency";
    r.config["addr"] = opt.addr;
    r.config["round_trips"] = n;
    r.config["warmup"] = opt.warmup;
    r.config["payload_bytes"] = payload.size();
    r.add("p50_us", quantile(us, 0.50), "us (put -> reserve -> delete)");
    r.add("p99_us", quantile(us, 0.99), "us");
    r.add("p999_us", quantile(us, 0.999), "us");
    r.add("mean_us", us.empty() ? 0 : std::accumulate(us.begin(), us.end(), 0.0) / us.size(), "us");
    r.add("max_us", us.empty() ? 0 : us.back(), "us");
    return r;
}

}  // namespace

Result run_beanstalkd(const Options& options) {
    Options opt = options;
    if (opt.addr.empty()) opt.addr = "127.0.0.1:11300";
    const std::string mode = opt.mode.empty() ? "e2e" : opt.mode;
    const std::string tube = unique_queue("bench");
    const std::string payload = payload_for(opt, 16);
    if (mode == "e2e" || mode == "submit")
        return run_e2e_shape(opt, tube, payload, mode == "submit");
    if (mode == "latency") return run_latency_shape(opt, tube, payload);
    throw std::invalid_argument("beanstalkd mode must be e2e, submit or latency, not '" + mode +
                                "'");
}

}  // namespace errand::bench
