// `errand queue …` (cli_queue.hpp).
#include "cli_queue.hpp"

#include <fmt/format.h>

#include <charconv>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "errand/duration.hpp"
#include "errand/json.hpp"

namespace errand::cli {
namespace {

struct Args {
    std::string queue;
    std::optional<std::uint32_t> max_running;   // set
    std::optional<std::string> rate;            // set: N/DUR
    std::optional<std::uint32_t> max_attempts;  // set: defaults
    std::optional<std::string> timeout;
    std::optional<std::int32_t> priority;
    std::optional<std::string> retention;
    std::optional<std::string> expires_in;
    bool unset_max_running = false;  // unset
    bool unset_rate = false;
    bool unset_max_attempts = false;
    bool unset_timeout = false;
    bool unset_priority = false;
    bool unset_retention = false;
    bool unset_expires_in = false;
    bool json = false;
};

CLI::Validator name_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (valid_queue_name(text)) return {};
            return fmt::format("invalid queue name '{}' (1-64 characters of A-Z a-z 0-9 _ . -)",
                               text);
        },
        "");
}

// A duration more than 0 and at most `max` (DUR options of queue set).
CLI::Validator duration_check(Millis max) {
    return CLI::Validator(
        [max](std::string& text) -> std::string {
            auto ms = parse_duration(text);
            if (!ms) return "'" + text + "' is not a duration (examples: 250ms, 5s, 2m, 7d)";
            if (*ms == 0) return "must be more than 0";
            if (*ms > max) return "must be at most " + format_duration(max);
            return {};
        },
        "");
}

CLI::Validator max_running_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            std::uint64_t n = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
            if (ec != std::errc() || end != text.data() + text.size() || n < 1 ||
                n > limits::kMaxMaxRunning)
                return fmt::format("must be a whole number 1-{}, not '{}'", limits::kMaxMaxRunning,
                                   text);
            return {};
        },
        "");
}

// "N/DUR": N starts per DUR; DUR a duration ("10s", "1m30s") or a bare unit ("s", "min",
// "h"). nullopt when it is not that, or out of range.
std::optional<std::pair<std::uint32_t, Millis>> parse_rate(std::string_view text) {
    auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    auto count = text.substr(0, slash);
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
    if (ec != std::errc() || end != count.data() + count.size() || n < 1 || n > limits::kMaxRate)
        return std::nullopt;
    std::string per(text.substr(slash + 1));
    if (per == "min" || per == "minute") per = "m";
    if (per == "sec" || per == "second") per = "s";
    if (per == "hour") per = "h";
    if (per == "day") per = "d";
    if (!per.empty() && (per[0] < '0' || per[0] > '9')) per = "1" + per;
    auto ms = parse_duration(per);
    if (!ms || *ms < 1 || *ms > limits::kMaxRatePerMs) return std::nullopt;
    return std::pair{static_cast<std::uint32_t>(n), *ms};
}

CLI::Validator rate_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (parse_rate(text)) return {};
            return fmt::format(
                "'{}' is not a rate: N/DUR, N 1-{} starts per DUR of at most a day (examples: "
                "50/s, 1000/min, 5/10s)",
                text, limits::kMaxRate);
        },
        "");
}

std::string rate_text(const QueueSettings& s) {
    if (!s.rate || !s.rate_per) return "- (no limit)";
    return fmt::format("{}/{}", *s.rate, format_duration(*s.rate_per));
}

int print(const QueueSettings& s, bool json) {
    if (json)
        std::cout << dump_json(to_json(s)) << '\n';
    else
        std::cout << queue_settings_text(s);
    return 0;
}

}  // namespace

std::string queue_settings_text(const QueueSettings& s) {
    std::string out = fmt::format("queue:       {}\n", s.queue);
    out += fmt::format("max-running: {}\n",
                       s.max_running ? std::to_string(*s.max_running) : "- (no limit)");
    out += fmt::format("rate:        {}\n", rate_text(s));
    out += fmt::format("defaults:    max-attempts {}, timeout {}, priority {}\n",
                       s.max_attempts ? std::to_string(*s.max_attempts)
                                      : fmt::format("- ({})", limits::kDefaultMaxAttempts),
                       s.timeout ? format_duration(*s.timeout) : "- (none)",
                       s.priority ? std::to_string(*s.priority) : "- (0)");
    out += fmt::format("retention:   {}\n",
                       s.retention ? format_duration(*s.retention) : "- (the broker's)");
    out += fmt::format("expires-in:  {}\n",
                       s.expires_in ? format_duration(*s.expires_in) : "- (none)");
    if (s.held) out += fmt::format("held:        {}\n", *s.held);
    return out;
}

QueueCommands add_queue_commands(CLI::App& app) {
    auto args = std::make_shared<Args>();
    auto* queue = app.add_subcommand("queue", "Show or change a queue's limits.");
    queue->require_subcommand(1);

    auto* set = queue->add_subcommand(
        "set",
        "Limit a queue: at most N of its jobs running at once, at most N started per DUR, across "
        "all workers and brokers.");
    set->add_option("queue", args->queue, "queue name")->check(name_check())->required();
    set->add_option("--max-running", args->max_running,
                    "at most N jobs running at once (1-1000000), counted over every worker and "
                    "broker")
        ->check(max_running_check())
        ->type_name("N");
    set->add_option("--rate", args->rate,
                    "at most N jobs started in any window of DUR (50/s, 1000/min, 5/10s)")
        ->check(rate_check())
        ->type_name("N/DUR");
    set->add_option("--max-attempts", args->max_attempts,
                    "default attempts of its jobs that do not set their own (1-1000)")
        ->check(CLI::Range(1U, limits::kMaxMaxAttempts).description(""))
        ->type_name("N");
    set->add_option("--timeout", args->timeout,
                    "default timeout of its jobs that do not set their own")
        ->check(duration_check(limits::kMaxTimeoutMs))
        ->type_name("DUR");
    set->add_option("--priority", args->priority,
                    "default priority of its jobs that do not set their own (-1000..1000)")
        ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority).description(""))
        ->type_name("N");
    set->add_option("--retention", args->retention,
                    "its finished jobs are deleted after DUR instead of the broker's --retention "
                    "(dead ones keep --dead-retention)")
        ->check(duration_check(limits::kMaxDelayMs))
        ->type_name("DUR");
    set->add_option("--expires-in", args->expires_in,
                    "its jobs submitted without an expiry of their own expire DUR after submission")
        ->check(duration_check(limits::kMaxDelayMs))
        ->type_name("DUR");
    set->add_flag("--json", args->json, "print the queue's settings as a JSON object");

    auto* unset = queue->add_subcommand("unset", "Remove a queue's limits.");
    unset->add_option("queue", args->queue, "queue name")->check(name_check())->required();
    unset->add_flag("--max-running", args->unset_max_running, "remove the max-running limit");
    unset->add_flag("--rate", args->unset_rate, "remove the rate limit");
    unset->add_flag("--max-attempts", args->unset_max_attempts, "remove the default attempts");
    unset->add_flag("--timeout", args->unset_timeout, "remove the default timeout");
    unset->add_flag("--priority", args->unset_priority, "remove the default priority");
    unset->add_flag("--retention", args->unset_retention,
                    "remove the queue's retention (the broker's --retention applies)");
    unset->add_flag("--expires-in", args->unset_expires_in, "remove the default expiry");
    unset->add_flag("--json", args->json, "print the queue's settings as a JSON object");

    auto* show = queue->add_subcommand("show", "Show a queue's limits.");
    show->add_option("queue", args->queue, "queue name")->check(name_check())->required();
    show->add_flag("--json", args->json, "print a JSON object");

    QueueCommands out;
    out.queue = queue;
    out.run = [args, set, unset](Client& client) -> int {
        if (set->parsed()) {
            if (!args->max_running && !args->rate && !args->max_attempts && !args->timeout &&
                !args->priority && !args->retention && !args->expires_in)
                throw std::invalid_argument(
                    "queue set needs a setting: --max-running, --rate, --max-attempts, "
                    "--timeout, --priority, --retention or --expires-in (see errand queue set "
                    "--help)");
            QueueSettings s;
            s.queue = args->queue;
            s.max_running = args->max_running;
            if (args->rate) {
                auto r = parse_rate(*args->rate);
                s.rate = r->first;
                s.rate_per = std::chrono::milliseconds(r->second);
            }
            s.max_attempts = args->max_attempts;
            if (args->timeout)
                s.timeout = std::chrono::milliseconds(*parse_duration(*args->timeout));
            s.priority = args->priority;
            if (args->retention)
                s.retention = std::chrono::milliseconds(*parse_duration(*args->retention));
            if (args->expires_in)
                s.expires_in = std::chrono::milliseconds(*parse_duration(*args->expires_in));
            return print(client.queue_set(s), args->json);
        }
        if (unset->parsed()) {
            std::vector<std::string> names;
            if (args->unset_max_running) names.emplace_back("max_running");
            if (args->unset_rate) names.emplace_back("rate");
            if (args->unset_max_attempts) names.emplace_back("max_attempts");
            if (args->unset_timeout) names.emplace_back("timeout");
            if (args->unset_priority) names.emplace_back("priority");
            if (args->unset_retention) names.emplace_back("retention");
            if (args->unset_expires_in) names.emplace_back("expires_in");
            if (names.empty())
                throw std::invalid_argument(
                    "queue unset needs the settings to remove: --max-running, --rate, "
                    "--max-attempts, --timeout, --priority, --retention, --expires-in");
            return print(client.queue_unset(args->queue, names), args->json);
        }
        return print(client.queue_settings(args->queue), args->json);
    };
    return out;
}

}  // namespace errand::cli
