// `errand submit --jsonl` and the CLI's progress line (cli_bulk.hpp).
#include "cli_bulk.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/spelling.hpp"

namespace errand::cli {

namespace {

using Clock = std::chrono::steady_clock;

std::string short_duration(double seconds) {
    const auto s = static_cast<long long>(seconds + 0.5);
    if (s < 60) return fmt::format("{}s", s);
    if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
    return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
}

}  // namespace

Progress::Progress(std::string what, std::optional<std::uint64_t> total)
    : what_(std::move(what)),
      total_(total),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(Clock::now()) {}

std::chrono::steady_clock::duration Progress::elapsed() const {
    return Clock::now() - start_;
}

void Progress::update(std::uint64_t done, std::string_view note, bool force) {
    if (!tty_) return;
    const auto now = Clock::now();
    if (!force && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::string line;
    if (total_ && *total_ > 0) {
        constexpr std::size_t kWidth = 24;
        const auto filled =
            static_cast<std::size_t>(std::min<std::uint64_t>(done, *total_) * kWidth / *total_);
        line = fmt::format("[{}{}] {}/{} {}", std::string(filled, '#'),
                           std::string(kWidth - filled, '.'), done, *total_, what_);
    } else {
        line = fmt::format("{} {}", done, what_);
    }
    if (!note.empty()) line += fmt::format(" ({})", note);
    line += fmt::format("  {:.0f}/s", rate);
    if (total_ && rate > 0 && done < *total_)
        line += "  ETA " + short_duration(static_cast<double>(*total_ - done) / rate);
    else
        line += "  " + short_duration(secs);
    std::cerr << "\r\033[K" << line << std::flush;
    drawn_ = true;
}

void Progress::clear() {
    if (!tty_ || !drawn_) return;
    std::cerr << "\r\033[K" << std::flush;
    drawn_ = false;
}

void Progress::finish(std::string_view summary) {
    clear();
    std::cerr << summary << '\n' << std::flush;
}

Backoff parse_backoff(std::string_view text) {
    auto comma = text.find(',');
    auto part = [](std::string_view dur) {
        auto ms = errand::parse_duration(dur);
        if (!ms) {
            throw std::invalid_argument(
                fmt::format("'{}' is not a duration (examples: 250ms, 5s, 2m, 1h30m)", dur));
        }
        if (*ms > limits::kMaxDelayMs) {
            throw std::invalid_argument(fmt::format("a backoff must be at most {}",
                                                    errand::format_duration(limits::kMaxDelayMs)));
        }
        return *ms;
    };
    Backoff b;
    b.base = part(text.substr(0, comma));
    if (comma == std::string_view::npos) return b;
    b.cap = part(text.substr(comma + 1));
    if (*b.cap < b.base) {
        throw std::invalid_argument(
            fmt::format("the backoff cap ({}) must not be less than its base ({})",
                        text.substr(comma + 1), text.substr(0, comma)));
    }
    return b;
}

namespace {

using nlohmann::json;

// The keys a line may have: SUBMIT's job keys (docs/PROTOCOL.md).
constexpr std::array<const char*, 17> kKeys = {
    "queue",      "payload",       "argv",       "max_attempts", "token",          "priority",
    "run_at",     "delay_ms",      "timeout_ms", "backoff_ms",   "backoff_cap_ms", "unique",
    "expires_at", "expires_in_ms", "after",      "after_any",    "batch"};

// A batch's bytes on the wire stay well under the broker's 64 MiB --max-message.
constexpr std::size_t kMaxBatchBytes = 16 * 1024 * 1024;

// A bad line: the message without the "FILE:LINE: " prefix.
struct BadLine : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string string_field(const json& v, const char* key) {
    if (!v.is_string()) throw BadLine(fmt::format("'{}' must be a string", key));
    return v.get<std::string>();
}

template <typename Int>
Int int_field(const json& v, const char* key, Int lo, Int hi) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < static_cast<std::int64_t>(lo) ||
        v.get<std::int64_t>() > static_cast<std::int64_t>(hi)) {
        throw BadLine(fmt::format("'{}' must be an integer from {} to {}", key, lo, hi));
    }
    return static_cast<Int>(v.get<std::int64_t>());
}

// Integer milliseconds or a duration string ("1h30m").
std::chrono::milliseconds duration_field(const json& v, const char* key, Millis lo, Millis hi) {
    std::optional<Millis> ms;
    if (v.is_number_integer()) ms = v.get<std::int64_t>();
    if (v.is_string()) ms = errand::parse_duration(v.get<std::string>());
    if (!ms) {
        throw BadLine(
            fmt::format("'{}' must be integer milliseconds or a duration such as \"1h30m\"", key));
    }
    if (*ms < lo || *ms > hi) {
        throw BadLine(fmt::format("'{}' must be from {} to {}", key, errand::format_duration(lo),
                                  errand::format_duration(hi)));
    }
    return std::chrono::milliseconds{*ms};
}

// The job of one line, on top of `defaults`.
JobSpec parse_line(std::string_view text, const JobSpec& defaults, bool batch_fixed) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw BadLine("not valid JSON");
    if (!j.is_object()) throw BadLine("a line must be a JSON object");
    JobSpec spec = defaults;
    for (const auto& [key, v] : j.items()) {
        if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
            auto guess =
                errand::closest_spelling(key, std::vector<std::string>(kKeys.begin(), kKeys.end()));
            throw BadLine(fmt::format("unknown key '{}'{}", key,
                                      guess ? fmt::format(" (did you mean '{}'?)", *guess) : ""));
        }
        if (v.is_null()) continue;  // as if absent
        if (key == "queue") {
            spec.queue = string_field(v, "queue");
            if (!errand::valid_queue_name(spec.queue)) {
                throw BadLine(fmt::format(
                    "invalid queue name '{}' (1-64 characters of A-Z a-z 0-9 _ . -)", spec.queue));
            }
        } else if (key == "payload") {
            spec.payload = string_field(v, "payload");
            if (spec.payload.size() > limits::kDefaultMaxPayload) {
                throw BadLine(
                    fmt::format("the payload is {} bytes; the broker's default limit is {}",
                                spec.payload.size(), limits::kDefaultMaxPayload));
            }
        } else if (key == "argv") {
            if (!v.is_array() || v.empty() || v.size() > limits::kMaxArgv)
                throw BadLine(
                    fmt::format("'argv' must be an array of 1-{} strings", limits::kMaxArgv));
            std::vector<std::string> argv;
            std::size_t bytes = 0;
            for (const auto& arg : v) {
                argv.push_back(string_field(arg, "argv"));
                bytes += argv.back().size();
            }
            if (bytes > limits::kMaxArgvBytes)
                throw BadLine(
                    fmt::format("'argv' is {} bytes; at most {}", bytes, limits::kMaxArgvBytes));
            spec.argv = std::move(argv);
        } else if (key == "max_attempts") {
            spec.max_attempts =
                int_field<std::uint32_t>(v, "max_attempts", 1, limits::kMaxMaxAttempts);
        } else if (key == "token") {
            spec.token = string_field(v, "token");
            if (spec.token->empty() || spec.token->size() > limits::kMaxToken)
                throw BadLine(fmt::format("a token must be 1-{} bytes", limits::kMaxToken));
        } else if (key == "priority") {
            spec.priority =
                int_field<std::int32_t>(v, "priority", limits::kMinPriority, limits::kMaxPriority);
        } else if (key == "run_at") {
            std::optional<Millis> at;
            if (v.is_number_integer()) at = v.get<std::int64_t>();
            if (v.is_string()) at = errand::parse_time(v.get<std::string>());
            if (!at || *at < 0 || *at > limits::kMaxRunAt) {
                throw BadLine(
                    "'run_at' must be an RFC 3339 time (e.g. \"2026-11-28T20:00:00Z\") or ms "
                    "since the epoch");
            }
            spec.run_at = errand::to_time(*at);
            spec.delay.reset();
        } else if (key == "delay_ms") {
            spec.delay = duration_field(v, "delay_ms", 0, limits::kMaxDelayMs);
            spec.run_at.reset();
        } else if (key == "timeout_ms") {
            spec.timeout = duration_field(v, "timeout_ms", 1, limits::kMaxTimeoutMs);
        } else if (key == "backoff_ms") {
            spec.backoff = duration_field(v, "backoff_ms", 0, limits::kMaxDelayMs);
        } else if (key == "backoff_cap_ms") {
            spec.backoff_cap = duration_field(v, "backoff_cap_ms", 0, limits::kMaxDelayMs);
        } else if (key == "expires_at") {
            std::optional<Millis> at;
            if (v.is_number_integer()) at = v.get<std::int64_t>();
            if (v.is_string()) at = errand::parse_time(v.get<std::string>());
            if (!at || *at < 0 || *at > limits::kMaxRunAt) {
                throw BadLine(
                    "'expires_at' must be an RFC 3339 time (e.g. \"2026-11-28T20:00:00Z\") or ms "
                    "since the epoch");
            }
            spec.expires_at = errand::to_time(*at);
            spec.expires_in.reset();
        } else if (key == "expires_in_ms") {
            spec.expires_in = duration_field(v, "expires_in_ms", 1, limits::kMaxDelayMs);
            spec.expires_at.reset();
        } else if (key == "unique") {
            spec.unique = string_field(v, "unique");
            if (spec.unique->empty() || spec.unique->size() > limits::kMaxUniqueKey)
                throw BadLine(
                    fmt::format("a unique key must be 1-{} bytes", limits::kMaxUniqueKey));
        } else if (key == "after") {
            if (!v.is_array() || v.size() > limits::kMaxParents)
                throw BadLine(fmt::format("'after' must be an array of at most {} job ids",
                                          limits::kMaxParents));
            spec.after.clear();
            for (const auto& id : v) {
                if (!id.is_number_unsigned() || id.get<std::uint64_t>() == 0)
                    throw BadLine("'after' must hold job ids (whole numbers, 1 or more)");
                auto parent = id.get<std::uint64_t>();
                if (std::find(spec.after.begin(), spec.after.end(), parent) != spec.after.end())
                    throw BadLine(fmt::format("'after' names job {} twice", parent));
                spec.after.push_back(parent);
            }
        } else if (key == "batch") {
            if (batch_fixed)
                throw BadLine(
                    "'batch' is not for the lines of errand batch submit: its jobs go into the "
                    "batch it opens");
            if (v.is_null()) {
                spec.batch.reset();
            } else {
                if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0)
                    throw BadLine("'batch' must be a batch id (a whole number, 1 or more)");
                spec.batch = v.get<std::uint64_t>();
            }
        } else if (key == "after_any") {
            if (!v.is_boolean()) throw BadLine("'after_any' must be true or false");
            spec.after_any = v.get<bool>();
        }
    }
    if (spec.after_any && spec.after.empty())
        throw BadLine("'after_any' needs 'after' (the parents to wait for)");
    if (j.contains("run_at") && j.contains("delay_ms") && !j["run_at"].is_null() &&
        !j["delay_ms"].is_null()) {
        throw BadLine("give 'run_at' or 'delay_ms', not both");
    }
    if (j.contains("expires_at") && j.contains("expires_in_ms") && !j["expires_at"].is_null() &&
        !j["expires_in_ms"].is_null()) {
        throw BadLine("give 'expires_at' or 'expires_in_ms', not both");
    }
    if (spec.backoff && spec.backoff_cap && *spec.backoff_cap < *spec.backoff)
        throw BadLine("'backoff_cap_ms' must not be less than 'backoff_ms'");
    return spec;
}

std::size_t spec_bytes(const JobSpec& spec) {
    std::size_t n = 64 + spec.queue.size() + spec.payload.size() + spec.token.value_or("").size() +
                    spec.unique.value_or("").size();
    if (spec.argv) {
        for (const auto& a : *spec.argv)
            n += a.size() + 2;
    }
    return n;
}

// Lines of a file or stdin, numbered from 1; a line longer than a job could be is an error.
class LineReader {
  public:
    explicit LineReader(const std::string& path) : path_(path) {
        if (path != "-") {
            file_.open(path, std::ios::binary);
            if (!file_) {
                throw JsonlError(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
            }
        }
    }
    // False at the end. `line` has no newline (nor a trailing '\r').
    bool next(std::string& line) {
        std::istream& in = path_ == "-" ? std::cin : file_;
        if (!std::getline(in, line)) {
            if (in.bad()) throw JsonlError(fmt::format("cannot read '{}'", name()));
            return false;
        }
        ++number_;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
    }
    std::uint64_t number() const { return number_; }
    std::string name() const { return path_ == "-" ? "stdin" : path_; }

  private:
    std::string path_;
    std::ifstream file_;
    std::uint64_t number_ = 0;
};

bool blank(std::string_view line) {
    return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t'; });
}

std::string jobs(std::uint64_t n) {
    return n == 1 ? "1 job" : fmt::format("{} jobs", n);
}

// What was submitted before line `first` (the first line of the batch that failed).
std::string before(std::uint64_t submitted, std::uint64_t first) {
    if (submitted == 0) return "nothing was submitted";
    return fmt::format(
        "the {} before line {} were submitted (their ids are on stdout), none from "
        "line {} on",
        jobs(submitted), first, first);
}

}  // namespace

int run_submit_jsonl(Client& client, const JsonlArgs& args) {
    // A regular file is checked whole first: a bad line then submits nothing, and the count gives
    // the progress line its total.
    std::optional<std::uint64_t> total;
    struct stat st {};
    if (args.path != "-" && ::stat(args.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        LineReader check(args.path);
        std::string line;
        std::uint64_t n = 0;
        while (check.next(line)) {
            if (blank(line)) continue;
            try {
                parse_line(line, args.defaults, args.batch_fixed);
            } catch (const BadLine& e) {
                throw JsonlError(fmt::format("{}:{}: {}; nothing was submitted", check.name(),
                                             check.number(), e.what()));
            }
            ++n;
        }
        total = n;
    }

    LineReader in(args.path);
    Progress progress("jobs submitted", total);
    std::uint64_t submitted = 0, duplicates = 0, batches = 0;
    std::vector<JobSpec> batch;
    std::size_t batch_bytes = 0;
    std::uint64_t batch_first = 0;  // the line numbers of the batch's first and last jobs
    std::uint64_t batch_last = 0;

    auto send = [&] {
        if (batch.empty()) return;
        const auto count = batch.size();
        const auto last = batch_last;
        std::vector<Submitted> ids;
        try {
            ids = client.submit_batch(std::move(batch));
        } catch (const BrokerError& e) {
            progress.clear();
            throw BrokerError(
                e.code(), fmt::format("{} (the batch of lines {}-{}); {}", e.what(), batch_first,
                                      last, before(submitted, batch_first)));
        } catch (const ConnectionError& e) {
            progress.clear();
            throw ConnectionError(fmt::format(
                "{}; the {} of lines {}-{} may or may not have been submitted (lines with a "
                "\"token\" can be sent again safely); {}",
                e.what(), jobs(count), batch_first, last, before(submitted, batch_first)));
        }
        progress.clear();
        std::string out;
        for (const auto& s : ids) {
            out += fmt::format("{}\n", s.id);
            if (s.duplicate) ++duplicates;
        }
        if (args.print_ids) std::cout << out << std::flush;
        submitted += ids.size();
        ++batches;
        batch.clear();
        batch_bytes = 0;
        progress.update(submitted, {}, true);
    };

    std::string line;
    while (in.next(line)) {
        if (blank(line)) continue;
        JobSpec spec;
        try {
            spec = parse_line(line, args.defaults, args.batch_fixed);
        } catch (const BadLine& e) {
            progress.clear();
            const auto first = batch.empty() ? in.number() : batch_first;
            throw JsonlError(fmt::format("{}:{}: {}; {}", in.name(), in.number(), e.what(),
                                         before(submitted, first)));
        }
        const auto bytes = spec_bytes(spec);
        if (!batch.empty() && (batch.size() >= args.batch || batch_bytes + bytes > kMaxBatchBytes))
            send();
        if (batch.empty()) batch_first = in.number();
        batch_last = in.number();
        batch_bytes += bytes;
        batch.push_back(std::move(spec));
    }
    send();

    const double secs = std::chrono::duration<double>(progress.elapsed()).count();
    std::string summary = fmt::format("submitted {} in {} {} in {:.1f}s", jobs(submitted), batches,
                                      batches == 1 ? "batch" : "batches", secs);
    if (secs > 0 && submitted > 0)
        summary += fmt::format(" ({:.0f}/s)", static_cast<double>(submitted) / secs);
    if (duplicates > 0)
        summary += fmt::format("; {} already existed (same token or unique key)", duplicates);
    progress.finish(summary);
    return 0;
}

}  // namespace errand::cli
