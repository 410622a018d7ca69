// Many jobs at once from the `errand` CLI: `submit --jsonl FILE|-` (one job per line, sent in
// batches that the broker commits whole) and the progress line that it and `wait ID...` draw on a
// terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "errand/client.hpp"

namespace errand::cli {

// A one-line progress display on stderr when it is a terminal: "[####....] 3000/10000 jobs
// submitted  1520/s  ETA 5s" (no bar or ETA without a total), redrawn at most ten times a second.
// When stderr is not a terminal it draws nothing; finish() prints its summary either way.
class Progress {
  public:
    Progress(std::string what, std::optional<std::uint64_t> total);
    bool on_tty() const { return tty_; }
    // `done` so far and a note shown after it ("2 failed"); `force` redraws even if drawn just now.
    void update(std::uint64_t done, std::string_view note = {}, bool force = false);
    // Erases the line, so that other output can be written; the next update() draws it again.
    void clear();
    // Replaces the line by `summary` (and a newline), on a terminal or not.
    void finish(std::string_view summary);
    std::chrono::steady_clock::duration elapsed() const;

  private:
    std::string what_;
    std::optional<std::uint64_t> total_;
    bool tty_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point start_, last_draw_{};
};

// "BASE[,CAP]" durations with CAP >= BASE, each at most limits::kMaxDelayMs; throws
// std::invalid_argument with a message for people.
struct Backoff {
    Millis base = 0;
    std::optional<Millis> cap;
};
Backoff parse_backoff(std::string_view text);

struct JsonlArgs {
    std::string path;  // "-" for stdin
    JobSpec defaults;  // what a line does not set (from submit's other options)
    std::size_t batch = limits::kMaxBatch;
    bool print_ids = true;     // false: nothing on stdout (errand batch submit prints the batch)
    bool batch_fixed = false;  // lines may not name a batch (errand batch submit's own)
};

// Thrown for a bad line, with "FILE:LINE: why" and what was submitted before it; run_submit_jsonl
// has printed the ids submitted so far. The CLI exits kUsage.
class JsonlError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Reads one JSON object per line (blank lines are skipped), with the SUBMIT job keys of
// docs/PROTOCOL.md: queue, payload (a string), argv, max_attempts, token, priority, run_at
// (RFC 3339 or ms since the epoch), delay_ms, timeout_ms, backoff_ms, backoff_cap_ms (integer
// ms or a duration such as "1h30m"), unique, expires_at, expires_in_ms, after (an array of job
// ids) and after_any (a bool), as --after and --after-any. Submits them in batches of at most
// `batch` jobs (and 16 MiB), each committed whole by the broker, and prints the ids in input order,
// one per line, as each batch is committed. A regular file is checked whole before anything is
// sent, so a bad line there submits nothing; from a pipe, the batches before the bad line's are
// submitted. Returns kOk; throws JsonlError, BrokerError or ConnectionError, each naming the
// lines that were and were not submitted.
int run_submit_jsonl(Client& client, const JsonlArgs& args);

}  // namespace errand::cli
