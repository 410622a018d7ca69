// Test harness for the integration suites: temp dirs, free ports, child processes (broker, worker
// daemon, CLI) under RAII, a raw protocol connection, and the one polling helper wait_until.
//
// Every child is killed and reaped by its destructor. When the running test case has failed (or an
// exception is unwinding), destructors print the tail of the child's logs and the temp dir's path,
// so a CI log says what the broker and workers were doing. ERRAND_KEEP_TMP=1 keeps the temp dirs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <zmq.hpp>

#include "errand/client.hpp"
#include "errand/codec.hpp"
#include "errand/transport.hpp"
#include "errand/worker.hpp"

namespace errand::test {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

// Paths of the binaries under test, from ERRAND_BROKER_BIN / ERRAND_WORKER_BIN / ERRAND_CLI_BIN.
// Throws std::runtime_error naming the variable when it is not set.
std::string broker_bin();
std::string worker_bin();
std::string cli_bin();

// True once an assertion of the running test case has failed (set by a doctest listener).
bool current_test_failed();

// Polls `pred` every `interval` until it returns true (-> true) or `timeout` passes (-> false).
// The only sanctioned way to wait for a condition that has no event to await.
bool wait_until(const std::function<bool()>& pred, milliseconds timeout,
                milliseconds interval = 10ms);

// Milliseconds elapsed on the steady clock since `start`.
milliseconds since(std::chrono::steady_clock::time_point start);

// A job for `queue` (spelled out so designated initializers don't trip
// -Wmissing-field-initializers).
inline JobSpec job_spec(std::string queue, std::string payload = {},
                        std::uint32_t max_attempts = limits::kDefaultMaxAttempts) {
    JobSpec s;
    s.queue = std::move(queue);
    s.payload = std::move(payload);
    s.max_attempts = max_attempts;
    return s;
}

// Runs an errand::Worker on a thread; stops and joins it on destruction (also when a REQUIRE
// throws), so a failing test cannot leave a thread behind.
class WorkerThread {
  public:
    explicit WorkerThread(errand::Worker& worker)
        : worker_(worker), thread_([this] {
              try {
                  worker_.run();
              } catch (const std::exception& e) {
                  error_ = e.what();
              }
          }) {}
    ~WorkerThread() {
        worker_.stop();
        thread_.join();
    }
    WorkerThread(const WorkerThread&) = delete;
    WorkerThread& operator=(const WorkerThread&) = delete;
    // What run() threw, if it did (read after the destructor ran, or once it returned).
    const std::string& error() const { return error_; }

  private:
    errand::Worker& worker_;
    std::string error_;
    std::thread thread_;
};

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction unless
// ERRAND_KEEP_TMP is set. Its path is printed when the test fails.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(std::string_view name) const { return path_ / name; }
    std::string str() const { return path_.string(); }

  private:
    std::filesystem::path path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it back, close).
int free_port();

std::string read_file(const std::filesystem::path& file);  // "" when it does not exist
void write_file(const std::filesystem::path& file, std::string_view text);
// Lines of a file without their '\n'; an empty vector when it does not exist.
std::vector<std::string> read_lines(const std::filesystem::path& file);

// One child process: argv[0] is an absolute path; stdin from `stdin_file` (or /dev/null), stdout
// and stderr appended to LOG_DIR/NAME.stdout and NAME.stderr. The child leads its own process
// group; the destructor SIGKILLs the group and reaps the child.
class Process {
  public:
    Process(std::string name, std::vector<std::string> argv, const std::filesystem::path& log_dir,
            std::vector<std::pair<std::string, std::string>> extra_env = {},
            const std::optional<std::filesystem::path>& stdin_file = std::nullopt);
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& name() const { return name_; }
    // Sends `sig` to the child only (not its group), unless it has been reaped already.
    void kill(int sig = SIGKILL);
    // Exit code of the child (128 + signal number when a signal ended it), or nullopt if it is
    // still running after `timeout`.
    std::optional<int> wait_exit(milliseconds timeout);
    bool running();
    std::optional<int> exit_status() const { return status_; }

    std::filesystem::path stdout_path() const;
    std::filesystem::path stderr_path() const;
    std::string out() const { return read_file(stdout_path()); }
    std::string err() const { return read_file(stderr_path()); }
    // The last `lines` lines of stdout and stderr, labelled, for failure messages.
    std::string logs(std::size_t lines = 40) const;

  private:
    bool reap(bool block);

    std::string name_;
    std::vector<std::string> argv_;
    std::filesystem::path log_dir_;
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// errand-broker on a free loopback port with DIR/errand.db. The constructor returns once the
// broker answers PING (bounded); a broker that exits or stays silent fails with its logs.
class Broker {
  public:
    // `curve`: the keys client_options() (and so the readiness PING) use, for a CURVE broker.
    explicit Broker(const TempDir& dir, std::vector<std::string> extra_args = {},
                    std::optional<CurveClient> curve = std::nullopt);

    const std::string& endpoint() const { return endpoint_; }
    std::filesystem::path db_path() const { return db_path_; }
    Process& process() { return *process_; }
    std::string logs() const;

    void start();    // spawn and wait until PING is answered
    void kill9();    // SIGKILL and reap: a crash, nothing flushed
    void restart();  // kill9 if running, then start on the same port and database
    // A client of this broker; `timeout_ms` bounds each request.
    ClientOptions client_options(Millis timeout_ms = 5000) const;

  private:
    std::filesystem::path dir_;
    std::vector<std::string> extra_args_;
    std::optional<CurveClient> curve_;
    std::string endpoint_;
    std::filesystem::path db_path_;
    int starts_ = 0;
    std::unique_ptr<Process> process_;
};

// errand-worker started with `--broker EP --name NAME --queue Q… --concurrency N`.
struct WorkerSpec {
    std::string name;
    std::vector<std::string> queues;  // "NAME" or "NAME=COMMAND"
    unsigned concurrency = 1;
    bool allow_commands = false;
    std::vector<std::string> extra_args;
};

class WorkerDaemon {
  public:
    WorkerDaemon(const TempDir& dir, const std::string& broker_endpoint, WorkerSpec spec);

    const std::string& name() const { return spec_.name; }
    Process& process() { return *process_; }
    std::string logs() const { return process_->logs(); }
    void kill9();

  private:
    WorkerSpec spec_;
    std::unique_ptr<Process> process_;
};

// One run of the errand CLI.
struct CliResult {
    int exit_code = -1;  // -1 when it was killed for running past the timeout
    bool timed_out = false;
    std::string out;
    std::string err;
    milliseconds elapsed{0};
};

// Runs `errand ARGS…` with `stdin_text` on stdin; kills it after `timeout`.
CliResult run_cli(const std::vector<std::string>& args, std::string_view stdin_text = {},
                  milliseconds timeout = 20s);
// "exit 3 after 12 ms\nstdout: …\nstderr: …", for failure messages.
std::string describe(const CliResult& r);

// A bare DEALER connection that speaks frames, for tests of what the broker does with bad input.
class RawConnection {
  public:
    explicit RawConnection(const std::string& endpoint);

    // Sends exactly these frames (any number, any bytes).
    void send_frames(const std::vector<std::string>& frames);
    // Sends a well-formed message: errand/1, command, body.
    void send(std::string_view command, std::string_view body);
    // The next message, or nullopt if none arrives within `timeout`.
    std::optional<Envelope> recv(milliseconds timeout);

  private:
    zmq::context_t context_;
    zmq::socket_t socket_;
};

}  // namespace errand::test

// Readable values in failed assertions: optionals and job states instead of "{?}" and numbers.
namespace doctest {
template <typename T>
struct StringMaker<std::optional<T>> {
    static String convert(const std::optional<T>& v) {
        return v ? StringMaker<T>::convert(*v) : String("nullopt");
    }
};
template <>
struct StringMaker<errand::JobState> {
    static String convert(errand::JobState s) {
        return String(std::string(errand::to_string(s)).c_str());
    }
};
}  // namespace doctest
