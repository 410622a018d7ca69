// `errand events`, `errand stats` and `errand workers`: the live picture of a broker; and
// `errand worker ...`, the control of running workers.
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

// `errand worker quiet|stop|resume NAME`, `errand worker concurrency NAME N`.
struct WorkerControlArgs {
    std::string action;  // one of kWorkerActions
    std::string worker;  // a name (all its instances) or an instance id
    std::int64_t concurrency = 0;
    bool json = false;
};
int run_worker_control(Client& client, const WorkerControlArgs& args);

}  // namespace errand::cli
