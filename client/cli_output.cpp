// How the `errand` CLI prints jobs, queues and histories: aligned text for people, JSON for
// programs, RFC 3339 UTC times.
#include "cli_output.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <cctype>
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

// Columns a terminal gives UTF-8 text: one per code point (good enough for names and arrows).
std::size_t display_width(std::string_view s) {
    return static_cast<std::size_t>(std::count_if(
        s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

enum class Align { left, right };

// Rows of cells as aligned columns two spaces apart, each line ending in '\n' without trailing
// blanks. `align` has one entry per column.
std::string table(const std::vector<std::vector<std::string>>& rows,
                  const std::vector<Align>& align) {
    std::vector<std::size_t> width(align.size(), 0);
    for (const auto& row : rows) {
        for (std::size_t c = 0; c < row.size(); ++c)
            width[c] = std::max(width[c], display_width(row[c]));
    }
    std::string out;
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) {
            if (c > 0) line += "  ";
            std::string pad(width[c] - display_width(row[c]), ' ');
            line += align[c] == Align::right ? pad + row[c] : row[c] + pad;
        }
        while (!line.empty() && line.back() == ' ')
            line.pop_back();
        out += line;
        out += '\n';
    }
    return out;
}

// The first line of `text`, with " …" when more lines follow.
std::string first_line(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
        text.remove_suffix(1);
    auto nl = text.find_first_of("\r\n");
    if (nl == std::string_view::npos) return std::string(text);
    return std::string(text.substr(0, nl)) + " …";
}

std::vector<QueueInfo> sorted_by_name(std::vector<QueueInfo> queues) {
    std::sort(queues.begin(), queues.end(),
              [](const QueueInfo& a, const QueueInfo& b) { return a.name < b.name; });
    return queues;
}

std::uint64_t count_of(const QueueInfo& q, JobState state) {
    for (const auto& [s, n] : q.counts) {
        if (s == state) return n;
    }
    return 0;
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
    j["priority"] = job.priority;
    j["timeout_ms"] = or_null(job.timeout_ms);
    j["unique"] = or_null(job.unique);
    j["progress"] = or_null(job.progress);
    j["progress_message"] = or_null(job.progress_message);
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

std::optional<Millis> parse_time(std::string_view text) {
    std::size_t i = 0;
    // Exactly n digits.
    auto number = [&](std::size_t n, int& out) {
        if (text.size() - i < n) return false;
        out = 0;
        for (std::size_t k = 0; k < n; ++k, ++i) {
            if (text[i] < '0' || text[i] > '9') return false;
            out = out * 10 + (text[i] - '0');
        }
        return true;
    };
    // One character out of `chars`.
    auto one_of = [&](std::string_view chars) {
        if (i >= text.size() || chars.find(text[i]) == std::string_view::npos) return false;
        ++i;
        return true;
    };
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    if (!(number(4, year) && one_of("-") && number(2, month) && one_of("-") && number(2, day) &&
          one_of("Tt") && number(2, hour) && one_of(":") && number(2, minute) && one_of(":") &&
          number(2, second))) {
        return std::nullopt;
    }
    Millis ms = 0;
    if (one_of(".")) {
        std::size_t start = i;
        for (Millis scale = 100; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            ms += (text[i] - '0') * scale;
            scale /= 10;
        }
        if (i == start) return std::nullopt;
    }
    Millis offset_minutes = 0;
    if (!one_of("Zz")) {
        if (i >= text.size() || (text[i] != '+' && text[i] != '-')) return std::nullopt;
        int sign = text[i++] == '-' ? -1 : 1;
        int oh = 0, om = 0;
        if (!(number(2, oh) && one_of(":") && number(2, om)) || oh > 23 || om > 59) {
            return std::nullopt;
        }
        offset_minutes = sign * (oh * 60 + om);
    }
    if (i != text.size()) return std::nullopt;

    static constexpr std::array<int, 12> kDays = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month < 1 || month > 12 || day < 1 || day > kDays[static_cast<std::size_t>(month - 1)] ||
        (month == 2 && day == 29 && !leap) || hour > 23 || minute > 59 || second > 60) {
        return std::nullopt;  // second 60 is a leap second; timegm rolls it into the next minute
    }
    struct tm tm {};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    Millis secs = static_cast<Millis>(timegm(&tm));
    return secs * 1000 + ms - offset_minutes * 60'000;
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
    if (job.priority != 0) rows.emplace_back("priority", std::to_string(job.priority));
    rows.emplace_back("attempts", fmt::format("{}/{}", job.attempts, job.max_attempts));
    if (job.worker) rows.emplace_back("worker", *job.worker);
    if (job.progress) {
        std::string message = job.progress_message ? first_line(*job.progress_message) : "";
        rows.emplace_back(
            "progress", fmt::format("{}%{}{}", *job.progress, message.empty() ? "" : " ", message));
    }
    if (job.exit_code) rows.emplace_back("exit code", std::to_string(*job.exit_code));
    rows.emplace_back("created", time_with_age(job.created_at, now));
    if (job.started_at) rows.emplace_back("started", time_with_age(*job.started_at, now));
    if (job.finished_at) rows.emplace_back("finished", time_with_age(*job.finished_at, now));
    // A job that became ready keeps its run_at; it only says something while the job waits.
    if (job.run_at && (job.state == JobState::scheduled || job.state == JobState::retrying)) {
        rows.emplace_back("runs at", time_with_age(*job.run_at, now));
    }
    if (job.timeout_ms) rows.emplace_back("timeout", format_duration(*job.timeout_ms));
    if (job.unique) rows.emplace_back("unique key", *job.unique);
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
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"ID", "QUEUE", "STATE", "ATTEMPTS", "WORKER", "AGE"});
    for (const auto& job : jobs) {
        rows.push_back({std::to_string(job.id), job.queue, std::string(to_string(job.state)),
                        fmt::format("{}/{}", job.attempts, job.max_attempts),
                        job.worker.value_or("-"),
                        format_duration(std::max<Millis>(0, now - job.created_at))});
    }
    return table(rows, std::vector<Align>(6, Align::left));
}

std::string queues_table(const std::vector<QueueInfo>& queues, Millis now) {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> header = {"QUEUE", "PAUSED"};
    std::vector<Align> align = {Align::left, Align::left};
    for (JobState s : all_states()) {
        std::string name(to_string(s));
        std::transform(name.begin(), name.end(), name.begin(), [](char c) {
            return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        });
        header.push_back(std::move(name));
        align.push_back(Align::right);
    }
    header.emplace_back("OLDEST-READY");
    align.push_back(Align::right);
    rows.push_back(std::move(header));

    for (const auto& q : sorted_by_name(queues)) {
        std::vector<std::string> row = {q.name, q.paused ? "yes" : "no"};
        for (JobState s : all_states())
            row.push_back(std::to_string(count_of(q, s)));
        row.push_back(q.oldest_ready_at
                          ? format_duration(std::max<Millis>(0, now - *q.oldest_ready_at))
                          : "-");
        rows.push_back(std::move(row));
    }
    return table(rows, align);
}

std::string events_text(const std::vector<Event>& events) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : events) {
        std::string from = e.from ? std::string(to_string(*e.from)) : "(new)";
        rows.push_back({format_time(e.at), fmt::format("{} → {}", from, to_string(e.to)),
                        fmt::format("attempt {}", e.attempt), e.worker.value_or("-"),
                        first_line(e.reason)});
    }
    return table(rows, {Align::left, Align::left, Align::left, Align::left, Align::left});
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

std::string queues_json(const std::vector<QueueInfo>& queues) {
    auto array = nlohmann::ordered_json::array();
    for (const auto& q : sorted_by_name(queues)) {
        nlohmann::ordered_json j;
        j["name"] = q.name;
        j["paused"] = q.paused;
        auto counts = nlohmann::ordered_json::object();
        for (JobState s : all_states())
            counts[std::string(to_string(s))] = count_of(q, s);
        j["counts"] = std::move(counts);
        j["oldest_ready_at"] = time_or_null(q.oldest_ready_at);
        array.push_back(std::move(j));
    }
    return dump(array);
}

std::string events_json(const std::vector<Event>& events) {
    auto array = nlohmann::ordered_json::array();
    for (const auto& e : events) {
        nlohmann::ordered_json j;
        j["at"] = format_time(e.at);
        j["from"] = e.from ? nlohmann::ordered_json(std::string(to_string(*e.from))) : nullptr;
        j["to"] = std::string(to_string(e.to));
        j["attempt"] = e.attempt;
        j["worker"] = or_null(e.worker);
        j["reason"] = e.reason;
        array.push_back(std::move(j));
    }
    return dump(array);
}

}  // namespace errand::cli
