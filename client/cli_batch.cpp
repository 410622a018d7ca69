// `errand batch …` (cli_batch.hpp).
#include "cli_batch.hpp"

#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <limits>
#include <memory>

#include "cli_bulk.hpp"
#include "cli_exit.hpp"
#include "cli_output.hpp"
#include "errand/duration.hpp"
#include "errand/json.hpp"

namespace errand::cli {
namespace {

struct OpenArgs {
    std::string description;
    std::optional<std::string> on_complete;  // the callbacks' queues
    std::optional<std::string> on_success;
    std::optional<std::uint32_t> max_attempts;
    std::optional<std::int32_t> priority;
};

struct Args {
    OpenArgs open;
    std::string jsonl;              // submit: the members, one JSON object a line
    std::string queue = "default";  // submit: of a line that names none
    JobId id = 0;                   // seal, status
    bool json = false;              // status: one object; list: an array
    std::uint32_t limit = limits::kDefaultListLimit;
    std::optional<JobId> before;
};

CLI::Validator queue_name_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (valid_queue_name(text)) return {};
            return fmt::format("invalid queue name '{}' (1-64 characters of A-Z a-z 0-9 _ . -)",
                               text);
        },
        "");
}

Timestamp now_time() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
}

std::string when(const std::optional<Timestamp>& t, Timestamp now) {
    if (!t) return "-";
    return fmt::format("{} ({})", format_time(*t), format_age(*t, now));
}

std::string callback(const std::optional<JobSpec>& spec, const std::optional<JobId>& job) {
    if (!spec) return "-";
    std::string out = "queue " + spec->queue;
    if (spec->argv) out += " argv " + shell_join(*spec->argv);
    out += job ? fmt::format(" -> job {}", *job) : std::string(" (not yet)");
    return out;
}

}  // namespace

std::string batch_text(const BatchInfo& b, Timestamp now) {
    std::string out;
    auto line = [&](std::string_view key, const std::string& value) {
        out += fmt::format("{:<13}{}\n", fmt::format("{}:", key), value);
    };
    line("batch", std::to_string(b.id));
    line("state", b.state);
    if (!b.description.empty()) line("description", b.description);
    line("jobs", fmt::format("{} ({} pending, {} succeeded, {} dead, {} cancelled, {} expired)",
                             b.total, b.pending, b.succeeded, b.dead, b.cancelled, b.expired));
    line("created", format_time(b.created_at));
    line("sealed", when(b.sealed_at, now));
    line("completed", when(b.completed_at, now));
    line("succeeded", when(b.succeeded_at, now));
    // BATCH_LIST leaves the callbacks' specs out: then only their jobs are known.
    if (b.on_complete || b.complete_job)
        line("on complete", callback(b.on_complete, b.complete_job));
    if (b.on_success || b.success_job) line("on success", callback(b.on_success, b.success_job));
    return out;
}

std::string batches_table(const std::vector<BatchInfo>& all) {
    auto row = [&](std::string_view id, std::string_view state, std::string_view total,
                   std::string_view pending, std::string_view ok, std::string_view failed,
                   std::string_view created, std::string_view description) {
        return fmt::format("{:<8}  {:<9}  {:>7}  {:>7}  {:>9}  {:>6}  {:<24}  {}\n", id, state,
                           total, pending, ok, failed, created, description);
    };
    std::string out =
        row("ID", "STATE", "JOBS", "PENDING", "SUCCEEDED", "FAILED", "CREATED", "DESCRIPTION");
    for (const auto& b : all)
        out +=
            row(std::to_string(b.id), b.state, std::to_string(b.total), std::to_string(b.pending),
                std::to_string(b.succeeded), std::to_string(b.dead + b.cancelled + b.expired),
                format_time(b.created_at), b.description);
    return out;
}

BatchCommands add_batch_commands(CLI::App& app, const std::vector<std::string>& job_argv) {
    auto args = std::make_shared<Args>();
    BatchCommands out;
    auto* batch = app.add_subcommand(
        "batch", "Batches: jobs that finish together, with a callback job when they have.");
    batch->require_subcommand(1);
    batch->footer(
        "A batch: open it, submit its jobs with --batch ID (or \"batch\" in --jsonl lines),\n"
        "seal it. Once sealed and every job has finished, the --on-complete job is submitted\n"
        "(whatever the outcome) and, when every job succeeded, the --on-success job; each\n"
        "once, with the batch's summary as its payload (JSON: counts and the failed ids).\n"
        "\n"
        "  B=$(errand batch open --on-success reports -- make-report)\n"
        "  errand submit --batch $B --payload a; errand submit --batch $B --payload b\n"
        "  errand batch seal $B");
    out.batch = batch;
    // batch open's options; batch submit's too.
    auto add_open_options = [&](CLI::App* sub) {
        sub->add_option("--description", args->open.description, "what the batch is, for people")
            ->check(CLI::Validator(
                [](std::string& text) -> std::string {
                    if (text.size() <= limits::kMaxBatchDescription) return {};
                    return fmt::format("at most {} bytes", limits::kMaxBatchDescription);
                },
                ""))
            ->type_name("TEXT");
        sub->add_option("--on-complete", args->open.on_complete,
                        "submit a job to QUEUE once every job has finished, whatever the outcome")
            ->check(queue_name_check())
            ->type_name("QUEUE");
        sub->add_option("--on-success", args->open.on_success,
                        "submit a job to QUEUE once every job has succeeded")
            ->check(queue_name_check())
            ->type_name("QUEUE");
        sub->add_option("--max-attempts", args->open.max_attempts,
                        "the callbacks' attempts (default: their queue's, else 3)")
            ->check(CLI::Range(1U, limits::kMaxMaxAttempts).description(""))
            ->type_name("N");
        sub->add_option("--priority", args->open.priority, "the callbacks' priority")
            ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority).description(""))
            ->type_name("N");
    };

    auto* open = batch->add_subcommand("open", "Open a batch and print its id.");
    open->footer(
        "Usage: errand batch open [OPTIONS] [-- ARGV...]\n"
        "ARGV: the callbacks' command line (the worker needs --allow-commands); the summary\n"
        "comes on its stdin as any payload does.");
    add_open_options(open);
    out.open = open;

    auto* submit = batch->add_subcommand(
        "submit", "Open a batch, submit --jsonl F's jobs into it, seal it, print its id.");
    submit->footer(
        "Usage: errand batch submit --jsonl F [OPTIONS] [-- ARGV...]\n"
        "F: one job a line, as errand submit --jsonl reads them (- = stdin); the options are\n"
        "batch open's. A bad line (or a lost broker) leaves the batch open with the jobs\n"
        "before it: the error names the batch and its lines.");
    submit->add_option("--jsonl", args->jsonl, "the jobs, one JSON object per line")
        ->required()
        ->type_name("F");
    submit->add_option("-q,--queue", args->queue, "the queue of a line that names none")
        ->check(queue_name_check())
        ->type_name("QUEUE")
        ->capture_default_str();
    out.submit = submit;
    add_open_options(submit);

    auto* seal = batch->add_subcommand(
        "seal", "Seal a batch: it takes no more jobs; its callbacks wait for those it has.");
    auto* status = batch->add_subcommand("status", "Show a batch: counts, times, callbacks.");
    status->alias("show");
    for (auto* sub : {seal, status})
        sub->add_option("id", args->id, "batch id")
            ->required()
            ->check(CLI::Range(std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max())
                        .description(""));
    status->add_flag("--json", args->json, "print one JSON object");
    auto* list = batch->add_subcommand("list", "Show the newest batches.");
    list->add_flag("--json", args->json, "print a JSON array");
    list->add_option("--limit", args->limit, "at most N")
        ->check(CLI::Range(1U, limits::kMaxBatchList).description(""))
        ->type_name("N")
        ->capture_default_str();
    list->add_option("--before", args->before, "only batches with ids below ID (the next page)")
        ->type_name("ID");

    out.run = [args, open, submit, seal, status, list, &job_argv](Client& c) -> int {
        const Timestamp now = now_time();
        if (open->parsed() || submit->parsed()) {
            const auto& a = args->open;
            if ((!job_argv.empty() || a.max_attempts || a.priority) && !a.on_complete &&
                !a.on_success) {
                std::cerr << "errand: -- ARGV, --max-attempts and --priority are the callbacks': "
                             "give --on-complete or --on-success\n";
                return kUsage;
            }
            auto spec = [&](const std::optional<std::string>& queue) -> std::optional<JobSpec> {
                if (!queue) return std::nullopt;
                JobSpec s;
                s.queue = *queue;
                if (!job_argv.empty()) s.argv = job_argv;
                s.max_attempts = a.max_attempts;
                s.priority = a.priority;
                return s;
            };
            auto b = c.batch_open(a.description, spec(a.on_complete), spec(a.on_success));
            if (submit->parsed()) {
                JsonlArgs jobs;
                jobs.path = args->jsonl;
                jobs.defaults.queue = args->queue;
                jobs.defaults.batch = b.id;
                jobs.print_ids = false;
                jobs.batch_fixed = true;
                try {
                    run_submit_jsonl(c, jobs);
                } catch (const std::exception& e) {
                    std::cerr << fmt::format(
                        "errand: batch {} stays open (seal it with errand "
                        "batch seal {} once its jobs are in)\n",
                        b.id, b.id);
                    throw;
                }
                b = c.batch_seal(b.id);
            }
            std::cout << b.id << '\n';
        } else if (seal->parsed()) {
            std::cout << batch_text(c.batch_seal(args->id), now);
        } else if (status->parsed()) {
            auto b = c.batch(args->id);
            if (args->json)
                std::cout << dump_json(to_json(b)) << '\n';
            else
                std::cout << batch_text(b, now);
        } else if (list->parsed()) {
            auto all = c.batches(args->limit, args->before);
            if (args->json) {
                Json arr = Json::array();
                for (const auto& b : all)
                    arr.push_back(to_json(b));
                std::cout << dump_json(arr) << '\n';
            } else {
                std::cout << batches_table(all);
            }
        }
        return 0;
    };
    return out;
}

}  // namespace errand::cli
