// Where the library's own log lines go. Only the Worker logs (registering, reconnecting, results
// refused as stale, draining); each Worker sends its lines to WorkerOptions::log, so an
// application routes them into its own logging, or silences them with an empty function.
#pragma once

#include <functional>
#include <string_view>

namespace errand {

enum class LogLevel { debug, info, warn, error };

// "debug", "info", "warn", "error".
std::string_view to_string(LogLevel level);

// Receives one line (no trailing newline). Called from the worker's network thread; it must not
// block for long, and must be thread-safe if several Workers share it.
using LogFn = std::function<void(LogLevel level, std::string_view message)>;

// Lines at `min` and above written to stderr as "errand: warn: message" (the default).
LogFn stderr_log(LogLevel min = LogLevel::info);

}  // namespace errand
