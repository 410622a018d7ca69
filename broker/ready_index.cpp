// Ready-job index: a map of priority lanes per queue, each a FIFO deque of job ids.
#include "ready_index.hpp"

namespace errand::broker {

void ReadyIndex::push(const std::string& queue, JobId id, std::int32_t priority, bool has_argv) {
    auto& q = queues_[queue];
    (has_argv ? q.argv : q.plain)[priority].push_back(id);
    ++q.count;
    ++total_;
}

std::optional<std::pair<std::int32_t, JobId>> ReadyIndex::head(const Lane& lane) {
    if (lane.empty()) return std::nullopt;
    const auto& [prio, ids] = *lane.begin();
    return std::pair{prio, ids.front()};
}

JobId ReadyIndex::pop_head(Lane& lane) {
    auto it = lane.begin();
    JobId id = it->second.front();
    it->second.pop_front();
    if (it->second.empty()) lane.erase(it);
    return id;
}

std::optional<JobId> ReadyIndex::pop(const std::string& queue, bool accept_argv) {
    auto it = queues_.find(queue);
    if (it == queues_.end()) return std::nullopt;
    auto& q = it->second;
    auto plain = head(q.plain);
    auto argv = accept_argv ? head(q.argv) : std::nullopt;
    if (!plain && !argv) return std::nullopt;
    // Higher priority first; within one priority the older (smaller) id.
    bool take_argv = argv && (!plain || argv->first > plain->first ||
                              (argv->first == plain->first && argv->second < plain->second));
    JobId id = pop_head(take_argv ? q.argv : q.plain);
    --q.count;
    --total_;
    if (q.count == 0) queues_.erase(it);
    return id;
}

bool ReadyIndex::has_ready(const std::string& queue, bool accept_argv) const {
    auto it = queues_.find(queue);
    if (it == queues_.end()) return false;
    return !it->second.plain.empty() || (accept_argv && !it->second.argv.empty());
}

std::size_t ReadyIndex::size(const std::string& queue) const {
    auto it = queues_.find(queue);
    return it == queues_.end() ? 0 : it->second.count;
}

std::vector<JobId> ReadyIndex::heads(const std::string& queue) const {
    std::vector<JobId> out;
    auto it = queues_.find(queue);
    if (it == queues_.end()) return out;
    for (const Lane* lane : {&it->second.plain, &it->second.argv})
        for (const auto& [prio, ids] : *lane)
            out.push_back(ids.front());
    return out;
}

void ReadyIndex::erase(const std::string& queue) {
    auto it = queues_.find(queue);
    if (it == queues_.end()) return;
    total_ -= it->second.count;
    queues_.erase(it);
}

void ReadyIndex::clear() {
    queues_.clear();
    total_ = 0;
}

}  // namespace errand::broker
