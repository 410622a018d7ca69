// How the `errand` CLI prints jobs: aligned text for people, JSON for programs, RFC 3339 UTC times.
#include "cli_output.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "errand/duration.hpp"

namespace errand::cli {

namespace {

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size()) return false;  // truncated sequence
        for (std::size_t k = 1; k <= n; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        static constexpr std::array<std::uint32_t, 4> kMin = {0, 0x80, 0x800, 0x10000};
        if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

// Text a terminal shows as it is: UTF-8 without control characters other than tab and newline.
bool is_printable_text(std::string_view s) {
    if (!is_utf8(s)) return false;
    return std::none_of(s.begin(), s.end(), [](char ch) {
        auto c = static_cast<unsigned char>(ch);
        return (c < 0x20 && c != '\t' && c != '\n') || c == 0x7F;
    });
}

std::string bytes(std::size_t n) {
    return n == 1 ? "1 byte" : fmt::format("{} bytes", n);
}

std::string time_with_age(Millis t, Millis now) {
    return fmt::format("{} ({})", format_time(t), format_age(t, now));
}

nlohmann::ordered_json time_or_null(const std::optional<Millis>& t) {
    if (!t) return nullptr;
    return format_time(*t);
}

template <typename T>
nlohmann::ordered_json or_null(const std::optional<T>& v) {
    if (!v) return nullptr;
    return *v;
}

nlohmann::ordered_json to_json(const JobInfo& job) {
    nlohmann::ordered_json j;
    j["id"] = job.id;
    j["queue"] = job.queue;
    j["state"] = std::string(to_string(job.state));
    j["attempts"] = job.attempts;
    j["max_attempts"] = job.max_attempts;
    j["exit_code"] = or_null(job.exit_code);
    j["result"] = or_null(job.result);
    j["error"] = or_null(job.error);
    j["worker"] = or_null(job.worker);
    j["argv"] = or_null(job.argv);
    j["payload_size"] = job.payload_size;
    j["created_at"] = format_time(job.created_at);
    j["started_at"] = time_or_null(job.started_at);
    j["finished_at"] = time_or_null(job.finished_at);
    j["run_at"] = time_or_null(job.run_at);
    return j;
}

std::string dump(const nlohmann::ordered_json& j) {
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

const std::vector<JobState>& all_states() {
    static const std::vector<JobState> kStates = {
        JobState::scheduled, JobState::ready, JobState::running,   JobState::retrying,
        JobState::succeeded, JobState::dead,  JobState::cancelled,
    };
    return kStates;
}

std::string state_names() {
    std::string out;
    for (JobState s : all_states()) {
        if (!out.empty()) out += ", ";
        out += to_string(s);
    }
    return out;
}

std::string format_time(Millis epoch_ms) {
    // Floor division, so times before 1970 still get a millisecond part in 0..999.
    Millis secs = epoch_ms / 1000;
    Millis ms = epoch_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = static_cast<time_t>(secs);
    struct tm tm {};
    if (gmtime_r(&t, &tm) == nullptr) return fmt::format("@{}ms", epoch_ms);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

std::string format_age(Millis then, Millis now) {
    if (then > now) return "in " + format_duration(then - now);
    return format_duration(now - then) + " ago";
}

std::string summarize_result(std::string_view result) {
    if (result.empty()) return "(empty)";
    if (!is_printable_text(result)) return bytes(result.size());
    std::string_view text = result;
    if (text.back() == '\n') text.remove_suffix(1);
    auto nl = text.find('\n');
    if (nl == std::string_view::npos) return std::string(text);
    return fmt::format("{} … ({})", text.substr(0, nl), bytes(result.size()));
}

std::string shell_join(const std::vector<std::string>& argv) {
    std::string out;
    for (const auto& arg : argv) {
        if (!out.empty()) out += ' ';
        bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
        });
        if (plain) {
            out += arg;
            continue;
        }
        out += '\'';
        for (char c : arg) {
            if (c == '\'')
                out += "'\\''";
            else
                out += c;
        }
        out += '\'';
    }
    return out;
}

std::string job_text(const JobInfo& job, Millis now) {
    std::vector<std::pair<std::string, std::string>> rows;
    rows.emplace_back("id", std::to_string(job.id));
    rows.emplace_back("queue", job.queue);
    rows.emplace_back("state", std::string(to_string(job.state)));
    rows.emplace_back("attempts", fmt::format("{}/{}", job.attempts, job.max_attempts));
    if (job.worker) rows.emplace_back("worker", *job.worker);
    if (job.exit_code) rows.emplace_back("exit code", std::to_string(*job.exit_code));
    rows.emplace_back("created", time_with_age(job.created_at, now));
    if (job.started_at) rows.emplace_back("started", time_with_age(*job.started_at, now));
    if (job.finished_at) rows.emplace_back("finished", time_with_age(*job.finished_at, now));
    if (job.run_at) rows.emplace_back("run at", time_with_age(*job.run_at, now));
    if (job.error) rows.emplace_back("error", *job.error);
    if (job.result) rows.emplace_back("result", summarize_result(*job.result));
    rows.emplace_back("payload", bytes(job.payload_size));
    if (job.argv) rows.emplace_back("argv", shell_join(*job.argv));

    std::size_t width = 0;
    for (const auto& [key, value] : rows)
        width = std::max(width, key.size() + 1);
    std::string out;
    for (const auto& [key, value] : rows) {
        // Multi-line values (errors) keep their continuation lines under the value column.
        std::string_view v = value;
        while (!v.empty() && (v.back() == '\n' || v.back() == '\r'))
            v.remove_suffix(1);
        std::string indented;
        for (char c : v) {
            indented += c;
            if (c == '\n') indented.append(width + 1, ' ');
        }
        out += fmt::format("{:<{}} {}\n", key + ":", width, indented);
    }
    return out;
}

std::string jobs_table(const std::vector<JobInfo>& jobs, Millis now) {
    using Row = std::array<std::string, 6>;
    std::vector<Row> rows;
    rows.push_back({"ID", "QUEUE", "STATE", "ATTEMPTS", "WORKER", "AGE"});
    for (const auto& job : jobs) {
        rows.push_back({std::to_string(job.id), job.queue, std::string(to_string(job.state)),
                        fmt::format("{}/{}", job.attempts, job.max_attempts),
                        job.worker.value_or("-"),
                        format_duration(std::max<Millis>(0, now - job.created_at))});
    }
    std::array<std::size_t, 6> width{};
    for (const auto& row : rows) {
        for (std::size_t c = 0; c < row.size(); ++c)
            width[c] = std::max(width[c], row[c].size());
    }
    std::string out;
    for (const auto& row : rows) {
        for (std::size_t c = 0; c + 1 < row.size(); ++c) {
            out += fmt::format("{:<{}}  ", row[c], width[c]);
        }
        out += row.back();
        out += '\n';
    }
    return out;
}

std::string job_json(const JobInfo& job) {
    return dump(to_json(job));
}

std::string jobs_json(const std::vector<JobInfo>& jobs) {
    auto array = nlohmann::ordered_json::array();
    for (const auto& job : jobs)
        array.push_back(to_json(job));
    return dump(array);
}

}  // namespace errand::cli
