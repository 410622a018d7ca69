// The asynchronous client: callers queue requests under a mutex and wake the I/O thread through an
// eventfd; the I/O thread sends, matches replies by `req`, resends and times out.
#include "errand/async_client.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>

#include <deque>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>

#include "errand/clock.hpp"
#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/transport.hpp"

namespace errand {
namespace {

// Called on the I/O thread with the reply, or with an exception.
using Completion = std::function<void(const Envelope*, std::exception_ptr)>;

struct Request {
    std::string_view command;
    std::string body;
    std::uint64_t req = 0;
    Millis timeout_ms = 0;
    Millis resend_ms = 0;
    Completion complete;
};

struct Check {
    Millis at = 0;
    std::uint64_t req = 0;
    bool operator>(const Check& o) const { return at > o.at; }
};

}  // namespace

struct AsyncClient::Impl {
    ClientOptions opt;
    zmq::context_t& ctx = process_context();
    int wake_fd = -1;
    std::mutex mu;
    std::deque<Request> incoming;
    std::atomic<bool> stopping{false};
    std::atomic<std::size_t> inflight{0};
    std::atomic<std::uint64_t> next_req{1};
    std::thread io;

    explicit Impl(ClientOptions o) : opt(std::move(o)) {
        wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wake_fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
        try {
            brokers = broker_list(opt.endpoint, opt.endpoints);
        } catch (const std::invalid_argument& e) {
            close(wake_fd);
            throw ConnectionError(e.what());
        }
        // Connect here so a bad endpoint fails the constructor, not a future.
        try {
            connect(0, steady_ms());
        } catch (...) {
            close(wake_fd);
            throw;
        }
        io = std::thread([this] { run(); });
    }

    // The I/O thread's socket to brokers[index] (see ClientOptions::endpoints). Owned by the I/O
    // thread once it runs.
    std::vector<std::string> brokers;
    std::size_t current = 0;
    std::unique_ptr<BrokerLink> link;

    void connect(std::size_t index, Millis now) {
        link.reset();
        current = index;
        try {
            link = std::make_unique<BrokerLink>(ctx, brokers[index], opt.curve, 0, now);
        } catch (const zmq::error_t& e) {
            throw ConnectionError(
                fmt::format("cannot connect to broker at {}: {}", brokers[index], e.what()));
        }
    }

    ~Impl() {
        stopping = true;
        wake();
        io.join();
        close(wake_fd);
    }

    void wake() {
        std::uint64_t one = 1;
        (void)!write(wake_fd, &one, sizeof one);
    }

    void enqueue(Request r) {
        {
            std::lock_guard lock(mu);
            incoming.push_back(std::move(r));
        }
        ++inflight;
        wake();
    }

    void run() {
        std::unordered_map<std::uint64_t, Request> pending;
        std::unordered_map<std::uint64_t, std::pair<Millis, Millis>> times;  // deadline, next send
        std::priority_queue<Check, std::vector<Check>, std::greater<>> checks;
        auto finish = [&](std::uint64_t req, const Envelope* env, std::exception_ptr err) {
            auto it = pending.find(req);
            if (it == pending.end()) return;
            auto complete = std::move(it->second.complete);
            pending.erase(it);
            times.erase(req);
            --inflight;
            complete(env, err);
        };
        while (true) {
            Millis now = steady_ms();
            Millis wait = 100;
            if (!checks.empty()) wait = std::clamp<Millis>(checks.top().at - now, 0, 100);
            if (brokers.size() > 1) wait = std::min<Millis>(wait, 50);
            zmq::pollitem_t items[] = {{link->socket.handle(), 0, ZMQ_POLLIN, 0},
                                       {nullptr, wake_fd, ZMQ_POLLIN, 0},
                                       {link->watch.events().handle(), 0, ZMQ_POLLIN, 0}};
            try {
                zmq::poll(items, 3, std::chrono::milliseconds(wait));
            } catch (const zmq::error_t& e) {
                if (e.num() != EINTR) throw;
            }
            now = steady_ms();
            link->watch.update(now);
            if (brokers.size() > 1 && link->watch.down_for(now) >= opt.failover.count()) {
                // The broker is gone: everything in flight goes to the next one at once.
                connect((current + 1) % brokers.size(), now);
                for (auto& [req, r] : pending) {
                    send_message(link->socket, "", r.command, r.body);
                    times[req].second = now + r.resend_ms;
                }
            }
            if (items[1].revents & ZMQ_POLLIN) {
                std::uint64_t n;
                (void)!read(wake_fd, &n, sizeof n);
                std::deque<Request> batch;
                {
                    std::lock_guard lock(mu);
                    batch.swap(incoming);
                }
                for (auto& r : batch) {
                    send_message(link->socket, "", r.command, r.body);
                    times[r.req] = {now + r.timeout_ms, now + r.resend_ms};
                    checks.push({std::min(now + r.resend_ms, now + r.timeout_ms), r.req});
                    pending.emplace(r.req, std::move(r));
                }
            }
            while (auto env = recv_message(link->socket, false)) {
                if (env->frames != 3 || env->version != kProtocolVersion) continue;
                auto req = peek_req(env->body);
                if (!req) continue;
                if (env->command == cmd::kError) {
                    std::exception_ptr err;
                    try {
                        Body b(env->body);
                        auto e = decode_error(b.reader());
                        throw BrokerError(e.code, e.message);
                    } catch (...) {
                        err = std::current_exception();
                    }
                    finish(*req, nullptr, err);
                } else {
                    finish(*req, &*env, nullptr);
                }
            }
            while (!checks.empty() && checks.top().at <= now) {
                auto c = checks.top();
                checks.pop();
                auto t = times.find(c.req);
                if (t == times.end()) continue;
                auto& [deadline, next_send] = t->second;
                if (now >= deadline) {
                    auto timeout = pending.at(c.req).timeout_ms;
                    finish(c.req, nullptr,
                           std::make_exception_ptr(ConnectionError(
                               fmt::format("cannot reach broker at {}: timed out after {}",
                                           fmt::join(brokers, ", "), format_duration(timeout)))));
                    continue;
                }
                if (now >= next_send) {
                    const auto& r = pending.at(c.req);
                    send_message(link->socket, "", r.command, r.body);
                    next_send = now + r.resend_ms;
                }
                checks.push({std::min(next_send, deadline), c.req});
            }
            if (stopping) break;
        }
        for (auto& [req, r] : pending)
            r.complete(nullptr, std::make_exception_ptr(ConnectionError("client closed")));
        link.reset();
    }

    template <typename T, typename Decode>
    std::future<T> call(std::string_view command, std::string body, std::uint64_t req,
                        std::string_view want, Millis timeout_ms, Millis resend_ms, Decode decode) {
        auto promise = std::make_shared<std::promise<T>>();
        auto future = promise->get_future();
        Request r{command, std::move(body), req, timeout_ms, resend_ms, {}};
        r.complete = [promise, want, decode](const Envelope* env, std::exception_ptr err) {
            try {
                if (err) std::rethrow_exception(err);
                if (env->command != want)
                    throw BrokerError(
                        ErrorCode::internal,
                        fmt::format("unexpected reply {} (wanted {})", env->command, want));
                Body b(env->body);
                promise->set_value(decode(b.reader()));
            } catch (...) {
                promise->set_exception(std::current_exception());
            }
        };
        enqueue(std::move(r));
        return future;
    }
};

AsyncClient::AsyncClient(ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
AsyncClient::~AsyncClient() = default;

std::size_t AsyncClient::in_flight() const {
    return impl_->inflight.load();
}

std::future<std::vector<Submitted>> AsyncClient::submit(std::vector<JobSpec> jobs) {
    if (jobs.size() > limits::kMaxBatch)
        throw std::invalid_argument(fmt::format("at most {} jobs per submit", limits::kMaxBatch));
    SubmitRequest m;
    m.req = impl_->next_req++;
    m.jobs = std::move(jobs);
    for (auto& j : m.jobs)
        if (!j.token) j.token = unique_token();
    std::size_t n = m.jobs.size();
    return impl_->call<std::vector<Submitted>>(
        cmd::kSubmit, encode(m), m.req, cmd::kSubmitted, impl_->opt.timeout.count(),
        impl_->opt.resend.count(), [n](const Reader& r) {
            auto rep = decode_submitted(r);
            if (rep.ids.size() != n)
                throw BrokerError(ErrorCode::internal, "SUBMITTED has the wrong number of ids");
            std::vector<Submitted> out;
            out.reserve(n);
            for (std::size_t i = 0; i < n; ++i)
                out.push_back({rep.ids[i], i < rep.duplicate.size() && rep.duplicate[i]});
            return out;
        });
}

std::future<JobInfo> AsyncClient::status(JobId id) {
    IdRequest m{impl_->next_req++, id};
    return impl_->call<JobInfo>(cmd::kStatus, encode(m), m.req, cmd::kJob,
                                impl_->opt.timeout.count(), impl_->opt.resend.count(),
                                [](const Reader& r) { return decode_job_info(r.map("job")); });
}

std::future<std::optional<JobInfo>> AsyncClient::wait(JobId id, std::chrono::milliseconds timeout) {
    const Millis timeout_ms = std::clamp<Millis>(timeout.count(), 0, limits::kMaxWaitMs);
    WaitRequest m{impl_->next_req++, id, timeout_ms};
    auto inner = impl_->call<std::optional<JobInfo>>(
        cmd::kWait, encode(m), m.req, cmd::kJob, timeout_ms + impl_->opt.timeout.count(),
        std::clamp<Millis>(impl_->opt.resend.count(), 2000, limits::kWaitResendMs),
        [](const Reader& r) { return std::optional<JobInfo>(decode_job_info(r.map("job"))); });
    // A broker `timeout` error means "not finished in time": turn it into nullopt.
    return std::async(std::launch::deferred, [f = std::move(inner)]() mutable {
        try {
            return f.get();
        } catch (const BrokerError& e) {
            if (e.code() == ErrorCode::timeout) return std::optional<JobInfo>();
            throw;
        }
    });
}

}  // namespace errand
