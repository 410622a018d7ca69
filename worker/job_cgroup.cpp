// Job cgroups (job_cgroup.hpp): finding a writable cgroup v2 directory, one cgroup per job run.
#include "job_cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace errand::workerd {

namespace {

// The contents of a small kernel file, or "" when it cannot be read.
std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
}

bool write_text(const std::string& path, std::string_view text) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return false;
    return ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

// Removes the empty job cgroups of workers that are gone ("job-PID-N" with no process PID): a
// worker killed with SIGKILL cannot remove its own. rmdir fails on one that still has processes.
void sweep_stale(const std::string& root) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("job-", 0) != 0) continue;
        const auto dash = name.find('-', 4);
        if (dash == std::string::npos) continue;
        int pid = 0;
        const auto [end, err] = std::from_chars(name.data() + 4, name.data() + dash, pid);
        if (err != std::errc() || end != name.data() + dash || pid <= 0) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
        ::rmdir(entry.path().c_str());
    }
}

}  // namespace

std::optional<std::string> find_job_cgroup_root(std::string* why) {
    auto fail = [&](std::string reason) -> std::optional<std::string> {
        if (why) *why = std::move(reason);
        return std::nullopt;
    };
    // "0::/system.slice/errand-worker@emails.service": the v2 hierarchy's line.
    std::string own;
    std::istringstream cgroups(slurp("/proc/self/cgroup"));
    for (std::string line; std::getline(cgroups, line);) {
        if (line.rfind("0::", 0) == 0) own = line.substr(3);
    }
    if (own.empty()) return fail("this process is in no cgroup v2 hierarchy (/proc/self/cgroup)");
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
    std::string mount, mount_root;
    std::istringstream mounts(slurp("/proc/self/mountinfo"));
    for (std::string line; std::getline(mounts, line);) {
        std::istringstream fields(line);
        std::vector<std::string> f;
        for (std::string x; fields >> x;)
            f.push_back(x);
        std::size_t dash = 0;
        while (dash < f.size() && f[dash] != "-")
            ++dash;
        if (f.size() < 5 || dash + 1 >= f.size() || f[dash + 1] != "cgroup2") continue;
        mount_root = f[3];
        mount = f[4];
        break;
    }
    if (mount.empty()) return fail("no cgroup2 file system is mounted");
    // A mount of a sub-tree (in a container) shows the paths below its root.
    if (mount_root != "/" && own.rfind(mount_root, 0) == 0) own = own.substr(mount_root.size());
    std::string root = own == "/" ? mount : mount + own;
    while (root.size() > 1 && root.back() == '/')
        root.pop_back();
    const std::string probe = fmt::format("{}/errand-probe-{}", root, ::getpid());
    if (::mkdir(probe.c_str(), 0755) != 0) {
        return fail(fmt::format("cannot create a cgroup in {}: {}", root, std::strerror(errno)));
    }
    ::rmdir(probe.c_str());
    sweep_stale(root);
    return root;
}

JobCgroup::JobCgroup(const std::string& root, const std::string& name) : path_(root + "/" + name) {
    if (::mkdir(path_.c_str(), 0755) != 0 && errno != EEXIST)
        throw std::system_error(errno, std::generic_category(), "mkdir " + path_);
    procs_ = Fd(::open((path_ + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs_) {
        const int error = errno;
        ::rmdir(path_.c_str());
        throw std::system_error(error, std::generic_category(), "open " + path_ + "/cgroup.procs");
    }
}

void JobCgroup::signal(int sig, int skip_group) const {
    if (sig == SIGKILL && write_text(path_ + "/cgroup.kill", "1")) return;
    std::istringstream pids(slurp(path_ + "/cgroup.procs"));
    for (pid_t pid = 0; pids >> pid;) {
        if (pid > 0 && (skip_group == 0 || ::getpgid(pid) != skip_group)) ::kill(pid, sig);
    }
}

bool JobCgroup::populated() const {
    return slurp(path_ + "/cgroup.events").find("populated 1") != std::string::npos;
}

JobCgroup::~JobCgroup() {
    // Killed processes leave the cgroup when they have exited; rmdir fails (EBUSY) until then.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (true) {
        if (populated()) signal(SIGKILL);
        if (::rmdir(path_.c_str()) == 0 || errno == ENOENT) return;
        if (errno != EBUSY || std::chrono::steady_clock::now() >= until) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    spdlog::warn("cannot remove the job cgroup {}: {}", path_, std::strerror(errno));
}

}  // namespace errand::workerd
