// The worker registry: registrations, connections, credit and queue choice.
#include "workers.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "engine.hpp"

namespace errand::broker {

void WorkerRec::add_credit(std::uint32_t n) {
    std::uint32_t slots = concurrency + prefetch;
    auto busy = static_cast<std::uint32_t>(std::min<std::size_t>(jobs.size(), slots));
    credit = std::min(credit + n, slots - busy);
}

void WorkerRec::cap_credit() {
    std::uint32_t slots = concurrency + prefetch;
    auto busy = static_cast<std::uint32_t>(std::min<std::size_t>(jobs.size(), slots));
    credit = std::min(credit, slots - busy);
}

std::string_view WorkerRec::state() const {
    if (draining) return kWorkerStopping;
    if (quiet) return kWorkerQuiet;
    return kWorkerActive;
}

std::vector<WorkerRec*> Workers::named(const std::string& worker) {
    if (auto* w = by_instance(worker)) return {w};
    std::vector<WorkerRec*> out;
    for (auto& [inst, w] : workers_)
        if (w.name() == worker) out.push_back(&w);
    std::sort(out.begin(), out.end(),
              [](const auto* a, const auto* b) { return a->instance() < b->instance(); });
    return out;
}

WorkerRec* Workers::of(const std::string& identity) {
    auto it = instance_of_.find(identity);
    if (it == instance_of_.end()) return nullptr;
    return by_instance(it->second);
}

WorkerRec& Workers::registered(const std::string& identity) {
    auto* w = of(identity);
    if (!w)
        throw ProtocolError(ErrorCode::not_registered,
                            "this connection has not registered as a worker: send REGISTER");
    return *w;
}

WorkerRec* Workers::by_instance(const std::string& instance) {
    auto w = workers_.find(instance);
    return w == workers_.end() ? nullptr : &w->second;
}

WorkerRec& Workers::enroll(const std::string& identity, const RegisterRequest& m, Millis now,
                           std::vector<WorkerRec>* replaced) {
    auto [it, fresh] = workers_.try_emplace(m.instance);
    auto& w = it->second;
    if (!fresh && w.identity != identity) instance_of_.erase(w.identity);
    if (auto old = instance_of_.find(identity);
        old != instance_of_.end() && old->second != m.instance) {
        // The same connection registers as another instance: the old one is gone.
        if (auto prev = workers_.find(old->second); prev != workers_.end()) {
            replaced->push_back(std::move(prev->second));
            workers_.erase(prev);
        }
    }
    if (!w.holder) w.holder = std::make_shared<Holder>(Holder{m.instance, m.name});
    w.holder->name = m.name;
    w.identity = identity;
    w.host = m.host;
    w.pid = m.pid;
    w.queues = m.queues;
    w.concurrency = m.concurrency;
    w.prefetch = m.prefetch;
    w.commands = m.commands;
    w.weights = m.weights;
    w.reconnects = m.reconnects;
    w.credit = 0;
    w.draining = false;
    w.quiet = m.state == kWorkerQuiet;
    w.last_seen = now;
    w.seq = 0;
    instance_of_[identity] = m.instance;
    return w;
}

void Workers::remove(const std::string& instance) {
    auto it = workers_.find(instance);
    if (it == workers_.end()) return;
    if (auto c = instance_of_.find(it->second.identity);
        c != instance_of_.end() && c->second == instance)
        instance_of_.erase(c);
    workers_.erase(it);
}

const std::string* Workers::pick_queue(const WorkerRec& w, const JobEngine& engine) {
    if (w.weights.empty()) {
        for (const auto& q : w.queues)
            if (engine.claimable(q, w.commands)) return &q;
        return nullptr;
    }
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < w.queues.size(); ++i)
        if (engine.claimable(w.queues[i], w.commands)) total += w.weights[i];
    if (total == 0) return nullptr;
    std::uint64_t pick = std::uniform_int_distribution<std::uint64_t>(0, total - 1)(rng_);
    for (std::size_t i = 0; i < w.queues.size(); ++i) {
        if (!engine.claimable(w.queues[i], w.commands)) continue;
        if (pick < w.weights[i]) return &w.queues[i];
        pick -= w.weights[i];
    }
    return nullptr;
}

std::unordered_map<JobId, HolderRef> Workers::held() const {
    std::unordered_map<JobId, HolderRef> out;
    for (const auto& [inst, w] : workers_)
        for (const auto& [id, seq] : w.jobs)
            out[id] = w.holder;
    return out;
}

}  // namespace errand::broker
