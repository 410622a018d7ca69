// The job reaper process (reaper.hpp): its start, its loop, and the records jobs and the daemon
// send it.
#include "reaper.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <set>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "job_cgroup.hpp"

namespace errand::workerd {
namespace {

constexpr int kMaxKillRounds = 100;  // kill(-pgid) again while the group still has members

bool send_record(int fd, std::int32_t record) noexcept {
    if (fd < 0) return true;
    ssize_t n = 0;
    do {
        n = ::send(fd, &record, sizeof record, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(sizeof record);
}

// Kills and removes the daemon's job cgroups (ROOT/job-DAEMON-*), waiting at most a second for
// them to empty.
void kill_job_cgroups(const std::string& root, pid_t daemon) {
    const std::string prefix = "job-" + std::to_string(daemon) + "-";
    std::vector<std::filesystem::path> left;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
        if (entry.path().filename().string().rfind(prefix, 0) != 0) continue;
        const int kill_fd = ::open((entry.path() / "cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC);
        if (kill_fd >= 0) {
            [[maybe_unused]] const ssize_t n = ::write(kill_fd, "1", 1);
            ::close(kill_fd);
        }
        left.push_back(entry.path());
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!left.empty() && std::chrono::steady_clock::now() < until) {
        std::erase_if(left, [](const auto& dir) { return ::rmdir(dir.c_str()) == 0; });
        if (!left.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// The reaper's whole life; `fd` is its end of the pair, `daemon` the errand-worker's pid.
[[noreturn]] void reaper_main(int fd, const std::string& cgroup_root, pid_t daemon) {
    ::prctl(PR_SET_NAME, "errand-reaper");
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
        ::signal(sig, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    std::set<pid_t> groups;
    while (true) {
        std::int32_t record = 0;
        const ssize_t n = ::recv(fd, &record, sizeof record, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n != static_cast<ssize_t>(sizeof record)) break;  // EOF: the daemon is gone
        if (record > 0)
            groups.insert(record);
        else if (record < 0)
            groups.erase(-record);
    }
    for (pid_t group : groups) {
        // A member forking while the signal goes out could leave a newcomer: repeat until the
        // group is empty (ESRCH), a bounded number of times.
        for (int round = 0; round < kMaxKillRounds && ::kill(-group, SIGKILL) == 0; ++round) {
        }
    }
    if (!cgroup_root.empty()) kill_job_cgroups(cgroup_root, daemon);
    ::_exit(0);
}

}  // namespace

Reaper Reaper::start(const std::string& cgroup_root) {
    const pid_t daemon = ::getpid();
    std::array<int, 2> pair{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair.data()) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int error = errno;
        ::close(pair[0]);
        ::close(pair[1]);
        throw std::system_error(error, std::generic_category(), "fork");
    }
    if (pid == 0) {
        ::close(pair[0]);
        // Nothing of the daemon's but stdin, stdout and stderr stays open in the reaper.
        const int fd = ::dup2(pair[1], 3) < 0 ? pair[1] : 3;
        if (fd == 3) {
            ::close_range(4, ~0U, 0);
        }
        reaper_main(fd, cgroup_root, daemon);
    }
    ::close(pair[1]);
    Reaper reaper;
    reaper.fd_ = pair[0];
    reaper.pid_ = pid;
    return reaper;
}

Reaper::~Reaper() {
    reset();
}

Reaper::Reaper(Reaper&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pid_(std::exchange(other.pid_, -1)) {}

Reaper& Reaper::operator=(Reaper&& other) noexcept {
    if (this != &other) {
        reset();
        fd_ = std::exchange(other.fd_, -1);
        pid_ = std::exchange(other.pid_, -1);
    }
    return *this;
}

void Reaper::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (pid_ > 0) {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
    pid_ = -1;
}

bool reaper_add(int fd, pid_t pgid) noexcept {
    return send_record(fd, pgid);
}

bool reaper_remove(int fd, pid_t pgid) noexcept {
    return send_record(fd, -pgid);
}

}  // namespace errand::workerd
