// The asynchronous client against a real broker and a library worker: many requests in flight,
// futures completed by replies, errors and timeouts delivered through the futures.
#include <doctest/doctest.h>

#include <thread>

#include "errand/async_client.hpp"
#include "errand/worker.hpp"
#include "harness.hpp"

using namespace errand;
using namespace errand::test;

TEST_CASE("async: 20 batches in flight at once are all committed and run") {
    TempDir dir;
    Broker broker(dir);
    AsyncClient client(broker.client_options());
    std::vector<std::future<std::vector<Submitted>>> inflight;
    for (int b = 0; b < 20; ++b) {
        std::vector<JobSpec> jobs;
        for (int i = 0; i < 50; ++i)
            jobs.push_back(job_spec("async", std::to_string(b * 50 + i)));
        inflight.push_back(client.submit(std::move(jobs)));
    }
    CHECK(client.in_flight() <= 20);
    std::vector<JobId> ids;
    for (auto& f : inflight)
        for (const auto& s : f.get()) {
            CHECK_FALSE(s.duplicate);
            ids.push_back(s.id);
        }
    REQUIRE(ids.size() == 1000);
    std::sort(ids.begin(), ids.end());
    CHECK(std::unique(ids.begin(), ids.end()) == ids.end());
    CHECK(client.in_flight() == 0);

    Worker worker({.endpoint = broker.endpoint(), .name = "async-w", .concurrency = 4});
    std::atomic<int> runs{0};
    worker.handle("async", [&](const Job& job) {
        ++runs;
        return Outcome::success("r" + job.payload);
    });
    std::thread t([&] { worker.run(); });
    std::vector<std::future<std::optional<JobInfo>>> waits;
    for (JobId id : ids)
        waits.push_back(client.wait(id, 30s));
    int succeeded = 0;
    for (auto& w : waits) {
        auto job = w.get();
        REQUIRE(job.has_value());
        if (job->state == JobState::succeeded &&
            job->result == "r" + std::to_string(job->id - ids.front()))
            ++succeeded;
    }
    worker.stop();
    t.join();
    CHECK(succeeded == 1000);
    CHECK(runs.load() == 1000);
}

TEST_CASE("async: broker errors and timeouts arrive through the futures") {
    TempDir dir;
    Broker broker(dir);
    AsyncClient client(broker.client_options());
    auto missing = client.status(424242);
    CHECK_THROWS_AS(missing.get(), BrokerError);
    auto id = client.submit({job_spec("nobody-serves-this")}).get().front().id;
    auto waited = client.wait(id, 200ms);
    CHECK_FALSE(waited.get().has_value());  // broker says timeout -> nullopt
    CHECK(client.status(id).get().state == JobState::ready);

    ClientOptions nowhere;
    nowhere.endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    nowhere.timeout = 300ms;
    AsyncClient lost(nowhere);
    auto f = lost.submit({job_spec("q")});
    CHECK_THROWS_WITH_AS(f.get(), doctest::Contains("cannot reach broker"), ConnectionError);
}
