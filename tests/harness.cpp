// Integration test harness: processes, temp dirs, ports and the failure listener (harness.hpp).
#include "harness.hpp"

#include <algorithm>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace errand::test {
namespace {

std::atomic<bool> g_test_failed{false};

// Tracks whether the running test case has failed, so destructors know to print logs.
struct FailureListener : doctest::IReporter {
    explicit FailureListener(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override {}
    void test_case_start(const doctest::TestCaseData&) override { g_test_failed = false; }
    void test_case_reenter(const doctest::TestCaseData&) override { g_test_failed = false; }
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override { g_test_failed = true; }
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData& a) override {
        if (a.m_failed) g_test_failed = true;
    }
    void log_message(const doctest::MessageData& m) override {
        if (!(m.m_severity & doctest::assertType::is_warn)) g_test_failed = true;
    }
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

// Failure output is wanted while unwinding too: a REQUIRE throws before the destructors run.
bool should_report() {
    return g_test_failed.load() || std::uncaught_exceptions() > 0;
}

std::string require_env(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0')
        throw std::runtime_error(std::string(name) +
                                 " is not set (run the integration tests through `meson test`)");
    return v;
}

std::string tail(const std::filesystem::path& file, std::size_t lines) {
    std::ifstream in(file);
    if (!in) return "  (no file)\n";
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
        last.push_back(std::move(line));
        if (last.size() > lines) last.pop_front();
    }
    if (last.empty()) return "  (empty)\n";
    std::string out;
    for (const auto& l : last)
        out += "  " + l + "\n";
    return out;
}

}  // namespace

DOCTEST_REGISTER_LISTENER("errand-failure-logs", 1, FailureListener);

std::string broker_bin() {
    return require_env("ERRAND_BROKER_BIN");
}
std::string worker_bin() {
    return require_env("ERRAND_WORKER_BIN");
}
std::string cli_bin() {
    return require_env("ERRAND_CLI_BIN");
}

bool current_test_failed() {
    return g_test_failed.load();
}

bool wait_until(const std::function<bool()>& pred, milliseconds timeout, milliseconds interval) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(interval);
    }
}

milliseconds since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
}

// ---- TempDir ------------------------------------------------------------------------------

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/errand-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
        throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
    path_ = tmpl;
}

TempDir::~TempDir() {
    const bool keep = std::getenv("ERRAND_KEEP_TMP") != nullptr;
    if (should_report())
        std::cerr << "[harness] temp dir of the failed test: " << path_.string()
                  << (keep ? " (kept)" : " (removed; set ERRAND_KEEP_TMP=1 to keep it)") << "\n";
    if (keep) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

// ---- small helpers ------------------------------------------------------------------------

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
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

std::string read_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return {};
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const std::filesystem::path& file, std::string_view text) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) throw std::runtime_error("cannot write " + file.string());
}

std::vector<std::string> read_lines(const std::filesystem::path& file) {
    std::vector<std::string> lines;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line))
        lines.push_back(line);
    return lines;
}

// ---- Process ------------------------------------------------------------------------------

Process::Process(std::string name, std::vector<std::string> argv,
                 const std::filesystem::path& log_dir,
                 std::vector<std::pair<std::string, std::string>> extra_env,
                 const std::optional<std::filesystem::path>& stdin_file)
    : name_(std::move(name)), argv_(std::move(argv)), log_dir_(log_dir) {
    if (argv_.empty()) throw std::invalid_argument("Process: empty argv");

    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view kv(*e);
        bool overridden = false;
        for (const auto& [k, v] : extra_env)
            if (kv.substr(0, k.size() + 1) == k + "=") overridden = true;
        if (!overridden) env_strings.emplace_back(kv);
    }
    for (const auto& [k, v] : extra_env)
        env_strings.push_back(k + "=" + v);

    std::vector<char*> cargv;
    for (auto& a : argv_)
        cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<char*> cenv;
    for (auto& e : env_strings)
        cenv.push_back(e.data());
    cenv.push_back(nullptr);

    const std::string in = stdin_file ? stdin_file->string() : "/dev/null";
    const std::string out = stdout_path().string();
    const std::string err = stderr_path().string();

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    const int rc = ::posix_spawn(&pid_, cargv[0], &fa, &attr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        pid_ = -1;
        throw std::system_error(rc, std::generic_category(), "posix_spawn " + argv_[0]);
    }
}

Process::~Process() {
    if (pid_ > 0) {
        // The child and whatever it started in its group (also after a kill9() of the child
        // alone, which leaves its jobs running as orphans).
        ::kill(-pid_, SIGKILL);
        if (!status_) {
            ::kill(pid_, SIGKILL);
            reap(true);
        }
    }
    if (pid_ > 0 && should_report()) {
        std::string cmd;
        for (const auto& a : argv_)
            cmd += (cmd.empty() ? "" : " ") + a;
        std::cerr << "[harness] ---- " << name_ << " (pid " << pid_ << "): " << cmd << "\n"
                  << logs() << "[harness] ---- end of " << name_ << "\n";
    }
}

bool Process::reap(bool block) {
    if (status_) return true;
    int st = 0;
    for (;;) {
        pid_t r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
        if (r == pid_) break;
        if (r == 0) return false;
        if (errno == EINTR) continue;
        status_ = -1;  // not our child any more: nothing to wait for
        return true;
    }
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return true;
}

void Process::kill(int sig) {
    if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

std::optional<int> Process::wait_exit(milliseconds timeout) {
    wait_until([&] { return reap(false); }, timeout, 5ms);
    return status_;
}

bool Process::running() {
    return pid_ > 0 && !reap(false);
}

std::filesystem::path Process::stdout_path() const {
    return log_dir_ / (name_ + ".stdout");
}
std::filesystem::path Process::stderr_path() const {
    return log_dir_ / (name_ + ".stderr");
}

std::string Process::logs(std::size_t lines) const {
    return "[" + name_ + " stdout]\n" + tail(stdout_path(), lines) + "[" + name_ + " stderr]\n" +
           tail(stderr_path(), lines);
}

// ---- Broker -------------------------------------------------------------------------------

Broker::Broker(const TempDir& dir, std::vector<std::string> extra_args,
               std::optional<CurveClient> curve)
    : dir_(dir.path()),
      extra_args_(std::move(extra_args)),
      curve_(std::move(curve)),
      endpoint_("tcp://127.0.0.1:" + std::to_string(free_port())),
      db_path_(dir.path() / "errand.db") {
    start();
}

std::string Broker::logs() const {
    return process_ ? process_->logs() : "(broker not started)\n";
}

ClientOptions Broker::client_options(Millis timeout_ms) const {
    ClientOptions o;
    o.endpoint = endpoint_;
    o.timeout = milliseconds(timeout_ms);
    o.resend = 500ms;
    o.curve = curve_;
    return o;
}

void Broker::start() {
    std::vector<std::string> argv = {broker_bin(), "--listen", endpoint_};
    // DIR/errand.db unless the test names a database of its own (a PostgreSQL URI).
    if (std::find(extra_args_.begin(), extra_args_.end(), "--db") == extra_args_.end())
        argv.insert(argv.end(), {"--db", db_path_.string()});
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    process_.reset();  // reaped already when restarting; keeps one live Process per broker
    process_ = std::make_unique<Process>("broker", argv, dir_);
    ++starts_;

    // Ready means answering PING. Each try is short so a broker that dies is noticed quickly.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::string last_error = "no attempt";
    while (std::chrono::steady_clock::now() < deadline) {
        if (!process_->running())
            throw std::runtime_error("errand-broker exited with status " +
                                     std::to_string(process_->exit_status().value_or(-1)) +
                                     " during start-up\n" + process_->logs());
        try {
            Client client(client_options(300));
            client.ping();
            return;
        } catch (const std::exception& e) {
            last_error = e.what();
        }
    }
    throw std::runtime_error("errand-broker at " + endpoint_ + " did not answer PING within 10s (" +
                             last_error + ")\n" + process_->logs());
}

void Broker::kill9() {
    if (!process_) return;
    process_->kill(SIGKILL);
    if (!process_->wait_exit(5s)) throw std::runtime_error("broker survived SIGKILL");
}

void Broker::restart() {
    kill9();
    start();
}

// ---- WorkerDaemon -------------------------------------------------------------------------

WorkerDaemon::WorkerDaemon(const TempDir& dir, const std::string& broker_endpoint, WorkerSpec spec)
    : spec_(std::move(spec)) {
    std::vector<std::string> argv = {worker_bin(),
                                     "--broker",
                                     broker_endpoint,
                                     "--name",
                                     spec_.name,
                                     "--concurrency",
                                     std::to_string(spec_.concurrency)};
    for (const auto& q : spec_.queues) {
        argv.emplace_back("--queue");
        argv.push_back(q);
    }
    if (spec_.allow_commands) argv.emplace_back("--allow-commands");
    argv.insert(argv.end(), spec_.extra_args.begin(), spec_.extra_args.end());
    process_ = std::make_unique<Process>("worker-" + spec_.name, argv, dir.path());
}

void WorkerDaemon::kill9() {
    process_->kill(SIGKILL);
    if (!process_->wait_exit(5s)) throw std::runtime_error("worker survived SIGKILL");
}

// ---- CLI ----------------------------------------------------------------------------------

CliResult run_cli(const std::vector<std::string>& args, std::string_view stdin_text,
                  milliseconds timeout) {
    TempDir dir;
    const auto in = dir / "stdin";
    write_file(in, stdin_text);
    std::vector<std::string> argv = {cli_bin()};
    argv.insert(argv.end(), args.begin(), args.end());

    CliResult r;
    const auto start = std::chrono::steady_clock::now();
    {
        Process p("errand", argv, dir.path(), {}, in);
        auto status = p.wait_exit(timeout);
        r.elapsed = since(start);
        if (status) {
            r.exit_code = *status;
        } else {
            r.timed_out = true;
            p.kill(SIGKILL);
            p.wait_exit(5s);
        }
        r.out = p.out();
        r.err = p.err();
    }
    return r;
}

std::string describe(const CliResult& r) {
    std::string s = r.timed_out ? "timed out" : "exit " + std::to_string(r.exit_code);
    s += " after " + std::to_string(r.elapsed.count()) + " ms\nstdout: " + r.out +
         "\nstderr: " + r.err;
    return s;
}

// ---- RawConnection ------------------------------------------------------------------------

RawConnection::RawConnection(const std::string& endpoint)
    : context_(1), socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
}

void RawConnection::send_frames(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
        auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        if (!socket_.send(zmq::buffer(frames[i]), flags))
            throw std::runtime_error("RawConnection: send would block");
    }
}

void RawConnection::send(std::string_view command, std::string_view body) {
    send_frames({std::string(kProtocolVersion), std::string(command), std::string(body)});
}

std::optional<Envelope> RawConnection::recv(milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() < 0) left = 0ms;
        zmq::poll(&item, 1, left);
        if (item.revents & ZMQ_POLLIN) return recv_message(socket_, false);
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    }
}

}  // namespace errand::test
