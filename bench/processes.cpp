// Child processes, temp dirs, ports and the broker under test (processes.hpp).
#include "processes.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <zmq.hpp>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include "errand/codec.hpp"
#include "errand/transport.hpp"

extern char** environ;

namespace errand::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

TempDir::TempDir(const std::string& parent, bool keep) : keep_(keep) {
    std::string base = parent;
    if (base.empty()) {
        const char* t = std::getenv("TMPDIR");
        base = t && *t ? t : "/tmp";
    }
    std::string pattern = (fs::path(base) / "errand-bench-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
        throw std::system_error(errno, std::generic_category(), "mkdtemp in " + base);
    path_ = pattern;
}

TempDir::~TempDir() {
    if (keep_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
}

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        int e = errno;
        ::close(fd);
        throw std::system_error(e, std::generic_category(), "bind 127.0.0.1:0");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
}

fs::path self_dir() {
    return fs::read_symlink("/proc/self/exe").parent_path();
}

std::string default_broker_bin() {
    return (self_dir() / ".." / "broker" / "errand-broker").lexically_normal().string();
}

std::string default_worker_bin() {
    return (self_dir() / ".." / "worker" / "errand-worker").lexically_normal().string();
}

std::uint64_t rss_kib(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
    return 0;
}

namespace {

// The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// [0] state, [1] ppid, … [11] utime, [12] stime (proc(5)); empty when the process is gone.
std::vector<std::string> stat_fields(const fs::path& stat_file) {
    std::ifstream in(stat_file);
    std::string stat;
    std::getline(in, stat);
    const auto close = stat.rfind(')');
    std::vector<std::string> fields;
    if (close == std::string::npos) return fields;
    std::istringstream rest(stat.substr(close + 1));
    for (std::string f; rest >> f;)
        fields.push_back(f);
    return fields;
}

double cpu_of(const std::vector<std::string>& fields) {
    if (fields.size() < 13) return 0;
    const double ticks =
        std::strtod(fields[11].c_str(), nullptr) + std::strtod(fields[12].c_str(), nullptr);
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

double cpu_seconds(pid_t pid) {
    return cpu_of(stat_fields(fmt::format("/proc/{}/stat", pid)));
}

std::uint64_t write_bytes(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/io", pid));
    std::string key;
    std::uint64_t value = 0;
    while (in >> key >> value)
        if (key == "write_bytes:") return value;
    return 0;
}

std::map<pid_t, double> cpu_of_children(pid_t parent) {
    std::map<pid_t, double> out;
    out[parent] = cpu_seconds(parent);
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto fields = stat_fields(entry.path() / "stat");
        if (fields.size() >= 13 && std::stol(fields[1]) == parent)
            out[static_cast<pid_t>(std::stol(name))] = cpu_of(fields);
    }
    return out;
}

Child::Child(const std::vector<std::string>& argv, const fs::path& log) {
    std::vector<std::string> args = argv;
    std::vector<char*> cargv;
    for (auto& a : args)
        cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const std::string out = log.string();

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    const int rc = ::posix_spawn(&pid_, cargv[0], &fa, &attr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "spawn " + argv[0]);
}

Child::~Child() {
    kill9();
}

void Child::kill9() {
    if (status_ || pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::optional<int> Child::wait_exit(std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (!status_) {
        int st = 0;
        const pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (Clock::now() >= until) return std::nullopt;
        std::this_thread::sleep_for(2ms);
    }
    return status_;
}

bool Child::running() {
    return !wait_exit(0ms).has_value();
}

bool ping(const std::string& endpoint, std::chrono::milliseconds timeout) {
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::reconnect_ivl, 2);
    sock.set(zmq::sockopt::reconnect_ivl_max, 2);
    sock.connect(endpoint);
    const auto until = Clock::now() + timeout;
    std::uint64_t req = 0;
    auto next_send = Clock::now();
    while (Clock::now() < until) {
        // ZeroMQ queues the PING until the connection is up; resend now and then in case the
        // first went to a connection that died with a killed broker.
        if (Clock::now() >= next_send) {
            Writer w(1);
            w.u64("req", ++req);
            send_message(sock, "", cmd::kPing, w.take());
            next_send = Clock::now() + 200ms;
        }
        zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, 5ms);
        while (auto msg = recv_message(sock, false))
            if (msg->command == cmd::kPong) return true;
    }
    return false;
}

BrokerProcess::BrokerProcess(const Options& opt, std::string db) : opt_(opt), db_(std::move(db)) {
    if (!opt.broker.empty()) {
        endpoint_ = opt.broker;
        if (!ping(endpoint_, 5s)) throw std::runtime_error("no PONG from broker at " + endpoint_);
        return;
    }
    dir_ = std::make_unique<TempDir>(opt.tmpdir, opt.keep_tmp);
    endpoint_ = fmt::format("tcp://127.0.0.1:{}", free_port());
    start();
}

BrokerProcess::~BrokerProcess() {
    if (child_) child_->kill9();
}

double BrokerProcess::start() {
    if (!dir_) throw std::logic_error("cannot start an external broker");
    if (child_) child_->kill9();
    const std::string bin = opt_.broker_bin.empty() ? default_broker_bin() : opt_.broker_bin;
    if (::access(bin.c_str(), X_OK) != 0)
        throw std::runtime_error("no broker binary at " + bin + " (give --broker-bin)");
    const auto t0 = Clock::now();
    std::vector<std::string> argv{bin, "--listen", endpoint_, "--log-level", "warn", "--db"};
    if (db_.empty())
        argv.insert(argv.end(),
                    {(dir_->path() / "errand.db").string(), "--synchronous", opt_.synchronous});
    else
        argv.push_back(db_);
    child_ = std::make_unique<Child>(argv, dir_->path() / "broker.log");
    if (!ping(endpoint_, 60s)) {
        throw std::runtime_error(fmt::format(
            "broker at {} did not answer PING within 60 s; its log:\n{}", endpoint_, log_tail()));
    }
    return seconds_since(t0);
}

void BrokerProcess::kill9() {
    if (child_) child_->kill9();
}

void BrokerProcess::stop() {
    if (!child_) return;
    ::kill(child_->pid(), SIGTERM);
    if (!child_->wait_exit(60s)) child_->kill9();
    child_.reset();
}

std::string BrokerProcess::db_path() const {
    if (!dir_) return {};
    return db_.empty() ? (dir_->path() / "errand.db").string() : std::string();
}

std::uint64_t BrokerProcess::rss_kib() const {
    return child_ ? bench::rss_kib(child_->pid()) : 0;
}

double BrokerProcess::cpu_seconds() const {
    return child_ ? bench::cpu_seconds(child_->pid()) : 0;
}

std::uint64_t BrokerProcess::db_bytes() const {
    if (!dir_ || !db_.empty()) return 0;
    std::uint64_t total = 0;
    for (const char* name : {"errand.db", "errand.db-wal", "errand.db-shm"}) {
        std::error_code ec;
        const auto size = fs::file_size(dir_->path() / name, ec);
        if (!ec) total += size;
    }
    return total;
}

std::string BrokerProcess::log_tail(std::size_t lines) const {
    if (!dir_) return "(external broker)";
    std::ifstream in(dir_->path() / "broker.log");
    std::deque<std::string> tail;
    std::string line;
    while (std::getline(in, line)) {
        tail.push_back(line);
        if (tail.size() > lines) tail.pop_front();
    }
    std::string out;
    for (const auto& l : tail)
        out += l + "\n";
    return out;
}

}  // namespace errand::bench
