// errand's asynchronous client: many requests in flight on one connection, results as futures.
//
//   errand::AsyncClient client({.endpoint = "tcp://127.0.0.1:7744"});
//   std::vector<std::future<std::vector<errand::Submitted>>> inflight;
//   for (auto& chunk : chunks) inflight.push_back(client.submit(std::move(chunk)));
//   for (auto& f : inflight) for (auto s : f.get()) ids.push_back(s.id);
//
// All methods are thread-safe. One I/O thread owns the socket; it resends unanswered requests
// (with the same idempotency tokens) every ClientOptions::resend and fails a future with
// ConnectionError after ClientOptions::timeout without a reply, or with BrokerError when the broker
// refuses.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <vector>

#include "errand/client.hpp"

namespace errand {

class AsyncClient {
  public:
    explicit AsyncClient(ClientOptions options = {});
    ~AsyncClient();
    AsyncClient(const AsyncClient&) = delete;
    AsyncClient& operator=(const AsyncClient&) = delete;

    // One SUBMIT (at most limits::kMaxBatch jobs, committed together); tokens are filled in.
    std::future<std::vector<Submitted>> submit(std::vector<JobSpec> jobs);
    std::future<JobInfo> status(JobId id);
    // The finished job, or nullopt when `timeout` passed first.
    std::future<std::optional<JobInfo>> wait(JobId id, std::chrono::milliseconds timeout);

    // Requests sent and not yet answered.
    std::size_t in_flight() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace errand
