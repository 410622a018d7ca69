// The job reaper process (reaper.hpp): its start, its loop, and the records jobs and the daemon
// send it.
#include "reaper.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <set>
#include <system_error>
#include <utility>

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

// The reaper's whole life; `fd` is its end of the pair.
[[noreturn]] void reaper_main(int fd) {
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
    ::_exit(0);
}

}  // namespace

Reaper Reaper::start() {
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
        reaper_main(fd);
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
