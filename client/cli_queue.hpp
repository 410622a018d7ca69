// `errand queue set|unset|show`: a queue's limits (docs/PROTOCOL.md, QUEUE_SET). Kept apart
// from cli_main.cpp, which only registers them.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "errand/client.hpp"

namespace errand::cli {

struct QueueCommands {
    CLI::App* queue = nullptr;  // parsed(): one of its subcommands runs
    std::function<int(Client&)> run;
};

// Adds `queue` and its subcommands to `app`. The entry returns an exit code; a usage error
// (no setting given) throws std::invalid_argument, the broker's refusals are BrokerError.
QueueCommands add_queue_commands(CLI::App& app);

// `queue show`: aligned "key: value" lines.
std::string queue_settings_text(const QueueSettings& s);

}  // namespace errand::cli
