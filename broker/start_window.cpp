// StartWindow (start_window.hpp): the sliding log of a queue's starts.
#include "start_window.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace errand::broker {

std::uint32_t StartWindow::room(Millis now, std::uint32_t rate, Millis per) const {
    std::uint64_t used = 0;
    for (const auto& [at, n] : starts_)
        if (at > now - per) used += n;
    return used >= rate ? 0 : static_cast<std::uint32_t>(rate - used);
}

void StartWindow::started(Millis now, std::uint32_t n, Millis per) {
    while (!starts_.empty() && starts_.front().first <= now - per)
        starts_.pop_front();
    if (n == 0) return;
    if (!starts_.empty() && starts_.back().first >= now)
        starts_.back().second += n;  // the same pass (or a clock step back): one entry
    else
        starts_.emplace_back(now, n);
}

std::optional<Millis> StartWindow::frees_at(Millis per) const {
    if (starts_.empty()) return std::nullopt;
    return starts_.front().first + per;
}

std::string StartWindow::encode() const {
    std::string out;
    for (const auto& [at, n] : starts_)
        out += fmt::format("{}{}:{}", out.empty() ? "" : ",", at, n);
    return out;
}

StartWindow StartWindow::decode(std::string_view text) {
    StartWindow w;
    while (!text.empty()) {
        auto comma = text.find(',');
        auto item = text.substr(0, comma);
        auto colon = item.find(':');
        Millis at = 0;
        std::uint32_t n = 0;
        if (colon == std::string_view::npos) return {};
        auto a = std::from_chars(item.data(), item.data() + colon, at);
        auto b = std::from_chars(item.data() + colon + 1, item.data() + item.size(), n);
        if (a.ec != std::errc() || b.ec != std::errc() || a.ptr != item.data() + colon ||
            b.ptr != item.data() + item.size())
            return {};
        if (!w.starts_.empty() && at < w.starts_.back().first) return {};
        w.starts_.emplace_back(at, n);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return w;
}

}  // namespace errand::broker
