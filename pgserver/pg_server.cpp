// A throwaway PostgreSQL server (see pg_server.hpp).
#include "pg_server.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace fs = std::filesystem;

namespace errand::pgserver {
namespace {

std::string bin(const std::string& name) {
    const char* dir = std::getenv("ERRAND_PG_BIN");
    return std::string(dir ? dir : "/usr/lib/postgresql/15/bin") + "/" + name;
}

// As root, the postgres system user's ids (PostgreSQL will not run as root); else none.
const passwd* run_as() {
    if (geteuid() != 0) return nullptr;
    const passwd* pw = getpwnam("postgres");
    if (!pw)
        throw std::runtime_error(
            "running as root, but there is no 'postgres' user to run "
            "PostgreSQL as (install the postgresql package)");
    return pw;
}

// fork + exec `argv` as `pw` (when given) with stdout/stderr to `log`; the child's pid.
pid_t spawn(const std::vector<std::string>& argv, const passwd* pw, const std::string& log) {
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (pw && (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)) _exit(126);
        execv(args[0], args.data());
        _exit(127);
    }
    return pid;
}

int wait_exit(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

PgServer::PgServer(PgServerOptions options) : options_(std::move(options)) {
    const fs::path parent =
        options_.parent.empty() ? fs::temp_directory_path() : fs::path(options_.parent);
    std::string tmpl = (parent / "errand-pg-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = 5432;  // only names the socket file: there is no TCP listener
    const passwd* pw = run_as();
    if (pw && chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
        throw std::runtime_error("cannot give " + dir_ + " to the postgres user");
    std::string data = dir_ + "/data";
    std::string log = dir_ + "/log";
    int rc = wait_exit(
        spawn({bin("initdb"), "-D", data, "-A", "trust", "-U", "errand", "-E", "UTF8", "--no-sync"},
              pw, log));
    if (rc != 0)
        throw std::runtime_error("initdb failed (exit " + std::to_string(rc) + "), see " + log);
    start();
    auto admin = "host=" + dir_ + " port=" + std::to_string(port_) + " user=errand dbname=postgres";
    PGconn* c = PQconnectdb(admin.c_str());
    PGresult* r = PQexec(c, "CREATE DATABASE errand");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    if (!ok) {
        stop();
        throw std::runtime_error("CREATE DATABASE errand failed");
    }
}

void PgServer::start() {
    std::string data = dir_ + "/data";
    std::string log = dir_ + "/log";
    std::vector<std::string> argv{
        bin("postgres"),    "-D", data, "-k", dir_, "-p", std::to_string(port_), "-c",
        "listen_addresses="};
    // Durability against power loss is not what the tests are about: fsync off keeps them fast
    // (a server crash, restart_immediate(), still loses nothing committed). The benchmark wants
    // the durable figure and keeps PostgreSQL's defaults.
    if (!options_.durable)
        for (const char* s : {"fsync=off", "full_page_writes=off"})
            argv.insert(argv.end(), {"-c", s});
    for (const auto& s : options_.settings)
        argv.insert(argv.end(), {"-c", s});
    pid_ = spawn(argv, run_as(), log);
    auto admin = "host=" + dir_ + " port=" + std::to_string(port_) + " user=errand dbname=postgres";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (PQping(admin.c_str()) != PQPING_OK) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            throw std::runtime_error("postgres exited at start, see " + log);
        }
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("postgres did not accept connections within 30 s, see " + log);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a child's socket
    }
}

void PgServer::restart_immediate() {
    if (pid_ > 0) {
        kill(pid_, SIGQUIT);  // immediate shutdown: no checkpoint, crash recovery at start
        wait_exit(pid_);
        pid_ = -1;
    }
    start();
}

PgServer::~PgServer() {
    stop();
    if (options_.keep) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

void PgServer::stop() {
    if (pid_ > 0) {
        kill(pid_, SIGINT);  // fast shutdown: clients are cut off, no wait for them
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        int status = 0;
        while (waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        pid_ = -1;
    }
}

std::string PgServer::conninfo() const {
    return "host=" + dir_ + " port=" + std::to_string(port_) + " user=errand dbname=errand";
}

std::string PgServer::uri() const {
    return "postgresql:///errand?host=" + dir_ + "&port=" + std::to_string(port_) + "&user=errand";
}

}  // namespace errand::pgserver
