// Writes the seed corpus of both fuzz targets with the real encoders:
//   make_corpus OUTDIR   ->   OUTDIR/codec/<name>, OUTDIR/broker/<name>
// fuzz/corpus/ in the repository is this program's output; rerun it after a protocol change.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "errand/codec.hpp"
#include "script.hpp"

using namespace errand;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace sc = errand::fuzz::script;

namespace {

void write_file(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
        std::fprintf(stderr, "make_corpus: cannot write %s\n", path.c_str());
        std::exit(1);
    }
}

JobInfo sample_job() {
    JobInfo j;
    j.id = 7;
    j.queue = "default";
    j.state = JobState::succeeded;
    j.attempts = 2;
    j.max_attempts = 3;
    j.exit_code = 0;
    j.result = "ok\n";
    j.error = "boom";
    j.worker = "build-1";
    j.argv = std::vector<std::string>{"make", "-j2"};
    j.payload_size = 5;
    j.created_at = Timestamp{1'700'000'000'000ms};
    j.started_at = Timestamp{1'700'000'000'100ms};
    j.finished_at = Timestamp{1'700'000'000'900ms};
    j.priority = 5;
    j.timeout = 60000ms;
    j.unique = "nightly";
    j.progress = 100;
    j.progress_message = "done";
    return j;
}

// One frame 2 per message type (and a few variants), as they travel on the wire.
std::vector<std::pair<std::string, std::string>> codec_seeds() {
    std::vector<std::pair<std::string, std::string>> out;
    auto add = [&](std::string name, std::string body) {
        out.emplace_back(std::move(name), std::move(body));
    };
    JobSpec plain;
    plain.queue = "default";
    plain.payload = "hi";
    add("submit", encode(SubmitRequest{1, {plain}}));
    JobSpec full = plain;
    full.argv = std::vector<std::string>{"sh", "-c", "echo hi"};
    full.max_attempts = 5;
    full.token = "0123456789abcdef";
    full.priority = -10;
    full.delay = 5000ms;
    full.timeout = 30000ms;
    full.backoff = 100ms;
    full.backoff_cap = 10000ms;
    full.unique = "report-42";
    JobSpec at = plain;
    at.run_at = Timestamp{1'700'000'100'000ms};
    add("submit_full", encode(SubmitRequest{2, {full, at, plain}}));
    JobSpec expiring = plain;
    expiring.expires_in = 60000ms;
    JobSpec expiring_at = plain;
    expiring_at.expires_at = Timestamp{1'700'000'100'000ms};
    add("submit_expiry", encode(SubmitRequest{9, {expiring, expiring_at}}));
    JobSpec child = plain;
    child.after = {1, 2};
    child.after_any = true;
    add("submit_after", encode(SubmitRequest{10, {child}}));
    add("submitted", encode(SubmitReply{1, {1, 2}, {false, true}}));
    add("status", encode(IdRequest{3, 1}));
    add("wait", encode(WaitRequest{4, 1, 1000}));
    add("list", encode(ListRequest{5, "default", JobState::ready, 10}));
    add("job", encode_job(sample_job(), 6));
    add("jobs", encode_jobs({sample_job(), JobInfo{}}, 7));
    RegisterRequest reg;
    reg.req = 8;
    reg.instance = "a1b2c3";
    reg.name = "build-1";
    reg.host = "host";
    reg.pid = 1234;
    reg.queues = {"default", "slow"};
    reg.concurrency = 4;
    reg.commands = true;
    reg.held = {{1, 1}, {2, 3}};
    reg.weights = {3, 1};
    reg.prefetch = 2;
    add("register", encode(reg));
    add("registered", encode(RegisteredReply{8, 1000, 5000, {1}, {2}}));
    add("credit", encode_credit(4));
    add("dispatch",
        encode(Dispatch{1, "default", 1, "hi", std::vector<std::string>{"echo", "hi"}, 1, 30000}));
    add("heartbeat", encode(WorkerHeartbeat{3, {1, 2}}));
    add("done", encode(JobResult{true, 1, 1, 0, "result", "", false}));
    add("fail", encode(JobResult{false, 1, 1, 2, "partial", "exit 2\nmore", true}));
    add("ack", encode(Ack{1, 1}));
    add("error",
        encode(ErrorReply{9, ErrorCode::stale, "job 1 attempt 1 is no longer current", 1, 1}));
    add("pong", encode(Pong{10, "0.1.0", Timestamp{1'700'000'000'000ms}}));
    add("progress", encode(Progress{1, 1, 50, "half way"}));
    add("abort", encode(Abort{1, 1, "cancelled"}));
    add("pause", encode(QueueRequest{11, "default"}));
    add("retry_id", encode(RetryRequest{12, 1, false, std::nullopt}));
    add("retry_dead", encode(RetryRequest{13, std::nullopt, true, "default"}));
    add("purge", encode(PurgeRequest{14, JobState::dead, "default", 60000}));
    add("retried", encode_ids(12, {1, 2, 3}));
    add("purged", encode_count(14, 3));
    {
        Schedule s;
        s.name = "nightly";
        s.cron = "30 2 * * *";
        s.zone = "Europe/Berlin";
        s.catch_up = "all";
        s.job.queue = "default";
        s.job.argv = std::vector<std::string>{"backup", "--full"};
        add("schedule_add", encode(ScheduleAddRequest{15, s}));
        add("schedule_show", encode(ScheduleRequest{16, "nightly"}));
        s.created_at = Timestamp{1'700'000'000'000ms};
        s.next_at = Timestamp{1'700'000'060'000ms};
        s.last_at = Timestamp{1'700'000'000'000ms};
        s.last_job = 7;
        s.last_state = JobState::succeeded;
        add("schedule", encode_schedule(16, s));
        add("schedules", encode_schedules(17, {s}));
    }
    QueueInfo qi{"default", true, {}, Timestamp{1'700'000'000'000ms}};
    for (JobState s : kAllStates)
        qi.counts.emplace_back(s, static_cast<std::uint64_t>(s));
    add("queues", encode_queues(15, {qi}));
    add("events", encode_events(16, 1,
                                {Event{Timestamp{1ms}, std::nullopt, JobState::ready, 0,
                                       std::nullopt, "submitted"},
                                 Event{Timestamp{2ms}, JobState::ready, JobState::running, 1,
                                       "build-1", "dispatched"}}));
    JobEvent ev{3,
                1,
                "default",
                JobState::ready,
                JobState::running,
                1,
                Timestamp{1'700'000'000'100ms},
                "build-1",
                "dispatched"};
    add("job_event", encode(ev));
    add("feed", encode(FeedRequest{18, "default", 10, 2}));
    add("feed_reply", encode_feed(18, {ev, JobEvent{}}));
    StatsReply st;
    st.req = 19;
    st.time = Timestamp{1'700'000'000'000ms};
    st.workers = 1;
    st.running = 1;
    st.commits = 4;
    st.commit_seconds_sum = 0.25;
    st.events_endpoint = "tcp://127.0.0.1:7745";
    QueueStats qs;
    qs.name = "default";
    for (JobState s : kAllStates)
        qs.counts.emplace_back(s, 1);
    qs.submitted = 3;
    qs.finished_per_second = 1.5;
    st.queues = {qs};
    add("stats", encode(st));
    WorkerInfo wi{"build-1",
                  "a1b2c3",
                  "host",
                  1234,
                  {"default"},
                  2,
                  1,
                  1,
                  Timestamp{1'700'000'000'000ms},
                  {WorkerJob{1, "default", 1, Timestamp{1'700'000'000'100ms}}}};
    add("workers", encode_workers(20, {wi}));
    add("worker_control", encode(WorkerControlRequest{22, "build-1", "concurrency", 4}));
    add("control", encode(WorkerControl{std::string(kWorkerQuiet), 4}));
    reg.state = std::string(kWorkerQuiet);
    add("register_quiet", encode(reg));
    SubmitRequest sw{21, {plain}, 5000};
    add("submit_wait", encode(sw));
    std::vector<std::string> rs = {encode(JobResult{true, 1, 1, 0, "result", "", false}),
                                   encode(JobResult{false, 2, 1, 1, std::nullopt, "boom", true})};
    add("results", encode_results({rs[0], rs[1]}));
    add("results_credit", encode_results({rs[0], rs[1]}, 2));
    add("acks", encode_acks({Ack{1, 1}, Ack{2, 1}}));
    {
        JobSpec member = plain;
        member.batch = 3;
        add("submit_batch", encode(SubmitRequest{23, {member, member}}));
        JobSpec cb;
        cb.queue = "reports";
        cb.argv = std::vector<std::string>{"report", "--batch"};
        cb.max_attempts = 2;
        cb.delay = 1000ms;
        cb.expires_in = 60000ms;
        JobSpec ok = cb;
        ok.queue = "notify";
        ok.argv.reset();
        add("batch_open", encode(BatchOpenRequest{24, "nightly import", cb, ok}));
        add("batch_seal", encode(BatchRequest{25, 3}));
        add("batch_list", encode(BatchListRequest{26, 50, 3}));
        BatchInfo b;
        b.id = 3;
        b.state = "complete";
        b.description = "nightly import";
        b.total = 4;
        b.succeeded = 1;
        b.dead = 1;
        b.cancelled = 1;
        b.expired = 1;
        b.created_at = Timestamp{1'700'000'000'000ms};
        b.sealed_at = Timestamp{1'700'000'000'500ms};
        b.completed_at = Timestamp{1'700'000'001'000ms};
        b.on_complete = cb;
        b.on_success = ok;
        b.complete_job = 9;
        add("batch", encode_batch(25, b));
        BatchInfo open;
        open.id = 4;
        open.total = 2;
        open.pending = 2;
        open.created_at = Timestamp{1'700'000'002'000ms};
        b.on_complete.reset();
        b.on_success.reset();
        add("batches", encode_batches(26, {open, b}));
    }
    add("req", encode_req(17));
    add("empty", encode_empty());
    return out;
}

// Writes fuzz_broker scripts byte for byte in the layout that fuzz/script.hpp describes, so
// each reads back as the intended sequence of messages.
class ScriptWriter {
  public:
    ScriptWriter() {
        range(1, 2000, 100);     // heartbeat_ms
        range(1, 10000, 10000);  // worker_timeout_ms
        range(0, 5000, 10);      // retry_delay_ms
        range(0, 60000, 1000);   // retry_cap_ms
        range(0, 5000, 100);     // timeout_grace_ms
        range(0, 600000, 5000);  // retention_ms
        range(1, 4, 2);          // retention_batch
        byte(0);                 // the broker's default limits
    }

    // A message built with the real encoders, sent as a kRaw step (body up to 255 bytes).
    ScriptWriter& msg(std::size_t identity, std::string_view command, const std::string& body,
                      std::uint8_t advance = 1) {
        head(advance, identity, sc::Op::kRaw);
        range(0, sc::kCommandNames.size() - 1, sc::command_index(command));
        if (body.size() > sc::kMaxRawBody) {
            std::fprintf(stderr, "make_corpus: a %.*s body is over %zu bytes\n",
                         static_cast<int>(command.size()), command.data(), sc::kMaxRawBody);
            std::exit(1);
        }
        range(0, sc::kMaxRawBody, body.size());
        bytes_ += body;
        return *this;
    }
    ScriptWriter& restart() {
        head(1, 0, sc::Op::kRestart);
        return *this;
    }
    ScriptWriter& fail_commit() {
        head(0, 0, sc::Op::kFault);
        byte(1);
        return *this;
    }
    ScriptWriter& fail_write(std::uint8_t n) {
        head(0, 0, sc::Op::kFault);
        byte(0);
        range(0, 3, n);
        return *this;
    }
    ScriptWriter& envelope(std::string_view version, std::string_view command,
                           const std::string& body, std::size_t frames) {
        head(1, 0, sc::Op::kRawEnvelope);
        bool ok = version == kProtocolVersion;
        byte(ok ? 1 : 0);
        if (!ok) str(12, version);
        str(12, command);
        str(32, body);
        range(0, 4, frames);
        return *this;
    }
    // Lets time pass: a PING after `seconds` seconds (at most 127).
    // SCHEDULE_ADD as the target builds it (broker_entry.cpp): kSchedules[name], kCrons[cron],
    // kZones[zone], kCatchUps[catch_up], queue q0, a short payload, not paused.
    ScriptWriter& schedule_add(std::size_t name, std::size_t cron, std::size_t zone,
                               std::size_t catch_up) {
        head(1, 0, sc::Op::kScheduleAdd);
        range(0, 7, 1);  // req: the next one
        range(0, sc::kSchedules.size() - 1, name);
        byte(1);  // a cron from the list
        range(0, sc::kCrons.size() - 1, cron);
        range(0, sc::kZones.size() - 1, zone);
        range(0, sc::kCatchUps.size() - 1, catch_up);
        range(0, 15, 1);  // a queue from the list: q0
        range(0, sc::kQueues.size() - 1, 0);
        str(8, "tick");
        range(1, 3, 2);
        byte(0);         // no timeout
        range(0, 7, 1);  // not paused
        return *this;
    }
    // SCHEDULE_SHOW, _REMOVE, _PAUSE, _RESUME of kSchedules[name]; SCHEDULE_LIST.
    ScriptWriter& schedule(sc::Op op, std::size_t name, std::uint8_t advance = 1) {
        head(advance, 0, op);
        range(0, 7, 1);
        if (op != sc::Op::kScheduleList) range(0, sc::kSchedules.size() - 1, name);
        return *this;
    }
    // WORKER_CONTROL as the target builds it: kInstances[instance] (or "nobody" when
    // `instance` is past its end), kWorkerActions[action], and for `concurrency` the value n.
    ScriptWriter& worker_control(std::size_t instance, std::size_t action, std::uint32_t n = 0) {
        head(1, 0, sc::Op::kWorkerControl);
        range(0, 7, 1);  // req: the next one
        if (instance >= sc::kInstances.size()) {
            range(0, 3, 0);
        } else {
            range(0, 3, 1);
            range(0, sc::kInstances.size() - 1, instance);
        }
        range(0, kWorkerActions.size() - 1, action);
        if (kWorkerActions[action] == "concurrency") {
            range(0, 3, n);
        } else if (n != 0) {
            range(0, 7, 0);  // a value where none belongs (refused)
            range(0, 3, n);
        } else {
            range(0, 7, 1);
        }
        return *this;
    }
    ScriptWriter& wait(std::uint8_t seconds) {
        return msg(0, cmd::kPing, encode_req(99), static_cast<std::uint8_t>(0x80 | seconds));
    }
    const std::string& bytes() const { return bytes_; }

  private:
    void head(std::uint8_t advance, std::size_t identity, sc::Op op) {
        byte(advance);
        range(0, sc::kIdentities.size() - 1, identity);
        byte(static_cast<std::uint8_t>(op));
    }
    void byte(std::uint8_t b) { bytes_ += static_cast<char>(b); }
    // Mirrors Input::range: (value - lo) in as many little-endian bytes as hi - lo needs.
    void range(std::uint64_t lo, std::uint64_t hi, std::uint64_t value) {
        std::uint64_t v = value - lo;
        for (std::uint64_t s = hi - lo; s != 0; s >>= 8, v >>= 8)
            byte(static_cast<std::uint8_t>(v & 0xff));
    }
    void str(std::size_t max, std::string_view s) {
        range(0, max, s.size());
        bytes_ += s;
    }
    std::string bytes_;
};

constexpr std::size_t kClient = 0, kClient2 = 1, kWorker = 2, kWorker2 = 3;

JobSpec job(std::string queue, std::uint32_t max_attempts = 3) {
    JobSpec s;
    s.queue = std::move(queue);
    s.payload = "x";
    s.max_attempts = max_attempts;
    return s;
}

std::string submit(std::uint64_t req, JobSpec spec) {
    return encode(SubmitRequest{req, {std::move(spec)}});
}

std::string registration(std::uint64_t req, std::string instance, std::vector<std::string> queues,
                         std::vector<HeldJob> held = {}) {
    RegisterRequest m;
    m.req = req;
    m.instance = std::move(instance);
    m.name = "w";
    m.queues = std::move(queues);
    m.concurrency = 2;
    m.held = std::move(held);
    return encode(m);
}

std::string done(JobId id, std::uint32_t attempt) {
    return encode(JobResult{true, id, attempt, 0, "out", "", false});
}
std::string failed(JobId id, std::uint32_t attempt, bool permanent) {
    return encode(JobResult{false, id, attempt, 1, std::nullopt, "exit 1", permanent});
}

// Scripts that walk the job's life: each ends in a different corner of the state machine.
std::vector<std::pair<std::string, std::string>> broker_seeds() {
    std::vector<std::pair<std::string, std::string>> out;
    auto add = [&](std::string name, const ScriptWriter& w) {
        out.emplace_back(std::move(name), w.bytes());
    };
    auto worker_takes_one = [](ScriptWriter& w, JobSpec spec) -> ScriptWriter& {
        return w.msg(kClient, cmd::kSubmit, submit(1, std::move(spec)))
            .msg(kWorker, cmd::kRegister, registration(2, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(1));
    };

    {
        ScriptWriter w;
        worker_takes_one(w, job("q0"))
            .msg(kClient, cmd::kWait, encode(WaitRequest{3, 1, 5000}))
            .msg(kWorker, cmd::kProgress, encode(Progress{1, 1, 50, "half"}))
            .msg(kWorker, cmd::kDone, done(1, 1))
            .msg(kWorker, cmd::kDone, done(1, 1))  // resent: acknowledged again
            .msg(kClient, cmd::kStatus, encode(IdRequest{4, 1}))
            .msg(kClient, cmd::kHistory, encode(IdRequest{5, 1}));
        add("succeed", w);
    }
    {
        ScriptWriter w;
        worker_takes_one(w, job("q0", 2))
            .msg(kWorker, cmd::kFail, failed(1, 1, false))
            .wait(3)
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kWorker, cmd::kFail, failed(1, 2, false))
            .msg(kClient, cmd::kRetry, encode(RetryRequest{3, 1, false, std::nullopt}))
            .msg(kClient, cmd::kHistory, encode(IdRequest{4, 1}));
        add("fail_retry_dead_retry", w);
    }
    {
        ScriptWriter w;
        worker_takes_one(w, job("q0"))
            .msg(kWorker, cmd::kFail, failed(1, 1, true))
            .msg(kClient, cmd::kRetry, encode(RetryRequest{3, std::nullopt, true, "q0"}))
            .msg(kClient, cmd::kPurge, encode(PurgeRequest{4, JobState::dead, std::nullopt, 0}));
        add("fail_permanent", w);
    }
    {
        // Every-second and DST schedules, a bad one, ticks while up, across a restart, paused.
        ScriptWriter w;
        w.schedule_add(0, 0, 0, 1)     // s0: every second, latest
            .schedule_add(1, 3, 2, 2)  // s1: 02:30 New York, all
            .schedule_add(0, 6, 0, 0)  // s0 again, bad cron: bad_request
            .schedule_add(2, 0, 3, 3)  // bad name, zone, catch-up
            .wait(3)
            .schedule(sc::Op::kScheduleList, 0)
            .msg(kWorker, cmd::kRegister, registration(2, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))
            .restart()
            .wait(5)
            .schedule(sc::Op::kSchedulePause, 0)
            .wait(2)
            .schedule(sc::Op::kScheduleShow, 0)
            .schedule(sc::Op::kScheduleResume, 0)
            .schedule(sc::Op::kScheduleRemove, 1)
            .schedule(sc::Op::kScheduleRemove, 1)  // not_found
            .wait(2);
        add("schedules", w);
    }
    {
        // Quiet, resume, resize, stop a worker; refused values and an unknown worker.
        ScriptWriter w;
        w.msg(kClient, cmd::kSubmit, submit(1, job("q0")))
            .msg(kWorker, cmd::kRegister, registration(2, "inst-0", {"q0"}))
            .worker_control(0, 0)                          // quiet
            .msg(kWorker, cmd::kCredit, encode_credit(1))  // ignored while quiet
            .msg(kClient, cmd::kSubmit, submit(3, job("q0")))
            .worker_control(0, 3, 2)  // concurrency 2, still quiet
            .worker_control(0, 2)     // resume: both dispatched
            .worker_control(0, 3, 0)  // concurrency 0: bad_request
            .worker_control(0, 0, 2)  // quiet with a concurrency: bad_request
            .worker_control(3, 0)     // nobody: not_found
            .msg(kWorker, cmd::kDone, done(1, 1))
            .worker_control(0, 3, 1)  // shrink below what it holds
            .worker_control(0, 1)     // stop
            .msg(kWorker, cmd::kDone, done(2, 1))
            .msg(kClient, cmd::kWorkers, encode_req(4));
        add("worker_control", w);
    }
    {
        ScriptWriter w;
        worker_takes_one(w, job("q0"))
            .msg(kClient, cmd::kCancel, encode(IdRequest{3, 1}))
            .msg(kWorker, cmd::kDone, done(1, 1))                 // stale
            .msg(kClient, cmd::kCancel, encode(IdRequest{4, 1}))  // invalid_state
            .msg(kClient, cmd::kPurge,
                 encode(PurgeRequest{5, JobState::cancelled, "q0", std::nullopt}));
        add("cancel_running", w);
    }
    {
        ScriptWriter w;
        JobSpec later = job("q0");
        later.delay = std::chrono::milliseconds(60000);
        worker_takes_one(w, job("q0"))
            .msg(kClient, cmd::kSubmit, submit(5, later))
            .msg(kClient, cmd::kRunNow, encode(IdRequest{6, 2}))  // scheduled -> ready
            .msg(kClient, cmd::kRunNow, encode(IdRequest{7, 1}))  // running: invalid_state
            .msg(kClient, cmd::kDelete, encode(DeleteRequest{8, 2, false}))  // live: invalid_state
            .msg(kClient, cmd::kDelete, encode(DeleteRequest{9, 1, true}))   // running: ABORT, gone
            .msg(kWorker, cmd::kDone, done(1, 1))                            // stale
            .msg(kClient, cmd::kDelete, encode(DeleteRequest{10, 1, false}))  // not_found
            .msg(kClient, cmd::kStatus, encode(IdRequest{11, 1}));
        add("run_now_delete", w);
    }
    {
        ScriptWriter w;
        JobSpec soon = job("q1");
        soon.expires_in = 1000ms;  // ready, nobody serves q1: expired
        JobSpec later = job("q1");
        later.delay = 5000ms;
        later.expires_at = Timestamp{1'700'000'002'000ms};  // before it is due: expired
        JobSpec both = job("q1");
        both.expires_in = 1000ms;
        both.expires_at = Timestamp{1'700'000'002'000ms};  // bad_request
        JobSpec taken = job("q0");
        taken.expires_in = 1000ms;  // dispatched first: runs past its expiry and succeeds
        worker_takes_one(w, taken)
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{5, {soon, later}}))
            .msg(kClient, cmd::kWait, encode(WaitRequest{6, 2, 5000}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{7, {both}}))
            .wait(3)
            .msg(kWorker, cmd::kDone, done(1, 1))
            .msg(kClient, cmd::kPurge,
                 encode(PurgeRequest{8, JobState::expired, "q1", std::nullopt}));
        add("expiry", w);
    }
    {
        ScriptWriter w;
        JobSpec b = job("q0");
        b.after = {1};  // blocked until job 1 succeeds
        JobSpec c = job("q0");
        c.after = {2};  // a grandchild
        JobSpec missing = job("q0");
        missing.after = {99};  // not_found
        JobSpec lone = job("q0");
        lone.after_any = true;  // bad_request
        worker_takes_one(w, job("q0"))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{5, {b}}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{6, {c}}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{7, {missing}}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{8, {lone}}))
            .msg(kWorker, cmd::kDone, done(1, 1))
            .msg(kClient, cmd::kStatus, encode(IdRequest{9, 2}));
        add("dependencies", w);
    }
    {
        ScriptWriter w;
        w.msg(kClient, cmd::kQueueSet, encode(QueueSetRequest{1, "q0", 1, 2, 1000}))
            .msg(kClient, cmd::kQueueSet, encode(QueueSetRequest{2, "q0", 0, {}, {}}))  // bad
            .msg(kClient, cmd::kSubmit, submit(3, job("q0")))
            .msg(kClient, cmd::kSubmit, submit(4, job("q0")))
            .msg(kWorker, cmd::kRegister, registration(5, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))  // one: at max-running
            .msg(kClient, cmd::kQueueShow, encode(QueueRequest{6, "q0"}))
            .restart()  // the limits are stored
            .msg(kClient, cmd::kQueueUnset,
                 encode(QueueUnsetRequest{7, "q0", {"max_running", "rate"}}))
            .msg(kClient, cmd::kQueues, encode_req(8));
        add("queue_limits", w);
    }
    {
        ScriptWriter w;
        w.msg(kClient, cmd::kPause, encode(PauseRequest{1, "q0", 500}))   // a timed pause
            .msg(kClient, cmd::kPause, encode(PauseRequest{2, "q1", 0}))  // bad_request
            .msg(kClient, cmd::kSubmit, submit(3, job("q0")))
            .msg(kWorker, cmd::kRegister, registration(4, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .restart()  // the pause's end is stored
            .msg(kWorker, cmd::kRegister, registration(5, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .wait(1)  // over: dispatched
            .msg(kClient, cmd::kQueues, encode_req(6));
        add("timed_pause", w);
    }
    {
        ScriptWriter w;
        worker_takes_one(w, job("q0"))
            .wait(12)  // worker silent past its expiry: lost, the job goes back to ready
            .msg(kWorker, cmd::kRegister, registration(3, "inst-0", {"q0"}, {{1, 1}}))
            .msg(kWorker2, cmd::kRegister, registration(4, "inst-1", {"q0"}))
            .msg(kWorker2, cmd::kCredit, encode_credit(2))
            .msg(kWorker2, cmd::kHeartbeat, encode(WorkerHeartbeat{1, {}}))  // dispatch lost
            .msg(kWorker, cmd::kDone, done(1, 1));
        add("worker_lost", w);
    }
    {
        ScriptWriter w;
        JobSpec s = job("q0");
        s.timeout = 50ms;
        worker_takes_one(w, s).wait(1).msg(kWorker, cmd::kDone, done(1, 1));
        add("timeout", w);
    }
    {
        ScriptWriter w;
        JobSpec later = job("q1");
        later.delay = 2000ms;
        JobSpec at = job("q1");
        at.run_at = Timestamp{1'700'000'003'000ms};
        at.priority = 3;
        w.msg(kClient, cmd::kSubmit, encode(SubmitRequest{1, {later, at}}))
            .msg(kClient, cmd::kWait, encode(WaitRequest{2, 1, 1000}))
            .wait(4)
            .msg(kWorker, cmd::kRegister, registration(3, "inst-0", {"q0", "q1"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))
            .msg(kWorker, cmd::kDone, done(2, 1));
        add("scheduled", w);
    }
    {
        ScriptWriter w;
        JobSpec a = job("q2");
        a.token = "t0";
        JobSpec u = job("q2");
        u.unique = "u0";
        w.msg(kClient, cmd::kSubmit, encode(SubmitRequest{1, {a, u}}))
            .msg(kClient2, cmd::kSubmit, encode(SubmitRequest{2, {a, u}}))
            .msg(kClient, cmd::kPause, encode(QueueRequest{3, "q2"}))
            .msg(kClient, cmd::kQueues, encode_req(4))
            .msg(kWorker, cmd::kRegister, registration(5, "inst-2", {"q2"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))
            .msg(kClient, cmd::kResume, encode(QueueRequest{6, "q2"}))
            .msg(kClient, cmd::kList, encode(ListRequest{7, "q2", std::nullopt, 10}));
        add("token_unique_pause", w);
    }
    {
        ScriptWriter w;
        worker_takes_one(w, job("q0"))
            .restart()
            .msg(kWorker, cmd::kDone, done(1, 1))  // accepted from any connection
            .msg(kClient, cmd::kSubmit, submit(3, job("q0")))
            .msg(kWorker, cmd::kRegister, registration(4, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .restart()
            .wait(11);  // the orphan is not reclaimed: worker lost
        add("restart", w);
    }
    {
        ScriptWriter w;
        w.fail_commit()
            .msg(kClient, cmd::kSubmit, submit(1, job("q0")))
            .msg(kClient, cmd::kSubmit, submit(2, job("q0")))
            .msg(kWorker, cmd::kRegister, registration(3, "inst-0", {"q0"}))
            .fail_write(0)
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kWorker, cmd::kPing, encode_req(4))
            .fail_write(1)
            .msg(kWorker, cmd::kDone, done(1, 1))
            .fail_commit()
            .msg(kClient, cmd::kPause, encode(QueueRequest{5, "q0"}));
        add("storage_faults", w);
    }
    {
        ScriptWriter w;
        std::vector<std::string> first = {done(1, 1)}, again = {done(1, 1), done(3, 1)};
        w.msg(kClient, cmd::kSubmit, encode(SubmitRequest{1, {job("q0"), job("q0"), job("q0")}}))
            .msg(kWorker, cmd::kRegister, registration(2, "inst-0", {"q0"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))
            .msg(kWorker, cmd::kResults, encode_results({first[0]}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kWorker, cmd::kResults, encode_results({again[0], again[1]}))  // 1 resent
            .msg(kWorker, cmd::kDrain, encode_empty())
            .msg(kWorker, cmd::kCredit, encode_credit(1))  // ignored: draining
            .msg(kWorker, cmd::kRelease, encode(Ack{2, 1}))
            .msg(kWorker, cmd::kRelease, encode(Ack{2, 1}))  // stale
            .msg(kClient, cmd::kStatus, encode(IdRequest{3, 2}));
        add("results_drain_release", w);
    }
    {
        ScriptWriter w;
        JobSpec quick = job("q1");
        w.msg(kClient, cmd::kSubmit, encode(SubmitRequest{1, {quick}, 5000}))
            .msg(kClient2, cmd::kSubmit, encode(SubmitRequest{2, {job("q1")}, 100}))
            .msg(kWorker, cmd::kRegister, registration(3, "inst-0", {"q1"}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kClient, cmd::kStats, encode_req(4))
            .msg(kClient, cmd::kWorkers, encode_req(5))
            .msg(kWorker, cmd::kDone, done(1, 1))
            .msg(kClient, cmd::kFeed, encode(FeedRequest{6, std::nullopt, 10, 0}))
            .msg(kClient, cmd::kFeed, encode(FeedRequest{7, "q1", 2, 1}))
            .wait(1);  // the second SUBMIT's wait times out
        add("submit_wait_observe", w);
    }
    {
        // A batch's life: members submitted while open (and into no batch, and into a sealed
        // one), sealed with members running, one dead and one succeeded (on_complete fires, and
        // runs), the dead one retried and succeeding (on_success fires), shown and listed around
        // a restart.
        ScriptWriter w;
        JobSpec on_complete;
        on_complete.queue = "q1";
        on_complete.max_attempts = 1;
        JobSpec on_success = on_complete;
        on_success.queue = "q2";
        on_success.delay = 500ms;
        JobSpec member = job("q0", 1);
        member.batch = 1;
        JobSpec stray = job("q0");
        stray.batch = 99;
        w.msg(kClient, cmd::kBatchOpen,
              encode(BatchOpenRequest{1, "members", on_complete, on_success}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{2, {member, member}}))
            .msg(kClient, cmd::kSubmit, submit(3, stray))  // not_found
            .msg(kClient, cmd::kBatchSeal, encode(BatchRequest{4, 1}))
            .msg(kClient, cmd::kBatchSeal, encode(BatchRequest{5, 1}))  // sealed: unchanged
            .msg(kClient, cmd::kSubmit, submit(6, member))              // sealed: invalid_state
            .msg(kWorker, cmd::kRegister, registration(7, "inst-0", {"q0", "q1"}))
            .msg(kWorker, cmd::kCredit, encode_credit(2))
            .msg(kWorker, cmd::kDone, done(1, 1))
            .msg(kWorker, cmd::kFail, failed(2, 1, true))  // the last: on_complete is job 3
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{8, 1}))
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kWorker, cmd::kDone, done(3, 1))
            .msg(kClient, cmd::kRetry, encode(RetryRequest{9, 2, false, std::nullopt}))
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{10, 1}))  // sealed again
            .msg(kWorker, cmd::kCredit, encode_credit(1))
            .msg(kWorker, cmd::kDone, done(2, 2))  // on_success is job 4
            .restart()
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{11, 1}))
            .msg(kClient, cmd::kBatchList, encode(BatchListRequest{12, 10, std::nullopt}))
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{13, 7}));  // not_found
        add("batch", w);
    }
    {
        // Batches at their edges: bad callbacks and limits refused, an empty batch that fires
        // at its seal, a seal whose commit fails (nothing fired) and is sent again, members
        // cancelled and expired, and a page of BATCH_LIST.
        ScriptWriter w;
        JobSpec cb;
        cb.queue = "q1";
        JobSpec with_payload = cb;
        with_payload.payload = "p";
        JobSpec with_token = cb;
        with_token.token = "t0";
        JobSpec member = job("q2");
        member.batch = 2;
        JobSpec expiring = member;
        expiring.expires_in = 1000ms;
        w.msg(kClient, cmd::kBatchOpen, encode(BatchOpenRequest{1, "", with_payload, {}}))   // bad
            .msg(kClient, cmd::kBatchOpen, encode(BatchOpenRequest{2, "", {}, with_token}))  // bad
            .msg(kClient, cmd::kBatchOpen, encode(BatchOpenRequest{3, "empty", cb, cb}))
            .msg(kClient, cmd::kBatchSeal, encode(BatchRequest{4, 1}))  // fires both at once
            .msg(kClient, cmd::kBatchOpen, encode(BatchOpenRequest{5, "two", cb, {}}))
            .msg(kClient, cmd::kSubmit, encode(SubmitRequest{6, {member, expiring}}))
            .msg(kClient, cmd::kCancel, encode(IdRequest{7, 3}))
            .fail_commit()
            .msg(kClient, cmd::kBatchSeal, encode(BatchRequest{8, 2}))  // rolled back
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{9, 2}))  // still open
            .msg(kClient, cmd::kBatchSeal, encode(BatchRequest{10, 2}))
            .wait(2)  // the second member expires: the last, on_complete fires
            .msg(kClient, cmd::kBatchList, encode(BatchListRequest{11, 1, std::nullopt}))
            .msg(kClient, cmd::kBatchList, encode(BatchListRequest{12, 5, 2}))
            .msg(kClient, cmd::kBatchList, encode(BatchListRequest{13, 0, std::nullopt}))  // bad
            .msg(kClient, cmd::kBatchShow, encode(BatchRequest{14, 2}));
        add("batch_edges", w);
    }
    {
        ScriptWriter w;
        w.envelope("errand/1", "PING", encode_req(1), 2)
            .envelope("errand/2", "PING", encode_req(2), 3)
            .envelope("errand/1", "NOPE", encode_req(3), 3)
            .envelope("errand/1", "SUBMIT", "\x91\x01", 3)
            .msg(kWorker, cmd::kCredit, encode_credit(1))  // not registered
            .msg(kClient, cmd::kJob, encode_req(4));
        add("bad_input", w);
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_corpus OUTDIR\n");
        return 2;
    }
    fs::path root(argv[1]);
    for (const auto& [dir, seeds] :
         {std::pair{"codec", codec_seeds()}, std::pair{"broker", broker_seeds()}}) {
        fs::create_directories(root / dir);
        for (const auto& [name, bytes] : seeds)
            write_file(root / dir / name, bytes);
        std::printf("%s: %zu seeds\n", dir, seeds.size());
    }
    return 0;
}
