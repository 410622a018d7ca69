// systemd integration, for real: the broker and the worker daemon started with a NOTIFY_SOCKET of
// the test's own (a unix datagram socket in a temp dir) and WATCHDOG_USEC, as systemd starts a
// Type=notify service; and `systemd-analyze verify` on both unit files.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace errand::test;

namespace {

// A bound AF_UNIX datagram socket that collects sd_notify messages.
class NotifySocket {
  public:
    explicit NotifySocket(const std::filesystem::path& path) : path_(path.string()) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(path_.size() < sizeof addr.sun_path);
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    const std::string& path() const { return path_; }

    // Reads datagrams until one has a line that satisfies `pred` (-> that line) or `timeout`
    // passes (-> nullopt). Every message read is kept in all().
    std::optional<std::string> wait_line(const std::function<bool(const std::string&)>& pred,
                                         milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = std::chrono::duration_cast<milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[4096];
            auto n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) continue;
            std::string msg(buf, static_cast<std::size_t>(n));
            all_.push_back(msg);
            std::size_t start = 0;
            while (start <= msg.size()) {
                auto end = msg.find('\n', start);
                std::string line =
                    msg.substr(start, end == std::string::npos ? std::string::npos : end - start);
                if (pred(line)) return line;
                if (end == std::string::npos) break;
                start = end + 1;
            }
        }
    }
    std::optional<std::string> wait_exact(const std::string& line, milliseconds timeout) {
        return wait_line([&](const std::string& l) { return l == line; }, timeout);
    }
    std::optional<std::string> wait_prefix(const std::string& prefix, milliseconds timeout) {
        return wait_line([&](const std::string& l) { return l.rfind(prefix, 0) == 0; }, timeout);
    }
    std::string all() const {
        std::string out;
        for (const auto& m : all_)
            out += "[" + m + "] ";
        return out;
    }

  private:
    std::string path_;
    int fd_ = -1;
    std::vector<std::string> all_;
};

// The environment systemd gives a Type=notify service with WatchdogSec=0.6s.
std::vector<std::pair<std::string, std::string>> notify_env(const NotifySocket& s) {
    return {{"NOTIFY_SOCKET", s.path()}, {"WATCHDOG_USEC", "600000"}};
}

// The first number in a "STATUS=3 ready, …" line before `what`, e.g. "ready".
std::optional<int> status_count(const std::string& line, const std::string& what) {
    std::smatch m;
    if (!std::regex_search(line, m, std::regex("(\\d+) " + what))) return std::nullopt;
    return std::stoi(m[1]);
}

std::optional<std::string> find_on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        auto end = dirs.find(':', start);
        auto dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return std::nullopt;
}

std::string unit_dir() {
    const char* dir = std::getenv("ERRAND_SYSTEMD_DIR");
    if (!dir) throw std::runtime_error("ERRAND_SYSTEMD_DIR is not set");
    return dir;
}

}  // namespace

TEST_CASE("systemd: the broker sends READY=1, STATUS= with live counts, WATCHDOG=1, STOPPING=1") {
    TempDir dir;
    NotifySocket ns(dir / "notify");
    const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    Process broker("broker",
                   {broker_bin(), "--listen", endpoint, "--db", (dir / "errand.db").string()},
                   dir.path(), notify_env(ns));

    auto ready = ns.wait_exact("READY=1", 10s);
    REQUIRE_MESSAGE(ready, ns.all() << "\n" << broker.logs());
    auto idle = ns.wait_line(
        [](const std::string& l) {
            return l.rfind("STATUS=", 0) == 0 && status_count(l, "ready") == 0;
        },
        5s);
    REQUIRE_MESSAGE(idle, ns.all());
    CHECK(status_count(*idle, "running") == 0);
    CHECK(status_count(*idle, "workers") == 0);

    errand::ClientOptions opt;
    opt.endpoint = endpoint;
    errand::Client client(opt);
    for (int i = 0; i < 3; ++i)
        client.submit(job_spec("notify-q"));
    auto busy = ns.wait_line(
        [](const std::string& l) {
            return l.rfind("STATUS=", 0) == 0 && status_count(l, "ready") == 3;
        },
        5s);
    CHECK_MESSAGE(busy, ns.all());

    // WatchdogSec=0.6s: a ping at least every 300 ms, so three well within 3 s.
    for (int i = 0; i < 3; ++i)
        REQUIRE_MESSAGE(ns.wait_exact("WATCHDOG=1", 3s), ns.all());

    broker.kill(SIGTERM);
    CHECK_MESSAGE(ns.wait_exact("STOPPING=1", 5s), ns.all());
    auto code = broker.wait_exit(10s);
    REQUIRE_MESSAGE(code, broker.logs());
    CHECK(*code == 0);
}

TEST_CASE("systemd: the worker sends READY=1, STATUS= with busy slots, WATCHDOG=1, STOPPING=1") {
    TempDir dir;
    Broker broker(dir);
    NotifySocket ns(dir / "notify");
    const auto go = dir / "go";
    Process worker(
        "worker",
        {worker_bin(), "--broker", broker.endpoint(), "--name", "notify-w", "--concurrency", "2",
         "--queue", "gate=while [ ! -e " + go.string() + " ]; do sleep 0.02; done", "--queue",
         "env=echo \"[$NOTIFY_SOCKET][$WATCHDOG_USEC]\""},
        dir.path(), notify_env(ns));

    REQUIRE_MESSAGE(ns.wait_exact("READY=1", 10s), ns.all() << "\n" << worker.logs());
    REQUIRE_MESSAGE(ns.wait_prefix("STATUS=0/2 slots busy", 5s), ns.all());

    errand::Client client(broker.client_options());
    auto id = client.submit(job_spec("gate")).id;
    CHECK_MESSAGE(ns.wait_prefix("STATUS=1/2 slots busy", 10s), ns.all() << "\n" << worker.logs());
    for (int i = 0; i < 3; ++i)
        REQUIRE_MESSAGE(ns.wait_exact("WATCHDOG=1", 3s), ns.all());

    write_file(go, "");
    auto job = client.wait(id, 10s);
    REQUIRE(job);
    CHECK(job->state == errand::JobState::succeeded);
    CHECK_MESSAGE(ns.wait_prefix("STATUS=0/2 slots busy", 5s), ns.all());

    // Jobs do not inherit the daemon's notify socket: they are not the service.
    auto env_job = client.wait(client.submit(job_spec("env")).id, 10s);
    REQUIRE(env_job);
    CHECK(env_job->result == std::optional<std::string>("[][]\n"));

    worker.kill(SIGTERM);
    CHECK_MESSAGE(ns.wait_exact("STOPPING=1", 5s), ns.all());
    auto code = worker.wait_exit(10s);
    REQUIRE_MESSAGE(code, worker.logs());
    CHECK(*code == 0);
}

TEST_CASE("systemd: without NOTIFY_SOCKET nothing is sent and the daemons run as before") {
    // The broker of the harness has no NOTIFY_SOCKET: it must serve normally.
    TempDir dir;
    Broker broker(dir);
    errand::Client client(broker.client_options());
    CHECK(client.ping().version == "0.1.0");
}

TEST_CASE("systemd: both unit files pass systemd-analyze verify") {
    auto analyze = find_on_path("systemd-analyze");
    if (!analyze) {
        MESSAGE("systemd-analyze is not installed: skipping the unit file check");
        return;
    }
    TempDir dir;
    // The units as configured for the build tree (ExecStart names the built binaries); the
    // template is checked as an instance, as systemd would load it.
    const auto units = std::filesystem::path(unit_dir());
    std::filesystem::copy_file(units / "test-errand-broker.service", dir / "errand-broker.service");
    std::filesystem::copy_file(units / "test-errand-worker@.service",
                               dir / "errand-worker@emails.service");
    for (const std::string unit : {"errand-broker.service", "errand-worker@emails.service"}) {
        CAPTURE(unit);
        Process verify("verify-" + unit, {*analyze, "verify", (dir / unit).string()}, dir.path(),
                       {{"SYSTEMD_LOG_COLOR", "0"}});
        auto code = verify.wait_exit(60s);
        REQUIRE_MESSAGE(code, "systemd-analyze did not finish");
        CHECK_MESSAGE(*code == 0, verify.logs());
        // verify exits 0 on some warnings too: none may name our unit.
        CHECK_MESSAGE(verify.err().find(unit) == std::string::npos, verify.logs());
    }
    // The installed units name the installed binaries and the sysconfdir config.
    auto installed = read_file(units / "errand-worker@.service");
    CHECK(installed.find("Type=notify") != std::string::npos);
    CHECK(installed.find("worker-%i.toml") != std::string::npos);
    CHECK(installed.find("KillMode=mixed") != std::string::npos);
}

TEST_CASE("systemd: systemd-analyze verify catches a broken unit (the check above can fail)") {
    auto analyze = find_on_path("systemd-analyze");
    if (!analyze) {
        MESSAGE("systemd-analyze is not installed: skipping");
        return;
    }
    TempDir dir;
    auto text = read_file(std::filesystem::path(unit_dir()) / "test-errand-broker.service");
    auto at = text.find("ExecStart=");
    REQUIRE(at != std::string::npos);
    text.insert(at, "ExecStart=/nonexistent/errand-broker\n");  // two ExecStart= for Type=notify
    write_file(dir / "errand-broker.service", text);
    Process verify("verify-broken", {*analyze, "verify", (dir / "errand-broker.service").string()},
                   dir.path());
    auto code = verify.wait_exit(60s);
    REQUIRE(code);
    CHECK_MESSAGE(*code != 0, verify.logs());
}

namespace {

// The values of `key=` lines in a unit, in order.
std::vector<std::string> unit_values(const std::string& unit, const std::string& key) {
    std::vector<std::string> out;
    std::istringstream lines(unit);
    for (std::string line; std::getline(lines, line);)
        if (line.rfind(key + "=", 0) == 0) out.push_back(line.substr(key.size() + 1));
    return out;
}

// "→ Overall exposure level for errand-broker.service: 1.4 OK" -> 1.4
std::optional<double> exposure(const std::string& analyze, const std::filesystem::path& unit) {
    Process p("security-" + unit.filename().string(),
              {analyze, "security", "--offline=true", "--no-pager", unit.string()},
              unit.parent_path(), {{"SYSTEMD_LOG_COLOR", "0"}, {"SYSTEMD_COLORS", "0"}});
    auto code = p.wait_exit(60s);
    REQUIRE_MESSAGE(code, "systemd-analyze security did not finish");
    std::smatch m;
    const std::string out = p.out() + p.err();
    if (!std::regex_search(out, m, std::regex("Overall exposure level for [^:]+: ([0-9.]+)")))
        return std::nullopt;
    return std::stod(m[1]);
}

}  // namespace

TEST_CASE("systemd: broker and worker run as different users; the worker unit is hardened") {
    const auto units = std::filesystem::path(unit_dir());
    const auto broker = read_file(units / "errand-broker.service");
    const auto worker = read_file(units / "errand-worker@.service");
    CHECK(unit_values(broker, "User") == std::vector<std::string>{"errand"});
    CHECK(unit_values(worker, "User") == std::vector<std::string>{"errand-worker"});
    CHECK(unit_values(worker, "Group") == std::vector<std::string>{"errand-worker"});
    // Both users come from the sysusers file.
    const char* examples = std::getenv("ERRAND_EXAMPLES_DIR");
    REQUIRE(examples);
    const auto sysusers =
        read_file(std::filesystem::path(examples) / ".." / "systemd" / "errand.sysusers");
    CHECK(sysusers.find("\nu errand ") != std::string::npos);
    CHECK(sysusers.find("\nu errand-worker ") != std::string::npos);

    auto filters = unit_values(worker, "SystemCallFilter");
    REQUIRE(filters.size() == 1);
    for (const char* group :
         {"@mount", "@module", "@reboot", "@swap", "@raw-io", "@clock", "@debug", "@obsolete"}) {
        CHECK_MESSAGE(filters[0].starts_with("~"), filters[0]);
        CHECK_MESSAGE(filters[0].find(group) != std::string::npos, group);
    }
    CHECK(unit_values(worker, "ProtectProc") == std::vector<std::string>{"invisible"});
    CHECK(unit_values(worker, "RemoveIPC") == std::vector<std::string>{"yes"});
    CHECK(unit_values(worker, "Delegate") == std::vector<std::string>{"yes"});
    CHECK(unit_values(worker, "ProtectControlGroups").empty());  // it makes job cgroups
    CHECK(unit_values(worker, "InaccessiblePaths") == std::vector<std::string>{"-/var/lib/errand"});
    const auto env_files = unit_values(worker, "EnvironmentFile");
    REQUIRE(env_files.size() == 2);
    CHECK(env_files[0].ends_with("/errand/worker.env"));
    CHECK(env_files[1].ends_with("/errand/worker-%i.env"));
    CHECK(unit_values(broker, "EnvironmentFile")[0].ends_with("/errand/broker.env"));

    // systemd-analyze security rates both (docs/OPERATIONS.md quotes the figures).
    auto analyze = find_on_path("systemd-analyze");
    REQUIRE_MESSAGE(analyze, "systemd-analyze is not installed (package systemd)");
    TempDir dir;
    std::filesystem::copy_file(units / "test-errand-broker.service", dir / "errand-broker.service");
    std::filesystem::copy_file(units / "test-errand-worker@.service",
                               dir / "errand-worker@emails.service");
    auto broker_level = exposure(*analyze, dir / "errand-broker.service");
    auto worker_level = exposure(*analyze, dir / "errand-worker@emails.service");
    REQUIRE(broker_level);
    REQUIRE(worker_level);
    MESSAGE("exposure: broker " << *broker_level << ", worker " << *worker_level);
    CHECK(*broker_level <= 1.5);
    CHECK(*worker_level <= 2.5);
}
