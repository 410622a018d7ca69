// Bad input over a raw DEALER socket: every malformed or invalid message gets the documented ERROR
// (exact code, `req` echoed when readable), nothing reaches the database, and the broker keeps
// serving on the same connection. A message over --max-message makes ZeroMQ close its connection,
// without a reply.
#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "errand/codec.hpp"
#include "harness.hpp"

using namespace errand::test;
using errand::Writer;

namespace {

struct ErrorSeen {
    std::string code;
    std::optional<std::uint64_t> req;
    std::string message;
    std::optional<std::uint64_t> id;
    std::optional<std::uint64_t> attempt;
};

// The next message must be a well-formed ERROR; returns its fields.
ErrorSeen next_error(RawConnection& conn) {
    auto env = conn.recv(3s);
    REQUIRE_MESSAGE(env.has_value(), "no reply within 3 s");
    REQUIRE(env->frames == 3);
    CHECK(env->version == "errand/1");
    REQUIRE_MESSAGE(env->command == "ERROR", "got " << env->command);
    errand::Body body(env->body);
    const auto& r = body.reader();
    ErrorSeen e;
    e.code = r.str("code", 64);
    e.req = r.opt_u64("req");
    e.message = r.opt_str("message", 1 << 20).value_or("");
    e.id = r.opt_u64("id");
    e.attempt = r.opt_u64("attempt");
    return e;
}

enum class Req { absent, echoed, absent_or_echoed };

// Sends `frames` and checks the ERROR reply: its code, and `req` (the request's `req` is `req`).
void expect_error(RawConnection& conn, const std::string& what,
                  const std::vector<std::string>& frames, std::string_view code,
                  Req req_rule = Req::absent, std::uint64_t req = 0) {
    INFO(what);
    conn.send_frames(frames);
    auto e = next_error(conn);
    CHECK(e.code == code);
    CHECK_FALSE(e.message.empty());
    switch (req_rule) {
        case Req::absent:
            CHECK_FALSE(e.req.has_value());
            break;
        case Req::echoed:
            CHECK(e.req == req);
            break;
        case Req::absent_or_echoed:
            CHECK((!e.req || *e.req == req));
            break;
    }
}

// A well-formed request with body `body` and the expected code; `req` must come back.
void expect_refused(RawConnection& conn, const std::string& what, std::string_view command,
                    const std::string& body, std::string_view code, std::uint64_t req) {
    expect_error(conn, what, {"errand/1", std::string(command), body}, code, Req::echoed, req);
}

// Appends the already-encoded map `raw` as the next value (the packer writes the bytes as-is).
void append_raw(Writer& w, const std::string& raw) {
    w.packer().pack_str_body(raw.data(), static_cast<std::uint32_t>(raw.size()));
}

// SUBMIT body {"req": req, "jobs": [jobs…]} where each job is an encoded map.
std::string submit_body(std::uint64_t req, const std::vector<std::string>& jobs) {
    Writer w(2);
    w.u64("req", req).key("jobs");
    w.packer().pack_array(static_cast<std::uint32_t>(jobs.size()));
    for (const auto& j : jobs)
        append_raw(w, j);
    return w.take();
}

std::string queue_job(std::string_view queue) {
    return Writer(1).str("queue", queue).take();
}

// The broker still answers PING on this very connection.
void expect_pong(RawConnection& conn, std::uint64_t req) {
    conn.send(errand::cmd::kPing, errand::encode_req(req));
    auto env = conn.recv(3s);
    REQUIRE_MESSAGE(env.has_value(), "no PONG within 3 s");
    REQUIRE(env->command == "PONG");
    auto pong = errand::decode_pong(errand::Body(env->body).reader());
    CHECK(pong.req == req);
}

// Nothing was committed, and a valid request still works.
void expect_empty_then_submit_works(const Broker& broker, std::size_t payload_size) {
    errand::Client client(broker.client_options());
    errand::ListFilter all;
    all.limit = errand::limits::kMaxListLimit;
    CHECK(client.list(all).empty());
    auto s = client.submit(job_spec("after", std::string(payload_size, 'p')));
    auto job = client.status(s.id);
    CHECK(job.state == errand::JobState::ready);
    CHECK(job.payload_size == payload_size);
    CHECK(client.list(all).size() == 1);
}

}  // namespace

TEST_CASE("bad input: malformed frames get bad_frame / bad_version / unknown_command") {
    TempDir dir;
    Broker broker(dir);
    RawConnection conn(broker.endpoint());

    std::mt19937 rng(20240601);  // fixed seed: the same bytes every run
    std::string noise(61, '\0');
    for (auto& c : noise)
        c = static_cast<char>(rng() & 0xff);
    expect_error(conn, "random bytes, one frame", {noise}, "bad_frame");
    expect_error(conn, "two frames", {"errand/1", "PING"}, "bad_frame");
    expect_error(conn, "four frames", {"errand/1", "PING", errand::encode_req(3), "extra"},
                 "bad_frame", Req::absent_or_echoed, 3);
    expect_error(conn, "empty body frame", {"errand/1", "PING", ""}, "bad_frame");

    const std::string full = Writer(2).u64("req", 4).str("pad", "abcdefgh").take();
    expect_error(conn, "truncated msgpack", {"errand/1", "PING", full.substr(0, full.size() - 3)},
                 "bad_frame", Req::absent_or_echoed, 4);
    expect_error(conn, "trailing bytes after the map", {"errand/1", "PING", full + "\x01"},
                 "bad_frame", Req::absent_or_echoed, 4);

    msgpack::sbuffer arr;
    msgpack::pack(arr, std::vector<int>{1, 2, 3});
    expect_error(conn, "body is an array",
                 {"errand/1", "PING", std::string(arr.data(), arr.size())}, "bad_frame");
    expect_error(conn, "body is an integer", {"errand/1", "PING", "\x05"}, "bad_frame");

    expect_error(conn, "wrong version", {"errand/2", "PING", errand::encode_req(8)}, "bad_version",
                 Req::echoed, 8);
    expect_error(conn, "empty version", {"", "PING", errand::encode_req(9)}, "bad_version",
                 Req::echoed, 9);
    expect_refused(conn, "unknown command", "FROB", errand::encode_req(10), "unknown_command", 10);
    expect_refused(conn, "lower-case command", "ping", errand::encode_req(11), "unknown_command",
                   11);
    expect_error(conn, "req of the wrong type",
                 {"errand/1", "PING", Writer(1).str("req", "twelve").take()}, "bad_request");

    expect_pong(conn, 99);
    expect_empty_then_submit_works(broker, 10);
}

TEST_CASE("bad input: invalid SUBMIT, STATUS, WAIT and LIST requests are refused") {
    TempDir dir;
    Broker broker(dir, {"--max-payload", "1024"});
    RawConnection conn(broker.endpoint());
    std::uint64_t next_req = 100;
    // Sends COMMAND with body(req) for a fresh req and expects ERROR `code` echoing that req.
    auto refused = [&](const std::string& what, std::string_view command,
                       const std::function<std::string(std::uint64_t)>& body,
                       std::string_view code) {
        const std::uint64_t req = ++next_req;
        expect_refused(conn, what, command, body(req), code, req);
    };
    // A SUBMIT of the single job `job`.
    auto submit_one = [](std::string job) {
        return [job = std::move(job)](std::uint64_t req) { return submit_body(req, {job}); };
    };

    // Size limits.
    refused("payload over --max-payload", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").bin("payload", std::string(1025, 'x')).take()),
            "too_large");
    refused(
        "1001 jobs in one SUBMIT", "SUBMIT",
        [](std::uint64_t req) {
            return submit_body(req, std::vector<std::string>(1001, queue_job("q")));
        },
        "too_large");

    // Missing fields and wrong types.
    refused(
        "no jobs field", "SUBMIT", [](std::uint64_t req) { return errand::encode_req(req); },
        "bad_request");
    refused(
        "jobs is a string", "SUBMIT",
        [](std::uint64_t req) { return Writer(2).u64("req", req).str("jobs", "q").take(); },
        "bad_request");
    refused(
        "empty jobs array", "SUBMIT", [](std::uint64_t req) { return submit_body(req, {}); },
        "bad_request");
    refused("job without queue", "SUBMIT", submit_one(Writer(1).bin("payload", "x").take()),
            "bad_request");
    // A run_at before 1970 made the broker's queue-wait metric overflow (fuzz_broker, session 3).
    refused("run_at before 1970", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").i64("run_at", -9223372036854775807LL).take()),
            "bad_request");
    refused("run_at after 9999", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").i64("run_at", 253402300800000LL).take()),
            "bad_request");
    refused("job that is not a map", "SUBMIT", submit_one("\xa1q"), "bad_request");
    refused("queue is an integer", "SUBMIT", submit_one(Writer(1).u64("queue", 5).take()),
            "bad_request");
    refused("payload is an integer", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").u64("payload", 1).take()), "bad_request");
    refused("max_attempts 0", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").u64("max_attempts", 0).take()), "bad_request");
    refused("max_attempts 1001", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").u64("max_attempts", 1001).take()),
            "bad_request");
    refused("max_attempts negative", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").i64("max_attempts", -1).take()), "bad_request");
    refused("max_attempts is a string", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").str("max_attempts", "3").take()), "bad_request");
    refused("empty argv", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").str_array("argv", {}).take()), "bad_request");
    refused("argv of integers", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").u64_array("argv", {1, 2}).take()),
            "bad_request");
    refused("empty token", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").str("token", "").take()), "bad_request");
    refused("token of 129 bytes", "SUBMIT",
            submit_one(Writer(2).str("queue", "q").str("token", std::string(129, 't')).take()),
            "bad_request");

    // Invalid queue names.
    for (const std::string& name : {std::string(), std::string("has space"), std::string("a/b"),
                                    std::string("caf\xc3\xa9"), std::string(65, 'q')}) {
        INFO("queue name '" << name << "'");
        refused("invalid queue name", "SUBMIT", submit_one(queue_job(name)), "bad_request");
    }

    // One bad job refuses the whole batch: the valid first job must not be committed either.
    refused(
        "batch with one invalid job", "SUBMIT",
        [](std::uint64_t req) {
            return submit_body(req, {queue_job("fine"), queue_job("not fine")});
        },
        "bad_request");

    // Other client commands.
    refused(
        "STATUS of an unknown id", "STATUS",
        [](std::uint64_t req) {
            return errand::encode(errand::IdRequest{req, 424242});
        },
        "not_found");
    refused(
        "STATUS without id", "STATUS", [](std::uint64_t req) { return errand::encode_req(req); },
        "bad_request");
    refused(
        "STATUS with a string id", "STATUS",
        [](std::uint64_t req) { return Writer(2).u64("req", req).str("id", "1").take(); },
        "bad_request");
    refused(
        "WAIT on an unknown id", "WAIT",
        [](std::uint64_t req) {
            return errand::encode(errand::WaitRequest{req, 424242, 1000});
        },
        "not_found");
    refused(
        "LIST with an unknown state", "LIST",
        [](std::uint64_t req) { return Writer(2).u64("req", req).str("state", "bogus").take(); },
        "bad_request");

    expect_pong(conn, ++next_req);
    // The exact limit is accepted.
    expect_empty_then_submit_works(broker, 1024);
}

TEST_CASE("bad input: worker commands from strangers and results for jobs not running") {
    TempDir dir;
    Broker broker(dir);
    RawConnection conn(broker.endpoint());

    expect_error(conn, "CREDIT unregistered", {"errand/1", "CREDIT", errand::encode_credit(1)},
                 "not_registered");
    expect_error(conn, "HEARTBEAT unregistered",
                 {"errand/1", "HEARTBEAT", errand::encode(errand::WorkerHeartbeat{0, {}})},
                 "not_registered");
    expect_error(conn, "REGISTER with concurrency 0",
                 {"errand/1", "REGISTER",
                  errand::encode(errand::RegisterRequest{.req = 5,
                                                         .instance = "i-1",
                                                         .name = "n",
                                                         .host = "h",
                                                         .pid = 1,
                                                         .queues = {"q"},
                                                         .concurrency = 0,
                                                         .commands = false,
                                                         .held = {}})},
                 "bad_request", Req::echoed, 5);
    // The failed REGISTER did not register the connection.
    expect_error(conn, "CREDIT after a refused REGISTER",
                 {"errand/1", "CREDIT", errand::encode_credit(1)}, "not_registered");

    expect_pong(conn, 7);
    expect_empty_then_submit_works(broker, 0);

    // A job that exists but is ready (never dispatched): results for it are stale.
    errand::Client client(broker.client_options());
    errand::ListFilter all;
    const auto id = client.list(all).at(0).id;
    errand::JobResult done;
    done.ok = true;
    done.id = id;
    done.attempt = 1;
    done.result = "forged";
    conn.send(errand::cmd::kDone, errand::encode(done));
    auto e = next_error(conn);
    CHECK(e.code == "stale");
    CHECK(e.id == id);
    CHECK(e.attempt == 1);

    errand::JobResult fail;
    fail.ok = false;
    fail.id = id;
    fail.attempt = 1;
    fail.error = "forged";
    fail.permanent = true;
    conn.send(errand::cmd::kFail, errand::encode(fail));
    e = next_error(conn);
    CHECK(e.code == "stale");
    CHECK(e.id == id);
    CHECK(e.attempt == 1);

    auto job = client.status(id);
    CHECK(job.state == errand::JobState::ready);
    CHECK(job.attempts == 0);
    CHECK_FALSE(job.result.has_value());
    CHECK_FALSE(job.error.has_value());
}

TEST_CASE("bad input: a message over --max-message gets no reply; the broker keeps serving") {
    TempDir dir;
    Broker broker(dir, {"--max-message", "65536"});
    {
        // Under the 1 MiB payload limit, so only the message limit can stop it: a SUBMITTED or
        // an ERROR here would both be wrong.
        RawConnection conn(broker.endpoint());
        conn.send(
            errand::cmd::kSubmit,
            submit_body(
                1,
                {Writer(2).str("queue", "q").bin("payload", std::string(100 * 1024, 'x')).take()}));
        auto reply = conn.recv(1s);
        CHECK_MESSAGE(!reply.has_value(), "got " << reply->command);
    }
    errand::Client client(broker.client_options());
    CHECK_NOTHROW(client.ping());
    // Just under the limit still goes through.
    expect_empty_then_submit_works(broker, 60 * 1024);
}

TEST_CASE("bad input: LIST with an invalid queue name is bad_request") {
    // PROTOCOL.md, Limits: a queue name is 1-64 bytes of A-Z a-z 0-9 _ . - or `bad_request`.
    TempDir dir;
    Broker broker(dir);
    RawConnection conn(broker.endpoint());
    expect_refused(conn, "LIST with an invalid queue name", "LIST",
                   Writer(2).u64("req", 5).str("queue", "no way").take(), "bad_request", 5);
    expect_refused(conn, "LIST with an empty queue name", "LIST",
                   Writer(2).u64("req", 6).str("queue", "").take(), "bad_request", 6);
    expect_pong(conn, 7);
}

TEST_CASE("bad input: --max-batch and --max-waits are enforced with too_large") {
    TempDir dir;
    Broker broker(dir, {"--max-batch", "3", "--max-waits", "2"});
    RawConnection conn(broker.endpoint());

    errand::SubmitRequest four;
    four.req = 1;
    for (int i = 0; i < 4; ++i)
        four.jobs.push_back(job_spec("q"));
    conn.send("SUBMIT", errand::encode(four));
    auto e = next_error(conn);
    CHECK(e.code == "too_large");
    CHECK(e.req == 1u);

    errand::SubmitRequest three = four;
    three.req = 2;
    three.jobs.pop_back();
    conn.send("SUBMIT", errand::encode(three));
    auto ok = conn.recv(3s);
    REQUIRE(ok.has_value());
    REQUIRE(ok->command == "SUBMITTED");

    // Two WAITs may be outstanding on one connection; the third is refused.
    conn.send("WAIT", errand::encode(errand::WaitRequest{3, 1, 60'000}));
    conn.send("WAIT", errand::encode(errand::WaitRequest{4, 2, 60'000}));
    conn.send("WAIT", errand::encode(errand::WaitRequest{5, 3, 60'000}));
    auto w = next_error(conn);
    CHECK(w.code == "too_large");
    CHECK(w.req == 5u);
    CHECK(w.message.find("--max-waits") != std::string::npos);

    // Another connection has its own allowance.
    errand::Client other(broker.client_options());
    CHECK_FALSE(other.wait(1, 100ms).has_value());
}
