// The job reaper: a small process errand-worker forks at start-up that SIGKILLs the process group
// of every job still running when the daemon dies, however it dies (SIGKILL included).
#pragma once

#include <sys/types.h>

#include <string>

namespace errand::workerd {

// Why a process of its own: PR_SET_PDEATHSIG (process.cpp) reaches only a job's leader, the
// process the daemon forks. Whatever the leader starts (`cmd &`, the stages of a pipeline) is in
// the job's process group but no child of ours: when the leader dies it is reparented to init and
// runs on, beside the retry of its job on another worker. No kernel mechanism kills a group
// when some process dies, so a process that outlives the daemon does it.
//
// The reaper holds one end of a SOCK_SEQPACKET socket pair whose other end only the daemon holds
// (CLOEXEC: jobs never inherit it). Each record is one native-endian int32:
//   +PGID  a job's group exists. Sent by the job's leader itself, between vfork and exec, so no
//          instant exists where the job runs and the reaper does not know it.
//   -PGID  the daemon is done with the group: sent after the group was SIGKILLed and before the
//          leader is reaped, while the zombie leader keeps the id from being reused.
// At EOF (the daemon exited or was killed) the reaper SIGKILLs every group still listed, and
// with a job cgroup root (job_cgroup.hpp) every job cgroup of the daemon's (ROOT/job-PID-*,
// through cgroup.kill: what left its group dies too) and removes them, then exits. It ignores
// SIGINT, SIGTERM and SIGHUP: a terminal's Ctrl-C or systemd's stop reach the whole process group
// or cgroup, and the reaper must outlive the daemon's drain.
class Reaper {
  public:
    // No reaper: fd() is -1 and jobs are on their own.
    Reaper() = default;
    // Forks the reaper. Call before any thread exists: the child runs ordinary C++ after fork.
    // `cgroup_root`: where this daemon makes its jobs' cgroups, or empty. Throws
    // std::system_error when the socket pair or fork fail.
    static Reaper start(const std::string& cgroup_root = {});
    // Closes our end; the reaper (with no group left to kill) exits and is reaped here.
    ~Reaper();
    Reaper(Reaper&& other) noexcept;
    Reaper& operator=(Reaper&& other) noexcept;
    Reaper(const Reaper&) = delete;
    Reaper& operator=(const Reaper&) = delete;

    int fd() const { return fd_; }
    pid_t pid() const { return pid_; }

  private:
    void reset();
    int fd_ = -1;
    pid_t pid_ = -1;
};

// The records above on `fd` (nothing when fd < 0). Async-signal-safe: one send(MSG_NOSIGNAL), so
// a reaper that is gone is an error return, never a SIGPIPE. False when the send failed.
bool reaper_add(int fd, pid_t pgid) noexcept;
bool reaper_remove(int fd, pid_t pgid) noexcept;

}  // namespace errand::workerd
