// Unit tests of the job runner (worker/process.hpp): real fork/exec of /bin/sh, cat, sleep...
// Every wait is bounded: each run that could hang has a timeout, and elapsed times are checked.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "errand/clock.hpp"
#include "job_cgroup.hpp"
#include "process.hpp"

using errand::Job;
using errand::Outcome;
using errand::workerd::JobPolicy;
using errand::workerd::outcome_of;
using errand::workerd::parse_progress_line;
using errand::workerd::parse_queue_spec;
using errand::workerd::QueueSpec;
using errand::workerd::run_job;
using errand::workerd::run_process;
using errand::workerd::RunResult;
using errand::workerd::RunSpec;

namespace {

constexpr errand::Millis kSafety = 20'000;  // no test run may take this long

RunSpec sh(const std::string& script) {
    RunSpec spec;
    spec.argv = {"/bin/sh", "-c", script};
    spec.timeout = kSafety;
    return spec;
}

RunSpec cmd(std::vector<std::string> argv) {
    RunSpec spec;
    spec.argv = std::move(argv);
    spec.timeout = kSafety;
    return spec;
}

std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
        ++n;
    return n;
}

std::string pattern(std::size_t size) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
        s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
    return s;
}

// Process state letter from /proc/PID/stat, or 0 when the process is gone.
char process_state(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t paren = stat.rfind(')');
    return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

// A temporary directory removed at scope end.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "errand-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("echo: stdout is the output, exit 0") {
    RunResult r = run_process(cmd({"echo", "hello", "world"}));
    CHECK(r.spawn_error == "");
    CHECK(r.exit_code == 0);
    CHECK_FALSE(r.signal.has_value());
    CHECK(r.stdout_data == "hello world\n");
    CHECK_FALSE(r.truncated);
    CHECK(r.stderr_tail == "");
    CHECK_FALSE(r.timed_out);
    CHECK_FALSE(r.cancelled);
}

TEST_CASE("the payload reaches stdin and stdin is closed after it") {
    RunSpec spec = cmd({"cat"});
    spec.stdin_data = std::string("line one\nline two\0binary", 24);
    RunResult r = run_process(spec);
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == spec.stdin_data);
    CHECK_FALSE(r.timed_out);  // cat saw EOF
}

TEST_CASE("a 5 MiB payload through cat does not deadlock; stdout stops at max_output") {
    RunSpec spec = cmd({"cat"});
    spec.stdin_data = pattern(5 << 20);
    spec.max_output = 1 << 20;
    RunResult r = run_process(spec);
    CHECK(r.exit_code == 0);
    CHECK_FALSE(r.timed_out);
    CHECK(r.truncated);
    REQUIRE(r.stdout_data.size() == spec.max_output);
    CHECK(r.stdout_data == spec.stdin_data.substr(0, spec.max_output));
    CHECK(r.elapsed_ms < 10'000);
}

TEST_CASE("output of exactly max_output bytes is not truncated") {
    RunSpec spec = cmd({"cat"});
    spec.stdin_data = pattern(1000);
    spec.max_output = 1000;
    RunResult r = run_process(spec);
    CHECK(r.stdout_data == spec.stdin_data);
    CHECK_FALSE(r.truncated);
}

TEST_CASE("a child that does not read its stdin is no error, and SIGPIPE does not escape") {
    for (const char* script : {"exit 0", "head -c 10 >/dev/null; echo ok"}) {
        CAPTURE(script);
        RunSpec spec = sh(script);
        spec.stdin_data = pattern(5 << 20);
        RunResult r = run_process(spec);
        CHECK(r.spawn_error == "");
        CHECK(r.exit_code == 0);
        CHECK_FALSE(r.signal.has_value());
        CHECK_FALSE(r.timed_out);
    }
    sigset_t pending, mask;
    ::sigpending(&pending);
    CHECK(sigismember(&pending, SIGPIPE) == 0);
    ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    CHECK(sigismember(&mask, SIGPIPE) == 0);  // the caller's mask is back
}

TEST_CASE("non-zero exit code and the stderr tail") {
    RunResult r = run_process(sh("echo out; echo oops >&2; exit 3"));
    CHECK(r.exit_code == 3);
    CHECK_FALSE(r.signal.has_value());
    CHECK(r.stdout_data == "out\n");
    CHECK(r.stderr_tail == "oops\n");

    CHECK(run_process(cmd({"false"})).exit_code == 1);
}

TEST_CASE("only the last stderr_tail bytes of stderr are kept") {
    RunSpec spec = sh("head -c 300000 /dev/zero | tr '\\0' a >&2; printf END >&2");
    spec.stderr_tail = 100;
    RunResult r = run_process(spec);
    CHECK(r.exit_code == 0);
    CHECK(r.stderr_tail == std::string(97, 'a') + "END");
}

TEST_CASE("a child killed by a signal: exit code 128+N") {
    RunResult r = run_process(sh("kill -KILL $$"));
    REQUIRE(r.signal.has_value());
    CHECK(*r.signal == SIGKILL);
    CHECK(r.exit_code == 128 + SIGKILL);
    CHECK_FALSE(r.timed_out);
}

TEST_CASE("a command that cannot run: exit code 127 and spawn_error") {
    RunResult r = run_process(cmd({"errand-no-such-command", "x"}));
    CHECK(r.exit_code == 127);
    CHECK(r.spawn_error == "cannot run 'errand-no-such-command': No such file or directory");
    CHECK(r.stdout_data == "");

    r = run_process(cmd({"/nonexistent/dir/prog"}));
    CHECK(r.exit_code == 127);
    CHECK(r.spawn_error == "cannot run '/nonexistent/dir/prog': No such file or directory");

    TempDir dir;
    std::filesystem::path file = dir.path / "not-executable";
    std::ofstream(file) << "echo hi\n";
    r = run_process(cmd({file.string()}));
    CHECK(r.exit_code == 127);
    CHECK(r.spawn_error == "cannot run '" + file.string() + "': Permission denied");

    r = run_process(cmd({}));
    CHECK(r.exit_code == 127);
    CHECK(r.spawn_error != "");
}

TEST_CASE("environment: extra variables are added, same names replaced, the rest inherited") {
    REQUIRE(::setenv("ERRAND_TEST_INHERITED", "inherited", 1) == 0);
    REQUIRE(::setenv("ERRAND_TEST_REPLACED", "old", 1) == 0);
    RunSpec spec = sh(R"(printf '%s,%s,%s' "$ERRAND_TEST_INHERITED" "$ERRAND_TEST_REPLACED" )"
                      R"("$ERRAND_TEST_EXTRA"; env | grep -c '^ERRAND_TEST_REPLACED=')");
    spec.extra_env = {{"ERRAND_TEST_EXTRA", "extra value"}, {"ERRAND_TEST_REPLACED", "new"}};
    RunResult r = run_process(spec);
    CHECK(r.stdout_data == "inherited,new,extra value1\n");
    ::unsetenv("ERRAND_TEST_INHERITED");
    ::unsetenv("ERRAND_TEST_REPLACED");

    // The command is searched in the child's PATH.
    RunSpec no_path = cmd({"echo", "hi"});
    no_path.extra_env = {{"PATH", "/nonexistent"}};
    CHECK(run_process(no_path).spawn_error == "cannot run 'echo': No such file or directory");
}

TEST_CASE("timeout: SIGTERM to the group, long before the sleep ends") {
    RunSpec spec = cmd({"sleep", "30"});
    spec.timeout = 200;
    RunResult r = run_process(spec);
    CHECK(r.timed_out);
    CHECK_FALSE(r.cancelled);
    REQUIRE(r.signal.has_value());
    CHECK(*r.signal == SIGTERM);
    CHECK(r.exit_code == 128 + SIGTERM);
    CHECK(r.elapsed_ms >= 200);
    CHECK(r.elapsed_ms < 5'000);
}

TEST_CASE("timeout: a job that ignores SIGTERM gets SIGKILL after the grace") {
    RunSpec spec = sh("trap '' TERM; sleep 30; echo survived");
    spec.timeout = 200;
    spec.kill_grace_ms = 300;
    RunResult r = run_process(spec);
    CHECK(r.timed_out);
    REQUIRE(r.signal.has_value());
    CHECK(*r.signal == SIGKILL);
    CHECK(r.stdout_data == "");
    CHECK(r.elapsed_ms >= 500);  // the grace was given
    CHECK(r.elapsed_ms < 5'000);
}

TEST_CASE("cancel: a flag already set stops the job at once") {
    std::atomic<bool> cancel{true};
    RunSpec spec = cmd({"sleep", "30"});
    spec.cancel = &cancel;
    RunResult r = run_process(spec);
    CHECK(r.cancelled);
    CHECK_FALSE(r.timed_out);
    REQUIRE(r.signal.has_value());
    CHECK(*r.signal == SIGTERM);
    CHECK(r.elapsed_ms < 5'000);
}

TEST_CASE("cancel: setting the flag while the job runs stops it") {
    TempDir dir;
    std::string fifo = (dir.path / "started").string();
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Opened before the job starts so its write end opens without blocking.
    int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);

    std::atomic<bool> cancel{false};
    RunSpec spec = sh(R"(echo started > "$FIFO"; exec sleep 30)");
    spec.extra_env = {{"FIFO", fifo}};
    spec.cancel = &cancel;
    RunResult r;
    std::thread runner([&] { r = run_process(spec); });

    pollfd pfd{reader, POLLIN, 0};
    CHECK(::poll(&pfd, 1, 10'000) == 1);  // the job is running
    char buf[16] = {};
    CHECK(::read(reader, buf, sizeof buf) > 0);
    cancel.store(true);
    runner.join();
    ::close(reader);

    CHECK(r.cancelled);
    REQUIRE(r.signal.has_value());
    CHECK(*r.signal == SIGTERM);
    CHECK(r.elapsed_ms < 10'000);
}

TEST_CASE("a background straggler is killed and does not hold run_process up") {
    RunResult r = run_process(sh("sleep 30 & echo $!"));
    CHECK(r.exit_code == 0);
    // The straggler holds stdout open: only killing it brings EOF before the 1 s drain limit.
    CHECK(r.elapsed_ms < 1'000);
    pid_t straggler = std::atoi(r.stdout_data.c_str());
    REQUIRE(straggler > 0);
    char state = process_state(straggler);
    CHECK(state != 'S');  // gone, a zombie or exiting; not sleeping
    CHECK(state != 'T');
}

TEST_CASE("a straggler that escaped the group holds run_process up for at most 1 s") {
    // The escapee leaves the group (setsid), so nothing kills it, and keeps our stderr pipe open
    // for 3 s. It prints only once it has escaped; head makes the job wait for that.
    RunResult r = run_process(sh("setsid -f sh -c 'echo escaped; exec sleep 3' | head -n 1"));
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == "escaped\n");
    CHECK(r.elapsed_ms >= 1'000);
    CHECK(r.elapsed_ms < 2'500);
}

TEST_CASE("the job leads its own process group") {
    RunResult r = run_process(sh(R"sh(echo "$$ $(cut -d' ' -f5 /proc/$$/stat)")sh"));
    REQUIRE(r.exit_code == 0);
    std::string pid = r.stdout_data.substr(0, r.stdout_data.find(' '));
    std::string pgid = r.stdout_data.substr(r.stdout_data.find(' ') + 1);
    CHECK(pid + "\n" == pgid);
    CHECK(std::atoi(pid.c_str()) != ::getpgrp());
}

TEST_CASE("the job starts with default signal dispositions and an empty mask") {
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &usr1, &old);
    auto old_usr2 = ::signal(SIGUSR2, SIG_IGN);
    RunResult r = run_process(sh("grep -E '^Sig(Blk|Ign)' /proc/self/status"));
    ::signal(SIGUSR2, old_usr2);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    CHECK(r.stdout_data == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_CASE("no fd leaks: the job inherits only 0-2, and runs leave no fd behind") {
    int stray = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
    REQUIRE(stray >= 0);
    REQUIRE(::dup2(stray, 77) == 77);
    ::close(stray);
    RunResult listing = run_process(cmd({"ls", "/proc/self/fd"}));
    CHECK(listing.stdout_data.find("77") == std::string::npos);
    ::close(77);

    const std::size_t before = open_fds();
    RunSpec big = cmd({"cat"});
    big.stdin_data = pattern(3 << 20);
    big.max_output = 1000;
    run_process(big);
    run_process(cmd({"errand-no-such-command"}));
    run_process(sh("exit 4"));
    run_process(sh("sleep 30 & echo $!"));
    RunSpec slow = cmd({"sleep", "30"});
    slow.timeout = 50;
    run_process(slow);
    CHECK(open_fds() == before);
}

// ---- the daemon's policy: jobs to runs, runs to outcomes --------------------------------------

namespace {

Job make_job(std::optional<std::vector<std::string>> argv = std::nullopt,
             std::string payload = {}) {
    Job job;
    job.id = 42;
    job.queue = "email";
    job.attempt = 2;
    job.payload = std::move(payload);
    job.argv = std::move(argv);
    return job;
}

}  // namespace

TEST_CASE("run_job: a job's own argv runs only with allow_commands") {
    Job job = make_job(std::vector<std::string>{"echo", "own"});
    Outcome refused = run_job(job, JobPolicy{.command = "echo queue"});
    CHECK_FALSE(refused.ok);
    CHECK(refused.permanent);
    CHECK(refused.error ==
          "this worker does not run job-supplied commands (start it with --allow-commands)");

    Outcome ran = run_job(job, JobPolicy{.command = "echo queue", .allow_commands = true});
    CHECK(ran.ok);
    CHECK(ran.result == "own\n");
}

TEST_CASE("run_job: the queue's command gets the payload on stdin and the job's env") {
    JobPolicy policy{.command = R"(tr a-z A-Z; printf '%s-%s-%s' "$ERRAND_JOB_ID" "$ERRAND_QUEUE" )"
                                R"("$ERRAND_ATTEMPT")"};
    Outcome o = run_job(make_job(std::nullopt, "hello\n"), policy);
    CHECK(o.ok);
    CHECK(o.exit_code == 0);
    CHECK(o.result == "HELLO\n42-email-2");
}

TEST_CASE("run_job: no argv and no queue command is a permanent failure") {
    Outcome o = run_job(make_job(), JobPolicy{});
    CHECK_FALSE(o.ok);
    CHECK(o.permanent);
    CHECK(o.error.find("queue 'email' has no command") != std::string::npos);
}

TEST_CASE("run_job: failures carry the exit code, the stderr tail and partial output") {
    JobPolicy policy{.command = "echo partial; echo 'bad thing' >&2; exit 4"};
    Outcome o = run_job(make_job(), policy);
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.exit_code == 4);
    CHECK(o.error == "exit code 4: bad thing");
    CHECK(o.result == "partial\n");

    o = run_job(make_job(), JobPolicy{.command = "exit 5"});
    CHECK(o.error == "exit code 5");

    o = run_job(make_job(), JobPolicy{.command = "kill -KILL $$"});
    CHECK_FALSE(o.ok);
    CHECK(o.exit_code == 128 + SIGKILL);
    CHECK(o.error == "killed by signal SIGKILL (9)");

    JobPolicy commands;
    commands.allow_commands = true;
    o = run_job(make_job(std::vector<std::string>{"errand-no-such-command"}), commands);
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.exit_code == 127);
    CHECK(o.error == "cannot run 'errand-no-such-command': No such file or directory");
}

TEST_CASE("run_job: truncated output is marked and stays within max_output") {
    JobPolicy policy{.command = "head -c 5000 /dev/zero | tr '\\0' x", .max_output = 1000};
    Outcome o = run_job(make_job(), policy);
    CHECK(o.ok);
    const std::string marker = "\n[errand: output truncated at 1000 bytes]";
    REQUIRE(o.result.size() == 1000);
    CHECK(o.result == std::string(1000 - marker.size(), 'x') + marker);

    RunResult tiny;
    tiny.stdout_data = "abcdef";
    tiny.truncated = true;
    CHECK(outcome_of(tiny, 4).result.size() == 4);
}

TEST_CASE("outcome_of: timeouts and cancels are failures even when the job exits 0") {
    RunResult run;
    run.timed_out = true;
    run.signal = SIGTERM;
    run.exit_code = 128 + SIGTERM;
    run.stderr_tail = "\x80\x80tail end\n";  // a torn UTF-8 sequence at the front is dropped
    Outcome o = outcome_of(run, 1000);
    CHECK_FALSE(o.ok);
    CHECK(o.error == "timed out after 0ms, killed by signal SIGTERM (15): tail end");

    run.timeout_ms = 1500;
    CHECK(outcome_of(run, 1000).error ==
          "timed out after 1.5s, killed by signal SIGTERM (15): tail end");

    RunResult cancelled;
    cancelled.cancelled = true;
    cancelled.stdout_data = "partial";
    o = outcome_of(cancelled, 1000);
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.error == "cancelled");
    CHECK(o.result == "partial");
}

// ---- progress on fd 3 ------------------------------------------------------------------------

namespace {

using Progress = std::vector<std::pair<std::uint32_t, std::string>>;

RunSpec with_progress(RunSpec spec, Progress& seen) {
    spec.on_progress = [&seen](std::uint32_t percent, std::string_view message) {
        seen.emplace_back(percent, std::string(message));
    };
    return spec;
}

}  // namespace

TEST_CASE("progress: valid lines on fd 3 arrive in order with their messages, junk is ignored") {
    Progress seen;
    RunResult r = run_process(with_progress(
        sh(R"(echo "10 starting" >&3; echo "50%" >&3; echo junk >&3; echo done)"), seen));
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == "done\n");
    CHECK(seen == Progress{{10, "starting"}, {50, ""}});
}

TEST_CASE("progress: ERRAND_PROGRESS_FD=3 and fd 3 exist only with on_progress") {
    const std::string script = R"(printf '%s,' "${ERRAND_PROGRESS_FD-unset}"; )"
                               R"(if [ -e /proc/self/fd/3 ]; then echo open; else echo closed; fi)";
    const std::size_t before = open_fds();
    Progress seen;
    CHECK(run_process(with_progress(sh(script), seen)).stdout_data == "3,open\n");
    CHECK(run_process(sh(script)).stdout_data == "unset,closed\n");
    run_process(with_progress(cmd({"errand-no-such-command"}), seen));
    CHECK(open_fds() == before);  // the progress pipe is closed in the parent too
}

TEST_CASE("progress: a job that never writes to fd 3 gets no callback") {
    Progress seen;
    RunResult r = run_process(with_progress(sh("echo out; echo err >&2; exit 2"), seen));
    CHECK(r.exit_code == 2);
    CHECK(r.stdout_data == "out\n");
    CHECK(seen.empty());
}

TEST_CASE("progress: a last line without newline counts; over-long lines are cut at 1 KiB") {
    Progress seen;
    // Line 2 is 1024 zeros followed by what would be a valid line if it were read as one: the
    // cut drops it, and line 3 is still read as a line of its own.
    RunResult r = run_process(with_progress(
        sh(R"sh(printf '5%% %s\n' "$(head -c 3000 /dev/zero | tr '\0' m)" >&3;)sh"
           R"(printf '%01024d9 sneaky\n' 0 >&3; printf '  75%%   three quarters  \n' >&3;)"
           R"(printf 90 >&3)"),
        seen));
    CHECK(r.exit_code == 0);
    REQUIRE(seen.size() == 3);
    CHECK(seen[0] == std::pair<std::uint32_t, std::string>{5, std::string(256, 'm')});
    CHECK(seen[1] == std::pair<std::uint32_t, std::string>{75, "three quarters"});
    CHECK(seen[2] == std::pair<std::uint32_t, std::string>{90, ""});
}

TEST_CASE("progress: many lines in quick succession are all delivered, in order") {
    Progress seen;
    RunResult r = run_process(with_progress(
        sh("i=0; while [ $i -le 100 ]; do echo \"$i step $i\"; i=$((i+1)); done >&3"), seen));
    CHECK(r.exit_code == 0);
    REQUIRE(seen.size() == 101);
    for (std::uint32_t i = 0; i <= 100; ++i)
        CHECK(seen[i] == std::pair<std::uint32_t, std::string>{i, "step " + std::to_string(i)});
}

TEST_CASE("progress: a straggler that escaped holding fd 3 holds run_process up for at most 1 s") {
    // The escapee keeps only fd 3 (stdout goes to head, stderr to /dev/null) for 3 s.
    Progress seen;
    RunResult r = run_process(with_progress(
        sh("echo '1 begin' >&3; setsid -f sh -c 'echo escaped; exec sleep 3' 2>/dev/null | "
           "head -n 1"),
        seen));
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == "escaped\n");
    CHECK(r.elapsed_ms >= 1'000);
    CHECK(r.elapsed_ms < 2'500);
    REQUIRE_FALSE(seen.empty());
    CHECK(seen.front() == std::pair<std::uint32_t, std::string>{1, "begin"});
}

TEST_CASE("parse_progress_line: PERCENT[%] [MESSAGE]") {
    auto parsed = [](std::string_view line) {
        auto p = parse_progress_line(line);
        return p ? std::optional<std::pair<std::uint32_t, std::string>>({p->percent, p->message})
                 : std::nullopt;
    };
    using P = std::pair<std::uint32_t, std::string>;
    CHECK(parsed("10 starting") == P{10, "starting"});
    CHECK(parsed("50%") == P{50, ""});
    CHECK(parsed("0") == P{0, ""});
    CHECK(parsed("100% done") == P{100, "done"});
    CHECK(parsed("  7%\t  spaced out \r") == P{7, "spaced out"});
    CHECK(parsed("007 leading zeros") == P{7, "leading zeros"});
    for (std::string_view bad :
         {"", "junk", "101", "1000", "-5", "+5", "50x", "50%%", "5.5", "% 5", "fifty percent"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_progress_line(bad).has_value());
    }
    // The message is cut at 256 bytes, never inside a UTF-8 sequence.
    std::string long_message = "1 " + std::string(255, 'a') + "\xC3\xA9" + "tail";
    auto p = parse_progress_line(long_message);
    REQUIRE(p.has_value());
    CHECK(p->message == std::string(255, 'a'));
    p = parse_progress_line("1 " + std::string(300, 'b'));
    REQUIRE(p.has_value());
    CHECK(p->message == std::string(256, 'b'));
}

// ---- --queue NAME[:WEIGHT][=COMMAND] -----------------------------------------------------------

TEST_CASE("parse_queue_spec: NAME, NAME=CMD, NAME:W, NAME:W=CMD") {
    QueueSpec q = parse_queue_spec("emails");
    CHECK(q.name == "emails");
    CHECK(q.weight == 0);
    CHECK_FALSE(q.command.has_value());

    q = parse_queue_spec("upper=tr a-z A-Z");
    CHECK(q.name == "upper");
    CHECK(q.weight == 0);
    CHECK(q.command == "tr a-z A-Z");

    q = parse_queue_spec("reports:1");
    CHECK(q.name == "reports");
    CHECK(q.weight == 1);
    CHECK_FALSE(q.command.has_value());

    q = parse_queue_spec("emails:3=send-mail --to=a@b.c --at 10:30 x=y:z");
    CHECK(q.name == "emails");
    CHECK(q.weight == 3);
    CHECK(q.command == "send-mail --to=a@b.c --at 10:30 x=y:z");

    q = parse_queue_spec("q.v2-x_y:1000=echo a:b");
    CHECK(q.name == "q.v2-x_y");
    CHECK(q.weight == 1000);
    CHECK(q.command == "echo a:b");

    q = parse_queue_spec("plain=echo 1:2");  // ':' after '=' belongs to the command
    CHECK(q.name == "plain");
    CHECK(q.weight == 0);
    CHECK(q.command == "echo 1:2");
}

TEST_CASE("parse_queue_spec: bad names, weights and empty commands are errors") {
    for (std::string_view bad :
         {"q:0", "q:1001", "q:x", "q:", "q:-1", "q:+3", "q:3x", "q:3:4", "q: 3", "q:0=cmd",
          "q:99999999999999999999", "", ":3", "=cmd", "bad name", "bad/name=cmd", "q=", "q:3="}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(parse_queue_spec(bad), std::invalid_argument);
    }
    CHECK_THROWS_WITH(parse_queue_spec("q:0"), "the WEIGHT '0' is not an integer 1-1000");
    CHECK_THROWS_WITH(parse_queue_spec("q="), "the COMMAND after '=' is empty");
}

// ---- timeouts, cancel and permanent failures through run_job ----------------------------------

TEST_CASE("run_job: the permanent exit code fails the job permanently") {
    JobPolicy policy{.command = "echo 'no such customer' >&2; exit 99"};
    Outcome o = run_job(make_job(), policy);
    CHECK_FALSE(o.ok);
    CHECK(o.permanent);
    CHECK(o.exit_code == 99);
    CHECK(o.error == "exit code 99: no such customer");

    policy.permanent_exit_code = 42;
    o = run_job(make_job(), policy);
    CHECK_FALSE(o.permanent);  // 99 is an ordinary failure now
    policy.command = "exit 42";
    CHECK(run_job(make_job(), policy).permanent);

    policy.permanent_exit_code = std::nullopt;
    CHECK_FALSE(run_job(make_job(), policy).permanent);

    // Only an exit, not a signal or a stop by the runner, is ever permanent.
    RunResult killed;
    killed.exit_code = 99;  // contrived: a signal and that exit code at once
    killed.signal = SIGTERM;
    CHECK_FALSE(outcome_of(killed, 1000, 99).permanent);
    RunResult timed_out;
    timed_out.exit_code = 99;
    timed_out.timed_out = true;
    CHECK_FALSE(outcome_of(timed_out, 1000, 99).permanent);
}

TEST_CASE("run_job: the job's timeout, else the default, stops it; the failure is retryable") {
    Job job = make_job();
    job.timeout = std::chrono::milliseconds(1000);
    JobPolicy policy{.command = "echo partial; exec sleep 30", .default_timeout = 20'000};
    const errand::Millis start = errand::steady_ms();
    Outcome o = run_job(job, policy);
    const errand::Millis took = errand::steady_ms() - start;
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.error == "timed out after 1s, killed by signal SIGTERM (15)");
    CHECK(o.exit_code == 128 + SIGTERM);
    CHECK(o.result == "partial\n");
    CHECK(took >= 1000);
    CHECK(took < 5'000);

    // No timeout of its own: the default applies. The grace is the policy's.
    policy = JobPolicy{
        .command = "trap '' TERM; sleep 30", .default_timeout = 200, .kill_grace_ms = 100};
    o = run_job(make_job(), policy);
    CHECK(o.error == "timed out after 200ms, killed by signal SIGKILL (9)");
    CHECK_FALSE(o.permanent);
}

TEST_CASE("cancel: a cancelled run's outcome is the failure 'cancelled'") {
    std::atomic<bool> cancel{true};
    RunSpec spec = sh("echo partial; echo err >&2; exec sleep 30");
    spec.cancel = &cancel;
    RunResult r = run_process(spec);
    CHECK(r.cancelled);
    CHECK_FALSE(r.timed_out);
    CHECK_FALSE(r.terminated);
    CHECK(r.elapsed_ms < 5'000);
    Outcome o = outcome_of(r, 1000, 99);
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.error == "cancelled");
}

TEST_CASE("run_job: the daemon's terminate flag stops the job with a retryable failure") {
    std::atomic<bool> terminate{true};
    JobPolicy policy{.command = "exec sleep 30", .terminate = &terminate};
    Outcome o = run_job(make_job(), policy);
    CHECK_FALSE(o.ok);
    CHECK_FALSE(o.permanent);
    CHECK(o.error == "terminated, the worker is stopping, killed by signal SIGTERM (15)");
}

TEST_CASE("run_job: the job sees ERRAND_PROGRESS_FD=3 and may write progress without a broker") {
    Outcome o =
        run_job(make_job(), JobPolicy{.command = R"(echo "50 half" >&"$ERRAND_PROGRESS_FD"; )"
                                                 R"(echo "fd=$ERRAND_PROGRESS_FD")"});
    CHECK(o.ok);
    CHECK(o.result == "fd=3\n");
}

namespace {

// A job that daemonises: `setsid` puts a sleep in a session of its own (out of the job's
// process group), the job prints its pid and then runs until it is stopped, or ends at once.
RunSpec daemonising_job(bool run_on) {
    // It prints the pid once the sleep leads its own session (field 6 of /proc/PID/stat), so
    // that the group kill at the job's end cannot catch it before it got away.
    return sh(
        std::string("setsid sleep 100 </dev/null >/dev/null 2>&1 & p=$!; "
                    "while [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do sleep 0.01; done; "
                    "echo $p") +
        (run_on ? "; exec sleep 100" : ""));
}

pid_t printed_pid(const RunResult& r) {
    REQUIRE_MESSAGE(!r.stdout_data.empty(), r.stderr_tail);
    return static_cast<pid_t>(std::stol(r.stdout_data));
}

// Gone, or a zombie nobody has reaped yet: either way it runs no more.
bool dies_within(pid_t pid, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        const char state = process_state(pid);
        if (state == 0 || state == 'Z') return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

}  // namespace

TEST_CASE("cgroup: a job that daemonises (setsid) is killed on timeout, cancel, drain and exit") {
    std::string why;
    const auto root = errand::workerd::find_job_cgroup_root(&why);
    REQUIRE_MESSAGE(root, "no writable cgroup v2 tree: " << why);

    // Without a cgroup, the process group alone misses the escapee (what this test guards).
    {
        RunSpec spec = daemonising_job(false);
        RunResult r = run_process(spec);
        const pid_t escaped = printed_pid(r);
        CHECK_FALSE(dies_within(escaped, std::chrono::milliseconds(300)));
        ::kill(escaped, SIGKILL);
    }

    std::atomic<bool> cancel{false}, terminate{false};
    struct Case {
        const char* name;
        std::atomic<bool>* flag;  // set 300 ms in; null: the timeout or the job's own end
        bool run_on;
    };
    for (const Case& c : {Case{"timeout", nullptr, true}, Case{"cancel", &cancel, true},
                          Case{"drain", &terminate, true}, Case{"exit", nullptr, false}}) {
        CAPTURE(c.name);
        cancel = false;
        terminate = false;
        RunSpec spec = daemonising_job(c.run_on);
        spec.cgroup_root = *root;
        spec.kill_grace_ms = 200;
        if (std::string_view(c.name) == "timeout") spec.timeout = 300;
        spec.cancel = &cancel;
        spec.terminate = &terminate;
        std::thread setter;
        if (c.flag) {
            setter = std::thread([flag = c.flag] {
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                *flag = true;
            });
        }
        const auto start = std::chrono::steady_clock::now();
        RunResult r = run_process(spec);
        if (setter.joinable()) setter.join();
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
        const pid_t escaped = printed_pid(r);
        const bool died = dies_within(escaped, std::chrono::seconds(2));
        CHECK_MESSAGE(died, "the daemonised sleep " << escaped << " survived");
        if (!died) ::kill(escaped, SIGKILL);
        // The job's cgroup is gone again.
        for (const auto& entry : std::filesystem::directory_iterator(*root)) {
            CHECK_MESSAGE(entry.path().filename().string().rfind(
                              "job-" + std::to_string(::getpid()) + "-", 0) != 0,
                          entry.path());
        }
    }
}

TEST_CASE("cgroup: the empty job cgroups of a worker that is gone are removed at start") {
    std::string why;
    const auto root = errand::workerd::find_job_cgroup_root(&why);
    REQUIRE_MESSAGE(root, "no writable cgroup v2 tree: " << why);
    // A pid that is no process: a child that has been reaped.
    const pid_t gone = ::fork();
    REQUIRE(gone >= 0);
    if (gone == 0) ::_exit(0);
    REQUIRE(::waitpid(gone, nullptr, 0) == gone);
    const auto stale = std::filesystem::path(*root) / ("job-" + std::to_string(gone) + "-7");
    const auto ours = std::filesystem::path(*root) / ("job-" + std::to_string(::getpid()) + "-999");
    REQUIRE(::mkdir(stale.c_str(), 0755) == 0);
    REQUIRE(::mkdir(ours.c_str(), 0755) == 0);
    REQUIRE(errand::workerd::find_job_cgroup_root(&why) == root);
    CHECK_FALSE(std::filesystem::exists(stale));
    CHECK(std::filesystem::exists(ours));  // its worker (this process) lives
    ::rmdir(ours.c_str());
    ::rmdir(stale.c_str());
}
