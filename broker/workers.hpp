// The worker registry: each registered worker's connection, declared queues and slots, its
// credit (how many more jobs it may be sent), and the attempts it holds. Registrations are keyed
// by the worker's instance id, which survives reconnects; connections (ROUTER identities) map to
// instances. The job rules are the engine's; this only knows who is connected and can take work.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "errand/codec.hpp"
#include "live.hpp"

namespace errand::broker {

class JobEngine;

struct WorkerRec {
    std::string identity;  // the connection it registered on
    HolderRef holder;      // instance and name, shared with the engine's running jobs
    std::string host;
    std::uint64_t pid = 0;
    std::vector<std::string> queues;
    std::uint32_t concurrency = 1;
    std::uint32_t prefetch = 0;
    bool commands = false;
    std::vector<std::uint32_t> weights;  // empty: strict order
    std::uint32_t credit = 0;
    bool draining = false;  // sent DRAIN: takes no more jobs, whatever CREDIT says
    // `errand worker quiet`: takes no more jobs until resumed, whatever CREDIT says. The worker
    // remembers it too and registers again as quiet (REGISTER `state`), so it survives a
    // reconnect or a failover without the broker keeping anything per worker name.
    bool quiet = false;
    Millis last_seen = 0;                           // wall time, for WORKERS
    Millis last_heard = 0;                          // monotonic: expiry
    std::uint64_t reconnects = 0;                   // as the worker counts them (REGISTER)
    std::uint64_t seq = 0;                          // last DISPATCH.seq sent
    std::unordered_map<JobId, std::uint64_t> jobs;  // job -> its DISPATCH.seq (0: adopted)

    const std::string& instance() const { return holder->instance; }
    const std::string& name() const { return holder->name; }
    // CREDIT: never more than the slots it declared (concurrency + prefetch) minus the jobs it
    // holds, whatever a confused worker sends.
    void add_credit(std::uint32_t n);
    // After its concurrency shrank: credit cut back under that same bound.
    void cap_credit();
    // What WORKERS and CONTROL call it: stopping (draining), quiet, or active.
    std::string_view state() const;
};

class Workers {
  public:
    // The registration of a connection, or null.
    WorkerRec* of(const std::string& identity);
    // Throws ProtocolError(not_registered) for a connection that has not registered.
    WorkerRec& registered(const std::string& identity);
    WorkerRec* by_instance(const std::string& instance);

    // REGISTER: the record for m.instance on `identity`, fresh or the one it had (its jobs kept,
    // everything else replaced). When `identity` was registered as another instance, that one is
    // returned in `replaced` (and removed from the registry) for its jobs to be lost.
    WorkerRec& enroll(const std::string& identity, const RegisterRequest& m, Millis now,
                      std::vector<WorkerRec>* replaced);
    // The registrations WORKER_CONTROL's `worker` names: the one with that instance id, or every
    // one with that name.
    std::vector<WorkerRec*> named(const std::string& worker);
    // Removes a registration (lost or replaced).
    void remove(const std::string& instance);

    // The queue a worker takes its next job from: strict order, or weighted random choice among
    // the queues that have work for it; null when none has.
    const std::string* pick_queue(const WorkerRec& w, const JobEngine& engine);

    // Every running job a registered worker holds, and its holder (for JobEngine::rebuild).
    std::unordered_map<JobId, HolderRef> held() const;

    std::unordered_map<std::string, WorkerRec>& all() { return workers_; }
    const std::unordered_map<std::string, WorkerRec>& all() const { return workers_; }
    std::size_t size() const { return workers_.size(); }

  private:
    std::unordered_map<std::string, WorkerRec> workers_;        // by instance
    std::unordered_map<std::string, std::string> instance_of_;  // identity -> instance
    std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace errand::broker
