// Unit tests of the codec: round trips of every message, the documented example bytes, rejects.
#include <doctest/doctest.h>

#include <functional>

#include "errand/clock.hpp"
#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/json.hpp"

using namespace errand;
using namespace std::chrono_literals;

namespace {

std::string hex(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        if (!out.empty()) out += ' ';
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    return out;
}

ErrorCode code_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const ProtocolError& e) {
        return e.code();
    }
    FAIL("no ProtocolError thrown");
    return ErrorCode::internal;
}

}  // namespace

TEST_CASE("the documented SUBMIT example decodes as documented") {
    // docs/PROTOCOL.md, "Example": {"req":1,"jobs":[{"queue":"default","payload":"hi"}]}
    const unsigned char bytes[] = {0x82, 0xa3, 0x72, 0x65, 0x71, 0x01, 0xa4, 0x6a, 0x6f, 0x62,
                                   0x73, 0x91, 0x82, 0xa5, 0x71, 0x75, 0x65, 0x75, 0x65, 0xa7,
                                   0x64, 0x65, 0x66, 0x61, 0x75, 0x6c, 0x74, 0xa7, 0x70, 0x61,
                                   0x79, 0x6c, 0x6f, 0x61, 0x64, 0xc4, 0x02, 0x68, 0x69};
    Body b(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
    auto m = decode_submit(b.reader());
    CHECK(m.req == 1);
    REQUIRE(m.jobs.size() == 1);
    CHECK(m.jobs[0].queue == "default");
    CHECK(m.jobs[0].payload == "hi");
    // Left out: the broker applies the queue's default, else kDefaultMaxAttempts (QUEUE_SET).
    CHECK_FALSE(m.jobs[0].max_attempts.has_value());
    CHECK_FALSE(m.jobs[0].token.has_value());
    CHECK(hex(encode(SubmitReply{1, {1}, {false}})) == hex("\x83\xa3req\x01\xa3ids\x91\x01\xa9"
                                                           "duplicate\x91\xc2"));
}

TEST_CASE("SUBMIT round trip keeps every field") {
    SubmitRequest m;
    m.req = 42;
    m.jobs.push_back({"emails", std::string("bin\0ary", 7), std::nullopt, 5, "tok-1"});
    m.jobs.push_back({"default", "", std::vector<std::string>{"echo", "hi"}, 1, std::nullopt});
    Body b(encode(m));
    auto d = decode_submit(b.reader());
    CHECK(d.req == 42);
    REQUIRE(d.jobs.size() == 2);
    CHECK(d.jobs[0].payload == std::string("bin\0ary", 7));
    CHECK(d.jobs[0].max_attempts == 5);
    CHECK(d.jobs[0].token == "tok-1");
    CHECK(d.jobs[1].argv == std::vector<std::string>{"echo", "hi"});
    CHECK_FALSE(d.wait_ms.has_value());
}

TEST_CASE("SUBMIT with wait_ms: one job only, bounded") {
    SubmitRequest m;
    m.req = 1;
    m.jobs.push_back({"q", "p"});
    m.wait_ms = 2500;
    Body b(encode(m));
    CHECK(decode_submit(b.reader()).wait_ms == 2500);

    m.jobs.push_back({"q", "p2"});
    Body two(encode(m));
    CHECK_THROWS_AS(decode_submit(two.reader()), ProtocolError);

    m.jobs.pop_back();
    m.wait_ms = limits::kMaxWaitMs + 1;
    Body long_wait(encode(m));
    CHECK_THROWS_AS(decode_submit(long_wait.reader()), ProtocolError);
}

TEST_CASE("SUBMIT with an expiry: expires_at or expires_in_ms, not both; absent by default") {
    SubmitRequest m;
    m.req = 1;
    errand::JobSpec in{.queue = "q", .expires_in = std::chrono::milliseconds(1500)};
    errand::JobSpec at{.queue = "q", .expires_at = errand::to_time(1'700'000'000'000)};
    m.jobs = {in, at, {.queue = "q"}};
    Body b(encode(m));
    auto d = decode_submit(b.reader());
    REQUIRE(d.jobs.size() == 3);
    CHECK(d.jobs[0].expires_in == std::chrono::milliseconds(1500));
    CHECK_FALSE(d.jobs[0].expires_at.has_value());
    CHECK(d.jobs[1].expires_at == errand::to_time(1'700'000'000'000));
    CHECK_FALSE(d.jobs[2].expires_in.has_value());
    CHECK_FALSE(d.jobs[2].expires_at.has_value());
    // An old client's job has neither key (nothing new on the wire).
    CHECK(hex(encode(SubmitRequest{1, {{.queue = "q"}}})).find(hex("expires")) ==
          std::string::npos);

    auto refused = [](errand::JobSpec s) {
        Body bad(encode(SubmitRequest{1, {s}}));
        try {
            decode_submit(bad.reader());
        } catch (const ProtocolError& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    errand::JobSpec both = in;
    both.expires_at = errand::to_time(1'700'000'000'000);
    CHECK(refused(both).find("'expires_at' or 'expires_in_ms', not both") != std::string::npos);
    CHECK(refused({.queue = "q", .expires_in = std::chrono::milliseconds(0)})
              .find("must be positive") != std::string::npos);
    CHECK(refused({.queue = "q", .expires_at = errand::to_time(-1)}).find("expires_at must be") !=
          std::string::npos);
    CHECK(refused({.queue = "q", .expires_in = std::chrono::milliseconds(limits::kMaxDelayMs + 1)})
              .find("expires_in_ms") != std::string::npos);
}

TEST_CASE("SUBMIT with parents: after and after_any round trip; bad lists refused") {
    errand::JobSpec child{.queue = "q", .after = {3, 9}, .after_any = true};
    Body b(encode(SubmitRequest{1, {child, {.queue = "q"}}}));
    auto d = decode_submit(b.reader());
    REQUIRE(d.jobs.size() == 2);
    CHECK(d.jobs[0].after == std::vector<JobId>{3, 9});
    CHECK(d.jobs[0].after_any);
    CHECK(d.jobs[1].after.empty());
    CHECK_FALSE(d.jobs[1].after_any);
    // A job without parents has neither key on the wire.
    CHECK(hex(encode(SubmitRequest{1, {{.queue = "q"}}})).find(hex("after")) == std::string::npos);
    auto refused = [](errand::JobSpec s) {
        Body bad(encode(SubmitRequest{1, {s}}));
        try {
            decode_submit(bad.reader());
        } catch (const ProtocolError& e) {
            CHECK(e.code() == ErrorCode::bad_request);
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    CHECK(refused({.queue = "q", .after_any = true}).find("'after_any' needs 'after'") !=
          std::string::npos);
    CHECK(refused({.queue = "q", .after = {0}}).find("not 0") != std::string::npos);
    CHECK(refused({.queue = "q", .after = {4, 4}}).find("names job 4 twice") != std::string::npos);
    std::vector<JobId> many;
    for (JobId i = 1; i <= limits::kMaxParents + 1; ++i)
        many.push_back(i);
    CHECK(refused({.queue = "q", .after = many}) != "accepted");
    many.pop_back();
    CHECK(refused({.queue = "q", .after = many}) == "accepted");
}

TEST_CASE("JobInfo round trip through JOB") {
    JobInfo j;
    j.id = 7;
    j.queue = "q";
    j.state = JobState::dead;
    j.attempts = 3;
    j.max_attempts = 3;
    j.exit_code = -9;
    j.error = "boom";
    j.worker = "w1";
    j.payload_size = 12;
    j.created_at = Timestamp{1000ms};
    j.started_at = Timestamp{2000ms};
    j.finished_at = Timestamp{3000ms};
    Body b(encode_job(j, 9));
    CHECK(b.reader().u64("req") == 9);
    auto d = decode_job_info(b.reader().map("job"));
    CHECK(d.id == 7);
    CHECK(d.state == JobState::dead);
    CHECK(d.exit_code == -9);
    CHECK(d.error == "boom");
    CHECK_FALSE(d.result.has_value());
    CHECK(d.finished_at == Timestamp{3000ms});
    CHECK_FALSE(d.run_at.has_value());
}

TEST_CASE("REGISTER takes up to 1024 queues, and says so past it") {
    RegisterRequest r{3, "inst", "w", "host", 99, {}, 4, false, {}};
    for (int i = 0; i < 1024; ++i)
        r.queues.push_back("q" + std::to_string(i));
    Body ok(encode(r));
    CHECK(decode_register(ok.reader()).queues.size() == 1024);
    r.queues.push_back("one-more");
    Body over(encode(r));
    std::string message;
    try {
        decode_register(over.reader());
    } catch (const std::exception& e) {
        message = e.what();
    }
    CHECK(message.find("field 'queues' has more than 1024 items") != std::string::npos);
}

TEST_CASE("worker messages round trip") {
    RegisterRequest r{3, "inst", "w", "host", 99, {"a", "b"}, 4, true, {{10, 2}, {11, 1}}};
    Body rb(encode(r));
    auto rd = decode_register(rb.reader());
    CHECK(rd.queues == std::vector<std::string>{"a", "b"});
    CHECK(rd.commands);
    REQUIRE(rd.held.size() == 2);
    CHECK(rd.held[0].id == 10);
    CHECK(rd.held[0].attempt == 2);

    Dispatch d{5, "a", 2, "pay", std::vector<std::string>{"x"}, 17};
    Body db(encode(d));
    auto dd = decode_dispatch(db.reader());
    CHECK(dd.seq == 17);
    CHECK(dd.argv == std::vector<std::string>{"x"});

    JobResult f{false, 5, 2, 3, std::string("out"), "bad", true};
    Body fb(encode(f));
    auto fd = decode_result(fb.reader(), false);
    CHECK(fd.error == "bad");
    CHECK(fd.permanent);
    CHECK(fd.exit_code == 3);

    ErrorReply e{8, ErrorCode::stale, "old", 5, 2};
    Body eb(encode(e));
    auto ed = decode_error(eb.reader());
    CHECK(ed.code == ErrorCode::stale);
    CHECK(ed.req == 8);
    CHECK(ed.id == 5);
}

TEST_CASE(
    "REGISTERED's limits: round trip, defaults from an older broker, ignored by old decoders") {
    RegisteredReply r;
    r.req = 2;
    r.heartbeat_ms = 1000;
    r.expiry_ms = 5000;
    r.max_result = 100;
    r.max_message = 4096;
    r.max_batch = 7;
    Body b(encode(r));
    auto d = decode_registered(b.reader());
    CHECK(d.max_result == 100);
    CHECK(d.max_message == 4096);
    CHECK(d.max_batch == 7);
    // An older broker's REGISTERED has none of them: the limits it starts with.
    Body old(Writer(5)
                 .u64("req", 2)
                 .u64("heartbeat_ms", 1000)
                 .u64("expiry_ms", 5000)
                 .u64_array("held_ok", {})
                 .u64_array("held_rejected", {})
                 .take());
    auto od = decode_registered(old.reader());
    CHECK(od.max_result == limits::kDefaultMaxResult);
    CHECK(od.max_message == limits::kDefaultMaxMessage);
    CHECK(od.max_batch == limits::kMaxBatch);
    // An older decoder reads only the keys it knows: a body with keys added still decodes
    // (here: a REGISTERED with a key no version has).
    Body future(Writer(6)
                    .u64("req", 2)
                    .u64("heartbeat_ms", 1000)
                    .u64("expiry_ms", 5000)
                    .u64_array("held_ok", {})
                    .u64_array("held_rejected", {})
                    .u64("max_something_new", 1)
                    .take());
    CHECK(decode_registered(future.reader()).heartbeat_ms == 1000);
}

TEST_CASE("DONE without a result is a success with an empty result") {
    Body b(Writer(2).u64("id", 5).u64("attempt", 1).take());
    auto d = decode_result(b.reader(), true);
    CHECK(d.ok);
    CHECK(d.result == std::optional<std::string>(""));
}

TEST_CASE("RESULTS carries DONE and FAIL bodies as they are; ACKS pairs ids with attempts") {
    JobResult done{true, 7, 1, 0, std::string("out"), "", false};
    JobResult fail{false, 8, 3, 2, std::nullopt, "boom", true};
    std::string d = encode(done), f = encode(fail);
    Body b(encode_results({d, f}));
    auto rs = decode_results(b.reader());
    REQUIRE(rs.size() == 2);
    CHECK(rs[0].ok);
    CHECK(rs[0].id == 7);
    CHECK(rs[0].attempt == 1);
    CHECK(rs[0].result == std::optional<std::string>("out"));
    CHECK_FALSE(rs[1].ok);
    CHECK(rs[1].id == 8);
    CHECK(rs[1].error == "boom");
    CHECK(rs[1].permanent);
    CHECK(rs[1].exit_code == 2);
    // A DONE body read as DONE is unchanged by its "ok".
    Body db(d);
    CHECK(decode_result(db.reader(), true).result == std::optional<std::string>("out"));

    Body ab(encode_acks({{7, 1}, {8, 3}}));
    auto acks = decode_acks(ab.reader());
    REQUIRE(acks.size() == 2);
    CHECK(acks[1].id == 8);
    CHECK(acks[1].attempt == 3);

    auto results = [](const std::string& body) {
        Body rb(body);
        decode_results(rb.reader(), DecodeLimits{16, 16, 2});
    };
    CHECK(code_of([&] { results(encode_results({})); }) == ErrorCode::bad_request);
    CHECK(code_of([&] { results(encode_results({d, f, d})); }) == ErrorCode::too_large);
    std::string no_ok = Writer(2).u64("id", 1).u64("attempt", 1).take();
    CHECK(code_of([&] { results(encode_results({d, no_ok})); }) == ErrorCode::bad_request);
    JobResult big{true, 9, 1, 0, std::string(17, 'x'), "", false};
    CHECK(code_of([&] { results(encode_results({encode(big)})); }) == ErrorCode::too_large);
    // The credit that rides on the results: absent is 0, at most 1024.
    Body nc(encode_results({d}));
    CHECK(decode_results_message(nc.reader()).credit == 0);
    Body wc(encode_results({d, f}, 1024));
    auto m = decode_results_message(wc.reader());
    CHECK(m.credit == 1024);
    REQUIRE(m.results.size() == 2);
    CHECK(m.results[1].id == 8);
    CHECK(code_of([&] {
              Body x(encode_results({d}, 1025));
              decode_results_message(x.reader());
          }) == ErrorCode::bad_request);
    CHECK(code_of([&] {
              Body x(Writer(2).u64_array("ids", {1, 2}).u64_array("attempts", {1}).take());
              decode_acks(x.reader());
          }) == ErrorCode::bad_request);
}

TEST_CASE("malformed bodies are rejected with the documented codes") {
    CHECK(code_of([] { Body b("\xc1"); }) == ErrorCode::bad_frame);          // never used
    CHECK(code_of([] { Body b("\x92\x01\x02"); }) == ErrorCode::bad_frame);  // array
    CHECK(code_of([] { Body b("\x82\xa3req"); }) == ErrorCode::bad_frame);   // truncated
    CHECK(code_of([] { Body b(std::string("\x80\x80", 2)); }) == ErrorCode::bad_frame);  // trailing
    CHECK(code_of([] { Body b(""); }) == ErrorCode::bad_frame);

    auto submit = [](const std::string& body) {
        Body b(body);
        decode_submit(b.reader(), DecodeLimits{16, 16});
    };
    CHECK(code_of([&] { submit(Writer(1).u64("req", 1).take()); }) == ErrorCode::bad_request);
    CHECK(code_of([&] { submit(Writer(2).str("req", "x").u64("jobs", 1).take()); }) ==
          ErrorCode::bad_request);
    SubmitRequest big{1, {{"q", std::string(17, 'x'), std::nullopt, 1, std::nullopt}}};
    CHECK(code_of([&] { submit(encode(big)); }) == ErrorCode::too_large);
    SubmitRequest badq{1, {{"no spaces", "", std::nullopt, 1, std::nullopt}}};
    CHECK(code_of([&] { submit(encode(badq)); }) == ErrorCode::bad_request);
    SubmitRequest empty{1, {}};
    CHECK(code_of([&] { submit(encode(empty)); }) == ErrorCode::bad_request);
    SubmitRequest zero{1, {{"q", "", std::nullopt, 0, std::nullopt}}};
    CHECK(code_of([&] { submit(encode(zero)); }) == ErrorCode::bad_request);
    SubmitRequest many{1, std::vector<JobSpec>(limits::kMaxBatch + 1, JobSpec{"q"})};
    CHECK(code_of([&] { submit(encode(many)); }) == ErrorCode::too_large);
}

TEST_CASE("nil counts as missing and unknown keys are ignored") {
    Body b(Writer(3).u64("req", 4).nil("limit").str("future_field", "x").take());
    auto l = decode_list(b.reader());
    CHECK(l.req == 4);
    CHECK(l.limit == limits::kDefaultListLimit);
}

TEST_CASE("peek_req finds req in bodies that fail to decode") {
    CHECK(peek_req(Writer(1).u64("req", 77).take()) == 77);
    CHECK_FALSE(peek_req("garbage").has_value());
}

TEST_CASE("names of states and error codes") {
    static_assert(kStateCount == 9);
    for (std::size_t i = 0; i < kStateCount; ++i) {
        CHECK(kAllStates[i] == static_cast<JobState>(i));
        CHECK(parse_job_state(to_string(kAllStates[i])) == kAllStates[i]);
    }
    CHECK(to_string(JobState::scheduled) == "scheduled");
    CHECK(to_string(JobState::cancelled) == "cancelled");
    CHECK(to_string(JobState::expired) == "expired");
    CHECK(is_terminal(JobState::expired));
    CHECK_FALSE(parse_job_state("done").has_value());
    CHECK(to_string(ErrorCode::not_registered) == "not_registered");
    CHECK(valid_queue_name("a-b_c.9"));
    CHECK_FALSE(valid_queue_name(""));
    CHECK_FALSE(valid_queue_name("a:b"));
    CHECK_FALSE(valid_queue_name(std::string(65, 'a')));
}

TEST_CASE("durations parse and print") {
    CHECK(parse_duration("250ms") == 250);
    CHECK(parse_duration("5s") == 5000);
    CHECK(parse_duration("5") == 5000);
    CHECK(parse_duration("1.5m") == 90000);
    CHECK(parse_duration("2h") == 7'200'000);
    CHECK_FALSE(parse_duration("soon").has_value());
    CHECK_FALSE(parse_duration("nan").has_value());
    CHECK_FALSE(parse_duration("inf").has_value());
    CHECK_FALSE(parse_duration("-1s").has_value());
    CHECK_FALSE(parse_duration("5 s").has_value());
    // Compound forms add up; a bare number is only seconds on its own.
    CHECK(parse_duration("1h30m") == 5'400'000);
    CHECK(parse_duration("2m15.5s") == 135'500);
    CHECK(parse_duration("1d2h3m4s5ms") == 93'784'005);
    CHECK(parse_duration("1m500ms") == 60'500);
    CHECK_FALSE(parse_duration("1h30").has_value());
    CHECK_FALSE(parse_duration("1h-30m").has_value());
    CHECK_FALSE(parse_duration("1h 30m").has_value());
    CHECK_FALSE(parse_duration("h").has_value());
    CHECK(format_duration(5000) == "5s");
    CHECK(format_duration(1500) == "1.5s");
    CHECK(format_duration(250) == "250ms");
    CHECK(format_duration(120000) == "2m");
}

namespace {
std::string message_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const ProtocolError& e) {
        return e.what();
    }
    return "no ProtocolError thrown";
}
}  // namespace

TEST_CASE("decode errors name the field") {
    auto list = [](const std::string& body) {
        return message_of([&] { decode_list(Body(body).reader()); });
    };
    CHECK(list(Writer(1).u64("limit", 5).take()) == "missing field 'req'");
    CHECK(list(Writer(2).u64("req", 1).str("state", "bogus").take()) ==
          "unknown state 'bogus' in field 'state'");
    CHECK(list(Writer(2).u64("req", 1).str("limit", "x").take()) ==
          "field 'limit' must be a non-negative integer, got str");
    CHECK(list(Writer(2).u64("req", 1).u64("limit", 0).take()) == "limit must be 1-10000");
    CHECK(message_of([] {
              decode_job_event(Body(Writer(2).u64("seq", 1).str("from", "nope").take()).reader());
          }) == "unknown state 'nope' in field 'from'");
    // A repeated key keeps its first value, as the old lookups did.
    Body twice(Writer(3).u64("req", 1).u64("limit", 7).u64("limit", 9).take());
    CHECK(decode_list(twice.reader()).limit == 7);
}

TEST_CASE("every table is in errand::message_tables(), with required fields marked") {
    const auto& tables = message_tables();
    auto find = [&](std::string_view name) -> const MessageTable* {
        for (const auto& t : tables)
            if (t.name == name) return &t;
        return nullptr;
    };
    const auto* submit = find("SUBMIT job");
    REQUIRE(submit != nullptr);
    REQUIRE(submit->fields.size() == 17);  // after, after_any, batch last
    CHECK(submit->fields[0].name == "queue");
    CHECK(submit->fields[0].required);
    CHECK_FALSE(submit->fields[1].required);
    const auto* job = find("job object");
    REQUIRE(job != nullptr);
    CHECK(job->fields.size() == 22);
}

TEST_CASE("the JSON form of a job and an event: table keys, null when absent, RFC 3339 times") {
    JobInfo j;
    j.id = 7;
    j.queue = "q";
    j.state = JobState::running;
    j.created_at = Timestamp{1'764'583'200'123ms};  // 2025-12-01T10:00:00.123Z
    j.timeout = 5000ms;
    auto json = to_json(j);
    CHECK(json.size() == 22);
    CHECK(json["batch"].is_null());
    CHECK(json["id"] == 7);
    CHECK(json["expires_at"].is_null());
    CHECK(json["state"] == "running");
    CHECK(json["created_at"] == "2025-12-01T10:00:00.123Z");
    CHECK(json["started_at"].is_null());
    CHECK(json["timeout_ms"] == 5000);  // durations stay integers of ms
    CHECK(json.begin().key() == "id");  // table order
    auto e = to_json(Event{Timestamp{1'764'583'200'123ms}, std::nullopt, JobState::ready, 0,
                           std::nullopt, "submitted"});
    CHECK(e.dump() == R"({"at":"2025-12-01T10:00:00.123Z","from":null,"to":"ready","attempt":0,)"
                      R"("worker":null,"reason":"submitted"})");
    auto q = to_json(QueueInfo{"q", false, {{JobState::ready, 2}}, std::nullopt, std::nullopt});
    CHECK(q["counts"].size() == kStateCount);
    CHECK(q["counts"]["ready"] == 2);
    CHECK(q["counts"]["dead"] == 0);
}

TEST_CASE("a body may not hold more MessagePack elements than a bound, whatever its size") {
    // Three arrays of 600,000 nils: each under the per-array limit, 1.8 million elements in all,
    // 1.8 MB on the wire that would decode into ~43 MB of msgpack objects.
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(2);
    pk.pack("req");
    pk.pack(1);
    pk.pack("jobs");
    pk.pack_array(3);
    for (int a = 0; a < 3; ++a) {
        pk.pack_array(600'000);
        for (int i = 0; i < 600'000; ++i)
            pk.pack_nil();
    }
    std::string bytes(buf.data(), buf.size());
    try {
        Body body(bytes);
        FAIL("a body of 1.8 million elements was decoded");
    } catch (const ProtocolError& e) {
        CHECK(e.code() == ErrorCode::bad_frame);
        CHECK(std::string(e.what()).find("elements") != std::string::npos);
    }

    // A large body with few elements (one 2 MiB payload) is fine.
    SubmitRequest m;
    m.req = 7;
    m.jobs.push_back({.queue = "q", .payload = std::string(2 << 20, 'x')});
    Body big(encode(m));
    auto back = decode_submit(big.reader(), {.max_payload = 4 << 20});
    CHECK(back.jobs.at(0).payload.size() == std::size_t{2} << 20);
}

TEST_CASE("WORKER_CONTROL, CONTROL and REGISTER's state: round trips and refusals") {
    auto control_request = [](const std::string& body) {
        Body b(body);
        return decode_worker_control_request(b.reader());
    };
    auto m = control_request(encode(WorkerControlRequest{7, "build-1", "concurrency", 8}));
    CHECK(m.req == 7);
    CHECK(m.worker == "build-1");
    CHECK(m.action == "concurrency");
    CHECK(m.concurrency == 8);
    // Without a concurrency the key is left out, and other actions need none.
    auto quiet = encode(WorkerControlRequest{8, "inst", "quiet", 0});
    CHECK(quiet.find("concurrency") == std::string::npos);
    CHECK(control_request(quiet).action == "quiet");
    for (const auto& bad :
         {WorkerControlRequest{1, "w", "pause", 0}, WorkerControlRequest{1, "w", "concurrency", 0},
          WorkerControlRequest{1, "w", "concurrency", 1025},
          WorkerControlRequest{1, "w", "stop", 2}, WorkerControlRequest{1, "", "quiet", 0},
          WorkerControlRequest{1, std::string(257, 'x'), "quiet", 0}}) {
        INFO(bad.worker.size(), " ", bad.action, " ", bad.concurrency);
        CHECK(code_of([&] { control_request(encode(bad)); }) == ErrorCode::bad_request);
    }

    Body c(encode(WorkerControl{"stopping", 3}));
    auto ctl = decode_worker_control(c.reader());
    CHECK(ctl.state == "stopping");
    CHECK(ctl.concurrency == 3);
    CHECK(code_of([&] {
              Body x(encode(WorkerControl{"asleep", 3}));
              decode_worker_control(x.reader());
          }) == ErrorCode::bad_request);
    CHECK(code_of([&] {
              Body x(encode(WorkerControl{"quiet", 0}));
              decode_worker_control(x.reader());
          }) == ErrorCode::bad_request);

    RegisterRequest reg;
    reg.req = 1;
    reg.instance = "i";
    reg.name = "n";
    reg.queues = {"q"};
    CHECK(encode(reg).find("state") == std::string::npos);  // active: left out
    reg.state = "quiet";
    Body rb(encode(reg));
    CHECK(decode_register(rb.reader()).state == "quiet");
    reg.state = "stopping";  // a worker registers active or quiet only
    CHECK(code_of([&] {
              Body x(encode(reg));
              decode_register(x.reader());
          }) == ErrorCode::bad_request);
}
