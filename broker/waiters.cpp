// Clients waiting for jobs: per job lists, per connection counts, deadlines.
#include "waiters.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace errand::broker {

void Waiters::check_limit(const std::string& identity) const {
    if (total_ >= max_total_)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("{} WAITs outstanding on this broker, the limit "
                                        "(--max-waits-total)",
                                        total_));
    auto n = waits_of_.find(identity);
    if (n != waits_of_.end() && n->second >= max_)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("{} WAITs outstanding on this connection, the limit "
                                        "(--max-waits)",
                                        n->second));
}

void Waiters::add(const std::string& identity, std::uint64_t req, JobId id, Millis deadline,
                  bool check) {
    auto& list = waiters_[id];
    auto same = std::find_if(list.begin(), list.end(), [&](const Waiter& w) {
        return w.identity == identity && w.req == req;
    });
    if (same != list.end()) return;  // a resent WAIT: the first one's deadline stands
    try {
        if (check) check_limit(identity);
    } catch (const ProtocolError&) {
        if (list.empty()) waiters_.erase(id);
        throw;
    }
    ++waits_of_[identity];
    ++total_;
    list.push_back({identity, req, deadline});
    deadlines_.push({deadline, id});
}

std::vector<Waiter> Waiters::take(JobId id) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return {};
    auto out = std::move(it->second);
    waiters_.erase(it);
    for (const auto& w : out)
        forget(w.identity);
    return out;
}

void Waiters::expire(Millis now, const std::function<void(JobId, const Waiter&)>& expired) {
    while (!deadlines_.empty() && deadlines_.top().at <= now) {
        auto d = deadlines_.top();
        deadlines_.pop();
        auto it = waiters_.find(d.id);
        if (it == waiters_.end()) continue;
        std::erase_if(it->second, [&](const Waiter& w) {
            if (w.deadline > now) return false;
            expired(d.id, w);
            forget(w.identity);
            return true;
        });
        if (it->second.empty()) waiters_.erase(it);
    }
}

void Waiters::drain(const std::function<void(JobId, const Waiter&)>& fn) {
    for (const auto& [id, list] : waiters_)
        for (const auto& w : list)
            fn(id, w);
    waiters_.clear();
    waits_of_.clear();
    total_ = 0;
    deadlines_ = {};
}

Millis Waiters::next_deadline(Millis bound) const {
    return deadlines_.empty() ? bound : std::min(bound, deadlines_.top().at);
}

std::vector<JobId> Waiters::ids() const {
    std::vector<JobId> out;
    out.reserve(waiters_.size());
    for (const auto& [id, list] : waiters_)
        out.push_back(id);
    return out;
}

std::size_t Waiters::size() const {
    std::size_t n = 0;
    for (const auto& [id, list] : waiters_)
        n += list.size();
    return n;
}

void Waiters::forget(const std::string& identity) {
    --total_;
    auto it = waits_of_.find(identity);
    if (it != waits_of_.end() && --it->second == 0) waits_of_.erase(it);
}

}  // namespace errand::broker
