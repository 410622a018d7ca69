#include "reads.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "errand/clock.hpp"
#include "errand/codec.hpp"

namespace errand::broker {
namespace {

void sort_once(ReadView& view) {
    if (view.sorted) return;
    std::sort(view.queues.begin(), view.queues.end(),
              [](const QueueView& a, const QueueView& b) { return a.name < b.name; });
    view.sorted = true;
}

std::vector<std::pair<JobState, std::uint64_t>> counts_of(const QueueView& q) {
    std::vector<std::pair<JobState, std::uint64_t>> out;
    out.reserve(kStateCount);
    for (JobState s : kAllStates)
        out.emplace_back(s, q.counts[static_cast<std::size_t>(s)]);
    return out;
}

// The pointer to a request's view travels through the inproc channel as raw bytes; the thread
// takes it over (and deletes it).
using ViewPtr = std::shared_ptr<ReadView>;

}  // namespace

std::string answer_stats(ReadView& view, std::uint64_t req) {
    sort_once(view);
    StatsReply rep = view.stats;
    rep.req = req;
    rep.queues.reserve(view.queues.size());
    for (const auto& q : view.queues) {
        QueueStats qs;
        qs.name = q.name;
        qs.paused = q.paused;
        qs.counts = counts_of(q);
        qs.submitted = q.submitted;
        qs.succeeded = q.succeeded;
        qs.failed = q.failed;
        qs.dead = q.dead;
        qs.cancelled = q.cancelled;
        qs.finished_per_second = q.finished_per_second;
        qs.submitted_per_second = q.submitted_per_second;
        rep.queues.push_back(std::move(qs));
    }
    return encode(rep);
}

// QUEUES lists the queues that have a job in some state, are paused or have limits.
std::string answer_queues(ReadView& view, std::uint64_t req) {
    sort_once(view);
    std::vector<QueueInfo> out;
    for (const auto& q : view.queues) {
        if (!q.paused && !q.limits.any() &&
            std::none_of(q.counts.begin(), q.counts.end(), [](auto n) { return n > 0; }))
            continue;
        QueueInfo info{q.name, q.paused, counts_of(q), to_time(q.oldest_ready_at),
                       to_time(q.paused_until)};
        info.max_running = q.limits.max_running;
        info.rate = q.limits.rate;
        if (q.limits.rate_per_ms) info.rate_per = std::chrono::milliseconds(*q.limits.rate_per_ms);
        info.held = q.held;
        info.max_attempts = q.limits.max_attempts;
        if (q.limits.timeout_ms) info.timeout = std::chrono::milliseconds(*q.limits.timeout_ms);
        info.priority = q.limits.priority;
        if (q.limits.retention_ms)
            info.retention = std::chrono::milliseconds(*q.limits.retention_ms);
        if (q.limits.expires_in_ms)
            info.expires_in = std::chrono::milliseconds(*q.limits.expires_in_ms);
        out.push_back(std::move(info));
    }
    return encode_queues(req, out);
}

ReadSide::ReadSide(zmq::context_t& ctx, const std::string& endpoint)
    : loop_(ctx, zmq::socket_type::pair), side_(ctx, zmq::socket_type::pair) {
    // The bound on what may wait is the broker's (it counts waiting()), not the sockets'.
    for (auto* s : {&loop_, &side_}) {
        s->set(zmq::sockopt::sndhwm, 0);
        s->set(zmq::sockopt::rcvhwm, 0);
        s->set(zmq::sockopt::linger, 0);
    }
    loop_.bind(endpoint);
    side_.connect(endpoint);
    thread_ = std::thread([this] { serve(); });
}

ReadSide::~ReadSide() {
    // An empty first frame stops the thread; requests still queued are dropped with it.
    (void)loop_.send(zmq::message_t(), zmq::send_flags::none);
    thread_.join();
}

void ReadSide::ask(const std::string& identity, std::string_view command, std::uint64_t req,
                   std::shared_ptr<ReadView> view) {
    auto* owned = new ViewPtr(std::move(view));
    zmq::message_t ptr(sizeof owned);
    std::memcpy(ptr.data(), &owned, sizeof owned);
    zmq::message_t r(sizeof req);
    std::memcpy(r.data(), &req, sizeof req);
    (void)loop_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    (void)loop_.send(zmq::buffer(command), zmq::send_flags::sndmore);
    (void)loop_.send(r, zmq::send_flags::sndmore);
    (void)loop_.send(ptr, zmq::send_flags::none);
    ++waiting_;
}

void ReadSide::serve() {
    // Below the loop: on a busy machine the loop's thread wins the CPU, and a read waits.
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
    for (;;) {
        zmq::message_t identity, command, r, ptr;
        if (!side_.recv(identity) || identity.size() == 0) return;
        (void)side_.recv(command);
        (void)side_.recv(r);
        (void)side_.recv(ptr);
        ViewPtr* owned = nullptr;
        std::memcpy(&owned, ptr.data(), sizeof owned);
        std::unique_ptr<ViewPtr> view(owned);
        std::uint64_t req = 0;
        std::memcpy(&req, r.data(), sizeof req);
        std::string body;
        try {
            body = command.to_string_view() == cmd::kQueues ? answer_queues(**view, req)
                                                            : answer_stats(**view, req);
        } catch (const std::exception& e) {
            command = zmq::message_t(cmd::kError.data(), cmd::kError.size());
            body =
                encode(ErrorReply{req, ErrorCode::internal, e.what(), std::nullopt, std::nullopt});
            spdlog::error("internal error answering a read: {}", e.what());
        }
        view.reset();
        (void)side_.send(identity, zmq::send_flags::sndmore);
        (void)side_.send(command, zmq::send_flags::sndmore);
        (void)side_.send(zmq::buffer(body), zmq::send_flags::none);
    }
}

}  // namespace errand::broker
