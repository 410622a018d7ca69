// Each job in a cgroup (v2) of its own, so that everything it starts is found and killed with it,
// also what leaves its process group (`setsid cmd &`, a daemon that double-forks): on timeout,
// cancel and drain, and when the job's own process exits. Without a cgroup the worker falls back
// to the job's process group (process.hpp).
#pragma once

#include <optional>
#include <string>

#include "errand/fd.hpp"

namespace errand::workerd {

// The cgroup v2 directory this process may create job cgroups in: its own cgroup, found through
// /proc/self/cgroup and the cgroup2 mount in /proc/self/mountinfo, when it can create a directory
// there (under systemd, the worker unit's Delegate=yes hands it its own cgroup). nullopt, with
// the reason in `why`, when there is none.
std::optional<std::string> find_job_cgroup_root(std::string* why);

// ROOT/NAME for one job run. The child joins it by writing "0" to procs_fd() between fork and
// exec. The destructor kills whatever is left in it, waits (at most a second) until it is empty
// and removes it.
class JobCgroup {
  public:
    // Throws std::system_error when the directory cannot be made or opened.
    JobCgroup(const std::string& root, const std::string& name);
    ~JobCgroup();
    JobCgroup(const JobCgroup&) = delete;
    JobCgroup& operator=(const JobCgroup&) = delete;

    int procs_fd() const { return procs_.get(); }
    const std::string& path() const { return path_; }
    // SIGKILL through cgroup.kill (Linux 5.14; else to each member), other signals to each
    // process in cgroup.procs but those of process group `skip_group` (which the caller
    // signals itself).
    void signal(int sig, int skip_group = 0) const;
    // True while a process is in it (cgroup.events "populated 1").
    bool populated() const;

  private:
    std::string path_;
    Fd procs_;
};

}  // namespace errand::workerd
