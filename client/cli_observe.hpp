// `errand events`, `errand stats` and `errand workers`: the live picture of a broker.
#pragma once

#include <optional>
#include <string>

#include "errand/client.hpp"

namespace errand::cli {

struct EventsArgs {
    bool follow = false;
    std::optional<std::string> queue;
    bool json = false;
    std::uint32_t limit = 20;  // recent events printed first (and alone without --follow)
    std::string endpoint;      // the PUB endpoint; empty: ask the broker (STATS)
};

// Prints recent events; with `follow`, then streams new ones until interrupted (or the process
// is killed). Returns an exit code.
int run_events(Client& client, const ClientOptions& options, const EventsArgs& args);
int run_stats(Client& client, bool json);
int run_workers(Client& client, bool json);

}  // namespace errand::cli
