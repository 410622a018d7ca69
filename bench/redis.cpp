// Scenario `redis`: the beanstalkd scenario's load shapes against a Redis at --addr used as a
// reliable queue (the RPOPLPUSH pattern): producers LPUSH jobs onto a list, consumers
// BRPOPLPUSH each one onto a processing list of their own and LREM it from there when done, so a
// consumer that dies leaves its job in its processing list. Mode `e2e` (default): P producer
// connections LPUSH N jobs one at a time while K consumer connections BRPOPLPUSH (timeout 1 s)
// and LREM them; time until all N are removed. Mode `latency`: one connection, sequential
// LPUSH -> BRPOPLPUSH -> LREM round trips. Mode `submit`: the LPUSHes alone. How durable Redis is
// depends on how the server was started (appendonly, appendfsync); the run records it in its config
// block.
//
// The client is a few lines of RESP over TcpLine rather than hiredis: three commands need no
// more, and the figures must come from the same blocking one-request-at-a-time client as
// beanstalkd's.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "load.hpp"
#include "scenarios.hpp"
#include "tcp_line.hpp"

namespace errand::bench {
namespace {

// One blocking TCP connection speaking RESP2: commands go out as arrays of bulk strings, one at
// a time, each waiting for its reply. An error reply, or a reply of a type the command does not
// return, throws.
class Redis {
  public:
    explicit Redis(const std::string& addr) : conn_(addr, "redis") {
        const Reply r = command({"PING"});
        if (r.type != Reply::status || r.text != "PONG")
            throw std::runtime_error("redis: PING: expected +PONG, got " + r.describe());
    }

    // LPUSH key value: the list's length after the push.
    std::int64_t lpush(std::string_view key, std::string_view value) {
        const std::int64_t len = integer(command({"LPUSH", key, value}), "LPUSH");
        if (len < 1) throw std::runtime_error(fmt::format("redis: LPUSH returned {}", len));
        return len;
    }
    // BRPOPLPUSH source destination timeout: the element moved, or nothing after `timeout_s`.
    std::optional<std::string> brpoplpush(std::string_view source, std::string_view destination,
                                          int timeout_s) {
        const std::string timeout = std::to_string(timeout_s);
        Reply r = command({"BRPOPLPUSH", source, destination, timeout});
        if (r.type == Reply::nil) return std::nullopt;
        if (r.type != Reply::bulk)
            throw std::runtime_error("redis: BRPOPLPUSH: expected a bulk string, got " +
                                     r.describe());
        return std::move(r.text);
    }
    // LREM key count value: how many elements were removed.
    std::int64_t lrem(std::string_view key, int count, std::string_view value) {
        const std::string c = std::to_string(count);
        return integer(command({"LREM", key, c, value}), "LREM");
    }
    std::int64_t llen(std::string_view key) { return integer(command({"LLEN", key}), "LLEN"); }
    // CONFIG GET name: the value, or a note saying why there is none (a server may forbid
    // CONFIG); for the config block only.
    std::string config_get(std::string_view name) {
        try {
            const Reply r = command({"CONFIG", "GET", name});
            if (r.type == Reply::array && r.elements.size() == 2 &&
                r.elements[1].type == Reply::bulk)
                return r.elements[1].text;
            return "unknown (CONFIG GET replied " + r.describe() + ")";
        } catch (const ServerError& e) {
            return std::string("unknown (") + e.what() + ")";
        }
    }

  private:
    struct Reply {
        enum Type { status, integer, bulk, nil, array } type = nil;
        std::string text;             // status, bulk
        std::int64_t number = 0;      // integer
        std::vector<Reply> elements;  // array
        std::string describe() const {
            switch (type) {
                case status:
                    return "+" + text;
                case integer:
                    return ":" + std::to_string(number);
                case bulk:
                    return fmt::format("a bulk string of {} bytes", text.size());
                case nil:
                    return "nil";
                case array:
                    return fmt::format("an array of {}", elements.size());
            }
            return "?";
        }
    };
    // An error reply (-ERR …): the server answered, the command failed.
    class ServerError : public std::runtime_error {
      public:
        using std::runtime_error::runtime_error;
    };

    static std::int64_t integer(const Reply& r, const char* cmd) {
        if (r.type != Reply::integer)
            throw std::runtime_error(
                fmt::format("redis: {}: expected an integer, got {}", cmd, r.describe()));
        return r.number;
    }
    static std::int64_t parse_int(std::string_view s) {
        std::int64_t v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc{} || end != s.data() + s.size())
            throw std::runtime_error(fmt::format("redis: bad number in reply: '{}'", s));
        return v;
    }

    template <typename Args>
    Reply command_range(const Args& args) {
        out_.clear();
        auto out = std::back_inserter(out_);
        fmt::format_to(out, "*{}\r\n", std::size(args));
        for (std::string_view a : args) {
            fmt::format_to(out, "${}\r\n", a.size());
            out_.append(a);
            out_ += "\r\n";
        }
        conn_.send_all(out_);
        try {
            return read_reply();
        } catch (const ServerError& e) {
            throw ServerError(fmt::format("redis: {}: {}", *std::begin(args), e.what()));
        }
    }
    Reply command(std::initializer_list<std::string_view> args) { return command_range(args); }

    Reply read_reply() {
        const std::string line = conn_.read_line();
        if (line.empty()) throw std::runtime_error("redis: empty reply line");
        const std::string_view rest = std::string_view(line).substr(1);
        Reply r;
        switch (line[0]) {
            case '+':
                r.type = Reply::status;
                r.text = rest;
                return r;
            case '-':
                // The whole reply is read; the connection stays usable.
                throw ServerError(std::string(rest));
            case ':':
                r.type = Reply::integer;
                r.number = parse_int(rest);
                return r;
            case '$': {
                const std::int64_t n = parse_int(rest);
                if (n == -1) return r;  // nil
                if (n < 0) throw std::runtime_error("redis: bad bulk length: " + line);
                r.type = Reply::bulk;
                r.text = conn_.read_exact(static_cast<std::size_t>(n) + 2);
                if (r.text.compare(static_cast<std::size_t>(n), 2, "\r\n") != 0)
                    throw std::runtime_error("redis: bulk string not followed by CRLF");
                r.text.resize(static_cast<std::size_t>(n));
                return r;
            }
            case '*': {
                const std::int64_t n = parse_int(rest);
                if (n == -1) return r;  // nil array
                if (n < 0) throw std::runtime_error("redis: bad array length: " + line);
                r.type = Reply::array;
                for (std::int64_t i = 0; i < n; ++i)
                    r.elements.push_back(read_reply());
                return r;
            }
            default:
                throw std::runtime_error(fmt::format("redis: unexpected reply '{}'", line));
        }
    }

    TcpLine conn_;
    std::string out_;
};

// A job's body: the payload with the job's own tag written over its start, so every body is
// unique and LREM removes that job. Longer than the payload only if the tag is.
std::string job_body(const std::string& payload, unsigned producer, std::uint64_t k) {
    std::string body = fmt::format("{}:{}:", producer, k);
    if (body.size() < payload.size()) body.append(payload, body.size());
    return body;
}

// Names of this run's keys: unique per run, so runs against one server do not mix.
struct Keys {
    std::string queue;
    std::string processing(unsigned consumer) const {
        return fmt::format("{}:processing:{}", prefix, consumer);
    }
    std::string prefix;
};
Keys keys_for_run() {
    Keys k;
    k.prefix =
        fmt::format("errand-{}-{}", unique_queue("bench"), Clock::now().time_since_epoch().count());
    k.queue = k.prefix + ":queue";
    return k;
}

void describe_server(Result& r, const Options& opt) {
    Redis c(opt.addr);
    r.config["addr"] = opt.addr;
    r.config["appendonly"] = c.config_get("appendonly");
    r.config["appendfsync"] = c.config_get("appendfsync");
    r.config["save"] = c.config_get("save");
}

// e2e; or, with submit_only, the LPUSHes alone (no consumers): time until the last is answered.
Result run_e2e_shape(const Options& opt, const Keys& keys, const std::string& payload,
                     bool submit_only) {
    const std::uint64_t n = opt.n ? opt.n : 100'000;
    const unsigned producers = std::max(1u, opt.producers);
    const unsigned consumers = submit_only ? 0 : std::max(1u, opt.workers);
    const Deadline deadline(opt.max_seconds);
    std::atomic<std::uint64_t> removed{0};
    FirstFailure failures;
    std::atomic<bool>& stop = failures.stop;

    // Connect everyone, and make every body, before the clock starts.
    std::vector<std::unique_ptr<Redis>> prod, cons;
    std::vector<std::string> processing;
    for (unsigned i = 0; i < producers; ++i)
        prod.push_back(std::make_unique<Redis>(opt.addr));
    for (unsigned i = 0; i < consumers; ++i) {
        cons.push_back(std::make_unique<Redis>(opt.addr));
        processing.push_back(keys.processing(i));
    }
    std::vector<std::vector<std::string>> bodies(producers);
    for (unsigned i = 0; i < producers; ++i) {
        const std::uint64_t share = n / producers + (i < n % producers ? 1 : 0);
        bodies[i].reserve(share);
        for (std::uint64_t k = 0; k < share; ++k)
            bodies[i].push_back(job_body(payload, i, k));
    }
    Pacer pacer(opt.paced, producers);
    const auto t0 = Clock::now();
    Clock::time_point t_end{};  // written by the consumer that removes the n-th job
    std::atomic<std::uint64_t> pushed{0};
    {
        std::vector<std::jthread> threads;
        for (unsigned i = 0; i < consumers; ++i) {
            threads.emplace_back(failures.guard([&, c = cons[i].get(), &mine = processing[i]] {
                while (removed.load() < n && !stop && !deadline.passed()) {
                    const std::optional<std::string> body = c->brpoplpush(keys.queue, mine, 1);
                    if (!body) continue;
                    const std::int64_t gone = c->lrem(mine, 1, *body);
                    if (gone != 1)
                        throw std::runtime_error(fmt::format(
                            "redis: LREM of the job just moved to {} removed {}", mine, gone));
                    if (++removed == n) t_end = Clock::now();  // exactly one thread gets here
                }
            }));
        }
        for (unsigned i = 0; i < producers; ++i) {
            threads.emplace_back(failures.guard([&, p = prod[i].get(), &mine = bodies[i], i] {
                for (std::size_t k = 0; k < mine.size() && !stop && !deadline.passed(); ++k) {
                    pacer.paced(i, k, [&] { p->lpush(keys.queue, mine[k]); });
                    if (++pushed == n && submit_only) t_end = Clock::now();
                }
            }));
        }
    }
    failures.rethrow();
    if ((submit_only ? pushed.load() : removed.load()) < n) deadline.check("redis e2e");
    const double seconds = std::chrono::duration<double>(t_end - t0).count();
    // Every job pushed was removed once: nothing may be left anywhere. Submit only: all there.
    std::int64_t left = prod[0]->llen(keys.queue);
    for (const auto& key : processing)
        left += prod[0]->llen(key);
    if (left != (submit_only ? static_cast<std::int64_t>(n) : 0))
        throw std::runtime_error(fmt::format("redis: {} jobs left after all {} were {}", left, n,
                                             submit_only ? "pushed" : "removed"));

    Result r;
    r.scenario = "redis";
    r.config["mode"] = submit_only ? "submit" : "e2e";
    describe_server(r, opt);
    r.config["jobs"] = n;
    r.config["producers"] = producers;
    r.config["consumers"] = consumers;
    r.config["payload_bytes"] = payload.size();
    r.add("jobs_per_s", static_cast<double>(n) / seconds, "jobs/s");
    r.add("seconds", seconds, "s");
    if (pacer.on()) pacer.report(r, "LPUSH -> reply");
    return r;
}

Result run_latency_shape(const Options& opt, const Keys& keys, const std::string& payload) {
    const std::uint64_t n = opt.n ? opt.n : 2000;
    const Deadline deadline(opt.max_seconds);
    Redis c(opt.addr);
    const std::string processing = keys.processing(0);
    std::uint64_t k = 0;
    auto round_trip = [&](const std::string& body) {
        c.lpush(keys.queue, body);
        const std::optional<std::string> got = c.brpoplpush(keys.queue, processing, 5);
        if (!got) throw std::runtime_error("redis: the job just pushed was not popped");
        if (*got != body)
            throw std::runtime_error(fmt::format("redis: pushed '{}', popped '{}'", body, *got));
        const std::int64_t gone = c.lrem(processing, 1, body);
        if (gone != 1)
            throw std::runtime_error(
                fmt::format("redis: LREM of the job just popped removed {}", gone));
    };
    for (unsigned i = 0; i < opt.warmup; ++i)
        round_trip(job_body(payload, 0, k++));
    std::vector<double> us;
    us.reserve(n);
    for (std::uint64_t i = 0; i < n && !deadline.passed(); ++i) {
        const std::string body = job_body(payload, 0, k++);
        const auto t0 = Clock::now();
        round_trip(body);
        us.push_back(seconds_since(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());

    Result r;
    r.scenario = "redis";
    r.config["mode"] = "latency";
    describe_server(r, opt);
    r.config["round_trips"] = n;
    r.config["warmup"] = opt.warmup;
    r.config["payload_bytes"] = payload.size();
    r.add("p50_us", quantile(us, 0.50), "us (LPUSH -> BRPOPLPUSH -> LREM)");
    r.add("p99_us", quantile(us, 0.99), "us");
    r.add("p999_us", quantile(us, 0.999), "us");
    r.add("mean_us", us.empty() ? 0 : std::accumulate(us.begin(), us.end(), 0.0) / us.size(), "us");
    r.add("max_us", us.empty() ? 0 : us.back(), "us");
    if (us.size() < n) r.notes.push_back("stopped at --max-seconds before all round trips");
    return r;
}

}  // namespace

Result run_redis(const Options& options) {
    Options opt = options;
    if (opt.addr.empty()) opt.addr = "127.0.0.1:6379";
    const std::string mode = opt.mode.empty() ? "e2e" : opt.mode;
    const Keys keys = keys_for_run();
    const std::string payload = payload_for(opt, 16);
    if (mode == "e2e" || mode == "submit")
        return run_e2e_shape(opt, keys, payload, mode == "submit");
    if (mode == "latency") return run_latency_shape(opt, keys, payload);
    throw std::invalid_argument("redis mode must be e2e, submit or latency, not '" + mode + "'");
}

}  // namespace errand::bench
