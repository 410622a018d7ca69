// `errand events | stats | workers` (docs/OPERATIONS.md, "Events, stats and workers").
#include "cli_observe.hpp"

#include <fmt/format.h>
#include <zmq.hpp>

#include <chrono>
#include <csignal>
#include <iostream>

#include "cli_output.hpp"
#include "errand/codec.hpp"
#include "errand/curve.hpp"
#include "errand/duration.hpp"
#include "errand/json.hpp"
#include "errand/transport.hpp"

namespace errand::cli {

using namespace std::chrono_literals;
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

Timestamp now_time() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
}

std::string event_line(const JobEvent& e, bool as_json) {
    if (as_json) return dump_json(to_json(e));
    return fmt::format("{}  job {}  {}  {} -> {}  attempt {}{}  {}", format_time(e.at), e.id,
                       e.queue, e.from ? to_string(*e.from) : "new", to_string(e.to), e.attempt,
                       e.worker ? "  worker " + *e.worker : "", e.reason);
}

// A bound wildcard address ("tcp://0.0.0.0:N", "tcp://*:N") is reached at the broker's host.
std::string reachable(const std::string& events, const std::string& broker) {
    for (std::string_view any : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"}) {
        if (events.rfind(any, 0) != 0) continue;
        auto port = events.substr(any.size());
        auto host_end = broker.rfind(':');
        if (broker.rfind("tcp://", 0) != 0 || host_end == std::string::npos) return events;
        return broker.substr(0, host_end + 1) + port;
    }
    return events;
}

}  // namespace

int run_events(Client& client, const ClientOptions& options, const EventsArgs& args) {
    std::optional<zmq::context_t> ctx;
    std::optional<zmq::socket_t> sub;
    if (args.follow) {
        std::string endpoint = args.endpoint;
        if (endpoint.empty()) {
            auto stats = client.stats();
            if (!stats.events_endpoint)
                throw BrokerError(ErrorCode::invalid_state,
                                  "the broker publishes no events: start it with --events "
                                  "ENDPOINT (or give errand events --endpoint)");
            endpoint = reachable(*stats.events_endpoint, options.endpoint);
        }
        // Subscribe before asking for the recent events, so nothing falls between the two.
        ctx.emplace(1);
        sub.emplace(*ctx, zmq::socket_type::sub);
        sub->set(zmq::sockopt::linger, 0);
        apply_curve(*sub, options.curve);
        sub->set(zmq::sockopt::subscribe, args.queue.value_or(""));
        sub->connect(endpoint);
        std::cerr << fmt::format("following events on {}\n", endpoint);
    }
    std::uint64_t last = 0;
    for (const auto& e : client.feed(args.queue, args.limit)) {
        std::cout << event_line(e, args.json) << '\n';
        last = std::max(last, e.seq);
    }
    std::cout.flush();
    if (!args.follow) return 0;

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    zmq::pollitem_t item{sub->handle(), 0, ZMQ_POLLIN, 0};
    while (!g_stop) {
        try {
            if (zmq::poll(&item, 1, std::chrono::milliseconds(500)) <= 0) continue;
        } catch (const zmq::error_t& e) {
            if (e.num() == EINTR) continue;
            throw;
        }
        zmq::message_t topic, body;
        if (!sub->recv(topic, zmq::recv_flags::dontwait)) continue;
        if (!topic.more() || !sub->recv(body, zmq::recv_flags::dontwait)) continue;
        while (body.more()) {  // a malformed message: drop its extra frames
            zmq::message_t extra;
            if (!sub->recv(extra, zmq::recv_flags::dontwait)) break;
            body.move(extra);
        }
        try {
            Body b(std::string_view(static_cast<const char*>(body.data()), body.size()));
            auto e = decode_job_event(b.reader());
            // SUB filters by prefix: "q1" also matches "q10".
            if (args.queue && e.queue != *args.queue) continue;
            if (e.seq <= last && e.seq != 0) continue;  // already printed from the feed
            last = e.seq;
            std::cout << event_line(e, args.json) << std::endl;
        } catch (const std::exception& e) {
            std::cerr << "warning: ignoring an undecodable event: " << e.what() << '\n';
        }
    }
    return 0;
}

int run_stats(Client& client, bool as_json) {
    auto s = client.stats();
    if (as_json) {
        Json j = to_json(s);
        j.erase("req");
        std::cout << dump_json(j) << '\n';
        return 0;
    }
    std::array<std::uint64_t, kStateCount> totals{};
    double rate = 0;
    for (const auto& q : s.queues) {
        for (const auto& [st, n] : q.counts)
            totals[static_cast<std::size_t>(st)] += n;
        rate += q.finished_per_second;
    }
    std::cout << fmt::format("broker up {}, {} worker{}, {} job{} running\n",
                             format_duration(s.time - s.started_at), s.workers,
                             s.workers == 1 ? "" : "s", s.running, s.running == 1 ? "" : "s");
    if (s.broker) {
        std::cout << fmt::format("answered by {}; cluster of {}:\n", *s.broker, s.brokers.size());
        for (const auto& b : s.brokers)
            std::cout << fmt::format(
                "  {} {} pid {}, seen {} ago{}\n", b.id == *s.broker ? "*" : " ", b.host, b.pid,
                format_duration(std::max(0ms, s.time - b.seen_at)), b.leader ? ", leader" : "");
    }
    std::cout << "jobs:";
    for (JobState st : kAllStates)
        std::cout << fmt::format(" {} {}", totals[static_cast<std::size_t>(st)], to_string(st));
    std::cout << fmt::format("\nfinished: {:.2f}/s over the last minute\n", rate);
    std::cout << fmt::format(
        "commits: {}, avg {:.3f} ms, avg {:.1f} job changes each, {} failed\n", s.commits,
        s.commits ? s.commit_seconds_sum * 1000.0 / static_cast<double>(s.commits) : 0.0,
        s.commits ? static_cast<double>(s.commit_jobs_sum) / static_cast<double>(s.commits) : 0.0,
        s.commit_failures);
    if (s.queues.empty()) return 0;
    std::cout << fmt::format("\n{:<20} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>6} {:>7}\n", "QUEUE",
                             "READY", "RUNNING", "RETRYING", "SUBMITTED", "SUCCEEDED", "FAILED",
                             "DEAD", "DONE/S");
    for (const auto& q : s.queues) {
        auto n = [&](JobState st) { return q.counts[static_cast<std::size_t>(st)].second; };
        std::cout << fmt::format("{:<20} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>6} {:>7.2f}\n",
                                 q.name + (q.paused ? " (paused)" : ""), n(JobState::ready),
                                 n(JobState::running), n(JobState::retrying), q.submitted,
                                 q.succeeded, q.failed, q.dead, q.finished_per_second);
    }
    return 0;
}

int run_workers(Client& client, bool as_json) {
    auto workers = client.workers();
    Timestamp now = now_time();
    if (as_json) {
        Json out = Json::array();
        for (const auto& w : workers)
            out.push_back(to_json(w));
        std::cout << dump_json(out) << '\n';
        return 0;
    }
    if (workers.empty()) {
        std::cout << "no workers\n";
        return 0;
    }
    std::cout << fmt::format("{:<24} {:<16} {:>8} {:<24} {:<8} {:>5} {:>4} {:>10}  {}\n", "NAME",
                             "HOST", "PID", "QUEUES", "STATE", "SLOTS", "JOBS", "RECONNECTS",
                             "LAST HEARTBEAT");
    for (const auto& w : workers) {
        std::string queues;
        for (const auto& q : w.queues)
            queues += (queues.empty() ? "" : ",") + q;
        std::cout << fmt::format("{:<24} {:<16} {:>8} {:<24} {:<8} {:>5} {:>4} {:>10}  {}\n",
                                 w.name, w.host, w.pid, queues, w.state, w.concurrency,
                                 w.jobs.size(), w.reconnects, format_age(w.last_seen, now));
        for (const auto& j : w.jobs)
            std::cout << fmt::format("    job {} ({}, attempt {}, running {})\n", j.id, j.queue,
                                     j.attempt, format_age(j.started_at, now));
    }
    return 0;
}

int run_worker_control(Client& client, const WorkerControlArgs& args) {
    auto changed = client.control_worker(args.worker, args.action,
                                         static_cast<std::uint32_t>(args.concurrency));
    if (args.json) {
        Json out = Json::array();
        for (const auto& w : changed)
            out.push_back(to_json(w));
        std::cout << dump_json(out) << '\n';
        return 0;
    }
    std::string what = args.action == "concurrency"
                           ? fmt::format("concurrency {}", args.concurrency)
                           : args.action;
    if (changed.empty()) {
        // Only a broker on a shared database answers so (it cannot see the others' workers).
        std::cout << fmt::format(
            "{}: no worker '{}' is registered with this broker; sent to the other brokers of "
            "its database\n",
            what, args.worker);
        return 0;
    }
    std::cout << fmt::format("{}: {} worker{} ({})\n", what, changed.size(),
                             changed.size() == 1 ? "" : "s", args.worker);
    for (const auto& w : changed)
        std::cout << fmt::format("  {} {} {}:{} {}, concurrency {}, {} running\n", w.name,
                                 w.instance, w.host, w.pid, w.state, w.concurrency, w.jobs.size());
    return 0;
}

}  // namespace errand::cli
