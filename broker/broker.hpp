// The broker: one single-threaded event loop over one ROUTER socket. Each pass receives what has
// arrived, runs the handlers, performs due timers (tick), hands ready jobs to workers with credit,
// commits everything in one transaction, and only then sends replies and dispatches.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "auth.hpp"
#include "errand/clock.hpp"
#include "errand/transport.hpp"
#include "snapshot.hpp"
#include "store.hpp"

namespace errand::broker {

// What the broker is doing, for a service manager's status line (systemd STATUS=).
struct BrokerStatus {
    std::uint64_t ready = 0;
    std::uint64_t running = 0;
    std::uint64_t scheduled = 0;  // scheduled and retrying: waiting for their time
    std::size_t workers = 0;
};

struct BrokerConfig {
    std::string listen = std::string(kDefaultEndpoint);
    Millis heartbeat_ms = 1000;
    Millis worker_timeout_ms = 5000;
    Millis retry_delay_ms = 1000;     // default backoff base
    Millis retry_cap_ms = 600'000;    // default backoff cap
    Millis timeout_grace_ms = 10000;  // a timed-out attempt without a result fails after this
    Millis retention_ms = 7 * 86'400'000LL;         // finished jobs are deleted after this
    Millis dead_retention_ms = 180 * 86'400'000LL;  // but dead ones after this
    std::size_t retention_batch = 500;              // rows deleted per pass at most
    std::size_t max_payload = limits::kDefaultMaxPayload;
    std::size_t max_result = limits::kDefaultMaxResult;
    std::size_t max_message = limits::kDefaultMaxMessage;
    std::size_t max_batch = limits::kMaxBatch;  // jobs per SUBMIT
    std::size_t max_waits = 1000;               // outstanding WAITs per connection
    std::size_t max_waits_total = 100'000;      // outstanding WAITs of all connections
    // A waiter whose client has not resent its WAIT for this long is dropped (PROTOCOL.md: a
    // client resends at least every limits::kWaitResendMs).
    Millis wait_idle_ms = 3 * limits::kWaitResendMs;
    std::size_t max_queues = 10'000;  // distinct queues at once
    std::size_t max_messages_per_pass = 4096;
    // CURVE: the broker's secret key (Z85) and who may connect. Without them, plain TCP.
    std::optional<std::string> curve_secret_key;
    std::shared_ptr<KeyRing> authorized_keys;  // re-read while the broker runs (auth.hpp)
    // Called from the loop (so it also proves the loop is alive, for a watchdog) at least every
    // status_interval_ms while run() serves. Must not block.
    std::function<void(const BrokerStatus&)> on_status;
    Millis status_interval_ms = 1000;
    // Observability (docs/OPERATIONS.md). With `snapshots` set, the loop publishes its live
    // picture (queues, workers, metrics, recent events) there every `snapshot_interval_ms`.
    std::shared_ptr<SnapshotHub> snapshots;
    Millis snapshot_interval_ms = 250;
    // An inproc:// endpoint in the broker's context that the loop serves like `listen` (the HTTP
    // API's retry/cancel go through it); empty: none.
    std::string admin_endpoint;
    // A PUB endpoint streaming committed job events (topic = queue name); empty: none.
    std::string events_endpoint;
};

class Broker {
  public:
    // Rebuilds the in-memory state from the store and binds the endpoint (throws on failure).
    Broker(BrokerConfig config, std::unique_ptr<Store> store, const Clock& clock);
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // Serves until stop(); finishes the current pass (commit and replies), then tells waiters
    // (ERROR shutting_down) and workers (SHUTDOWN) before returning.
    void run();
    // Async-signal-safe: only sets a flag.
    void stop() { stopping_.store(true, std::memory_order_relaxed); }

    // The bound endpoint (useful with tcp://127.0.0.1:0).
    std::string endpoint() const;
    // The bound events endpoint ("" without BrokerConfig::events_endpoint).
    std::string events_endpoint() const;
    // The ZeroMQ context of the broker's sockets (inproc:// peers must share it).
    zmq::context_t& context();

    // The seam for fuzzing and fault-injection tests: one pass of the loop over `message` at
    // time `now` (handle, tick, dispatch, commit), returning what it would have sent instead of
    // sending it. With BrokerConfig::listen empty the broker binds nothing. `mono` is the
    // monotonic time of the pass (Clock::monotonic_ms); by default the same as `now`.
    std::vector<Envelope> process(const Envelope& message, Millis now);
    std::vector<Envelope> process(const Envelope& message, Millis now, Millis mono);

  private:
    struct State;
    std::unique_ptr<State> s_;
    std::atomic<bool> stopping_{false};
};

}  // namespace errand::broker
