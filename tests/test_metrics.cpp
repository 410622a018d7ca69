// Unit tests of the broker's metrics: histogram buckets, the one-minute rate window, how events
// update the counters, and the Prometheus text (families, escaping, cumulative buckets).
#include <doctest/doctest.h>

#include <string>

#include "metrics.hpp"

using namespace errand;
using namespace errand::broker;

namespace {
bool has_line(const std::string& text, const std::string& line) {
    return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}
}  // namespace

TEST_CASE("metrics: a histogram puts a value in the first bucket whose bound is >= it") {
    Histogram h({1, 2, 5});
    h.observe(0.5);
    h.observe(1);  // le="1" includes 1
    h.observe(1.5);
    h.observe(9);  // +Inf
    CHECK(h.buckets == std::vector<std::uint64_t>{2, 1, 0, 1});
    CHECK(h.count == 4);
    CHECK(h.sum == doctest::Approx(12));
}

TEST_CASE("metrics: the rate window averages the last 60 seconds and forgets older ones") {
    RateWindow r;
    r.add(1'000'000, 30);
    r.add(1'030'500, 30);
    CHECK(r.per_second(1'030'999) == doctest::Approx(1.0));
    CHECK(r.per_second(1'061'000) == doctest::Approx(0.5));  // the first second has left
    CHECK(r.per_second(1'200'000) == doctest::Approx(0.0));
    r.add(1'060'000 + 60'000, 6);  // same bucket index as an old second: replaced, not added
    CHECK(r.per_second(1'120'000) == doctest::Approx(0.1));
}

TEST_CASE("metrics: committed events update counters and the wait and run histograms") {
    Metrics m;
    m.on_event({"q", std::nullopt, JobState::ready, 1000, std::nullopt, std::nullopt});
    m.on_event({"q", JobState::ready, JobState::running, 1100, 100, std::nullopt});
    m.on_event({"q", JobState::running, JobState::retrying, 1600, std::nullopt, 500, true});
    m.on_event({"q", JobState::retrying, JobState::ready, 1700, std::nullopt, std::nullopt});
    m.on_event({"q", JobState::ready, JobState::running, 1700, 0, std::nullopt});
    m.on_event({"q", JobState::running, JobState::dead, 1800, std::nullopt, 100, true});
    m.on_event({"q", JobState::dead, JobState::ready, 1850, std::nullopt, std::nullopt});
    m.on_event({"q", JobState::ready, JobState::running, 1860, 10, std::nullopt});
    // A drained worker hands the job back: run time counts, a failed attempt does not.
    m.on_event({"q", JobState::running, JobState::ready, 1870, std::nullopt, 10, false});
    m.on_event({"q", JobState::ready, JobState::running, 1880, 10, std::nullopt});
    m.on_event({"q", JobState::running, JobState::dead, 1890, std::nullopt, 10, true});
    m.on_event({"q", JobState::dead, JobState::ready, 1900, std::nullopt, std::nullopt});
    m.on_event({"q", JobState::ready, JobState::cancelled, 2000, std::nullopt, std::nullopt});
    const auto& q = m.queues.at("q");
    CHECK(q.submitted == 1);
    CHECK(q.failed == 3);
    CHECK(q.dead == 2);
    CHECK(q.retried == 2);
    CHECK(q.cancelled == 1);
    CHECK(q.succeeded == 0);
    CHECK(q.wait_seconds.count == 4);
    CHECK(q.wait_seconds.sum == doctest::Approx(0.12));
    CHECK(q.run_seconds.count == 4);
    CHECK(q.run_seconds.sum == doctest::Approx(0.62));
}

TEST_CASE("metrics: the Prometheus text has HELP and TYPE, cumulative buckets, escaped labels") {
    Metrics m;
    m.on_event({"a\"b", std::nullopt, JobState::ready, 0, std::nullopt, std::nullopt});
    m.on_event({"a\"b", JobState::running, JobState::succeeded, 0, std::nullopt, 2});
    m.on_event({"a\"b", JobState::running, JobState::succeeded, 0, std::nullopt, 20'000});
    m.on_commit(0.002, 3);
    Gauges g;
    g.jobs["a\"b"][static_cast<std::size_t>(JobState::succeeded)] = 2;
    g.workers = 2;
    g.db_bytes = 4096;
    auto text = render_prometheus(m, g);
    INFO(text);
    CHECK(has_line(text, "# TYPE errand_jobs gauge"));
    CHECK(has_line(text, "# HELP errand_jobs Jobs in the database by queue and state."));
    CHECK(has_line(text, "errand_jobs{queue=\"a\\\"b\",state=\"succeeded\"} 2"));
    CHECK(has_line(text, "# TYPE errand_jobs_succeeded_total counter"));
    CHECK(has_line(text, "errand_jobs_succeeded_total{queue=\"a\\\"b\"} 2"));
    CHECK(has_line(text, "errand_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"0.005\"} 1"));
    CHECK(has_line(text, "errand_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"10\"} 1"));
    CHECK(has_line(text, "errand_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"30\"} 2"));
    CHECK(has_line(text, "errand_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"+Inf\"} 2"));
    CHECK(has_line(text, "errand_job_run_seconds_count{queue=\"a\\\"b\"} 2"));
    CHECK(has_line(text, "errand_commit_batch_jobs_bucket{le=\"5\"} 1"));
    CHECK(has_line(text, "errand_commit_duration_seconds_count 1"));
    CHECK(has_line(text, "errand_workers_connected 2"));
    CHECK(has_line(text, "errand_database_size_bytes 4096"));
    CHECK(text.back() == '\n');
}
