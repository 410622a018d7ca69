// `errand schedule add|list|show|rm|pause|resume`: cron schedules (docs/PROTOCOL.md,
// SCHEDULE_ADD). Kept apart from cli_main.cpp, which only registers them.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "errand/client.hpp"

namespace errand::cli {

struct ScheduleCommands {
    CLI::App* schedule = nullptr;  // parsed(): one of its subcommands runs
    CLI::App* add = nullptr;       // the one that takes `-- ARGV...`
    std::function<int(Client&)> run;
};

// Adds `schedule` and its subcommands to `app`. `job_argv` (what followed "--") is read when
// `add` runs. The entry returns an exit code; the broker's refusals are BrokerError.
ScheduleCommands add_schedule_commands(CLI::App& app, const std::vector<std::string>& job_argv);

// `schedule show`: aligned "key: value" lines. `schedule list`: a table with a header row.
std::string schedule_text(const Schedule& s, Timestamp now);
std::string schedules_table(const std::vector<Schedule>& all, Timestamp now);

}  // namespace errand::cli
