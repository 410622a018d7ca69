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
                  Millis now, bool check) {
    auto& job = waiters_[id];
    auto same = std::find_if(job.list.begin(), job.list.end(), [&](const Waiter& w) {
        return w.identity == identity && w.req == req;
    });
    if (same != job.list.end()) {  // a resent WAIT: the first one's deadline stands
        same->seen = now;
        return;  // its heap entry comes due no later than before; it is pushed again then
    }
    try {
        if (check) check_limit(identity);
    } catch (const ProtocolError&) {
        if (job.list.empty()) waiters_.erase(id);
        throw;
    }
    ++waits_of_[identity];
    ++total_;
    job.list.push_back({identity, req, deadline, now});
    Millis at = due(job.list.back());
    if (job.list.size() == 1 || at < job.at) {
        job.at = at;
        deadlines_.push({at, id});
    }
}

std::vector<Waiter> Waiters::take(JobId id) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return {};
    auto out = std::move(it->second.list);
    waiters_.erase(it);
    for (const auto& w : out)
        forget(w.identity);
    return out;
}

std::size_t Waiters::expire(Millis now, const std::function<void(JobId, const Waiter&)>& expired) {
    std::size_t lapsed = 0;
    while (!deadlines_.empty() && deadlines_.top().at <= now) {
        auto d = deadlines_.top();
        deadlines_.pop();
        auto it = waiters_.find(d.id);
        if (it == waiters_.end() || it->second.at != d.at) continue;  // stale
        auto& job = it->second;
        std::erase_if(job.list, [&](const Waiter& w) {
            if (w.deadline <= now) {
                expired(d.id, w);
            } else if (w.seen + idle_ <= now) {
                ++lapsed;
            } else {
                return false;
            }
            forget(w.identity);
            return true;
        });
        if (job.list.empty()) {
            waiters_.erase(it);
            continue;
        }
        // One live entry per job: the next time one of the rest is due (> now).
        job.at = due(job.list.front());
        for (const auto& w : job.list)
            job.at = std::min(job.at, due(w));
        deadlines_.push({job.at, d.id});
    }
    return lapsed;
}

void Waiters::drain(const std::function<void(JobId, const Waiter&)>& fn) {
    for (const auto& [id, job] : waiters_)
        for (const auto& w : job.list)
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
    for (const auto& [id, job] : waiters_)
        out.push_back(id);
    return out;
}

void Waiters::forget(const std::string& identity) {
    --total_;
    auto it = waits_of_.find(identity);
    if (it != waits_of_.end() && --it->second == 0) waits_of_.erase(it);
}

}  // namespace errand::broker
