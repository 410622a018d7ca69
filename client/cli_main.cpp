// The `errand` command line: submit jobs, show, wait for, list, cancel and retry them; pause,
// resume, purge and inspect queues; show a job's history; ping the broker; follow events, show
// stats and workers (cli_observe.cpp). CLI11 parses; one function per subcommand talks to
// errand::Client; cli_output formats.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli_batch.hpp"
#include "cli_bulk.hpp"
#include "cli_exit.hpp"
#include "cli_observe.hpp"
#include "cli_output.hpp"
#include "cli_queue.hpp"
#include "cli_schedule.hpp"
#include "errand/client.hpp"
#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/spelling.hpp"
#include "errand/transport.hpp"
#include "errand/version.hpp"

namespace {

using errand::JobId;
using errand::JobInfo;
using errand::JobState;
using errand::Millis;
using errand::Timestamp;

using enum errand::cli::Exit;  // the exit codes, and their help text (cli_exit.hpp)

// Waits longer than this are split into several WAIT requests, so a lost reply costs little.
constexpr Millis kWaitChunkMs = 60'000;

// A problem with the command line found after CLI11 accepted it (e.g. an unreadable file).
class UsageError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct GlobalArgs {
    std::string broker = std::string(errand::kDefaultEndpoint);
    std::string request_timeout = "5s";
};

struct SubmitArgs {
    std::string queue = "default";
    std::optional<std::string> payload;
    std::optional<std::string> payload_file;
    std::optional<std::uint32_t> max_attempts;  // unset: the queue's default, else 3
    std::optional<std::string> token;
    std::optional<std::int32_t> priority;  // unset: the queue's default, else 0
    std::optional<std::string> delay;
    std::optional<std::string> at;
    std::optional<std::string> timeout;
    std::optional<std::string> backoff;
    std::optional<std::string> unique;
    std::optional<std::string> expires_in;
    std::optional<std::string> expires_at;
    std::optional<std::string> after;  // ID[,ID...]: the parents
    bool after_any = false;
    std::optional<errand::JobId> batch;  // a member of this open batch
    bool wait = false;
    std::optional<std::string> wait_timeout;
    std::vector<std::string> argv;     // everything after "--"
    std::optional<std::string> jsonl;  // many jobs, one JSON object a line (cli_bulk.hpp)
    std::size_t batch_size = errand::limits::kMaxBatch;
};

struct StatusArgs {
    std::vector<JobId> ids;
    bool json = false;
};

struct WaitArgs {
    std::vector<JobId> ids;
    std::optional<std::string> timeout;  // for all of them together
    bool retry_forever = false;          // keep waiting while no broker can be reached
};

struct ListArgs {
    std::optional<std::string> queue;
    std::optional<std::string> state;
    std::uint32_t limit = errand::limits::kDefaultListLimit;
    bool json = false;
};

struct IdArgs {  // cancel
    std::vector<JobId> ids;
};

struct DeleteArgs {
    std::vector<JobId> ids;
    bool force = false;
};

struct RetryArgs {
    std::vector<JobId> ids;
    bool dead = false;
    std::optional<std::string> queue;
};

struct QueueArgs {  // pause, resume
    std::string queue;
    std::optional<std::string> for_;  // pause --for DUR
};

struct PurgeArgs {
    std::string state;
    std::optional<std::string> queue;
    std::optional<std::string> older_than;
};

struct JsonArgs {  // queues
    bool json = false;
};

struct HistoryArgs {
    JobId id = 0;
    bool json = false;
};

Timestamp now_time() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
}

// Only called on values a duration_check validator has accepted.
Millis to_ms(const std::string& text) {
    return errand::parse_duration(text).value_or(0);
}

// `max`: the longest duration accepted (none when 0).
CLI::Validator duration_check(bool allow_zero, Millis max = 0) {
    return CLI::Validator(
        [allow_zero, max](std::string& text) -> std::string {
            auto ms = errand::parse_duration(text);
            if (!ms) return "'" + text + "' is not a duration (examples: 250ms, 5s, 2m, 1h30m)";
            if (!allow_zero && *ms == 0) return "must be more than 0";
            if (max != 0 && *ms > max) {
                return "must be at most " + errand::format_duration(max);
            }
            return {};
        },
        "");
}

CLI::Validator time_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (errand::cli::parse_time(text)) return {};
            return "'" + text +
                   "' is not an RFC 3339 time: YYYY-MM-DDTHH:MM:SS[.mmm] and Z or +HH:MM/-HH:MM "
                   "(e.g. 2026-11-28T20:00:00Z, 2026-11-28T20:00:00.250+02:00)";
        },
        "");
}

// --expires-at: an RFC 3339 time with its offset, or seconds since the Unix epoch; in ms.
std::optional<Millis> parse_expiry_time(const std::string& text) {
    if (auto t = errand::cli::parse_time(text)) return t;
    if (text.empty() || text.size() > 12 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    return std::stoll(text) * 1000;
}

CLI::Validator expiry_time_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            auto at = parse_expiry_time(text);
            if (!at || *at > errand::limits::kMaxRunAt)
                return "'" + text +
                       "' is not a time: an RFC 3339 time with its offset (e.g. "
                       "2026-11-28T20:00:00Z, 2026-11-28T20:00:00+02:00) or seconds since the "
                       "Unix epoch (e.g. 1795896000)";
            if (*at <= now_time().time_since_epoch().count())
                return "'" + text + "' is already past: the job would expire at once";
            return {};
        },
        "");
}

// Throws UsageError on anything but "BASE" or "BASE,CAP" with CAP >= BASE.
errand::cli::Backoff parse_backoff(std::string_view text) {
    try {
        return errand::cli::parse_backoff(text);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
}

CLI::Validator backoff_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            try {
                parse_backoff(text);
                return {};
            } catch (const UsageError& e) {
                return e.what();
            }
        },
        "");
}

CLI::Validator unique_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (!text.empty() && text.size() <= errand::limits::kMaxUniqueKey) return {};
            return fmt::format("a unique key must be 1-{} bytes", errand::limits::kMaxUniqueKey);
        },
        "");
}

// The states purge accepts: the terminal ones.
std::string purgeable_names() {
    std::string out;
    for (JobState s : errand::cli::all_states()) {
        if (!errand::is_terminal(s)) continue;
        out += (out.empty() ? "" : ", ") + std::string(errand::to_string(s));
    }
    return out;
}

CLI::Validator purge_state_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            auto state = errand::parse_job_state(text);
            if (state && errand::is_terminal(*state)) return {};
            return fmt::format("cannot purge '{}' jobs; purge one of: {}", text, purgeable_names());
        },
        "");
}

CLI::Validator queue_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (errand::valid_queue_name(text)) return {};
            return "invalid queue name '" + text + "' (1-64 characters of A-Z a-z 0-9 _ . -)";
        },
        "");
}

CLI::Validator state_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (errand::parse_job_state(text)) return {};
            return "invalid state '" + text + "' (valid states: " + errand::cli::state_names() +
                   ")";
        },
        "");
}

// --after ID[,ID...]: job ids (1 or more), each once, at most kMaxParents.
std::optional<std::vector<errand::JobId>> parse_after(const std::string& text, std::string* why) {
    std::vector<errand::JobId> ids;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto end = text.find(',', start);
        if (end == std::string::npos) end = text.size();
        std::string_view item(text.data() + start, end - start);
        errand::JobId id = 0;
        auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
        if (item.empty() || ec != std::errc() || p != item.data() + item.size() || id == 0) {
            *why = fmt::format("must be job ids separated by commas (e.g. 12,13), not '{}'", item);
            return std::nullopt;
        }
        if (std::find(ids.begin(), ids.end(), id) != ids.end()) {
            *why = fmt::format("names job {} twice", id);
            return std::nullopt;
        }
        ids.push_back(id);
        start = end + 1;
    }
    if (ids.size() > errand::limits::kMaxParents) {
        *why = fmt::format("takes at most {} parents, not {}", errand::limits::kMaxParents,
                           ids.size());
        return std::nullopt;
    }
    return ids;
}

CLI::Validator after_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            std::string why;
            return parse_after(text, &why) ? std::string() : why;
        },
        "");
}

CLI::Validator token_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (!text.empty() && text.size() <= errand::limits::kMaxToken) return {};
            return fmt::format("a token must be 1-{} bytes", errand::limits::kMaxToken);
        },
        "");
}

std::string read_payload_file(const std::string& path) {
    if (path == "-") {
        std::string data(std::istreambuf_iterator<char>(std::cin), {});
        if (std::cin.bad()) throw UsageError("cannot read the payload from stdin");
        return data;
    }
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                         &std::fclose);
    if (!file) {
        throw UsageError(
            fmt::format("cannot open payload file '{}': {}", path, std::strerror(errno)));
    }
    std::string data;
    char buf[64 * 1024];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0)
        data.append(buf, n);
    if (std::ferror(file.get())) {
        throw UsageError(
            fmt::format("cannot read payload file '{}': {}", path, std::strerror(errno)));
    }
    return data;
}

// The process exit code that reports a finished job: 0 when it succeeded, else its own exit code
// unless that is missing or collides with errand's own codes (cli_exit.hpp), else 1.
int job_exit_code(const JobInfo& job) {
    if (job.state == JobState::succeeded) return kOk;
    return errand::cli::failed_job_exit(job.exit_code);
}

// Prints a finished job the way `wait` promises: its result bytes exactly on stdout, and for a
// failed job one line on stderr saying why.
int report_finished(const JobInfo& job) {
    if (job.result) {
        std::cout.write(job.result->data(), static_cast<std::streamsize>(job.result->size()));
        std::cout.flush();
    }
    if (job.state == JobState::succeeded) return kOk;

    // On a terminal, start the error on its own line even when the output did not end in one.
    if (job.result && !job.result->empty() && job.result->back() != '\n' && isatty(STDOUT_FILENO) &&
        isatty(STDERR_FILENO)) {
        std::cerr << '\n';
    }
    std::string why = fmt::format("{} after {}/{} attempts", errand::to_string(job.state),
                                  job.attempts, job.max_attempts);
    // One line: the first line of the error; `errand status` shows all of it.
    std::string error = job.error.value_or("");
    while (!error.empty() && (error.back() == '\n' || error.back() == '\r'))
        error.pop_back();
    if (auto nl = error.find('\n'); nl != std::string::npos) {
        error = fmt::format("{} (more: errand status {})", error.substr(0, nl), job.id);
    }
    // The worker daemon's errors already start with "exit code N"; don't say it twice.
    if (job.exit_code && error.find("exit code") == std::string::npos) {
        why += fmt::format(", exit code {}", *job.exit_code);
    }
    std::cerr << fmt::format("error: job {} failed ({}){}{}\n", job.id, why,
                             error.empty() ? "" : ": ", error);
    return job_exit_code(job);
}

// Waits until the job is terminal, in WAIT requests of at most kWaitChunkMs; forever when
// `timeout` is empty. nullopt when the timeout passed first. With no connection to a broker for
// the request timeout, ConnectionError; or, `retry_forever`, a warning and on waiting.
std::optional<JobInfo> wait_for(errand::Client& client, JobId id, std::optional<Millis> timeout,
                                bool retry_forever = false) {
    auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
            .count();
    };
    do {
        Millis chunk = kWaitChunkMs;
        if (timeout) chunk = std::clamp<Millis>(*timeout - elapsed(), 0, kWaitChunkMs);
        try {
            if (auto job = client.wait(id, std::chrono::milliseconds(chunk))) return job;
        } catch (const errand::ConnectionError& e) {
            if (!retry_forever) throw;
            std::cerr << fmt::format("warning: {}; still waiting for job {} (--retry-forever)\n",
                                     e.what(), id);
        }
    } while (!timeout || elapsed() < *timeout);
    return std::nullopt;
}

// `timeout_text` is the duration as the user wrote it, for the message.
// `waited`: how long the caller has waited already. `progress` is cleared before any output.
int wait_and_report(errand::Client& client, JobId id,
                    const std::optional<std::string>& timeout_text, Millis waited = 0,
                    bool retry_forever = false, errand::cli::Progress* progress = nullptr) {
    std::optional<Millis> timeout;
    if (timeout_text) timeout = std::max<Millis>(0, to_ms(*timeout_text) - waited);
    auto job = wait_for(client, id, timeout, retry_forever);
    if (progress) progress->clear();
    if (job) return report_finished(*job);

    std::string state;
    try {
        state = fmt::format(" (state: {})", errand::to_string(client.status(id).state));
    } catch (const std::exception&) {
        // The message is still useful without the state.
    }
    std::cerr << fmt::format("job {} did not finish within {}{}\n", id, timeout_text.value_or("?"),
                             state);
    return kWaitTimedOut;
}

int run_submit(errand::Client& client, const SubmitArgs& args) {
    errand::JobSpec spec;
    spec.queue = args.queue;
    if (args.payload) spec.payload = *args.payload;
    if (args.payload_file) spec.payload = read_payload_file(*args.payload_file);
    if (spec.payload.size() >= errand::limits::kDefaultMaxMessage) {
        throw UsageError(
            fmt::format("the payload is {} bytes; a message to the broker cannot "
                        "exceed {} bytes",
                        spec.payload.size(), errand::limits::kDefaultMaxMessage));
    }
    if (!args.argv.empty()) spec.argv = args.argv;
    spec.max_attempts = args.max_attempts;
    spec.token = args.token;
    spec.priority = args.priority;
    if (args.delay) spec.delay = std::chrono::milliseconds(to_ms(*args.delay));
    if (args.at) spec.run_at = errand::to_time(errand::cli::parse_time(*args.at));
    if (args.timeout) spec.timeout = std::chrono::milliseconds(to_ms(*args.timeout));
    if (args.backoff) {
        auto backoff = parse_backoff(*args.backoff);
        spec.backoff = std::chrono::milliseconds(backoff.base);
        spec.backoff_cap = errand::to_duration(backoff.cap);
    }
    spec.unique = args.unique;
    if (args.expires_in) spec.expires_in = std::chrono::milliseconds(to_ms(*args.expires_in));
    if (args.expires_at) spec.expires_at = errand::to_time(*parse_expiry_time(*args.expires_at));
    if (args.after) {
        std::string why;
        auto ids = parse_after(*args.after, &why);
        if (!ids) throw UsageError("--after: " + why);
        spec.after = std::move(*ids);
    }
    spec.after_any = args.after_any;
    spec.batch = args.batch;
    if (args.jsonl) {
        // The options above are the defaults of every line.
        return errand::cli::run_submit_jsonl(
            client, {.path = *args.jsonl, .defaults = std::move(spec), .batch = args.batch_size});
    }

    // With --wait, submit and wait in one round trip (the first kWaitChunkMs of the wait).
    const bool wait = args.wait || args.wait_timeout;
    const auto start = std::chrono::steady_clock::now();
    std::optional<Millis> first_chunk;
    if (wait)
        first_chunk =
            args.wait_timeout ? std::min(to_ms(*args.wait_timeout), kWaitChunkMs) : kWaitChunkMs;
    errand::Submitted submitted;
    std::optional<JobInfo> finished;
    if (wait)
        finished = client.submit_and_wait(std::move(spec), std::chrono::milliseconds(*first_chunk),
                                          &submitted);
    else
        submitted = client.submit(std::move(spec));
    if (submitted.duplicate) {
        // The reply does not say which key matched; only name both when both were given.
        if (args.unique && !args.token) {
            std::cerr << fmt::format("note: job {} is already queued with unique key {}\n",
                                     submitted.id, *args.unique);
        } else if (args.unique) {
            std::cerr << fmt::format(
                "note: job {} already exists for this token or is already queued with unique "
                "key {}\n",
                submitted.id, *args.unique);
        } else {
            std::cerr << fmt::format("note: job {} already exists for this token\n", submitted.id);
        }
    }
    if (!wait) {
        std::cout << submitted.id << '\n';
        return kOk;
    }
    if (finished) return report_finished(*finished);
    const Millis waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
    return wait_and_report(client, submitted.id, args.wait_timeout, waited);
}

// Runs `one` for each id in turn. A refusal (no such job, wrong state) is reported and the rest
// still run; the exit code is then kRefused. An unreachable broker ends it (the exception).
template <typename One>
int for_each_id(const std::vector<JobId>& ids, One one) {
    int rc = kOk;
    for (JobId id : ids) {
        try {
            one(id);
        } catch (const errand::BrokerError& e) {
            if (ids.size() == 1) throw;
            std::cerr << fmt::format("error: job {}: {}\n", id, e.what());
            rc = kRefused;
        }
    }
    return rc;
}

int run_status(errand::Client& client, const StatusArgs& args) {
    // Several ids: text blocks one after another; with --json one object per line.
    return for_each_id(args.ids, [&](JobId id) {
        auto job = client.status(id);
        if (args.json) {
            std::cout << errand::cli::job_json(job) << '\n';
        } else {
            // A ready job that waits only for its queue's limit says which (QUEUE_SHOW).
            std::optional<std::string> held;
            if (job.state == errand::JobState::ready) held = client.queue_settings(job.queue).held;
            std::cout << errand::cli::job_text(job, now_time(), held);
        }
        std::cout.flush();
    });
}

// Waits for each job in turn, all within one --timeout, printing each result as `wait` does. The
// exit code is that of the first job (in the order given) that did not succeed, else 0.
// With several jobs, a progress line on a terminal (stderr) counts the finished ones.
int run_wait(errand::Client& client, const WaitArgs& args) {
    const auto start = std::chrono::steady_clock::now();
    std::optional<errand::cli::Progress> progress;
    if (args.ids.size() > 1) progress.emplace("jobs finished", args.ids.size());
    int rc = kOk;
    std::uint64_t done = 0, failed = 0;
    for (JobId id : args.ids) {
        if (progress)
            progress->update(done, failed > 0 ? fmt::format("{} failed", failed) : "", true);
        const Millis waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count();
        int one = kRefused;
        try {
            one = wait_and_report(client, id, args.timeout, waited, args.retry_forever,
                                  progress ? &*progress : nullptr);
        } catch (const errand::BrokerError& e) {
            if (args.ids.size() == 1) throw;
            if (progress) progress->clear();
            std::cerr << fmt::format("error: job {}: {}\n", id, e.what());
        }
        if (one != kWaitTimedOut) ++done;
        if (one != kOk && one != kWaitTimedOut) ++failed;
        if (rc == kOk) rc = one;
    }
    if (progress && progress->on_tty()) {
        progress->finish(
            fmt::format("{}/{} jobs finished{}", done, args.ids.size(),
                        failed > 0 ? fmt::format(", {} did not succeed", failed) : ""));
    }
    return rc;
}

int run_list(errand::Client& client, const ListArgs& args) {
    errand::ListFilter filter;
    filter.queue = args.queue;
    if (args.state) filter.state = errand::parse_job_state(*args.state);
    filter.limit = args.limit;
    auto jobs = client.list(filter);
    if (args.json)
        std::cout << errand::cli::jobs_json(jobs) << '\n';
    else
        std::cout << errand::cli::jobs_table(jobs, now_time());
    return kOk;
}

int run_cancel(errand::Client& client, const IdArgs& args) {
    return for_each_id(args.ids, [&](JobId id) {
        auto job = client.cancel(id);
        std::cout << fmt::format("cancelled job {}\n", job.id) << std::flush;
    });
}

int run_run_now(errand::Client& client, const IdArgs& args) {
    return for_each_id(args.ids, [&](JobId id) {
        auto job = client.run_now(id);
        std::cout << fmt::format("job {} is ready now\n", job.id) << std::flush;
    });
}

int run_delete(errand::Client& client, const DeleteArgs& args) {
    return for_each_id(args.ids, [&](JobId id) {
        client.remove(id, args.force);
        std::cout << fmt::format("deleted job {}\n", id) << std::flush;
    });
}

int run_retry(errand::Client& client, const RetryArgs& args) {
    if (!args.ids.empty()) {
        return for_each_id(args.ids, [&](JobId id) {
            std::cout << fmt::format("job {} is ready again\n", client.retry(id)) << std::flush;
        });
    }
    auto ids = client.retry_dead(args.queue);
    std::cout << (ids.size() == 1 ? std::string("1 dead job is ready again\n")
                                  : fmt::format("{} dead jobs are ready again\n", ids.size()));
    return kOk;
}

int run_pause(errand::Client& client, const QueueArgs& args) {
    // Pausing a name no job has used is allowed (a queue paused before its first job), but it is
    // more often a typo: say so, and name the known queue it is closest to.
    std::vector<std::string> known;
    for (const auto& q : client.queues())
        known.push_back(q.name);
    if (std::find(known.begin(), known.end(), args.queue) == known.end()) {
        auto guess = errand::closest_spelling(args.queue, known);
        std::cerr << fmt::format("warning: no job has used queue '{}' yet{}; pausing it anyway\n",
                                 args.queue,
                                 guess ? fmt::format(" (did you mean '{}'?)", *guess) : "");
    }
    if (args.for_) {
        const Millis ms = to_ms(*args.for_);
        client.pause(args.queue, std::chrono::milliseconds(ms));
        std::cout << fmt::format("queue {} paused for {} (until {})\n", args.queue,
                                 errand::format_duration(ms),
                                 errand::format_time(now_time() + std::chrono::milliseconds(ms)));
        return kOk;
    }
    client.pause(args.queue);
    std::cout << fmt::format("queue {} paused\n", args.queue);
    return kOk;
}

int run_resume(errand::Client& client, const QueueArgs& args) {
    client.resume(args.queue);
    std::cout << fmt::format("queue {} resumed\n", args.queue);
    return kOk;
}

int run_purge(errand::Client& client, const PurgeArgs& args) {
    std::optional<std::chrono::milliseconds> older_than;
    if (args.older_than) older_than = std::chrono::milliseconds(to_ms(*args.older_than));
    auto n = client.purge(*errand::parse_job_state(args.state), args.queue, older_than);
    std::cout << (n == 1 ? std::string("purged 1 job\n") : fmt::format("purged {} jobs\n", n));
    return kOk;
}

int run_queues(errand::Client& client, const JsonArgs& args) {
    auto queues = client.queues();
    if (args.json)
        std::cout << errand::cli::queues_json(queues) << '\n';
    else
        std::cout << errand::cli::queues_table(queues, now_time());
    return kOk;
}

int run_history(errand::Client& client, const HistoryArgs& args) {
    auto events = client.history(args.id);
    if (args.json)
        std::cout << errand::cli::events_json(events) << '\n';
    else
        std::cout << errand::cli::events_text(events);
    return kOk;
}

int run_ping(errand::Client& client) {
    auto start = std::chrono::steady_clock::now();
    auto pong = client.ping();
    auto rtt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
    std::cout << fmt::format("broker {} at {}: round trip {:.2f}ms\n", pong.version,
                             client.endpoint(), rtt.count());
    return kOk;
}

int run(int argc, char** argv) {
    // Everything after the first "--" is a job's command line; CLI11 never sees it, so the
    // command may carry its own options (errand submit -- ls -l).
    int cli_argc = argc;
    std::vector<std::string> job_argv;
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--") {
            cli_argc = i;
            job_argv.assign(argv + i + 1, argv + argc);
            break;
        }
    }

    CLI::App app("errand: submit jobs to an errand broker and follow them.", "errand");
    app.footer(errand::cli::kExitCodesHelp);
    app.fallthrough();  // global options may also follow the subcommand
    app.require_subcommand(0, 1);
    app.set_version_flag("--version", "errand " ERRAND_VERSION, "print the version and exit");
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return fmt::format("error: {} (see --help)\n", e.what());
    });

    GlobalArgs global;
    app.add_option("--broker", global.broker,
                   "broker endpoint; or several sharing one PostgreSQL database, "
                   "comma-separated, to fail over between")
        ->envname("ERRAND_BROKER")
        ->type_name("ENDPOINT")
        ->capture_default_str();
    app.add_option("--request-timeout", global.request_timeout,
                   "give up on a request to the broker after this long")
        ->envname("ERRAND_REQUEST_TIMEOUT")
        ->check(duration_check(false))
        ->type_name("DUR")
        ->capture_default_str();

    std::string curve_server_key, curve_key;
    auto* server_key_opt =
        app.add_option("--curve-server-key", curve_server_key,
                       "encrypt with CURVE: the broker's public key file (needs --curve-key)")
            ->envname("ERRAND_CURVE_SERVER_KEY")
            ->type_name("FILE");
    auto* key_opt = app.add_option("--curve-key", curve_key,
                                   "our secret key file, authorised on the broker (errand keygen)")
                        ->envname("ERRAND_CURVE_KEY")
                        ->type_name("FILE");
    server_key_opt->needs(key_opt);
    key_opt->needs(server_key_opt);

    // `errand keygen` needs no broker: it runs before a client is made.
    std::string keygen_name, keygen_dir = ".";
    auto* keygen = app.add_subcommand(
        "keygen", "Write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub.");
    keygen->add_option("name", keygen_name, "file name without extension")->required();
    keygen->add_option("--dir", keygen_dir, "where to write them")->capture_default_str();

    // Each parsed subcommand runs its entry here, with a client of the chosen broker.
    std::vector<std::pair<CLI::App*, std::function<int(errand::Client&)>>> commands;

    SubmitArgs submit_args;
    auto* submit = app.add_subcommand("submit", "Submit a job and print its id.");
    submit->footer(
        "Usage: errand submit [OPTIONS] [-- ARGV...]\n"
        "Everything after -- is the job's own command line (the worker needs --allow-commands).\n"
        "With --wait, prints the job's result instead of its id and exits with its exit code.\n"
        "\n"
        "--jsonl F: one JSON object per line with the keys of docs/PROTOCOL.md's SUBMIT job:\n"
        "  {\"queue\":\"email\",\"payload\":\"hi\",\"argv\":[\"cmd\",\"arg\"],\"max_attempts\":5,\n"
        "   "
        "\"priority\":10,\"run_at\":\"2026-11-28T20:00:00Z\",\"delay_ms\":\"1h30m\",\"timeout_ms\":"
        "30000,\n"
        "   "
        "\"backoff_ms\":\"500ms\",\"backoff_cap_ms\":\"30s\",\"token\":\"k1\",\"unique\":\"u1\",\n"
        "   \"expires_in_ms\":\"10m\",\"after\":[41,42],\"after_any\":true,\"batch\":7}\n"
        "  (or \"expires_at\": a time like run_at; after/after_any as --after/--after-any;\n"
        "  batch as --batch)\n"
        "  (durations: integer ms or \"1h30m\"); what a line leaves out comes from the options.\n"
        "  Jobs go in batches (--batch-size, and at most 16 MiB), each committed whole. A bad\n"
        "  line is reported as F:LINE and nothing of its batch is sent: from a regular file\n"
        "  the whole file is checked first, so nothing at all is; from a pipe, the batches\n"
        "  before it were submitted and their ids printed. A progress line on a terminal.");
    submit->add_option("-q,--queue", submit_args.queue, "queue name")
        ->check(queue_check())
        ->type_name("QUEUE")
        ->capture_default_str();
    auto* payload =
        submit->add_option("--payload", submit_args.payload, "payload bytes")->type_name("TEXT");
    submit
        ->add_option("--payload-file", submit_args.payload_file,
                     "read the payload from F (- = stdin)")
        ->type_name("F")
        ->excludes(payload);
    submit
        ->add_option("--max-attempts", submit_args.max_attempts,
                     "attempts before the job is dead (default: the queue's, else 3)")
        ->check(CLI::Range(1U, errand::limits::kMaxMaxAttempts).description(""))
        ->type_name("N");
    submit
        ->add_option("--priority", submit_args.priority,
                     fmt::format("{}..{}; higher runs first (default: the queue's, else 0)",
                                 errand::limits::kMinPriority, errand::limits::kMaxPriority))
        ->check(
            CLI::Range(errand::limits::kMinPriority, errand::limits::kMaxPriority).description(""))
        ->type_name("N");
    auto* delay =
        submit->add_option("--delay", submit_args.delay, "run no sooner than DUR from now")
            ->check(duration_check(true, errand::limits::kMaxDelayMs))
            ->type_name("DUR");
    submit
        ->add_option("--at", submit_args.at,
                     "run no sooner than TIME (RFC 3339, e.g. 2026-11-28T20:00:00Z)")
        ->check(time_check())
        ->type_name("TIME")
        ->excludes(delay);
    submit
        ->add_option("--timeout", submit_args.timeout,
                     "stop and fail an attempt that runs longer than DUR")
        ->check(duration_check(false, errand::limits::kMaxTimeoutMs))
        ->type_name("DUR");
    submit
        ->add_option("--backoff", submit_args.backoff,
                     "wait BASE before the first retry, doubling up to CAP (e.g. 500ms,30s)")
        ->check(backoff_check())
        ->type_name("BASE[,CAP]");
    submit->add_option("--token", submit_args.token, "idempotency key (default: random)")
        ->check(token_check())
        ->type_name("KEY");
    submit
        ->add_option("--unique", submit_args.unique,
                     "at most one unfinished job per KEY; a duplicate prints the existing id")
        ->check(unique_check())
        ->type_name("KEY");
    auto* expires_in =
        submit
            ->add_option("--expires-in", submit_args.expires_in,
                         "not started within DUR of now: the job ends expired instead of running")
            ->check(duration_check(false, errand::limits::kMaxDelayMs))
            ->type_name("DUR");
    submit
        ->add_option("--expires-at", submit_args.expires_at,
                     "not started by TIME (RFC 3339 or Unix seconds): the job ends expired")
        ->check(expiry_time_check())
        ->type_name("TIME")
        ->excludes(expires_in);
    auto* after = submit
                      ->add_option("--after", submit_args.after,
                                   "blocked until jobs ID,... have succeeded (one ending otherwise "
                                   "cancels this one)")
                      ->check(after_check())
                      ->type_name("ID[,ID...]");
    submit
        ->add_flag("--after-any", submit_args.after_any,
                   "with --after: run once every parent has finished, whatever its outcome")
        ->needs(after);
    submit
        ->add_option("--batch", submit_args.batch,
                     "a member of open batch ID (errand batch open; its callbacks wait for it)")
        ->check(
            CLI::Range(std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max()).description(""))
        ->type_name("ID");
    auto* submit_wait =
        submit->add_flag("--wait", submit_args.wait, "wait for the job and print its result");
    auto* wait_timeout =
        submit
            ->add_option("--wait-timeout", submit_args.wait_timeout,
                         "with --wait: give up after DUR (exit 124; implies --wait)")
            ->check(duration_check(true))
            ->type_name("DUR");
    auto* jsonl =
        submit
            ->add_option("--jsonl", submit_args.jsonl,
                         "submit one job per line of F (- = stdin); prints their ids in order")
            ->type_name("F")
            ->excludes(payload)
            ->excludes(submit_wait)
            ->excludes(wait_timeout);
    submit->get_option("--payload-file")->excludes(jsonl);
    submit
        ->add_option("--batch-size", submit_args.batch_size,
                     "with --jsonl: at most N jobs per SUBMIT message")
        ->check(CLI::Range(std::size_t{1}, errand::limits::kMaxBatch).description(""))
        ->type_name("N")
        ->capture_default_str()
        ->needs(jsonl);
    commands.emplace_back(submit, [&](errand::Client& c) { return run_submit(c, submit_args); });

    StatusArgs status_args;
    auto* status = app.add_subcommand("status", "Show jobs.");
    status->add_option("id", status_args.ids, "job ids")->required()->type_name("ID...");
    status->add_flag("--json", status_args.json, "print one JSON object (a line per job)");
    commands.emplace_back(status, [&](errand::Client& c) { return run_status(c, status_args); });

    WaitArgs wait_args;
    auto* wait = app.add_subcommand(
        "wait", "Wait for jobs to finish, in the order given; print their results.");
    wait->footer(
        "With several jobs, the exit code is that of the first one (in the order given)\n"
        "that did not succeed, and --timeout bounds the whole wait.");
    wait->add_option("id", wait_args.ids, "job ids")->required()->type_name("ID...");
    wait->add_option("--timeout", wait_args.timeout,
                     "give up after DUR (exit 124; default: wait forever)")
        ->check(duration_check(true))
        ->type_name("DUR");
    wait->add_flag("--retry-forever", wait_args.retry_forever,
                   "keep waiting while no broker can be reached (default: exit 122 once there has "
                   "been no connection for the request timeout)");
    commands.emplace_back(wait, [&](errand::Client& c) { return run_wait(c, wait_args); });

    ListArgs list_args;
    auto* list = app.add_subcommand("list", "List jobs, newest first.");
    list->add_option("-q,--queue", list_args.queue, "only this queue")
        ->check(queue_check())
        ->type_name("QUEUE");
    list->add_option("--state", list_args.state, "only this state: " + errand::cli::state_names())
        ->check(state_check())
        ->type_name("STATE");
    list->add_option("--limit", list_args.limit, "at most N jobs")
        ->check(CLI::Range(1U, errand::limits::kMaxListLimit).description(""))
        ->type_name("N")
        ->capture_default_str();
    list->add_flag("--json", list_args.json, "print a JSON array");
    commands.emplace_back(list, [&](errand::Client& c) { return run_list(c, list_args); });

    IdArgs cancel_args;
    auto* cancel = app.add_subcommand(
        "cancel", "Cancel an unfinished job (a running one is stopped on its worker).");
    cancel->add_option("id", cancel_args.ids, "job ids")->required()->type_name("ID...");
    commands.emplace_back(cancel, [&](errand::Client& c) { return run_cancel(c, cancel_args); });

    RetryArgs retry_args;
    auto* retry = app.add_subcommand(
        "retry", "Put a dead job, or with --dead every dead job, back in its queue.");
    retry->footer("Usage: errand retry ID... | errand retry --dead [-q QUEUE]");
    retry->add_option("id", retry_args.ids, "dead jobs' ids")->type_name("ID...");
    auto* retry_dead = retry->add_flag("--dead", retry_args.dead, "every dead job");
    retry->add_option("-q,--queue", retry_args.queue, "with --dead: only this queue")
        ->check(queue_check())
        ->type_name("QUEUE")
        ->needs(retry_dead);
    commands.emplace_back(retry, [&](errand::Client& c) { return run_retry(c, retry_args); });

    QueueArgs pause_args;
    auto* pause = app.add_subcommand(
        "pause", "Stop dispatching a queue's jobs (it still accepts new ones) until resumed.");
    pause->add_option("queue", pause_args.queue, "queue name")->check(queue_check())->required();
    pause
        ->add_option("--for", pause_args.for_,
                     "resume by itself after DUR (kept across broker restarts)")
        ->check(duration_check(false, errand::limits::kMaxDelayMs))
        ->type_name("DUR");
    commands.emplace_back(pause, [&](errand::Client& c) { return run_pause(c, pause_args); });

    QueueArgs resume_args;
    auto* resume = app.add_subcommand("resume", "Dispatch a paused queue's jobs again.");
    resume->add_option("queue", resume_args.queue, "queue name")->check(queue_check())->required();
    commands.emplace_back(resume, [&](errand::Client& c) { return run_resume(c, resume_args); });

    PurgeArgs purge_args;
    auto* purge = app.add_subcommand("purge", "Delete finished jobs.");
    purge
        ->add_option("--state", purge_args.state, "delete jobs in this state: " + purgeable_names())
        ->check(purge_state_check())
        ->type_name("STATE")
        ->required();
    purge->add_option("-q,--queue", purge_args.queue, "only this queue")
        ->check(queue_check())
        ->type_name("QUEUE");
    purge
        ->add_option("--older-than", purge_args.older_than,
                     "only jobs that finished at least DUR ago")
        ->check(duration_check(true))
        ->type_name("DUR");
    commands.emplace_back(purge, [&](errand::Client& c) { return run_purge(c, purge_args); });

    JsonArgs queues_args;
    auto* queues = app.add_subcommand("queues", "Show every queue: paused or not, jobs per state.");
    queues->add_flag("--json", queues_args.json, "print a JSON array");
    commands.emplace_back(queues, [&](errand::Client& c) { return run_queues(c, queues_args); });

    HistoryArgs history_args;
    auto* history = app.add_subcommand("history", "Show a job's state changes, oldest first.");
    history->add_option("id", history_args.id, "job id")->required();
    history->add_flag("--json", history_args.json, "print a JSON array");
    commands.emplace_back(history, [&](errand::Client& c) { return run_history(c, history_args); });

    auto* ping = app.add_subcommand("ping", "Check that the broker answers.");
    commands.emplace_back(ping, [](errand::Client& c) { return run_ping(c); });

    // Observability (cli_observe.cpp). `options` is filled in below, before any command runs.
    errand::ClientOptions options;
    errand::cli::EventsArgs events_args;
    auto* events = app.add_subcommand(
        "events", "Show recent job state changes; with --follow, stream them live.");
    events->add_flag("-f,--follow", events_args.follow,
                     "keep streaming from the broker's --events endpoint");
    events->add_option("-q,--queue", events_args.queue, "only this queue")->type_name("QUEUE");
    events->add_option("-n,--limit", events_args.limit, "recent events shown first")
        ->check(CLI::Range(1u, errand::kMaxFeed))
        ->capture_default_str();
    events
        ->add_option("--endpoint", events_args.endpoint,
                     "the broker's events endpoint (default: asked from the broker)")
        ->type_name("ENDPOINT");
    events->add_flag("--json", events_args.json, "one JSON object per line");
    commands.emplace_back(events, [&](errand::Client& c) {
        return errand::cli::run_events(c, options, events_args);
    });
    bool stats_json = false, workers_json = false;
    auto* stats = app.add_subcommand(
        "stats", "Show totals, per-queue counts and rates, workers and commit statistics.");
    stats->add_flag("--json", stats_json, "print one JSON object");
    commands.emplace_back(stats,
                          [&](errand::Client& c) { return errand::cli::run_stats(c, stats_json); });
    auto* workers = app.add_subcommand(
        "workers", "Show connected workers: host, pid, queues, running jobs, last heartbeat.");
    workers->add_flag("--json", workers_json, "print a JSON array");
    commands.emplace_back(
        workers, [&](errand::Client& c) { return errand::cli::run_workers(c, workers_json); });

    auto schedule = errand::cli::add_schedule_commands(app, job_argv);
    commands.emplace_back(schedule.schedule, schedule.run);
    auto batch = errand::cli::add_batch_commands(app, job_argv);
    commands.emplace_back(batch.batch, batch.run);

    errand::cli::WorkerControlArgs control_args;
    auto* worker_cmd = app.add_subcommand(
        "worker", "Control running workers by name (all its instances) or instance id.");
    worker_cmd->require_subcommand(1);
    std::vector<std::pair<CLI::App*, std::string>> worker_actions;
    for (const auto& [action, help] : std::vector<std::pair<std::string, std::string>>{
             {"quiet", "Take no new jobs; finish the running ones (until resume)."},
             {"stop", "Drain and exit, as SIGTERM does."},
             {"resume", "Take jobs again after quiet."},
             {"concurrency", "Run N jobs at once from now on (1-1024), without a restart."}}) {
        auto* sub = worker_cmd->add_subcommand(action, help);
        sub->add_option("name", control_args.worker, "worker name, or instance id")->required();
        if (action == "concurrency")
            sub->add_option("n", control_args.concurrency, "jobs run at once (1-1024)")->required();
        sub->add_flag("--json", control_args.json, "print the workers changed as a JSON array");
        worker_actions.emplace_back(sub, action);
    }
    commands.emplace_back(worker_cmd, [&](errand::Client& c) {
        for (const auto& [sub, action] : worker_actions)
            if (sub->parsed()) control_args.action = action;
        // Out of range is a usage error here, before any request (the broker refuses it too).
        if (control_args.action == "concurrency" &&
            (control_args.concurrency < 1 ||
             control_args.concurrency > errand::limits::kMaxConcurrency))
            throw UsageError(fmt::format("concurrency must be 1-{}, not {}",
                                         errand::limits::kMaxConcurrency,
                                         control_args.concurrency));
        return errand::cli::run_worker_control(c, control_args);
    });

    auto queue_cmds = errand::cli::add_queue_commands(app);
    commands.emplace_back(queue_cmds.queue, [&](errand::Client& c) {
        try {
            return queue_cmds.run(c);
        } catch (const std::invalid_argument& e) {
            throw UsageError(e.what());
        }
    });

    IdArgs run_now_args;
    auto* run_now = app.add_subcommand(
        "run-now",
        "Make a scheduled or retrying job ready at once (its delay or backoff skipped).");
    run_now->add_option("id", run_now_args.ids, "job ids")->required()->type_name("ID...");
    commands.emplace_back(run_now, [&](errand::Client& c) { return run_run_now(c, run_now_args); });

    DeleteArgs delete_args;
    auto* del = app.add_subcommand(
        "delete", "Delete a finished job with its history; with --force cancel a live one first.");
    del->add_option("id", delete_args.ids, "job ids")->required()->type_name("ID...");
    del->add_flag("--force", delete_args.force,
                  "cancel an unfinished job (a running one is stopped on its worker), then delete "
                  "it");
    commands.emplace_back(del, [&](errand::Client& c) { return run_delete(c, delete_args); });

    try {
        app.parse(cli_argc, argv);
    } catch (const CLI::ExtrasError&) {
        // CLI11 2.1 lists extras in reverse order; say it ourselves, with the likely fix.
        auto extras = app.remaining(true);
        std::string list;
        for (const auto& arg : extras)
            list += (list.empty() ? "" : " ") + arg;
        std::string hint = " (see --help)";
        const bool any_subcommand = !app.get_subcommands().empty();
        if (!any_subcommand && !extras.empty() && !extras[0].empty() && extras[0][0] != '-') {
            // The first word is where a subcommand goes: a mistyped one.
            std::vector<std::string> names;
            for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; }))
                names.push_back(sub->get_name());
            auto guess = errand::closest_spelling(extras[0], names);
            std::cerr << fmt::format("error: '{}' is not an errand command{} (see --help)\n",
                                     extras[0],
                                     guess ? fmt::format("; did you mean '{}'?", *guess) : "");
            return kUsage;
        }
        if (submit->parsed() && !extras.empty() && !extras[0].empty() && extras[0][0] != '-') {
            hint = "; a job's command line goes after --: errand submit [OPTIONS] -- CMD [ARGS...]";
        } else if (std::any_of(extras.begin(), extras.end(), [](const std::string& arg) {
                       return arg == "--timeout" || arg.starts_with("--timeout=");
                   })) {
            hint = "; the time allowed for a request to the broker is --request-timeout";
        }
        std::cerr << fmt::format("error: unexpected argument{}: {}{}\n",
                                 extras.size() == 1 ? "" : "s", list, hint);
        return kUsage;
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == static_cast<int>(CLI::ExitCodes::Success) ? kOk : kUsage;
    }
    if (keygen->parsed()) {
        if (cli_argc != argc)
            throw UsageError("'--' (a job's command line) is only accepted by submit");
        auto keys = errand::write_keypair(keygen_dir, keygen_name);
        std::cout << fmt::format("wrote {0}/{1}.key (secret) and {0}/{1}.pub\npublic key: {2}\n",
                                 keygen_dir, keygen_name, keys.public_key);
        return kOk;
    }
    auto chosen = std::find_if(commands.begin(), commands.end(),
                               [](const auto& command) { return command.first->parsed(); });
    if (chosen == commands.end()) {
        std::string names;
        for (std::size_t i = 0; i < commands.size(); ++i) {
            names += (i == 0                     ? ""
                      : i + 1 == commands.size() ? " or "
                                                 : ", ") +
                     commands[i].first->get_name();
        }
        throw UsageError(fmt::format("a subcommand is required: {} (see --help)", names));
    }
    if (cli_argc != argc && !submit->parsed() && !schedule.add->parsed() && !batch.open->parsed()) {
        throw UsageError(
            "'--' (a job's command line) is only accepted by submit, schedule add and batch "
            "open/submit");
    }
    if (cli_argc != argc && submit_args.jsonl) {
        throw UsageError("with --jsonl, a job's command line goes in its line's \"argv\"");
    }
    submit_args.argv = job_argv;  // schedule add reads it too
    if (retry->parsed() && !retry_args.ids.empty() == retry_args.dead) {
        throw UsageError(retry_args.dead
                             ? "retry takes a job id or --dead, not both"
                             : "retry needs a job id or --dead (see errand retry --help)");
    }

    auto brokers = errand::parse_endpoints(global.broker);
    if (brokers.error)
        throw UsageError(fmt::format("bad --broker '{}': {}", global.broker, *brokers.error));
    options.endpoints = std::move(brokers.endpoints);
    options.timeout = std::chrono::milliseconds(to_ms(global.request_timeout));
    if (!curve_server_key.empty()) {
        try {
            options.curve = errand::load_curve_client(curve_server_key, curve_key);
        } catch (const std::exception& e) {
            throw UsageError(e.what());
        }
    }
    errand::Client client(options);
    return chosen->second(client);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const errand::BrokerError& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kRefused;
    } catch (const errand::ConnectionError& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kUnreachable;
    } catch (const UsageError& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kUsage;
    } catch (const errand::cli::JsonlError& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kUsage;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << '\n';
        return kInternal;
    }
}
