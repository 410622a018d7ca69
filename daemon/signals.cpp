// SignalThread: sigwait on SIGINT, SIGTERM and SIGHUP.
#include "signals.hpp"

#include <pthread.h>

namespace errand::daemon {
namespace {

sigset_t daemon_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
}

}  // namespace

void SignalThread::block() {
    sigset_t set = daemon_signals();
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalThread::SignalThread(std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)), thread_([this] {
          sigset_t set = daemon_signals();
          for (;;) {
              int sig = 0;
              if (::sigwait(&set, &sig) != 0 || done_.load()) return;
              on_signal_(sig);
          }
      }) {}

SignalThread::~SignalThread() {
    done_.store(true);
    // Wakes the sigwait (the signal is blocked, so it is delivered to sigwait, not the process).
    ::pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
}

}  // namespace errand::daemon
