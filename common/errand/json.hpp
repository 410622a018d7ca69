// JSON forms of the protocol's objects, generated from their field tables (common/tables.hpp):
// the CLI's --json output and the broker's HTTP API print these, so a field added to a table
// appears in both. Every key of the table is present (absent values are null), in table order;
// times are RFC 3339 UTC strings with milliseconds ("2026-12-01T10:00:00.123Z"); durations
// (`timeout_ms`) and counts stay integers; bytes (`result`) are strings.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "errand/codec.hpp"

namespace errand {

using Json = nlohmann::ordered_json;

Json to_json(const JobInfo& job);
Json to_json(const Event& event);     // HISTORY's events
Json to_json(const JobEvent& event);  // FEED, the events stream, /api/events
Json to_json(const QueueInfo& queue);
Json to_json(const QueueStats& queue);
Json to_json(const WorkerInfo& worker);
Json to_json(const WorkerJob& job);
Json to_json(const StatsReply& stats);
Json to_json(const Schedule& schedule);
Json to_json(const BatchInfo& batch);
Json to_json(const QueueSettings&
                 s);  // QUEUE without its req  // its job as in SUBMIT (payload as a string)

// A JSON time: the RFC 3339 string, or null.
Json json_time(const std::optional<Timestamp>& t);

// One line of JSON; bytes that are not UTF-8 become U+FFFD instead of failing.
std::string dump_json(const Json& j);

}  // namespace errand
