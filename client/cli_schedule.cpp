// `errand schedule …` (cli_schedule.hpp).
#include "cli_schedule.hpp"

#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <memory>

#include "cli_output.hpp"
#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/json.hpp"

namespace errand::cli {
namespace {

struct AddArgs {
    std::string name;
    std::string cron;
    std::string zone = "UTC";
    std::string catch_up = "latest";
    std::string queue = "default";
    std::optional<std::string> payload;
    std::uint32_t max_attempts = limits::kDefaultMaxAttempts;
    std::int32_t priority = 0;
    std::optional<std::string> timeout;
    std::optional<std::string> backoff;  // BASE[,CAP]
    bool paused = false;
    std::optional<std::string> expires_in;
};

struct Args {
    AddArgs add;
    std::string name;   // show, rm, pause, resume
    bool json = false;  // list: a JSON array; show: one object
};

CLI::Validator duration_check(Millis max) {
    return CLI::Validator(
        [max](std::string& text) -> std::string {
            auto ms = parse_duration(text);
            if (!ms) return "'" + text + "' is not a duration (examples: 250ms, 5s, 2m, 1h30m)";
            if (*ms == 0) return "must be more than 0";
            if (*ms > max) return "must be at most " + format_duration(max);
            return {};
        },
        "");
}

CLI::Validator name_check(const char* what) {
    return CLI::Validator(
        [what](std::string& text) -> std::string {
            if (valid_queue_name(text)) return {};
            return fmt::format("invalid {} name '{}' (1-64 characters of A-Z a-z 0-9 _ . -)", what,
                               text);
        },
        "");
}

// "BASE[,CAP]": two durations, the cap not below the base; nullopt when it is not that.
std::optional<std::pair<Millis, std::optional<Millis>>> parse_backoff(std::string_view text) {
    auto comma = text.find(',');
    auto base = parse_duration(text.substr(0, comma));
    if (!base || *base > limits::kMaxDelayMs) return std::nullopt;
    if (comma == std::string_view::npos) return std::pair{*base, std::optional<Millis>{}};
    auto cap = parse_duration(text.substr(comma + 1));
    if (!cap || *cap > limits::kMaxDelayMs || *cap < *base) return std::nullopt;
    return std::pair{*base, std::optional<Millis>{*cap}};
}

Timestamp now_time() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
}

std::string when(const std::optional<Timestamp>& t, Timestamp now) {
    if (!t) return "-";
    return fmt::format("{} ({})", format_time(*t), format_age(*t, now));
}

std::string last_job(const Schedule& s) {
    if (!s.last_job) return "-";
    return fmt::format("{} {}", *s.last_job, s.last_state ? to_string(*s.last_state) : "gone");
}

}  // namespace

std::string schedule_text(const Schedule& s, Timestamp now) {
    std::string out;
    auto line = [&](std::string_view key, const std::string& value) {
        out += fmt::format("{:<11}{}\n", fmt::format("{}:", key), value);
    };
    line("name", s.name);
    line("cron", s.cron);
    line("zone", s.zone);
    line("catch-up", s.catch_up);
    line("queue", s.job.queue);
    if (s.job.argv) line("argv", shell_join(*s.job.argv));
    if (!s.job.payload.empty()) line("payload", fmt::format("{} bytes", s.job.payload.size()));
    if (s.job.expires_in) line("expires", format_duration(*s.job.expires_in) + " after each tick");
    line("paused", s.paused ? "yes" : "no");
    line("next", s.paused ? "- (paused)" : when(s.next_at, now));
    line("last", when(s.last_at, now));
    line("last job", last_job(s));
    line("created", format_time(s.created_at));
    return out;
}

std::string schedules_table(const std::vector<Schedule>& all, Timestamp now) {
    std::size_t wn = 4, wc = 4, wq = 5;
    for (const auto& s : all) {
        wn = std::max(wn, s.name.size());
        wc = std::max(wc, s.cron.size());
        wq = std::max(wq, s.job.queue.size());
    }
    auto row = [&](std::string_view name, std::string_view cron, std::string_view zone,
                   std::string_view queue, std::string_view paused, std::string_view next,
                   std::string_view last, std::string_view job) {
        return fmt::format("{:<{}}  {:<{}}  {:<16}  {:<{}}  {:<6}  {:<24}  {:<24}  {}\n", name, wn,
                           cron, wc, zone, queue, wq, paused, next, last, job);
    };
    std::string out = row("NAME", "CRON", "ZONE", "QUEUE", "PAUSED", "NEXT", "LAST", "LAST-JOB");
    for (const auto& s : all)
        out += row(s.name, s.cron, s.zone, s.job.queue, s.paused ? "yes" : "no",
                   s.paused || !s.next_at ? "-" : format_time(*s.next_at),
                   s.last_at ? format_time(*s.last_at) : "-", last_job(s));
    (void)now;
    return out;
}

ScheduleCommands add_schedule_commands(CLI::App& app, const std::vector<std::string>& job_argv) {
    auto args = std::make_shared<Args>();
    ScheduleCommands out;
    auto* sched = app.add_subcommand("schedule", "Cron schedules: jobs submitted at set times.");
    sched->require_subcommand(1);
    out.schedule = sched;

    auto* add = sched->add_subcommand("add", "Add a schedule: each tick of --cron submits a job.");
    add->footer(
        "Usage: errand schedule add NAME --cron EXPR [OPTIONS] [-- ARGV...]\n"
        "EXPR: 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second\n"
        "('*/10 * * * * *'), or @hourly @daily @weekly @monthly @yearly. Lists (1,15), ranges\n"
        "(MON-FRI), steps (*/5). --catch-up: ticks missed while no broker ran: none, latest\n"
        "(the most recent one fires), all (each, at most 100).");
    add->add_option("name", args->add.name, "schedule name")
        ->required()
        ->check(name_check("schedule"));
    add->add_option("--cron", args->add.cron, "when: a cron expression")
        ->required()
        ->type_name("EXPR");
    add->add_option("--tz", args->add.zone, "time zone of the expression (IANA name)")
        ->type_name("ZONE")
        ->capture_default_str();
    add->add_option("--catch-up", args->add.catch_up, "missed ticks: none, latest or all")
        ->check(CLI::IsMember({"none", "latest", "all"}))
        ->capture_default_str();
    add->add_option("-q,--queue", args->add.queue, "queue of the jobs")
        ->check(name_check("queue"))
        ->type_name("QUEUE")
        ->capture_default_str();
    add->add_option("--payload", args->add.payload, "payload bytes of each job")->type_name("TEXT");
    add->add_option("--max-attempts", args->add.max_attempts, "attempts before a job is dead")
        ->check(CLI::Range(1U, limits::kMaxMaxAttempts).description(""))
        ->type_name("N")
        ->capture_default_str();
    add->add_option("--priority", args->add.priority, "higher runs first")
        ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority).description(""))
        ->type_name("N")
        ->capture_default_str();
    add->add_option("--timeout", args->add.timeout, "stop and fail an attempt running longer")
        ->check(duration_check(limits::kMaxTimeoutMs))
        ->type_name("DUR");
    add->add_option("--backoff", args->add.backoff,
                    "wait BASE before a job's first retry, doubling up to CAP (e.g. 500ms,30s)")
        ->check(CLI::Validator(
            [](std::string& text) -> std::string {
                if (parse_backoff(text)) return {};
                return "'" + text + "' is not BASE[,CAP]: two durations, CAP not below BASE";
            },
            ""))
        ->type_name("BASE[,CAP]");
    add->add_flag("--paused", args->add.paused, "add it paused");
    add->add_option("--expires-in", args->add.expires_in,
                    "each job expires DUR after its tick if it has not started by then")
        ->check(duration_check(limits::kMaxDelayMs))
        ->type_name("DUR");
    out.add = add;

    auto* list =
        sched->add_subcommand("list", "Show every schedule: next and last tick, last job.");
    auto* show = sched->add_subcommand("show", "Show one schedule.");
    auto* rm = sched->add_subcommand("rm", "Remove a schedule (its jobs stay).");
    auto* pause = sched->add_subcommand("pause", "Stop a schedule's ticks until resumed.");
    auto* resume = sched->add_subcommand("resume", "Fire a paused schedule again, from now on.");
    for (auto* sub : {show, rm, pause, resume})
        sub->add_option("name", args->name, "schedule name")
            ->required()
            ->check(name_check("schedule"));
    list->add_flag("--json", args->json, "print a JSON array");
    show->add_flag("--json", args->json, "print one JSON object");

    out.run = [args, add, list, show, rm, pause, resume, &job_argv](Client& c) -> int {
        const Timestamp now = now_time();
        if (add->parsed()) {
            const auto& a = args->add;
            Schedule s;
            s.name = a.name;
            s.cron = a.cron;
            s.zone = a.zone;
            s.catch_up = a.catch_up;
            s.paused = a.paused;
            s.job.queue = a.queue;
            if (a.payload) s.job.payload = *a.payload;
            if (!job_argv.empty()) s.job.argv = job_argv;
            s.job.max_attempts = a.max_attempts;
            s.job.priority = a.priority;
            if (a.timeout) s.job.timeout = to_duration(parse_duration(*a.timeout));
            if (a.expires_in) s.job.expires_in = to_duration(parse_duration(*a.expires_in));
            if (a.backoff) {
                auto b = parse_backoff(*a.backoff);
                s.job.backoff = std::chrono::milliseconds(b->first);
                s.job.backoff_cap = to_duration(b->second);
            }
            auto added = c.schedule_add(s);
            std::cout << schedule_text(added, now);
        } else if (list->parsed()) {
            auto all = c.schedules();
            if (args->json) {
                Json out = Json::array();
                for (const auto& s : all)
                    out.push_back(to_json(s));
                std::cout << dump_json(out) << '\n';
            } else {
                std::cout << schedules_table(all, now);
            }
        } else if (show->parsed()) {
            auto s = c.schedule(args->name);
            if (args->json)
                std::cout << dump_json(to_json(s)) << '\n';
            else
                std::cout << schedule_text(s, now);
        } else if (rm->parsed()) {
            c.schedule_remove(args->name);
        } else if (pause->parsed()) {
            std::cout << schedule_text(c.schedule_pause(args->name), now);
        } else if (resume->parsed()) {
            std::cout << schedule_text(c.schedule_resume(args->name), now);
        }
        return 0;
    };
    return out;
}

}  // namespace errand::cli
