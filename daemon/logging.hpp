// The daemons' logging: spdlog's default logger writing human text (the default) or JSON lines,
// to stderr or to a file that SIGHUP reopens (for logrotate).
//
// JSON lines: one object per line, {"ts":"2026-11-28T22:41:07.123Z","level":"info",
// "logger":"errand-broker","msg":"…"}. A message that starts with the job prefix of
// errand/log_fields.hpp ("job=12 queue=emails attempt=2: dispatched") also gets the fields
// "job", "queue" and "attempt", and "msg" holds the rest.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/formatter.h>

namespace errand::daemon {

enum class LogFormat { text, json };

struct LogOptions {
    std::string name;  // the logger's name, e.g. errand-broker
    std::string level = "info";
    LogFormat format = LogFormat::text;
    std::string file;  // empty: stderr
};

// Installs the default logger. Throws std::runtime_error when the file cannot be opened.
void setup_logging(const LogOptions& options);
// Closes and reopens the log file, creating it anew if it was moved away. No-op on stderr.
// Thread-safe. Throws std::runtime_error when the file cannot be opened (logging carries on to
// the old file).
void reopen_logs();

std::optional<LogFormat> parse_log_format(std::string_view text);
std::unique_ptr<spdlog::formatter> make_json_formatter();

}  // namespace errand::daemon
