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

TEST_CASE("metrics: per-minute counts keep the last 6 hours in a fixed ring and forget older") {
    Metrics m;
    const Millis t0 = 1'800'000'000'000;  // a minute boundary
    REQUIRE(t0 % 60000 == 0);
    m.on_event({"q", std::nullopt, JobState::ready, t0 + 1000, std::nullopt, std::nullopt});
    m.on_event({"q", std::nullopt, JobState::ready, t0 + 59'999, std::nullopt, std::nullopt});
    m.on_event({"q", JobState::running, JobState::succeeded, t0 + 61'000, std::nullopt, 5});
    m.on_event({"q", JobState::running, JobState::dead, t0 + 62'000, std::nullopt, 5, true,
                "failed permanently: exit code 99"});
    auto last = m.minutes.last(t0 + 120'000, 3);
    REQUIRE(last.size() == 3);
    CHECK(last[0].minute == t0 / 60000);
    CHECK(last[0].submitted == 2);
    CHECK(last[1].succeeded == 1);
    CHECK(last[1].dead == 1);
    CHECK(last[1].failed == 1);
    CHECK(last[2].submitted + last[2].succeeded + last[2].dead == 0);
    // Six hours later the slot of t0's minute is reused: the old count is gone, not added to.
    const Millis later = t0 + static_cast<Millis>(MinuteSeries::kMinutes) * 60000;
    m.on_event({"q", std::nullopt, JobState::ready, later + 5, std::nullopt, std::nullopt});
    auto now = m.minutes.last(later, MinuteSeries::kMinutes);
    CHECK(now.size() == MinuteSeries::kMinutes);
    CHECK(now.back().submitted == 1);
    CHECK(now.front().minute == t0 / 60000 + 1);
    CHECK(now.front().succeeded == 1);
    // More than the ring holds is capped.
    CHECK(m.minutes.last(later, 100000).size() == MinuteSeries::kMinutes);
    CHECK(sizeof(MinuteSeries) <= 16 * 1024);
}

TEST_CASE("metrics: failed attempts are counted by a closed set of reason classes") {
    CHECK(failure_class("failed: exit code 1") == FailureClass::failed);
    CHECK(failure_class("no attempts left: exit code 1") == FailureClass::failed);
    CHECK(failure_class("failed permanently: exit code 99") == FailureClass::permanent);
    CHECK(failure_class("timed out") == FailureClass::timeout);
    CHECK(failure_class("worker lost") == FailureClass::lost);
    CHECK(failure_class("dispatch lost") == FailureClass::lost);
    Metrics m;
    m.on_event({"q", JobState::running, JobState::retrying, 0, std::nullopt, 1, true, "timed out"});
    m.on_event({"q", JobState::running, JobState::ready, 0, std::nullopt, 1, true, "worker lost"});
    m.on_event(
        {"q", JobState::running, JobState::ready, 0, std::nullopt, 1, false, "released by worker"});
    Gauges g;
    g.version = "1.2.3";
    g.oldest_ready_age["q"] = 12.5;
    g.queue_slots["q"] = 0;
    ProcessStats p;
    p.cpu_seconds = 1.5;
    p.open_fds = 9;
    auto text = render_prometheus(m, g, p);
    INFO(text);
    CHECK(has_line(text,
                   "errand_job_attempts_failed_by_reason_total{queue=\"q\",reason=\"timeout\"} 1"));
    CHECK(has_line(text,
                   "errand_job_attempts_failed_by_reason_total{queue=\"q\",reason=\"lost\"} 1"));
    CHECK(has_line(text,
                   "errand_job_attempts_failed_by_reason_total{queue=\"q\",reason=\"failed\"} 0"));
    CHECK(has_line(text, "errand_job_attempts_failed_total{queue=\"q\"} 2"));
    CHECK(has_line(text, "errand_build_info{version=\"1.2.3\"} 1"));
    CHECK(has_line(text, "errand_queue_oldest_ready_age_seconds{queue=\"q\"} 12.5"));
    CHECK(has_line(text, "errand_queue_worker_slots{queue=\"q\"} 0"));
    CHECK(has_line(text, "process_cpu_seconds_total 1.5"));
    CHECK(has_line(text, "process_open_fds 9"));
    // This process's own figures are readable here.
    auto self = read_process_stats();
    REQUIRE(self);
    CHECK(self->resident_bytes > 0);
    CHECK(self->open_fds >= 3);
    CHECK(self->start_time_seconds > 1.6e9);
}

TEST_CASE("metrics: schedules by paused, and each schedule's next and last fire time") {
    Metrics m;
    Gauges g;
    // No schedules: both counts still show (0), no per-schedule series.
    auto empty = render_prometheus(m, g);
    CHECK(has_line(empty, "errand_schedules{paused=\"false\"} 0"));
    CHECK(has_line(empty, "errand_schedules{paused=\"true\"} 0"));
    CHECK(empty.find("errand_schedule_next_fire_timestamp_seconds{") == std::string::npos);

    g.schedules["nightly"] = {false, 1764644400000, std::nullopt};
    g.schedules["fast"] = {false, 1764600000500, 1764599999500};
    g.schedules["off"] = {true, 1764644400000, 1764558000000};
    auto text = render_prometheus(m, g);
    INFO(text);
    CHECK(has_line(text, "# TYPE errand_schedules gauge"));
    CHECK(has_line(text, "errand_schedules{paused=\"false\"} 2"));
    CHECK(has_line(text, "errand_schedules{paused=\"true\"} 1"));
    CHECK(has_line(text, "errand_schedule_paused{schedule=\"off\"} 1"));
    CHECK(has_line(text, "errand_schedule_paused{schedule=\"fast\"} 0"));
    CHECK(has_line(text,
                   "errand_schedule_next_fire_timestamp_seconds{schedule=\"nightly\"} 1764644400"));
    CHECK(has_line(text,
                   "errand_schedule_next_fire_timestamp_seconds{schedule=\"fast\"} 1764600000.5"));
    // Paused: no next tick; never fired: no last one.
    CHECK(text.find("errand_schedule_next_fire_timestamp_seconds{schedule=\"off\"}") ==
          std::string::npos);
    CHECK(text.find("errand_schedule_last_fire_timestamp_seconds{schedule=\"nightly\"}") ==
          std::string::npos);
    CHECK(has_line(text,
                   "errand_schedule_last_fire_timestamp_seconds{schedule=\"fast\"} 1764599999.5"));
    CHECK(
        has_line(text, "errand_schedule_last_fire_timestamp_seconds{schedule=\"off\"} 1764558000"));
}
