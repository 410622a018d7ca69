// `errand batch open|seal|status|list`: batches of jobs with callbacks (docs/LIFECYCLE.md
// "Batches"). Kept apart from cli_main.cpp, which only registers them.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "errand/client.hpp"

namespace errand::cli {

struct BatchCommands {
    CLI::App* batch = nullptr;  // parsed(): one of its subcommands runs
    CLI::App* open = nullptr;   // these two take `-- ARGV...` (the callbacks' command line)
    CLI::App* submit = nullptr;
    std::function<int(Client&)> run;
};

// Adds `batch` and its subcommands to `app`. `job_argv` (what followed "--") is read when `open`
// runs. The entry returns an exit code; the broker's refusals are BrokerError.
BatchCommands add_batch_commands(CLI::App& app, const std::vector<std::string>& job_argv);

// `batch status`: aligned "key: value" lines. `batch list`: a table with a header row.
std::string batch_text(const BatchInfo& b, Timestamp now);
std::string batches_table(const std::vector<BatchInfo>& all);

}  // namespace errand::cli
