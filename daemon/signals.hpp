// The daemons' signals (SIGINT, SIGTERM, SIGHUP), taken by sigwait on a thread of their own, so
// handlers are ordinary code (they may log, lock, reopen files) and no library call in any
// other thread sees EINTR from them.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <thread>

namespace errand::daemon {

class SignalThread {
  public:
    // Blocks the signals in the calling thread; threads started later inherit the mask, so call
    // it before any other thread exists (ZeroMQ contexts, worker pools).
    static void block();

    // Runs `on_signal(signo)` on its own thread for every SIGINT, SIGTERM and SIGHUP.
    explicit SignalThread(std::function<void(int)> on_signal);
    ~SignalThread();
    SignalThread(const SignalThread&) = delete;
    SignalThread& operator=(const SignalThread&) = delete;

  private:
    std::atomic<bool> done_{false};
    std::function<void(int)> on_signal_;
    std::thread thread_;
};

}  // namespace errand::daemon
