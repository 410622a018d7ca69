// Scenario `beanstalkd`: the same load shapes driven against a beanstalkd at --addr, over its text
// protocol (put / reserve / delete; see beanstalkd's doc/protocol.txt), so compare.sh can set
// errand's figures beside it. Mode `e2e` (default): P producer connections put N jobs one at a
// time while K consumer connections reserve and delete them; time until all N are deleted.
// Mode `latency`: one connection, sequential put -> reserve -> delete round trips.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "load.hpp"
#include "scenarios.hpp"

namespace errand::bench {
namespace {

// One blocking TCP connection speaking beanstalkd's line protocol. Lines end in "\r\n".
class Beanstalk {
  public:
    explicit Beanstalk(const std::string& addr) {
        const auto colon = addr.rfind(':');
        if (colon == std::string::npos) throw std::invalid_argument("--addr must be HOST:PORT");
        const std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
            throw std::runtime_error("cannot resolve " + addr);
        fd_ = ::socket(res->ai_family, res->ai_socktype, res->ai_protocol);
        const int rc = fd_ < 0 ? -1 : ::connect(fd_, res->ai_addr, res->ai_addrlen);
        ::freeaddrinfo(res);
        if (rc != 0) {
            const int e = errno;
            if (fd_ >= 0) ::close(fd_);
            throw std::system_error(e, std::generic_category(), "connect to beanstalkd " + addr);
        }
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        timeval tv{10, 0};  // no reply within 10 s is an error, not a hang
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~Beanstalk() { ::close(fd_); }
    Beanstalk(const Beanstalk&) = delete;
    Beanstalk& operator=(const Beanstalk&) = delete;

    // Sends a command and returns the reply line (without "\r\n").
    std::string command(const std::string& line) {
        send(line + "\r\n");
        return read_line();
    }
    void use(const std::string& tube) { expect(command("use " + tube), "USING"); }
    void watch_only(const std::string& tube) {
        expect(command("watch " + tube), "WATCHING");
        expect(command("ignore default"), "WATCHING");
    }
    std::uint64_t put(const std::string& body) {
        send(fmt::format("put 0 0 60 {}\r\n", body.size()) + body + "\r\n");
        const std::string reply = read_line();
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
        read_exact(bytes + 2);
        return id;
    }
    void remove(std::uint64_t id) { expect(command(fmt::format("delete {}", id)), "DELETED"); }

  private:
    static void expect(const std::string& reply, std::string_view word) {
        if (reply.compare(0, word.size(), word) != 0)
            throw std::runtime_error(fmt::format("beanstalkd: expected {}, got '{}'", word, reply));
    }
    void send(const std::string& data) {
        std::size_t off = 0;
        while (off < data.size()) {
            const ssize_t w = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                throw std::system_error(errno, std::generic_category(), "send to beanstalkd");
            }
            off += static_cast<std::size_t>(w);
        }
    }
    void fill() {
        char chunk[4096];
        ssize_t r;
        do
            r = ::recv(fd_, chunk, sizeof chunk, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) throw std::system_error(errno, std::generic_category(), "recv from beanstalkd");
        if (r == 0) throw std::runtime_error("beanstalkd closed the connection");
        buf_.append(chunk, static_cast<std::size_t>(r));
    }
    std::string read_line() {
        std::size_t end;
        while ((end = buf_.find("\r\n")) == std::string::npos)
            fill();
        std::string line = buf_.substr(0, end);
        buf_.erase(0, end + 2);
        return line;
    }
    void read_exact(std::size_t n) {
        while (buf_.size() < n)
            fill();
        buf_.erase(0, n);
    }

    int fd_ = -1;
    std::string buf_;
};

Result run_e2e_shape(const Options& opt, const std::string& tube, const std::string& payload) {
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const unsigned producers = std::max(1u, opt.producers);
    const unsigned consumers = std::max(1u, opt.workers);
    const Deadline deadline(opt.max_seconds);
    std::atomic<std::uint64_t> deleted{0};
    std::atomic<bool> stop{false};
    std::exception_ptr failure;
    std::mutex failure_mu;
    auto guarded = [&](auto body) {
        return [&, body] {
            try {
                body();
            } catch (...) {
                std::lock_guard lock(failure_mu);
                if (!failure) failure = std::current_exception();
                stop = true;
            }
        };
    };

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
    const auto t0 = Clock::now();
    Clock::time_point t_end{};  // written by the consumer that deletes the n-th job
    {
        std::vector<std::jthread> threads;
        for (unsigned i = 0; i < consumers; ++i) {
            threads.emplace_back(guarded([&, c = cons[i].get()] {
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
            threads.emplace_back(guarded([&, p = prod[i].get(), share] {
                for (std::uint64_t k = 0; k < share && !stop && !deadline.passed(); ++k)
                    p->put(payload);
            }));
        }
    }
    if (failure) std::rethrow_exception(failure);
    if (deleted < n) deadline.check("beanstalkd e2e");
    const double seconds = std::chrono::duration<double>(t_end - t0).count();

    Result r;
    r.scenario = "beanstalkd";
    r.config["mode"] = "e2e";
    r.config["addr"] = opt.addr;
    r.config["jobs"] = n;
    r.config["producers"] = producers;
    r.config["consumers"] = consumers;
    r.config["payload_bytes"] = payload.size();
    r.add("jobs_per_s", static_cast<double>(n) / seconds, "jobs/s");
    r.add("seconds", seconds, "s");
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

Result run_beanstalkd(const Options& opt) {
    const std::string mode = opt.mode.empty() ? "e2e" : opt.mode;
    const std::string tube = unique_queue("bench");
    const std::string payload = payload_for(opt, 16);
    if (mode == "e2e") return run_e2e_shape(opt, tube, payload);
    if (mode == "latency") return run_latency_shape(opt, tube, payload);
    throw std::invalid_argument("beanstalkd mode must be e2e or latency, not '" + mode + "'");
}

}  // namespace errand::bench
