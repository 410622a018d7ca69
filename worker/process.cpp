// Running job processes: vfork/exec into a fresh process group, one poll() loop for stdin, stdout,
// stderr, progress, child exit, timeout and cancel; then the mapping from jobs to runs and runs
// to outcomes, and the parsers for progress lines and --queue flags.
#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errand/clock.hpp"
#include "errand/duration.hpp"
#include "errand/fd.hpp"
#include "job_cgroup.hpp"
#include "reaper.hpp"

extern char** environ;

namespace errand::workerd {
namespace {

constexpr Millis kPollMs = 50;     // the longest poll() wait: how often the cancel flag is read
constexpr Millis kDrainMs = 1000;  // how long the pipes may stay open once the child has exited
constexpr std::size_t kChunk = 64 * 1024;
constexpr int kSpawnFailed = 127;  // the shell's "command not found"
constexpr Millis kNever = std::numeric_limits<Millis>::max();

struct Pipe {
    Fd read;
    Fd write;
};

// Both ends O_CLOEXEC: a child that another thread forks at the same moment must not carry our
// ends past its exec (it would hold our stdout open, or our error pipe).
Pipe make_pipe() {
    std::array<int, 2> fds{};
    if (::pipe2(fds.data(), O_CLOEXEC) != 0)
        throw std::system_error(errno, std::generic_category(), "pipe");
    return {Fd(fds[0]), Fd(fds[1])};
}

void set_nonblocking(const Fd& fd) {
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0)
        throw std::system_error(errno, std::generic_category(), "fcntl");
}

// Blocks SIGPIPE in the calling thread while it lives. A SIGPIPE that our own writes raise stays
// pending on the thread; the destructor takes it off before the old mask returns, so it is never
// delivered. (One that was already pending before is left alone.)
class SigpipeBlock {
  public:
    SigpipeBlock() {
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
        sigset_t pending;
        sigemptyset(&pending);
        ::sigpending(&pending);
        was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    }
    ~SigpipeBlock() {
        if (!was_pending_) {
            timespec zero{};
            while (::sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
            }
        }
        ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

  private:
    sigset_t pipe_;
    sigset_t old_;
    bool was_pending_ = false;
};

// A forked child that leads its own process group (pgid == pid). Until it is reaped its pid, and
// so the group id, cannot be reused: exited() leaves it a zombie so kill(-pid) stays safe. If
// the run ends on an exception, the destructor kills the group and reaps the leader. With a
// reaper, wait() unregisters the group first, while the id is still ours.
class Child {
  public:
    // `cgroup`: the child's own cgroup, or null; it must outlive the Child.
    Child(pid_t pid, int reaper_fd, const JobCgroup* cgroup)
        : pid_(pid), reaper_fd_(reaper_fd), cgroup_(cgroup) {}
    ~Child() {
        if (!reaped_) {
            kill_group(SIGKILL);
            wait();
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    void kill_group(int sig) const {
        ::kill(-pid_, sig);
        if (cgroup_ != nullptr) cgroup_->signal(sig, pid_);
    }

    bool exited() const {
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
            return false;
        return info.si_pid == pid_;
    }

    // Reaps the child (blocking) and returns its wait status.
    int wait() {
        if (!reaper_remove(reaper_fd_, pid_)) warn_reaper_gone();
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        reaped_ = true;
        return status;
    }

  private:
    static void warn_reaper_gone() {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
            spdlog::warn(
                "the job reaper is gone: a job's background processes will not die with this "
                "worker if it is killed");
    }

    pid_t pid_;
    int reaper_fd_;
    const JobCgroup* cgroup_;
    bool reaped_ = false;
};

// Everything the child needs, built before vfork: in the child only async-signal-safe calls are
// allowed (other threads may hold the allocator's locks, and the child shares our memory), so no
// string is built in the child.
struct ExecPlan {
    std::vector<std::string> env_storage;
    std::vector<char*> argv;  // null-terminated, pointing into RunSpec::argv
    std::vector<char*> envp;  // null-terminated, pointing into env_storage
    std::vector<std::string> path_storage;
    std::vector<const char*> paths;  // where to look for argv[0], in order (execvp's PATH search)
    int max_fd = 1024;               // for closing fds when close_range is missing
};

std::string_view env_name(std::string_view entry) {
    return entry.substr(0, entry.find('='));
}

ExecPlan make_plan(const RunSpec& spec) {
    ExecPlan plan;
    for (const std::string& arg : spec.argv)
        plan.argv.push_back(const_cast<char*>(arg.c_str()));
    plan.argv.push_back(nullptr);

    std::vector<std::pair<std::string, std::string>> extra_env = spec.extra_env;
    if (spec.on_progress) extra_env.emplace_back("ERRAND_PROGRESS_FD", std::to_string(kProgressFd));
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        std::string_view name = env_name(*e);
        // systemd's notify variables belong to the daemon; a job that used them would speak
        // for the service (and NotifyAccess=main would drop it anyway).
        if (name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" || name == "WATCHDOG_PID") continue;
        bool replaced = std::any_of(extra_env.begin(), extra_env.end(),
                                    [&](const auto& kv) { return kv.first == name; });
        if (!replaced) plan.env_storage.emplace_back(*e);
    }
    for (const auto& [name, value] : extra_env)
        plan.env_storage.push_back(name + "=" + value);
    for (std::string& entry : plan.env_storage)
        plan.envp.push_back(entry.data());
    plan.envp.push_back(nullptr);

    // The PATH search uses the child's environment; glibc's default when PATH is unset.
    const std::string& prog = spec.argv.front();
    if (prog.find('/') != std::string::npos) {
        plan.path_storage.push_back(prog);
    } else if (!prog.empty()) {
        std::string_view path = "/bin:/usr/bin";
        for (const std::string& entry : plan.env_storage)
            if (env_name(entry) == "PATH") path = std::string_view(entry).substr(5);
        while (true) {
            std::size_t colon = path.find(':');
            std::string_view dir = path.substr(0, colon);
            plan.path_storage.push_back(fmt::format("{}/{}", dir.empty() ? "." : dir, prog));
            if (colon == std::string_view::npos) break;
            path.remove_prefix(colon + 1);
        }
    }
    for (const std::string& p : plan.path_storage)
        plan.paths.push_back(p.c_str());

    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        plan.max_fd = static_cast<int>(std::min<rlim_t>(lim.rlim_cur, 1 << 20));
    return plan;
}

// Tells the parent why exec failed, through the CLOEXEC error pipe, and exits.
[[noreturn]] void child_fail(int error_fd, int error) {
    ssize_t ignored = ::write(error_fd, &error, sizeof error);
    (void)ignored;
    ::_exit(kSpawnFailed);
}

// The child between vfork and exec. Async-signal-safe calls only. `fds` are the parent's fds
// that become the child's 0, 1, 2 and, when not -1, 3 (kProgressFd).
[[noreturn]] void exec_child(const ExecPlan& plan, std::array<int, 4> fds, int error_fd,
                             pid_t parent, int reaper_fd, int cgroup_fd) {
    ::setpgid(0, 0);
    // Into the job's cgroup before anything of the job runs ("0": the writing process). A
    // failure leaves it in the worker's cgroup, where the process group still reaches it.
    if (cgroup_fd >= 0) {
        [[maybe_unused]] const ssize_t joined = ::write(cgroup_fd, "0", 1);
    }
    // Die with the worker. PDEATHSIG fires when the forking *thread* exits; if the parent died
    // before prctl took effect, nobody would ever kill us, hence the getppid check. What we start
    // after exec is reached through the reaper, told of our group before anything else runs.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(kSpawnFailed);
    reaper_add(reaper_fd, ::getpid());

    // Dispositions first, then the mask (all signals are blocked since before vfork). The child
    // has its own copy of the dispositions: resetting them does not touch the worker's.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig)
        if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    // Lift every fd above the targets before the dup2s onto them, so none clobbers another
    // (the parent may run with 0-2 closed, and then pipe ends live there). The copies are
    // CLOEXEC; dup2 clears the flag on the targets.
    const int targets = fds[3] >= 0 ? 4 : 3;
    error_fd = ::fcntl(error_fd, F_DUPFD_CLOEXEC, targets);
    if (error_fd < 0) ::_exit(kSpawnFailed);
    for (int target = 0; target < targets; ++target) {
        int& fd = fds[static_cast<std::size_t>(target)];
        fd = ::fcntl(fd, F_DUPFD_CLOEXEC, targets);
        if (fd < 0) child_fail(error_fd, errno);
    }
    for (int target = 0; target < targets; ++target)
        if (::dup2(fds[static_cast<std::size_t>(target)], target) < 0) child_fail(error_fd, errno);
    // Everything above the targets closes at exec, the error pipe included.
    const auto first = static_cast<unsigned>(targets);
    if (::close_range(first, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = targets; fd < plan.max_fd; ++fd)
            ::fcntl(fd, F_SETFD, FD_CLOEXEC);

    // execvp's rules: skip candidates that do not exist, remember EACCES, stop on other errors.
    int error = ENOENT;
    for (const char* path : plan.paths) {
        ::execve(path, plan.argv.data(), plan.envp.data());
        if (errno == EACCES) {
            error = EACCES;
        } else if (errno != ENOENT && errno != ENOTDIR) {
            error = errno;
            break;
        }
    }
    child_fail(error_fd, error);
}

// now + ms, without overflow and before kNever.
Millis later(Millis now, Millis ms) {
    ms = std::max<Millis>(ms, 0);
    return ms < kNever - 1 - now ? now + ms : kNever - 1;
}

std::string cannot_run(const RunSpec& spec, int error) {
    return fmt::format("cannot run '{}': {}", spec.argv.empty() ? "" : spec.argv.front(),
                       std::generic_category().message(error));
}

// Appends to `out` what fits under `max`; true when something was left out.
bool append_bounded(std::string& out, std::string_view data, std::size_t max) {
    std::size_t room = max > out.size() ? max - out.size() : 0;
    out.append(data.substr(0, room));
    return data.size() > room;
}

void keep_tail(std::string& tail, std::string_view data, std::size_t max) {
    tail.append(data);
    if (tail.size() > 2 * max + kChunk) tail.erase(0, tail.size() - max);
}

// Reads one chunk from a pipe; at EOF or on an error other than EAGAIN the fd is closed.
std::string_view read_chunk(Fd& fd, std::vector<char>& buf) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n > 0) return {buf.data(), static_cast<std::size_t>(n)};
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) fd.reset();
    return {};
}

// Splits what the job writes to its progress fd into lines of at most kMaxProgressLine bytes
// (the rest of a longer line is dropped) and hands each to RunSpec::on_progress.
class ProgressReader {
  public:
    ProgressReader(const RunSpec& spec, pid_t pid) : spec_(spec), pid_(pid) {}

    void feed(std::string_view data) {
        while (!data.empty()) {
            std::size_t nl = data.find('\n');
            std::string_view part = data.substr(0, nl);
            if (!skipping_) {
                bool cut = append_bounded(line_, part, kMaxProgressLine);
                if (cut && nl == std::string_view::npos) {
                    deliver();  // the line's first kMaxProgressLine bytes; the rest is dropped
                    skipping_ = true;
                }
            }
            if (nl == std::string_view::npos) return;
            if (!skipping_) deliver();
            skipping_ = false;
            data.remove_prefix(nl + 1);
        }
    }
    // At the end of the run: a last line without '\n' counts too.
    void finish() {
        if (!line_.empty()) deliver();
        skipping_ = false;
    }

  private:
    void deliver() {
        if (std::optional<ProgressLine> p = parse_progress_line(line_))
            spec_.on_progress(p->percent, p->message);
        else
            spdlog::debug(
                "process {}: ignoring a progress line that is not "
                "'PERCENT[%] [MESSAGE]': '{}'",
                pid_, line_.substr(0, 80));
        line_.clear();
    }

    const RunSpec& spec_;
    pid_t pid_;
    std::string line_;
    bool skipping_ = false;  // the current line passed kMaxProgressLine and was delivered
};

}  // namespace

RunResult run_process(const RunSpec& spec) {
    RunResult result;
    const Millis start = steady_ms();
    auto spawn_failed = [&](int error) {
        result.exit_code = kSpawnFailed;
        result.spawn_error = cannot_run(spec, error);
        result.elapsed_ms = steady_ms() - start;
        return result;
    };
    if (spec.argv.empty() || spec.argv.front().empty()) return spawn_failed(ENOENT);

    SigpipeBlock sigpipe_block;
    ExecPlan plan = make_plan(spec);
    Pipe in, out, err, progress, exec_error;
    try {
        in = make_pipe();
        out = make_pipe();
        err = make_pipe();
        if (spec.on_progress) progress = make_pipe();
        exec_error = make_pipe();
    } catch (const std::system_error& e) {
        return spawn_failed(e.code().value());
    }

    // The job's own cgroup, when the worker has somewhere to make one; declared before the Child
    // so that it is removed after the child is reaped.
    std::optional<JobCgroup> cgroup;
    if (!spec.cgroup_root.empty()) {
        static std::atomic<std::uint64_t> runs{0};
        try {
            cgroup.emplace(spec.cgroup_root, fmt::format("job-{}-{}", ::getpid(), ++runs));
        } catch (const std::system_error& e) {
            spdlog::warn("cannot make a cgroup for a job ({}): it runs in its process group only",
                         e.what());
        }
    }

    // All signals stay blocked across vfork so no handler of ours runs in the child before it
    // resets them (the child shares our memory until it execs).
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    const pid_t parent = ::getpid();
    // vfork, not fork: the child borrows this process's memory until exec instead of copying its
    // page tables, and this thread waits meanwhile. fork in a process with a dozen threads made
    // the kernel write-protect every page (a TLB shootdown on every CPU) and the parent then take
    // copy-on-write faults: with jobs running /bin/true, errand-worker spent more CPU forking than
    // the jobs ran. exec_child only makes async-signal-safe system calls on data built before
    // (ExecPlan), writes nothing but its own frame, and ends in execve or _exit, which is what
    // vfork requires. (ASan intercepts vfork and cleans up the stack the child used.)
    const pid_t pid = ::vfork();
    if (pid == 0)
        exec_child(plan, {in.read.get(), out.write.get(), err.write.get(), progress.write.get()},
                   exec_error.write.get(), parent, spec.reaper_fd,
                   cgroup ? cgroup->procs_fd() : -1);
    const int fork_error = errno;  // (the child may have set errno too: read only on failure)
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return spawn_failed(fork_error);

    ::setpgid(pid, pid);  // also here, so kill(-pid) works before the child gets to it
    Child child(pid, spec.reaper_fd, cgroup ? &*cgroup : nullptr);
    in.read.reset();
    out.write.reset();
    err.write.reset();
    progress.write.reset();
    exec_error.write.reset();

    // EOF: exec succeeded (the pipe closed on exec). An int: errno of the failed exec.
    int exec_errno = 0;
    ssize_t got = 0;
    do {
        got = ::read(exec_error.read.get(), &exec_errno, sizeof exec_errno);
    } while (got < 0 && errno == EINTR);
    exec_error.read.reset();
    if (got == static_cast<ssize_t>(sizeof exec_errno)) {
        child.wait();
        return spawn_failed(exec_errno);
    }

    Fd stdin_fd = std::move(in.write);
    Fd stdout_fd = std::move(out.read);
    Fd stderr_fd = std::move(err.read);
    Fd progress_fd = std::move(progress.read);
    if (spec.stdin_data.empty()) stdin_fd.reset();
    for (const Fd* fd : {&stdin_fd, &stdout_fd, &stderr_fd, &progress_fd})
        if (*fd) set_nonblocking(*fd);
    ProgressReader progress_reader(spec, pid);
    // Readable when the child exits. Without pidfds, exits are noticed on the kPollMs tick.
    // (glibc 2.36's <sys/pidfd.h> lacks extern "C", hence the raw syscall.)
    Fd exit_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

    // Instants on the steady clock; kNever until they are set.
    const Millis deadline = spec.timeout ? later(start, *spec.timeout) : kNever;
    Millis kill_at = kNever;      // set with SIGTERM: when SIGKILL follows
    bool killed = false;          // SIGKILL sent
    Millis drain_until = kNever;  // set when the child exits
    std::size_t stdin_off = 0;
    std::vector<char> buf(kChunk);

    while (true) {
        const Millis now = steady_ms();
        const bool exited = drain_until != kNever;
        if (!exited && child.exited()) {
            // Stragglers (`cmd &`) die with their leader; the pipes then drain to EOF.
            child.kill_group(SIGKILL);
            stdin_fd.reset();
            exit_fd.reset();
            drain_until = now + kDrainMs;
            continue;
        }
        if (exited && ((!stdout_fd && !stderr_fd && !progress_fd) || now >= drain_until)) break;
        if (!exited && kill_at == kNever) {
            if (spec.cancel != nullptr && spec.cancel->load())
                result.cancelled = true;
            else if (spec.terminate != nullptr && spec.terminate->load())
                result.terminated = true;
            else if (now >= deadline)
                result.timed_out = true;
            if (result.cancelled || result.terminated || result.timed_out) {
                child.kill_group(SIGTERM);
                kill_at = later(now, spec.kill_grace_ms);
            }
        }
        if (!exited && !killed && now >= kill_at) {
            child.kill_group(SIGKILL);
            killed = true;
        }

        // Sleep until the next instant the loop acts at, but never past the next cancel check.
        Millis next = drain_until;
        if (!exited) next = kill_at == kNever ? deadline : killed ? kNever : kill_at;
        const Millis wait = std::clamp<Millis>(next - now, 0, kPollMs);
        std::array<pollfd, 5> pfds{};
        std::size_t count = 0;
        auto watch = [&](const Fd& fd, short events) {
            if (fd) pfds[count++] = {fd.get(), events, 0};
        };
        watch(stdin_fd, POLLOUT);
        watch(stdout_fd, POLLIN);
        watch(stderr_fd, POLLIN);
        watch(progress_fd, POLLIN);
        watch(exit_fd, POLLIN);
        if (::poll(pfds.data(), count, static_cast<int>(wait)) < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "poll");
        }
        auto ready = [&](const Fd& fd) {
            for (std::size_t i = 0; i < count; ++i)
                if (pfds[i].fd == fd.get()) return pfds[i].revents != 0;
            return false;
        };

        if (stdin_fd && ready(stdin_fd)) {
            std::size_t len = std::min(kChunk, spec.stdin_data.size() - stdin_off);
            ssize_t n = ::write(stdin_fd.get(), spec.stdin_data.data() + stdin_off, len);
            if (n > 0) stdin_off += static_cast<std::size_t>(n);
            // EPIPE: the child does not read its stdin, which is its right.
            if (stdin_off == spec.stdin_data.size() || (n < 0 && errno != EAGAIN && errno != EINTR))
                stdin_fd.reset();
        }
        if (stdout_fd && ready(stdout_fd)) {
            if (append_bounded(result.stdout_data, read_chunk(stdout_fd, buf), spec.max_output))
                result.truncated = true;
        }
        if (stderr_fd && ready(stderr_fd))
            keep_tail(result.stderr_tail, read_chunk(stderr_fd, buf), spec.stderr_tail);
        if (progress_fd && ready(progress_fd)) {
            progress_reader.feed(read_chunk(progress_fd, buf));
        }
    }
    progress_reader.finish();

    const int status = child.wait();
    if (WIFEXITED(status)) {
        result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        result.signal = WTERMSIG(status);
        result.exit_code = 128 + *result.signal;
    }
    if (result.stderr_tail.size() > spec.stderr_tail)
        result.stderr_tail.erase(0, result.stderr_tail.size() - spec.stderr_tail);
    if (result.timed_out) result.timeout_ms = *spec.timeout;
    result.elapsed_ms = steady_ms() - start;
    return result;
}

std::string signal_name(int sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

namespace {

// The stderr tail as a message: surrounding whitespace trimmed, and no torn UTF-8 sequence at
// the front (the tail may start in the middle of one).
std::string_view clean_tail(std::string_view tail) {
    while (!tail.empty() && (static_cast<unsigned char>(tail.front()) & 0xC0) == 0x80)
        tail.remove_prefix(1);
    const std::string_view space = " \t\r\n";
    std::size_t first = tail.find_first_not_of(space);
    if (first == std::string_view::npos) return {};
    return tail.substr(first, tail.find_last_not_of(space) - first + 1);
}

}  // namespace

Outcome outcome_of(const RunResult& run, std::size_t max_output,
                   std::optional<int> permanent_exit_code) {
    if (!run.spawn_error.empty()) return Outcome::failure(run.spawn_error, run.exit_code);

    std::string output = run.stdout_data;
    if (run.truncated || output.size() > max_output) {
        std::string marker = fmt::format("\n[errand: output truncated at {} bytes]", max_output);
        if (marker.size() > max_output) marker.resize(max_output);
        output.resize(std::min(output.size(), max_output - marker.size()));
        output += marker;
    }
    const bool stopped = run.timed_out || run.cancelled || run.terminated;
    if (run.exit_code == 0 && !run.signal && !stopped)
        return Outcome::success(std::move(output), 0);
    // The broker ignores the outcome of a cancelled attempt: no details.
    if (run.cancelled)
        return Outcome::failure("cancelled", run.exit_code, false, std::move(output));

    std::string error;
    if (run.timed_out)
        error = fmt::format("timed out after {}, ", format_duration(run.timeout_ms));
    else if (run.terminated)
        error = "terminated, the worker is stopping, ";
    if (run.signal)
        error += fmt::format("killed by signal {} ({})", signal_name(*run.signal), *run.signal);
    else
        error += fmt::format("exit code {}", run.exit_code);
    std::string_view tail = clean_tail(run.stderr_tail);
    if (!tail.empty()) {
        std::size_t room = limits::kMaxError - std::min(limits::kMaxError, error.size() + 2);
        if (tail.size() > room) tail = clean_tail(tail.substr(tail.size() - room));
        error += fmt::format(": {}", tail);
    }
    const bool permanent =
        !stopped && !run.signal && permanent_exit_code && run.exit_code == *permanent_exit_code;
    return Outcome::failure(std::move(error), run.exit_code, permanent, std::move(output));
}

Outcome run_job(const Job& job, const JobPolicy& policy) {
    RunSpec spec;
    if (job.argv) {
        if (!policy.allow_commands)
            return Outcome::failure(
                "this worker does not run job-supplied commands (start it with --allow-commands)",
                -1, true);
        if (job.argv->empty()) return Outcome::failure("the job's argv is empty", -1, true);
        spec.argv = *job.argv;
    } else if (policy.command) {
        spec.argv = {"/bin/sh", "-c", *policy.command};
    } else {
        return Outcome::failure(
            fmt::format("queue '{}' has no command on this worker and the job has no argv "
                        "(start the worker with --queue {}=COMMAND)",
                        job.queue, job.queue),
            -1, true);
    }
    spec.stdin_data = job.payload;
    spec.extra_env = {{"ERRAND_JOB_ID", std::to_string(job.id)},
                      {"ERRAND_QUEUE", job.queue},
                      {"ERRAND_ATTEMPT", std::to_string(job.attempt)}};
    // The broker's --max-result bounds it too: a result it refuses would never be applied.
    const std::size_t max_output = std::min(policy.max_output, job.max_result);
    spec.max_output = max_output;
    spec.timeout = job.timeout && job.timeout->count() > 0 ? std::optional(job.timeout->count())
                                                           : policy.default_timeout;
    spec.kill_grace_ms = policy.kill_grace_ms;
    spec.cancel = job.cancel_flag();
    spec.terminate = policy.terminate;
    spec.reaper_fd = policy.reaper_fd;
    spec.cgroup_root = policy.cgroup_root;
    spec.on_progress = [&job](std::uint32_t percent, std::string_view message) {
        job.progress(percent, std::string(message));
    };
    return outcome_of(run_process(spec), max_output, policy.permanent_exit_code);
}

namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_space(s.back()))
        s.remove_suffix(1);
    return s;
}

}  // namespace

std::optional<ProgressLine> parse_progress_line(std::string_view line) {
    line = trim(line);  // "  5%" from printf '%3d%%'
    std::size_t digits = 0;
    while (digits < line.size() && line[digits] >= '0' && line[digits] <= '9')
        ++digits;
    if (digits == 0 || digits > 3) return std::nullopt;
    std::uint32_t percent = 0;
    std::from_chars(line.data(), line.data() + digits, percent);
    if (percent > 100) return std::nullopt;
    std::string_view rest = line.substr(digits);
    if (!rest.empty() && rest.front() == '%') rest.remove_prefix(1);
    if (!rest.empty() && !is_space(rest.front())) return std::nullopt;

    std::string_view message = trim(rest);
    if (message.size() > limits::kMaxProgressMessage) {
        std::size_t cut = limits::kMaxProgressMessage;
        // Back off to the start of a UTF-8 sequence, which the byte after the cut must be.
        while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80)
            --cut;
        message = trim(message.substr(0, cut));
    }
    return ProgressLine{percent, std::string(message)};
}

QueueSpec parse_queue_spec(std::string_view text) {
    QueueSpec spec;
    std::size_t eq = text.find('=');
    std::string_view head = text.substr(0, eq);
    if (eq != std::string_view::npos) {
        spec.command = std::string(text.substr(eq + 1));
        if (spec.command->empty()) throw std::invalid_argument("the COMMAND after '=' is empty");
    }
    std::size_t colon = head.find(':');
    spec.name = std::string(head.substr(0, colon));
    if (!valid_queue_name(spec.name))
        throw std::invalid_argument(
            fmt::format("'{}' is not a queue name (1-{} characters of A-Z a-z 0-9 _ . -)",
                        spec.name, limits::kMaxQueueName));
    if (colon != std::string_view::npos) {
        std::string_view weight = head.substr(colon + 1);
        auto [end, ec] = std::from_chars(weight.data(), weight.data() + weight.size(), spec.weight);
        if (ec != std::errc() || end != weight.data() + weight.size() || spec.weight < 1 ||
            spec.weight > limits::kMaxQueueWeight)
            throw std::invalid_argument(fmt::format("the WEIGHT '{}' is not an integer 1-{}",
                                                    weight, limits::kMaxQueueWeight));
    }
    return spec;
}

}  // namespace errand::workerd
