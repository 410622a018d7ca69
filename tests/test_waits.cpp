// Waits of clients that went away (issue 17, item 3): ZeroMQ does not tell the broker, so a waiter
// lapses when its client stops resending its WAIT (PROTOCOL.md, the wait cadence), and all
// waiters together are bounded by --max-waits-total. A real broker, spoken to over the protocol.
#include <doctest/doctest.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "errand/client.hpp"
#include "errand/codec.hpp"
#include "harness.hpp"

using namespace errand::test;

namespace {

std::uint64_t waits_of(const Broker& broker) {
    errand::Client c(broker.client_options());
    return c.stats().waits;
}

// The next ERROR on `conn` (skipping nothing else: the test sends only what is refused).
std::string next_error_code(RawConnection& conn, std::string* message) {
    auto env = conn.recv(3s);
    REQUIRE_MESSAGE(env.has_value(), "no reply within 3 s");
    REQUIRE_MESSAGE(env->command == "ERROR", "got " << env->command);
    errand::Body body(env->body);
    if (message) *message = body.reader().opt_str("message", 1 << 20).value_or("");
    return body.reader().str("code", 64);
}

}  // namespace

TEST_CASE("waits of connections that closed lapse, a live waiter stays, the total is bounded") {
    TempDir dir;
    // 4 s without a WAIT drops a waiter; the library resends every 2 s (the harness's 500 ms,
    // clamped to 2–5 s), so a live client keeps its waiter.
    Broker broker(dir, {"--wait-idle", "4s", "--max-waits", "100", "--max-waits-total", "301"});
    errand::Client client(broker.client_options());
    auto job = client.submit(job_spec("nobody-serves-this")).id;

    // A live client waits all along.
    auto live = std::async(std::launch::async, [&] {
        errand::Client waiter(broker.client_options());
        return waiter.wait(job, 60s);
    });
    REQUIRE(wait_until([&] { return waits_of(broker) == 1; }, 5s));

    {
        // Three connections leave 100 waits each (WAITs and SUBMITs with wait_ms), then close.
        std::vector<std::unique_ptr<RawConnection>> gone;
        for (int c = 0; c < 3; ++c) {
            gone.push_back(std::make_unique<RawConnection>(broker.endpoint()));
            for (std::uint64_t i = 0; i < 90; ++i)
                gone.back()->send("WAIT",
                                  errand::encode(errand::WaitRequest{i + 1, job, 86'400'000}));
            for (std::uint64_t i = 0; i < 10; ++i) {
                errand::SubmitRequest m;
                m.req = 1000 + i;
                m.jobs.push_back(job_spec("nobody-serves-this"));
                m.wait_ms = 86'400'000;
                gone.back()->send("SUBMIT", errand::encode(m));
            }
            for (int i = 0; i < 10; ++i)  // the SUBMITTED replies
                REQUIRE(gone.back()->recv(3s).has_value());
        }
        REQUIRE(wait_until([&] { return waits_of(broker) == 301; }, 5s));

        // The broker holds as many as it may: a fourth connection is refused, naming the bound.
        RawConnection more(broker.endpoint());
        more.send("WAIT", errand::encode(errand::WaitRequest{7, job, 60'000}));
        std::string message;
        CHECK(next_error_code(more, &message) == "too_large");
        CHECK_MESSAGE(message.find("--max-waits-total") != std::string::npos, message);
    }  // the three connections close; the broker is not told

    // Their waits lapse within --wait-idle (plus a pass); the live client's stays throughout.
    auto start = std::chrono::steady_clock::now();
    REQUIRE_MESSAGE(wait_until([&] { return waits_of(broker) == 1; }, 10s),
                    "waits: " << waits_of(broker));
    CHECK(since(start) < 8s);
    for (int i = 0; i < 4; ++i) {  // two of the live client's resends: still exactly one
        CHECK(waits_of(broker) == 1);
        CHECK(live.wait_for(1s) == std::future_status::timeout);
    }

    // The room is back: a new connection may wait again.
    RawConnection again(broker.endpoint());
    again.send("WAIT", errand::encode(errand::WaitRequest{1, job, 60'000}));
    REQUIRE(wait_until([&] { return waits_of(broker) == 2; }, 5s));

    // The live waiter is answered when the job finishes.
    client.cancel(job);
    REQUIRE(live.wait_for(10s) == std::future_status::ready);
    auto info = live.get();
    REQUIRE(info.has_value());
    CHECK(info->state == errand::JobState::cancelled);
    auto reply = again.recv(3s);
    REQUIRE(reply.has_value());
    CHECK(reply->command == "JOB");
    CHECK(waits_of(broker) == 0);
}

TEST_CASE("a waiter whose client keeps resending outlives --wait-idle many times over") {
    TempDir dir;
    Broker broker(dir, {"--wait-idle", "1s"});
    errand::Client client(broker.client_options());
    auto job = client.submit(job_spec("q")).id;
    // A raw client that follows the cadence rule by hand, resending every 300 ms.
    RawConnection conn(broker.endpoint());
    auto body = errand::encode(errand::WaitRequest{5, job, 60'000});
    conn.send("WAIT", body);
    REQUIRE(wait_until([&] { return waits_of(broker) == 1; }, 5s));
    for (int i = 0; i < 12; ++i) {  // 3.6 s: over three times --wait-idle
        CHECK(!conn.recv(300ms).has_value());
        conn.send("WAIT", body);
        CHECK(waits_of(broker) == 1);
    }
    client.cancel(job);
    auto reply = conn.recv(3s);
    REQUIRE(reply.has_value());
    CHECK(reply->command == "JOB");
}

TEST_CASE("--wait-idle below 100ms is refused with exit 2") {
    TempDir dir;
    Process p("broker",
              {broker_bin(), "--db", (dir / "e.db").string(), "--listen",
               "tcp://127.0.0.1:" + std::to_string(free_port()), "--wait-idle", "10ms"},
              dir.path());
    auto rc = p.wait_exit(10s);
    REQUIRE(rc.has_value());
    CHECK(*rc == 2);
    CHECK(p.err().find("--wait-idle") != std::string::npos);
}
