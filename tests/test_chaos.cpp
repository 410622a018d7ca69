// Fault injection against real processes on loopback: a broker SIGKILLed at random moments under
// load, workers SIGKILLed and SIGSTOPped mid-job, a full and a read-only disk, and corrupt or
// foreign database files at start. Nothing acknowledged may be lost; every job that ran twice must
// be explained by its history; the database must pass PRAGMA integrity_check.
//
// Bounded: the default (CI) mode takes well under 90 s on 2 cores. ERRAND_CHAOS_LONG=1 injects
// more faults for longer. ERRAND_CHAOS_SEED=N replays a run (the seed is printed). The database
// checks need the sqlite3 command-line tool (Debian package sqlite3).
#include <sys/resource.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace errand::test;
using errand::JobState;

namespace {

bool long_mode() {
    const char* v = std::getenv("ERRAND_CHAOS_LONG");
    return v != nullptr && std::string(v) == "1";
}

std::uint64_t chaos_seed() {
    if (const char* v = std::getenv("ERRAND_CHAOS_SEED"); v != nullptr && *v != '\0')
        return std::strtoull(v, nullptr, 10);
    return std::random_device{}();
}

// ---- summaries, printed once more at the end of the run ---------------------------------

struct Summary {
    std::string scenario;
    std::uint64_t seed = 0;
    int faults = 0;
    int submitted = 0;
    int acknowledged = 0;
    int completed = 0;
    int duplicated = 0;
    int lost = 0;
    long long elapsed_ms = 0;
    std::string note;

    std::string line() const {
        std::ostringstream s;
        s << "[chaos] " << scenario << ": faults=" << faults << " submitted=" << submitted
          << " acknowledged=" << acknowledged << " completed=" << completed
          << " duplicated=" << duplicated << " lost=" << lost << " seed=" << seed
          << " time=" << elapsed_ms << "ms" << (long_mode() ? " (long mode)" : "")
          << (note.empty() ? "" : " — " + note);
        return s.str();
    }
};

std::mutex g_summaries_mu;
std::vector<std::string> g_summaries;

void record(const Summary& s) {
    MESSAGE(s.line());
    std::lock_guard lock(g_summaries_mu);
    g_summaries.push_back(s.line());
}

struct SummaryPrinter : doctest::IReporter {
    explicit SummaryPrinter(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override {
        std::lock_guard lock(g_summaries_mu);
        if (g_summaries.empty()) return;
        std::cout << "\n[chaos] ===== summary =====\n";
        for (const auto& l : g_summaries)
            std::cout << l << "\n";
        std::cout << std::flush;
    }
    void test_case_start(const doctest::TestCaseData&) override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};
DOCTEST_REGISTER_LISTENER("errand-chaos-summary", 2, SummaryPrinter);

// ---- child-process helpers ---------------------------------------------------------------

struct ShResult {
    int code = -1;  // -1: timed out
    std::string out;
    std::string err;
};

// Runs `/bin/sh -c script` with its logs in `dir` (named NAME.stdout/.stderr).
ShResult sh(const std::filesystem::path& dir, const std::string& name, const std::string& script,
            milliseconds timeout = 30s) {
    ShResult r;
    std::filesystem::remove(dir / (name + ".stdout"));
    std::filesystem::remove(dir / (name + ".stderr"));
    Process p(name, {"/bin/sh", "-c", script}, dir);
    auto st = p.wait_exit(timeout);
    r.code = st.value_or(-1);
    r.out = p.out();
    r.err = p.err();
    return r;
}

std::string quote(const std::filesystem::path& p) {
    std::string s = "'";
    for (char c : p.string())
        s += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return s + "'";
}

// PRAGMA integrity_check on a database no broker has open, through the sqlite3 CLI.
// Returns "ok" or what is wrong.
std::string integrity_check(const std::filesystem::path& dir, const std::filesystem::path& db) {
    auto r = sh(dir, "integrity-check", "sqlite3 " + quote(db) + " 'PRAGMA integrity_check'");
    if (r.code == 127) return "sqlite3 command-line tool not found (install Debian's sqlite3)";
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    if (r.code != 0) return "sqlite3 exit " + std::to_string(r.code) + ": " + r.err + out;
    return out;
}

// A broker started as `/bin/sh -c 'PREFIX exec errand-broker --listen EP --db DB ARGS…'`, so a
// test can set rlimits and signal dispositions first. Returns once it answers PING.
std::unique_ptr<Process> spawn_broker(const TempDir& dir, const std::string& name,
                                      const std::string& endpoint, const std::filesystem::path& db,
                                      const std::string& prefix,
                                      const std::vector<std::string>& args = {}) {
    std::string cmd =
        prefix + " exec " + quote(broker_bin()) + " --listen " + endpoint + " --db " + quote(db);
    for (const auto& a : args)
        cmd += " " + a;
    auto p =
        std::make_unique<Process>(name, std::vector<std::string>{"/bin/sh", "-c", cmd}, dir.path());
    std::string last = "no attempt";
    const bool up = wait_until(
        [&] {
            if (!p->running()) return true;
            try {
                errand::ClientOptions o;
                o.endpoint = endpoint;
                o.timeout = 300ms;
                o.resend = 500ms;
                errand::Client c(o);
                c.ping();
                return true;
            } catch (const std::exception& e) {
                last = e.what();
                return false;
            }
        },
        10s, 1ms);
    if (!up || !p->running())
        throw std::runtime_error("broker " + name + " did not come up (" + last + ")\n" +
                                 p->logs());
    return p;
}

errand::ClientOptions options_for(const std::string& endpoint, errand::Millis timeout_ms = 5000) {
    errand::ClientOptions o;
    o.endpoint = endpoint;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    o.resend = 500ms;
    return o;
}

int count_occurrences(const std::string& text, const std::string& what) {
    int n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1))
        ++n;
    return n;
}

std::vector<std::string> split_words(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> words;
    std::string w;
    while (in >> w)
        words.push_back(w);
    return words;
}

bool root_proof_immutable(const std::filesystem::path& dir, std::string& why) {
    const auto probe = dir / "immutable-probe";
    write_file(probe, "x");
    auto r = sh(dir, "chattr-probe", "chattr +i " + quote(probe));
    if (r.code != 0) {
        why = "chattr +i failed (exit " + std::to_string(r.code) + "): " + r.err;
        std::filesystem::remove(probe);
        return false;
    }
    // Root ignores permission bits, but not the immutable flag: a write must fail.
    auto w = sh(dir, "chattr-write", "printf y >> " + quote(probe) + " 2>/dev/null");
    sh(dir, "chattr-undo", "chattr -i " + quote(probe));
    std::filesystem::remove(probe);
    if (w.code == 0) {
        why = "a write to an immutable file succeeded";
        return false;
    }
    return true;
}

// Clears the immutable flag of `files` on destruction, so a failed test can still clean up.
struct ImmutableGuard {
    std::filesystem::path dir;
    std::vector<std::filesystem::path> files;
    bool set = false;
    void apply(bool on) {
        std::string cmd = std::string("chattr ") + (on ? "+i" : "-i");
        for (const auto& f : files)
            cmd += " " + quote(f);
        auto r = sh(dir, on ? "chattr-on" : "chattr-off", cmd);
        if (r.code != 0) throw std::runtime_error("chattr failed: " + r.err);
        set = on;
    }
    ~ImmutableGuard() {
        if (!set) return;
        try {
            apply(false);
        } catch (...) {
        }
    }
};

}  // namespace

// ---- 1. the broker SIGKILLed under load -----------------------------------------------------

TEST_CASE("chaos: a broker SIGKILLed at random moments under load loses no acknowledged job") {
    const auto t0 = std::chrono::steady_clock::now();
    const bool lng = long_mode();
    const int kKills = lng ? 40 : 12;
    const int kMinUpMs = 250, kMaxUpMs = lng ? 3000 : 1200;
    const std::uint64_t seed = chaos_seed();
    MESSAGE("broker-kill seed " << seed << " (replay with ERRAND_CHAOS_SEED=" << seed << ")");
    std::mt19937_64 rng(seed);

    TempDir dir;
    Broker broker(dir, {"--heartbeat", "500ms", "--worker-timeout", "2s"});
    const auto effects = dir / "effects";
    // Each run appends "JOB ATTEMPT PAYLOAD" (O_APPEND) before it works, and returns its payload.
    const std::string command = "p=$(cat); echo \"$ERRAND_JOB_ID $ERRAND_ATTEMPT $p\" >> " +
                                quote(effects) + "; sleep 0.1; printf %s \"$p\"";
    std::vector<std::unique_ptr<WorkerDaemon>> workers;
    for (int i = 1; i <= 3; ++i)
        workers.push_back(std::make_unique<WorkerDaemon>(dir, broker.endpoint(),
                                                         WorkerSpec{.name = "w" + std::to_string(i),
                                                                    .queues = {"chaos=" + command},
                                                                    .concurrency = 2,
                                                                    .allow_commands = false,
                                                                    .extra_args = {}}));

    struct Acked {
        std::string payload;
        errand::JobId id = 0;
        bool duplicate = false;
        int resends = 0;
    };
    std::mutex mu;
    std::vector<Acked> acked;
    std::vector<std::string> unacked;  // given up on (should stay empty)
    std::vector<std::string> broker_errors;
    std::atomic<int> submitted{0};
    std::atomic<bool> stop{false};
    // Producers give up on a job only once this passes (set when the chaos ends).
    std::atomic<std::int64_t> give_up_ns{std::numeric_limits<std::int64_t>::max()};
    auto now_ns = [] {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    };

    auto producer = [&](int t, std::uint64_t pseed) {
        std::mt19937_64 prng(pseed);
        // About 2 x 60 jobs/s in CI mode; slower in long mode so the 3 workers (about 50 jobs/s
        // on 2 cores) keep up over 40 outages and the drain stays bounded.
        std::uniform_int_distribution<int> pause(lng ? 20 : 0, lng ? 80 : 30);
        errand::Client client(broker.client_options(2000));
        for (int n = 0; !stop.load(); ++n) {
            auto spec = job_spec("chaos", "p" + std::to_string(t) + "-" + std::to_string(n), 10);
            spec.token = errand::unique_token();  // the same token on every resend
            ++submitted;
            int resends = 0;
            for (;;) {
                try {
                    auto s = client.submit(spec);
                    std::lock_guard lock(mu);
                    acked.push_back({spec.payload, s.id, s.duplicate, resends});
                    break;
                } catch (const errand::ConnectionError&) {
                    ++resends;
                } catch (const errand::BrokerError& e) {
                    std::lock_guard lock(mu);
                    broker_errors.push_back(spec.payload + ": " +
                                            std::string(errand::to_string(e.code())) + ": " +
                                            e.what());
                    ++resends;
                    std::this_thread::sleep_for(50ms);
                }
                if (now_ns() > give_up_ns.load()) {
                    std::lock_guard lock(mu);
                    unacked.push_back(spec.payload);
                    break;
                }
            }
            std::this_thread::sleep_for(milliseconds(pause(prng)));
        }
    };
    std::thread p1(producer, 1, seed + 1);
    std::thread p2(producer, 2, seed + 2);

    // The kills: up a random while, SIGKILL, down a random (short) while, restart.
    std::uniform_int_distribution<int> up(kMinUpMs, kMaxUpMs);
    std::uniform_int_distribution<int> down(0, 300);
    int kills = 0;
    std::string chaos_error;
    try {
        for (; kills < kKills; ++kills) {
            std::this_thread::sleep_for(milliseconds(up(rng)));
            broker.kill9();
            // Every fourth outage outlasts the clients' 2 s timeout, so producers see
            // ConnectionError and resend the same spec (same token) themselves.
            std::this_thread::sleep_for(kills % 4 == 3 ? milliseconds(2500)
                                                       : milliseconds(down(rng)));
            broker.start();
        }
    } catch (const std::exception& e) {
        chaos_error = e.what();
    }
    // A little calm so the last acknowledgements land, then stop the producers: each retries its
    // last job until acknowledged (bounded).
    std::this_thread::sleep_for(500ms);
    give_up_ns = now_ns() + std::int64_t{60'000'000'000};
    stop = true;
    p1.join();
    p2.join();
    const auto chaos_ms = since(t0);
    REQUIRE_MESSAGE(chaos_error.empty(),
                    "broker failed to restart after kill " << kills << ": " << chaos_error);

    // Drain: every acknowledged job must reach succeeded. WAITs stay under 2 s: the library
    // resends a WAIT every 2 s and a resend pushes the broker's timeout back, so a longer WAIT on
    // a job that does not finish ends in ConnectionError instead of nullopt.
    errand::Client client(broker.client_options(10'000));
    const auto drain_deadline = std::chrono::steady_clock::now() + (lng ? 180s : 45s);
    int completed = 0, lost = 0, stuck = 0;
    std::map<errand::JobId, errand::JobInfo> final_jobs;
    std::set<errand::JobId> acked_ids;
    for (const auto& a : acked)
        acked_ids.insert(a.id);
    CHECK_MESSAGE(acked_ids.size() == acked.size(),
                  "two acknowledged submissions share a job id (different tokens!)");
    std::map<std::string, int> stuck_states;
    for (const auto& a : acked) {
        std::optional<errand::JobInfo> job;
        std::string problem;
        try {
            while (!job) {
                const auto left = std::chrono::duration_cast<milliseconds>(
                    drain_deadline - std::chrono::steady_clock::now());
                if (left.count() <= 0) break;
                job = client.wait(a.id, std::min<milliseconds>(left, 1500ms));
            }
            if (!job) job = client.status(a.id);  // for the report
        } catch (const errand::BrokerError& e) {
            problem = std::string(errand::to_string(e.code())) + ": " + e.what();
        } catch (const errand::ConnectionError& e) {
            problem = e.what();
        }
        if (job && job->state == JobState::succeeded) {
            ++completed;
            CHECK_MESSAGE(job->result == a.payload, "job " << a.id << " result");
        } else if (job && !errand::is_terminal(job->state)) {
            ++stuck;
            stuck_states[std::string(errand::to_string(job->state))]++;
            if (stuck <= 5)
                FAIL_CHECK("NOT COMPLETED: acknowledged job "
                           << a.id << " (" << a.payload << ") is still "
                           << std::string(errand::to_string(job->state))
                           << " after the drain deadline");
        } else {
            ++lost;
            FAIL_CHECK("LOST: acknowledged job "
                       << a.id << " (" << a.payload
                       << "): " << (job ? std::string(errand::to_string(job->state)) : problem));
        }
        if (job) final_jobs[a.id] = *job;
    }
    if (stuck > 0) {
        std::string states;
        for (const auto& [st, n] : stuck_states)
            states += " " + st + "=" + std::to_string(n);
        FAIL_CHECK(stuck << " acknowledged jobs never completed (" << states
                         << " ); queues: see the broker log\n"
                         << broker.process().logs(15));
    }

    // No job was created twice: the broker holds exactly the acknowledged ones (plus any whose
    // submit was never acknowledged).
    errand::ListFilter all;
    all.limit = errand::limits::kMaxListLimit;
    const auto listed = client.list(all);
    CHECK(listed.size() == acked.size() + unacked.size());

    // Side effects: which job ran which attempts, and which payload ran under which job id.
    std::map<errand::JobId, std::vector<std::uint32_t>> runs;
    std::map<std::string, std::set<errand::JobId>> jobs_of_payload;
    for (const auto& line : read_lines(effects)) {
        auto w = split_words(line);
        if (w.size() != 3) {
            FAIL_CHECK("malformed side-effect line: '" << line << "'");
            continue;
        }
        const auto id = static_cast<errand::JobId>(std::stoull(w[0]));
        runs[id].push_back(static_cast<std::uint32_t>(std::stoul(w[1])));
        jobs_of_payload[w[2]].insert(id);
    }
    for (const auto& [payload, ids] : jobs_of_payload)
        CHECK_MESSAGE(ids.size() == 1,
                      "payload " << payload << " ran as " << ids.size() << " different jobs");
    int duplicated = 0, unexplained = 0;
    for (const auto& a : acked) {
        auto it = runs.find(a.id);
        const bool succeeded =
            final_jobs.count(a.id) > 0 && final_jobs[a.id].state == JobState::succeeded;
        if (succeeded)  // (unfinished ones are reported above)
            CHECK_MESSAGE(it != runs.end(), "job " << a.id << " succeeded but never ran");
        if (it == runs.end() || it->second.size() < 2) continue;
        ++duplicated;
        auto attempts = it->second;
        std::sort(attempts.begin(), attempts.end());
        const auto events = client.history(a.id);
        const std::uint32_t final_attempt =
            final_jobs.count(a.id) ? final_jobs[a.id].attempts : attempts.back();
        std::ostringstream why;
        bool explained = std::adjacent_find(attempts.begin(), attempts.end()) == attempts.end();
        if (!explained) why << " the same attempt ran twice;";
        for (auto att : attempts) {
            if (att == final_attempt) continue;
            bool lost_attempt = false;
            for (const auto& e : events)
                if (e.attempt == att && e.from == JobState::running &&
                    (e.reason == "worker lost" || e.reason.find("timed out") == 0))
                    lost_attempt = true;
            why << " attempt " << att << ": " << (lost_attempt ? "worker lost" : "UNEXPLAINED")
                << ";";
            if (!lost_attempt) explained = false;
        }
        std::ostringstream hist;
        for (const auto& e : events)
            hist << "\n    " << e.at.time_since_epoch().count() << " "
                 << (e.from ? errand::to_string(*e.from) : "-") << " -> " << errand::to_string(e.to)
                 << " attempt " << e.attempt << " " << e.worker.value_or("-") << " (" << e.reason
                 << ")";
        MESSAGE("duplicate: job " << a.id << " ran " << attempts.size() << " times;" << why.str()
                                  << (explained ? " acceptable" : " NOT ACCEPTABLE") << hist.str());
        if (!explained) {
            ++unexplained;
            FAIL_CHECK("job " << a.id << " ran more than once without a lost attempt");
        }
    }
    int resent = 0, dup_acks = 0;
    for (const auto& a : acked) {
        resent += a.resends > 0;
        dup_acks += a.duplicate;
    }
    {
        std::string errors;
        for (const auto& e : broker_errors)
            errors += "\n  " + e;
        CHECK_MESSAGE(broker_errors.empty(), "submits refused by the broker:" << errors);
    }
    CHECK_MESSAGE(unacked.empty(), unacked.size() << " submissions never acknowledged");

    // A final crash, then the file itself.
    broker.kill9();
    const auto integrity = integrity_check(dir.path(), broker.db_path());
    CHECK_MESSAGE(integrity == "ok", "integrity_check: " << integrity);

    Summary s;
    s.scenario = "broker SIGKILL x" + std::to_string(kills);
    s.seed = seed;
    s.faults = kills;
    s.submitted = submitted.load();
    s.acknowledged = static_cast<int>(acked.size());
    s.completed = completed;
    s.duplicated = duplicated;
    s.lost = lost;
    s.elapsed_ms = since(t0).count();
    s.note = std::to_string(stuck) + " never completed, " + std::to_string(resent) +
             " submits resent after a ConnectionError, " + std::to_string(dup_acks) +
             " acknowledged as duplicate (token matched), " + std::to_string(unexplained) +
             " unexplained duplicates, chaos phase " + std::to_string(chaos_ms.count()) +
             " ms, integrity_check " + integrity;
    record(s);
    CHECK(lost == 0);
    CHECK(stuck == 0);
}

// ---- 2. workers SIGKILLed and SIGSTOPped mid-job ------------------------------------------

TEST_CASE(
    "chaos: jobs of SIGKILLed and SIGSTOPped workers are retried elsewhere; stale results "
    "are refused") {
    const auto t0 = std::chrono::steady_clock::now();
    const int kRounds = long_mode() ? 6 : 2;
    TempDir dir;
    Broker broker(dir, {"--heartbeat", "250ms", "--worker-timeout", "1s"});
    const auto effects = dir / "effects";
    auto command = [&](const std::string& name) {
        return "echo \"$ERRAND_JOB_ID $ERRAND_ATTEMPT " + name + "\" >> " + quote(effects) +
               "; sleep 2; printf " + name;
    };
    std::map<std::string, std::unique_ptr<WorkerDaemon>> pool;
    int next_worker = 1;
    auto add_worker = [&] {
        const std::string name = "w" + std::to_string(next_worker++);
        pool[name] = std::make_unique<WorkerDaemon>(dir, broker.endpoint(),
                                                    WorkerSpec{.name = name,
                                                               .queues = {"part=" + command(name)},
                                                               .concurrency = 1,
                                                               .allow_commands = false,
                                                               .extra_args = {}});
    };
    for (int i = 0; i < 3; ++i)
        add_worker();

    errand::Client client(broker.client_options(5000));
    int faults = 0, submitted = 0, completed = 0, duplicated = 0, lost = 0;
    int stale_refused = 0, held_rejected = 0;  // of this round's resumed worker
    int stale_total = 0, rejected_total = 0;
    for (int round = 1; round <= kRounds; ++round) {
        CAPTURE(round);
        std::vector<errand::JobId> ids;
        for (int i = 0; i < 3; ++i)
            ids.push_back(client.submit(job_spec("part", "", 5)).id);
        submitted += 3;

        // All three running, one per worker.
        std::map<errand::JobId, std::string> first_worker;
        const bool running = wait_until(
            [&] {
                first_worker.clear();
                std::set<std::string> names;
                for (auto id : ids) {
                    auto j = client.status(id);
                    if (j.state != JobState::running || !j.worker) return false;
                    first_worker[id] = *j.worker;
                    names.insert(*j.worker);
                }
                return names.size() == ids.size();
            },
            15s, 50ms);
        std::string all_logs;
        for (auto& [n, w] : pool)
            all_logs += w->logs();
        REQUIRE_MESSAGE(running, "round " << round << ": the 3 jobs did not start on 3 workers\n"
                                          << all_logs << broker.logs());
        const std::string killed = first_worker[ids[0]];
        const std::string stopped = first_worker[ids[1]];
        REQUIRE(pool.count(killed) == 1);
        REQUIRE(pool.count(stopped) == 1);
        const std::string err_before = pool[stopped]->process().err();
        const int stale_refused_before = count_occurrences(err_before, "refused as stale");
        const int held_rejected_before = count_occurrences(err_before, "gave it to someone else");
        const int stale_before = stale_refused_before + held_rejected_before;

        pool[killed]->kill9();
        pool[stopped]->process().kill(SIGSTOP);
        faults += 2;
        auto dead = std::move(pool[killed]);  // keeps its logs until the end of the round
        pool.erase(killed);
        add_worker();

        for (auto id : ids) {
            auto job = client.wait(id, 20s);
            REQUIRE_MESSAGE(job.has_value(), "job " << id << " not finished 20 s after the faults\n"
                                                    << broker.logs());
            CHECK(job->state == JobState::succeeded);
            if (job->state == JobState::succeeded)
                ++completed;
            else
                ++lost;
        }

        // The stopped worker comes back: whatever it reports for its old attempt is stale.
        pool[stopped]->process().kill(SIGCONT);
        const bool refused = wait_until(
            [&] {
                auto err = pool[stopped]->process().err();
                return count_occurrences(err, "refused as stale") +
                           count_occurrences(err, "gave it to someone else") >
                       stale_before;
            },
            10s, 50ms);
        {
            const auto err = pool[stopped]->process().err();
            stale_refused = count_occurrences(err, "refused as stale") - stale_refused_before;
            held_rejected =
                count_occurrences(err, "gave it to someone else") - held_rejected_before;
        }
        CHECK_MESSAGE(refused, "the resumed worker " << stopped
                                                     << " never had its old result refused\n"
                                                     << pool[stopped]->logs() << broker.logs());

        stale_total += stale_refused;
        rejected_total += held_rejected;
        for (auto id : ids) {
            CAPTURE(id);
            auto job = client.status(id);
            auto events = client.history(id);
            int succeeded_events = 0;
            bool lost_first = false;
            for (const auto& e : events) {
                succeeded_events += e.to == JobState::succeeded;
                if (e.attempt == 1 && e.from == JobState::running && e.reason == "worker lost")
                    lost_first = true;
            }
            CHECK(job.state == JobState::succeeded);
            CHECK(succeeded_events == 1);
            REQUIRE(job.worker.has_value());
            CHECK(job.result == *job.worker);  // the result is the final worker's own
            const std::string& first = first_worker[id];
            if (first == killed || first == stopped) {
                CHECK(lost_first);
                CHECK(job.attempts >= 2);
                CHECK(*job.worker != first);
                ++duplicated;  // attempt 1 ran (its side effect happened) and was retried
            } else {
                CHECK(job.attempts == 1);
                CHECK(*job.worker == first);
            }
        }
    }

    // Attempts seen in the side effects match: at most one line per (job, attempt).
    std::map<std::pair<std::string, std::string>, int> per_attempt;
    for (const auto& line : read_lines(effects)) {
        auto w = split_words(line);
        if (w.size() == 3) per_attempt[{w[0], w[1]}]++;
    }
    for (const auto& [k, n] : per_attempt)
        CHECK_MESSAGE(n == 1,
                      "job " << k.first << " attempt " << k.second << " ran " << n << " times");

    Summary s;
    s.scenario = "worker SIGKILL+SIGSTOP x" + std::to_string(kRounds) + " rounds";
    s.faults = faults;
    s.submitted = submitted;
    s.acknowledged = submitted;
    s.completed = completed;
    s.duplicated = duplicated;
    s.lost = lost;
    s.elapsed_ms = since(t0).count();
    s.note =
        "duplicates are the re-runs of the killed/stopped workers' attempts (expected); "
        "resumed workers: " +
        std::to_string(stale_total) + " results refused as stale, " +
        std::to_string(rejected_total) +
        " held jobs rejected at re-registration, broker "
        "logged " +
        std::to_string(count_occurrences(broker.process().err(), "rejected stale")) +
        " stale results";
    record(s);
    CHECK(lost == 0);
}

// ---- 3. a full disk and a read-only database ------------------------------------------------

TEST_CASE("chaos: a full disk refuses submissions with 'storage', keeps serving and recovers") {
    const auto t0 = std::chrono::steady_clock::now();
    TempDir dir;
    const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    const auto db = dir / "errand.db";
    // dash counts ulimit -f in 512-byte blocks: 3 MiB. Only the soft limit, so it can be raised
    // again (without CAP_SYS_RESOURCE) while the broker runs. SIGXFSZ ignored: writes past the
    // limit fail with EFBIG instead of killing the broker.
    const std::string limit = "ulimit -S -f 6144 && trap '' XFSZ &&";
    auto broker = spawn_broker(dir, "broker-full", endpoint, db, limit,
                               {"--heartbeat", "250ms", "--worker-timeout", "1s"});
    errand::Client client(options_for(endpoint, 5000));

    // Jobs of another queue, waiting for a worker that comes only once the disk is full.
    std::vector<errand::JobId> work;
    for (int i = 0; i < 5; ++i)
        work.push_back(client.submit(job_spec("work", "w" + std::to_string(i))).id);

    // Fill it: 64 KiB payloads until the broker refuses.
    const std::string big(64 * 1024, 'x');
    std::vector<errand::JobId> filled;
    std::optional<errand::BrokerError> refusal;
    errand::JobSpec refused_spec;
    int submitted = 5;
    for (int i = 0; i < 400 && !refusal; ++i) {
        auto spec = job_spec("fill", big + std::to_string(i));
        spec.token = errand::unique_token();
        ++submitted;
        try {
            filled.push_back(client.submit(spec).id);
        } catch (const errand::BrokerError& e) {
            refusal = e;
            refused_spec = spec;
        }
    }
    REQUIRE_MESSAGE(refusal.has_value(), "400 x 64 KiB fit under a 3 MiB file-size limit?\n"
                                             << broker->logs());
    MESSAGE("disk full after " << filled.size()
                               << " jobs: " << std::string(errand::to_string(refusal->code()))
                               << ": " << refusal->what());
    CHECK(refusal->code() == errand::ErrorCode::storage);
    CHECK(std::string(refusal->what()).find("storage") != std::string::npos);
    REQUIRE_FALSE(filled.empty());

    // Still serving, and everything committed is intact.
    CHECK(broker->running());
    CHECK_NOTHROW(client.ping());
    auto first = client.status(filled.front());
    CHECK(first.state == JobState::ready);
    CHECK(first.payload_size == big.size() + 1);
    CHECK(client.status(filled.back()).state == JobState::ready);
    errand::ListFilter fill_q;
    fill_q.queue = "fill";
    fill_q.limit = errand::limits::kMaxListLimit;
    CHECK(client.list(fill_q).size() == filled.size());
    // Another write while still full is refused as well, and the refused job does not exist.
    bool refused_again = false;
    try {
        client.submit(refused_spec);
    } catch (const errand::BrokerError& e) {
        refused_again = e.code() == errand::ErrorCode::storage;
    }
    CHECK(refused_again);
    CHECK(client.list(fill_q).size() == filled.size());

    // A worker arrives while the disk is full: dispatching needs commits that fail. The broker
    // must survive it.
    const auto effects = dir / "effects";
    WorkerDaemon worker(
        dir, endpoint,
        {.name = "w1",
         .queues = {"work=echo \"$ERRAND_JOB_ID\" >> " + quote(effects) + "; echo ran"},
         .concurrency = 2,
         .allow_commands = false,
         .extra_args = {}});
    std::this_thread::sleep_for(2s);
    REQUIRE_MESSAGE(broker->running(), "the broker died on a full disk\n" << broker->logs());
    CHECK_NOTHROW(client.ping());

    // Space returns: raise the soft limit of the running broker to its hard limit.
    rlimit old{};
    std::string how;
    if (::prlimit(broker->pid(), RLIMIT_FSIZE, nullptr, &old) == 0) {
        rlimit raised = old;
        raised.rlim_cur = old.rlim_max;
        if (::prlimit(broker->pid(), RLIMIT_FSIZE, &raised, nullptr) == 0)
            how = "without a restart (prlimit on the running broker)";
    }
    if (how.empty()) {
        broker->kill(SIGKILL);
        broker->wait_exit(5s);
        broker.reset();
        broker = spawn_broker(dir, "broker-free", endpoint, db, "",
                              {"--heartbeat", "250ms", "--worker-timeout", "1s"});
        how = "after a restart without the limit (prlimit refused)";
    }
    MESSAGE("space returned " << how);

    // The same spec again: it was never committed, so it is new now.
    errand::Submitted again;
    REQUIRE_NOTHROW(again = client.submit(refused_spec));
    CHECK_FALSE(again.duplicate);
    filled.push_back(again.id);
    for (int i = 0; i < 5; ++i)
        filled.push_back(client.submit(job_spec("fill", "after " + std::to_string(i))).id);
    submitted += 5;
    int completed = 0;
    for (auto id : work) {
        auto job = client.wait(id, 20s);
        CHECK_MESSAGE(job.has_value(), "work job " << id << " never finished\n"
                                                   << worker.logs() << broker->logs());
        if (job) {
            CHECK(job->state == JobState::succeeded);
            completed += job->state == JobState::succeeded;
        }
    }

    // A crash now, then the file and its contents.
    broker->kill(SIGKILL);
    broker->wait_exit(5s);
    const auto integrity = integrity_check(dir.path(), db);
    CHECK_MESSAGE(integrity == "ok", "integrity_check: " << integrity);
    broker = spawn_broker(dir, "broker-after", endpoint, db, "");
    int lost = 0;
    for (auto id : filled) {
        try {
            auto j = client.status(id);
            if (j.state != JobState::ready) ++lost;
        } catch (const errand::BrokerError& e) {
            ++lost;
            FAIL_CHECK("job " << id << " after the restart: " << std::string(e.what()));
        }
    }
    for (auto id : work) {
        auto j = client.status(id);
        CHECK(j.state == JobState::succeeded);
        if (j.state != JobState::succeeded) ++lost;
    }
    CHECK(client.list(fill_q).size() == filled.size());

    Summary s;
    s.scenario = "disk full (RLIMIT_FSIZE 3 MiB)";
    s.faults = 1;
    s.submitted = submitted;
    s.acknowledged = static_cast<int>(filled.size() + work.size());
    s.completed = completed;
    s.lost = lost;
    s.elapsed_ms = since(t0).count();
    s.note = "refused: " + std::string(refusal->what()) + "; recovered " + how +
             "; integrity_check " + integrity;
    record(s);
    CHECK(lost == 0);
}

TEST_CASE(
    "chaos: a read-only database refuses submissions with 'storage', keeps serving reads "
    "and recovers") {
    const auto t0 = std::chrono::steady_clock::now();
    TempDir dir;
    std::string why;
    if (!root_proof_immutable(dir.path(), why)) {
        MESSAGE("SKIPPED: no way to make the database read-only here (" << why
                                                                        << "); chmod does not "
                                                                           "stop root, mounts are "
                                                                           "not allowed. "
                                                                           "test_broker_faults "
                                                                           "covers a failing "
                                                                           "commit in-process.");
        Summary s;
        s.scenario = "read-only database";
        s.note = "skipped: " + why;
        record(s);
        return;
    }
    Broker broker(dir);
    errand::Client client(broker.client_options());
    std::vector<errand::JobId> ids;
    for (int i = 0; i < 10; ++i)
        ids.push_back(client.submit(job_spec("ro", "job " + std::to_string(i))).id);

    // chattr +i stops writes through descriptors the broker already holds, for root too.
    ImmutableGuard guard{dir.path(), {broker.db_path(), broker.db_path().string() + "-wal"}};
    REQUIRE(std::filesystem::exists(guard.files[1]));
    guard.apply(true);

    auto spec = job_spec("ro", "while read-only");
    spec.token = errand::unique_token();
    std::optional<errand::BrokerError> refusal;
    try {
        client.submit(spec);
    } catch (const errand::BrokerError& e) {
        refusal = e;
    }
    REQUIRE_MESSAGE(refusal.has_value(), "a submit to a read-only database was acknowledged\n"
                                             << broker.logs());
    MESSAGE("read-only: " << std::string(errand::to_string(refusal->code())) << ": "
                          << refusal->what());
    CHECK(refusal->code() == errand::ErrorCode::storage);
    CHECK(broker.process().running());
    CHECK_NOTHROW(client.ping());
    for (auto id : ids)
        CHECK(client.status(id).state == JobState::ready);
    errand::ListFilter q;
    q.queue = "ro";
    CHECK(client.list(q).size() == ids.size());

    guard.apply(false);  // writable again, no restart
    errand::Submitted after;
    REQUIRE_NOTHROW(after = client.submit(spec));
    CHECK_FALSE(after.duplicate);
    ids.push_back(after.id);
    CHECK(client.list(q).size() == ids.size());

    broker.kill9();
    const auto integrity = integrity_check(dir.path(), broker.db_path());
    CHECK_MESSAGE(integrity == "ok", "integrity_check: " << integrity);
    broker.start();
    errand::Client again(broker.client_options());
    int lost = 0;
    for (auto id : ids)
        lost += again.status(id).state != JobState::ready;

    Summary s;
    s.scenario = "read-only database (chattr +i)";
    s.faults = 1;
    s.submitted = 11;
    s.acknowledged = static_cast<int>(ids.size());
    s.lost = lost;
    s.elapsed_ms = since(t0).count();
    s.note = "refused: " + std::string(refusal->what()) +
             "; recovered without a restart; integrity_check " + integrity;
    record(s);
    CHECK(lost == 0);
}

// ---- 4. corrupt or foreign database files at start ----------------------------------------

TEST_CASE(
    "chaos: a corrupt or foreign database file stops the broker with a clear error and "
    "stays as it was") {
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t seed = chaos_seed();
    std::mt19937_64 rng(seed);
    TempDir dir;

    // A real database with some jobs, shut down cleanly so everything is in the main file.
    std::string real;
    {
        Broker broker(dir);
        errand::Client client(broker.client_options());
        for (int i = 0; i < 100; ++i)
            client.submit(job_spec("real", std::string(2000, 'a' + i % 26)));
        broker.process().kill(SIGTERM);
        REQUIRE(broker.process().wait_exit(10s) == 0);
        real = read_file(broker.db_path());
        REQUIRE_MESSAGE(real.size() > 16 * 4096, real.size());
        REQUIRE_FALSE(std::filesystem::exists(broker.db_path().string() + "-wal"));
    }

    struct Case {
        std::string name;
        std::string bytes;
    };
    std::vector<Case> cases;
    {
        std::string garbage(8192, '\0');
        for (auto& c : garbage)
            c = static_cast<char>(rng() & 0xff);
        cases.push_back({"garbage bytes", garbage});
    }
    cases.push_back({"an empty (0-byte) file", ""});
    cases.push_back({"truncated to 100 bytes", real.substr(0, 100)});
    cases.push_back({"truncated to half", real.substr(0, (real.size() / 2) / 4096 * 4096)});
    cases.push_back({"truncated by one page", real.substr(0, real.size() - 4096)});
    {
        const auto foreign = dir / "foreign.db";
        auto r = sh(dir.path(), "make-foreign",
                    "sqlite3 " + quote(foreign) +
                        " \"CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); "
                        "INSERT INTO notes (text) VALUES ('someone else''s data');\"");
        REQUIRE_MESSAGE(r.code == 0, "sqlite3 CLI: " << r.err);
        cases.push_back({"another application's SQLite file", read_file(foreign)});
    }
    {
        const auto newer = dir / "newer.db";
        write_file(newer, real);
        auto r = sh(dir.path(), "make-newer",
                    "sqlite3 " + quote(newer) + " 'UPDATE schema_version SET version = 999'");
        REQUIRE_MESSAGE(r.code == 0, "sqlite3 CLI: " << r.err);
        REQUIRE_FALSE(std::filesystem::exists(newer.string() + "-wal"));
        cases.push_back({"schema version 999", read_file(newer)});
    }

    int n = 0, clean = 0;
    for (const auto& c : cases) {
        CAPTURE(c.name);
        const auto sub = dir / ("case" + std::to_string(++n));
        std::filesystem::create_directory(sub);
        const auto db = sub / "errand.db";
        write_file(db, c.bytes);
        Process broker("broker",
                       {broker_bin(), "--listen", "tcp://127.0.0.1:" + std::to_string(free_port()),
                        "--db", db.string()},
                       sub);
        const auto status = broker.wait_exit(10s);
        const std::string err = broker.err();
        INFO("stderr: " << err);
        REQUIRE_MESSAGE(status.has_value(), c.name << ": the broker started on it\n"
                                                   << broker.logs());
        CHECK_MESSAGE(*status < 128, c.name << ": killed by signal " << *status - 128);
        CHECK(*status == 3);
        CHECK(err.find("database") != std::string::npos);
        const bool unchanged = read_file(db) == c.bytes;
        CHECK_MESSAGE(unchanged, c.name << ": the broker changed the file it refused");
        if (!unchanged) {
            const auto now = read_file(db);
            std::ostringstream diff;
            int shown = 0;
            for (std::size_t i = 0; i < std::min(now.size(), c.bytes.size()) && shown < 8; ++i)
                if (now[i] != c.bytes[i]) {
                    diff << " offset " << i << ": " << int(static_cast<unsigned char>(c.bytes[i]))
                         << " -> " << int(static_cast<unsigned char>(now[i])) << ";";
                    ++shown;
                }
            MESSAGE(c.name << ": size " << c.bytes.size() << " -> " << now.size() << ","
                           << diff.str());
        }
        std::string first_line = err.substr(0, err.find('\n'));
        MESSAGE(c.name << ": exit " << *status << ", " << first_line);
        clean += *status == 3 && unchanged;
    }

    Summary s;
    s.scenario = "corrupt/foreign database at start";
    s.seed = seed;
    s.faults = static_cast<int>(cases.size());
    s.elapsed_ms = since(t0).count();
    s.note = std::to_string(clean) + "/" + std::to_string(cases.size()) +
             " refused with exit 3 and left unchanged";
    record(s);
}
