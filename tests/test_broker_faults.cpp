// The broker driven in-process through its test seam (Broker::process) over a store whose
// commits can be made to fail: a full or read-only disk must refuse writes with a clear error,
// change nothing, keep serving reads, and recover when the disk does.
#include <doctest/doctest.h>

#include "broker.hpp"
#include "errand/codec.hpp"
#include "forwarding_store.hpp"
#include "store_sqlite.hpp"

using namespace errand;
using namespace errand::broker;

namespace {

// SQLite underneath; commit() fails while `full` is set, as SQLITE_FULL would.
// `refuse` makes the next apply() answer "not in the expected state", as a store shared with
// another writer would.
class FlakyDisk final : public ForwardingStore {
  public:
    explicit FlakyDisk(bool* full, bool* refuse = nullptr)
        : ForwardingStore(sqlite_), full_(full), refuse_(refuse) {}
    bool apply(const Transition& t) override {
        if (refuse_ && *refuse_) {
            *refuse_ = false;
            return false;
        }
        return sqlite_.apply(t);
    }
    void commit() override {
        if (*full_) {
            sqlite_.rollback();
            throw StoreError("database or disk is full", true);
        }
        sqlite_.commit();
    }

  private:
    SqliteStore sqlite_{":memory:"};
    bool* full_;
    bool* refuse_;
};

struct Fixture {
    bool full = false;
    bool refuse = false;
    SystemClock clock;
    Broker broker;
    Millis now = 1'000'000;
    std::uint64_t req = 1;

    Fixture() : broker(config(), std::make_unique<FlakyDisk>(&full, &refuse), clock) {}
    static BrokerConfig config() {
        BrokerConfig c;
        c.listen = "";  // nothing bound: messages go through process()
        return c;
    }
    std::vector<Envelope> send(std::string_view command, std::string body) {
        now += 10;
        return broker.process(Envelope{"client", std::string(kProtocolVersion),
                                       std::string(command), std::move(body), 3},
                              now);
    }
    Envelope one(std::string_view command, std::string body) {
        auto out = send(command, std::move(body));
        REQUIRE(out.size() == 1);
        return out.front();
    }
    // This connection registers as worker "w" of queue q, one slot.
    void register_worker() {
        RegisterRequest reg;
        reg.req = req++;
        reg.instance = "w-1";
        reg.name = "w";
        reg.queues = {"q"};
        reg.concurrency = 1;
        REQUIRE(one(cmd::kRegister, encode(reg)).command == cmd::kRegistered);
    }
    Envelope submit(const std::string& queue) {
        SubmitRequest m;
        m.req = req++;
        JobSpec spec;
        spec.queue = queue;
        spec.token = "tok-" + std::to_string(m.req);
        m.jobs.push_back(spec);
        return one(cmd::kSubmit, encode(m));
    }
};

ErrorCode error_code(const Envelope& e) {
    REQUIRE(e.command == cmd::kError);
    Body b(e.body);
    return decode_error(b.reader()).code;
}

}  // namespace

TEST_CASE("a full disk refuses submits with 'storage', changes nothing, and recovers") {
    Fixture f;
    auto ok = f.submit("q");
    REQUIRE(ok.command == cmd::kSubmitted);

    f.full = true;
    auto refused = f.submit("q");
    CHECK(error_code(refused) == ErrorCode::storage);
    Body rb(refused.body);
    CHECK(decode_error(rb.reader()).message.find("disk is full") != std::string::npos);

    // Reads are still served, and show only the committed job.
    auto listed = f.one(cmd::kList, encode(ListRequest{f.req++, std::nullopt, std::nullopt, 100}));
    REQUIRE(listed.command == cmd::kJobs);
    Body lb(listed.body);
    CHECK(lb.reader().array("jobs").size == 1);
    auto missing = f.one(cmd::kStatus, encode(IdRequest{f.req++, 2}));
    CHECK(error_code(missing) == ErrorCode::not_found);

    f.full = false;
    auto again = f.submit("q");
    REQUIRE(again.command == cmd::kSubmitted);
    Body ab(again.body);
    auto rep = decode_submitted(ab.reader());
    CHECK(rep.ids.front() == 2);  // the refused job's id was never handed out
    auto listed2 = f.one(cmd::kList, encode(ListRequest{f.req++, std::nullopt, std::nullopt, 100}));
    Body lb2(listed2.body);
    CHECK(lb2.reader().array("jobs").size == 2);
}

TEST_CASE("a worker's dispatch is not sent when its commit fails; the job stays ready") {
    Fixture f;
    REQUIRE(f.submit("q").command == cmd::kSubmitted);
    f.register_worker();

    f.full = true;
    auto out = f.send(cmd::kCredit, encode_credit(1));
    for (const auto& e : out)
        CHECK(e.command != cmd::kDispatch);
    auto status = f.one(cmd::kStatus, encode(IdRequest{f.req++, 1}));
    REQUIRE(status.command == cmd::kJob);
    Body sb(status.body);
    CHECK(decode_job_info(sb.reader().map("job")).state == JobState::ready);

    f.full = false;  // the credit was given back: the next pass dispatches
    auto later = f.send(cmd::kPing, encode_req(f.req++));
    bool dispatched = false;
    for (const auto& e : later)
        dispatched |= e.command == cmd::kDispatch;
    CHECK(dispatched);
}

namespace {

std::optional<Dispatch> dispatched(const std::vector<Envelope>& out) {
    for (const auto& e : out)
        if (e.command == cmd::kDispatch) {
            Body b(e.body);
            return decode_dispatch(b.reader());
        }
    return std::nullopt;
}

JobInfo job_status(Fixture& f, JobId id) {
    auto reply = f.one(cmd::kStatus, encode(IdRequest{f.req++, id}));
    REQUIRE(reply.command == cmd::kJob);
    Body b(reply.body);
    return decode_job_info(b.reader().map("job"));
}

}  // namespace

TEST_CASE("after RETRY a late result of the given-up attempt is refused: attempts only grow") {
    Fixture f;
    SubmitRequest sub;
    sub.req = f.req++;
    JobSpec spec;
    spec.queue = "q";
    spec.max_attempts = 2;
    sub.jobs.push_back(spec);
    REQUIRE(f.one(cmd::kSubmit, encode(sub)).command == cmd::kSubmitted);
    f.register_worker();

    // Attempt 1 fails permanently: dead with 1 of 2 attempts used.
    auto first = dispatched(f.send(cmd::kCredit, encode_credit(1)));
    REQUIRE(first.has_value());
    CHECK(first->attempt == 1);
    JobResult fail{
        .ok = false, .id = 1, .attempt = 1, .exit_code = 99, .error = "no", .permanent = true};
    f.send(cmd::kFail, encode(fail));
    CHECK(job_status(f, 1).state == JobState::dead);

    auto retried = f.one(cmd::kRetry, encode(RetryRequest{f.req++, 1, false, std::nullopt}));
    REQUIRE(retried.command == cmd::kRetried);
    auto revived = job_status(f, 1);
    CHECK(revived.attempts == 1);
    CHECK(revived.max_attempts == 3);  // one used + the two it was submitted with

    auto second = dispatched(f.send(cmd::kCredit, encode_credit(1)));
    REQUIRE(second.has_value());
    CHECK(second->attempt == 2);  // never attempt 1 again

    // The old attempt's DONE arrives late: refused, the job is still running attempt 2.
    JobResult stale{.ok = true, .id = 1, .attempt = 1, .exit_code = 0, .result = "old"};
    f.send(cmd::kDone, encode(stale));
    auto still = job_status(f, 1);
    CHECK(still.state == JobState::running);
    CHECK(still.attempts == 2);

    JobResult fresh{.ok = true, .id = 1, .attempt = 2, .exit_code = 0, .result = "new"};
    f.send(cmd::kDone, encode(fresh));
    auto done = job_status(f, 1);
    CHECK(done.state == JobState::succeeded);
    CHECK(done.result == "new");
}

TEST_CASE("a transition the store refuses (compare-and-set) fails the pass: nothing changes") {
    Fixture f;
    REQUIRE(f.submit("q").command == cmd::kSubmitted);
    f.register_worker();
    auto d = dispatched(f.send(cmd::kCredit, encode_credit(1)));
    REQUIRE(d.has_value());

    // The store says the job is not running at that attempt: the DONE is not acknowledged (the
    // worker resends it), and the job is as the store has it.
    f.refuse = true;
    auto out =
        f.send(cmd::kDone, encode(JobResult{.ok = true, .id = d->id, .attempt = d->attempt}));
    for (const auto& e : out)
        CHECK(e.command != cmd::kAck);
    auto status = f.one(cmd::kStatus, encode(IdRequest{f.req++, d->id}));
    Body sb(status.body);
    auto job = decode_job_info(sb.reader().map("job"));
    CHECK(job.state == JobState::running);
    CHECK(job.attempts == 1);

    // Memory was reloaded from the store; the resent DONE applies.
    auto again = f.send(cmd::kDone, encode(JobResult{.ok = true, .id = d->id, .attempt = 1}));
    bool acked = false;
    for (const auto& e : again)
        acked |= e.command == cmd::kAck;
    CHECK(acked);
    auto done = f.one(cmd::kStatus, encode(IdRequest{f.req++, d->id}));
    Body db(done.body);
    CHECK(decode_job_info(db.reader().map("job")).state == JobState::succeeded);
}
