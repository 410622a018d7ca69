// How the `errand` CLI prints jobs, queues and histories: aligned text for people, JSON for
// programs (errand/json.hpp: the same forms as the HTTP API), RFC 3339 UTC times.
#include "cli_output.hpp"

#include "errand/utf8.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include <fmt/format.h>
#include "errand/duration.hpp"
#include "errand/json.hpp"

namespace errand::cli {

using namespace std::chrono_literals;

namespace {

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

std::string time_with_age(Timestamp t, Timestamp now) {
    return fmt::format("{} ({})", format_time(t), format_age(t, now));
}

}  // namespace

std::span<const JobState> all_states() {
    return kAllStates;
}

std::string state_names() {
    std::string out;
    for (JobState s : all_states()) {
        if (!out.empty()) out += ", ";
        out += to_string(s);
    }
    return out;
}

std::string format_age(Timestamp then, Timestamp now) {
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

std::string job_text(const JobInfo& job, Timestamp now, const std::optional<std::string>& held) {
    std::vector<std::pair<std::string, std::string>> rows;
    rows.emplace_back("id", std::to_string(job.id));
    rows.emplace_back("queue", job.queue);
    rows.emplace_back("state", std::string(to_string(job.state)) +
                                   (held ? fmt::format(" (held: {})", *held) : std::string()));
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
    if (job.expires_at) rows.emplace_back("expires at", time_with_age(*job.expires_at, now));
    if (job.timeout) rows.emplace_back("timeout", format_duration(*job.timeout));
    if (job.unique) rows.emplace_back("unique key", *job.unique);
    if (job.batch) rows.emplace_back("batch", std::to_string(*job.batch));
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

std::string jobs_table(const std::vector<JobInfo>& jobs, Timestamp now) {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"ID", "QUEUE", "STATE", "ATTEMPTS", "WORKER", "AGE"});
    for (const auto& job : jobs) {
        rows.push_back({std::to_string(job.id), job.queue, std::string(to_string(job.state)),
                        fmt::format("{}/{}", job.attempts, job.max_attempts),
                        job.worker.value_or("-"),
                        format_duration(std::max(0ms, now - job.created_at))});
    }
    return table(rows, std::vector<Align>(6, Align::left));
}

std::string queues_table(const std::vector<QueueInfo>& queues, Timestamp now) {
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
    header.emplace_back("LIMITS");
    align.push_back(Align::left);
    header.emplace_back("HELD");
    align.push_back(Align::left);
    rows.push_back(std::move(header));

    for (const auto& q : sorted_by_name(queues)) {
        std::vector<std::string> row = {q.name, !q.paused ? std::string("no")
                                                : q.paused_until
                                                    ? "until " + format_time(*q.paused_until)
                                                    : std::string("yes")};
        for (JobState s : all_states())
            row.push_back(std::to_string(count_of(q, s)));
        row.push_back(q.oldest_ready_at ? format_duration(std::max(0ms, now - *q.oldest_ready_at))
                                        : "-");
        std::string limits;
        if (q.max_running) limits = fmt::format("max-running {}", *q.max_running);
        if (q.rate && q.rate_per)
            limits += fmt::format("{}rate {}/{}", limits.empty() ? "" : ", ", *q.rate,
                                  format_duration(*q.rate_per));
        std::string defaults;
        if (q.max_attempts) defaults += fmt::format("attempts {}", *q.max_attempts);
        if (q.timeout)
            defaults += fmt::format("{}timeout {}", defaults.empty() ? "" : " ",
                                    format_duration(*q.timeout));
        if (q.priority)
            defaults += fmt::format("{}priority {}", defaults.empty() ? "" : " ", *q.priority);
        if (q.retention)
            defaults += fmt::format("{}retention {}", defaults.empty() ? "" : " ",
                                    format_duration(*q.retention));
        if (q.expires_in)
            defaults += fmt::format("{}expires-in {}", defaults.empty() ? "" : " ",
                                    format_duration(*q.expires_in));
        if (!defaults.empty())
            limits += fmt::format("{}defaults: {}", limits.empty() ? "" : ", ", defaults);
        row.push_back(limits.empty() ? "-" : limits);
        row.push_back(q.held.value_or("-"));
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
    return dump_json(to_json(job));
}

std::string jobs_json(const std::vector<JobInfo>& jobs) {
    auto array = Json::array();
    for (const auto& job : jobs)
        array.push_back(to_json(job));
    return dump_json(array);
}

std::string queues_json(const std::vector<QueueInfo>& queues) {
    auto array = Json::array();
    for (const auto& q : sorted_by_name(queues))
        array.push_back(to_json(q));
    return dump_json(array);
}

std::string events_json(const std::vector<Event>& events) {
    auto array = Json::array();
    for (const auto& e : events)
        array.push_back(to_json(e));
    return dump_json(array);
}

}  // namespace errand::cli
