// The client library: one DEALER socket, request/reply matched by `req`, safe resends.
#include "errand/client.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>

#include <random>

#include "errand/clock.hpp"
#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/transport.hpp"

namespace errand {

std::string unique_token() {
    // The time in ms (44 bits, never going back within a thread), 52 random bits fixed per
    // thread, then that thread's counter (32 bits): unique like 128 random bits, and increasing
    // within a thread. Led by the time, every client's tokens of one moment sort together, so the
    // broker's token index grows at one right edge: with a random lead per thread (as before)
    // each of P producers dirtied an index page of its own per commit.
    thread_local const std::uint64_t random = [] {
        std::random_device rd;
        std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
        return std::mt19937_64(seq)() & ((std::uint64_t{1} << 52) - 1);
    }();
    thread_local std::uint64_t last_ms = 0;
    thread_local std::uint32_t counter = 0;
    const auto now =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    last_ms = std::max(last_ms, now & ((std::uint64_t{1} << 44) - 1));
    const std::uint32_t n = counter++;
    std::string token = fmt::format("{:011x}{:013x}{:08x}", last_ms, random, n);
    if (counter == 0) ++last_ms;  // 2^32 tokens in one ms: the next ones count from the next ms
    return token;
}

struct Client::Impl {
    ClientOptions opt;
    std::vector<std::string> brokers;  // the endpoints, in order of preference
    std::size_t current = 0;           // the one the socket is connected to
    std::uint64_t failovers = 0;
    zmq::context_t& ctx = process_context();
    std::unique_ptr<BrokerLink> link;
    std::uint64_t next_req = 1;

    explicit Impl(ClientOptions o) : opt(std::move(o)) {
        try {
            brokers = broker_list(opt.endpoint, opt.endpoints);
        } catch (const std::invalid_argument& e) {
            throw ConnectionError(e.what());
        }
        connect(0, steady_ms());
    }

    // A fresh socket to brokers[index]; messages queued for the previous broker are dropped.
    void connect(std::size_t index, Millis now) {
        link.reset();
        current = index;
        try {
            link = std::make_unique<BrokerLink>(ctx, brokers[index], opt.curve, 100000, now);
        } catch (const zmq::error_t& e) {
            throw ConnectionError(
                fmt::format("cannot connect to broker at {}: {}", brokers[index], e.what()));
        }
    }

    std::string names() const { return fmt::format("{}", fmt::join(brokers, ", ")); }

    // Sends `body` (built for `req`) and returns the reply to it. Resends every resend_ms;
    // gives up after timeout_ms. ERROR replies become BrokerError. `first_send` delays the first
    // send (for a request the broker has already had in another form); replies that are
    // `ignore` are skipped. With several brokers, the request moves to the next one when the
    // link is down for opt.failover, or (`patient` false) after two resends without a reply;
    // a patient request (WAIT) may legitimately go unanswered for long, so only the link moves
    // it. `down_limit`: give up once the link has been down this long (0: only the deadline).
    Envelope call(std::string_view command, const std::string& body, std::uint64_t req,
                  Millis timeout_ms, Millis resend_ms, Millis first_send = 0,
                  std::string_view ignore = {}, bool patient = false, Millis down_limit = 0) {
        Millis start = steady_ms();
        Millis deadline = start + timeout_ms;
        Millis next_send = start + first_send;
        Millis sent_here = -1;  // when the request was first sent to the current broker
        for (;;) {
            Millis now = steady_ms();
            link->watch.update(now);
            if (now >= deadline)
                throw ConnectionError(fmt::format("cannot reach broker at {}: timed out after {}",
                                                  names(), format_duration(timeout_ms)));
            if (down_limit > 0 && link->watch.down_for(now) >= down_limit)
                throw ConnectionError(fmt::format("cannot reach broker at {}: no connection for {}",
                                                  names(),
                                                  format_duration(link->watch.down_for(now))));
            if (brokers.size() > 1) {
                bool gone = link->watch.down_for(now) >= opt.failover.count();
                bool silent = !patient && sent_here >= 0 && now - sent_here >= 2 * resend_ms;
                if (gone || silent) {
                    connect((current + 1) % brokers.size(), now);
                    ++failovers;
                    sent_here = -1;
                    next_send = now;
                }
            }
            if (now >= next_send) {
                send_message(link->socket, "", command, body);
                if (sent_here < 0) sent_here = now;
                next_send = now + resend_ms;
            }
            Millis wake = std::min(deadline, next_send);
            if (brokers.size() > 1 || down_limit > 0) wake = std::min(wake, now + 50);
            Millis wait = std::max<Millis>(0, wake - now);
            zmq::pollitem_t items[] = {{link->socket.handle(), 0, ZMQ_POLLIN, 0},
                                       {link->watch.events().handle(), 0, ZMQ_POLLIN, 0}};
            zmq::poll(items, 2, std::chrono::milliseconds(wait));
            while (auto env = recv_message(link->socket, false)) {
                if (env->frames != 3 || env->version != kProtocolVersion) continue;
                std::optional<std::uint64_t> got = peek_req(env->body);
                if (got != req) continue;  // a late reply to an earlier request
                if (!ignore.empty() && env->command == ignore) continue;
                if (env->command == cmd::kError) {
                    Body b(env->body);
                    auto e = decode_error(b.reader());
                    throw BrokerError(e.code, e.message);
                }
                return std::move(*env);
            }
        }
    }

    Envelope call(std::string_view command, const std::string& body, std::uint64_t req) {
        return call(command, body, req, opt.timeout.count(), opt.resend.count());
    }

    static void expect(const Envelope& env, std::string_view command) {
        if (env.command != command)
            throw BrokerError(ErrorCode::internal,
                              fmt::format("unexpected reply {} (wanted {})", env.command, command));
    }

    // A request naming one job, answered JOB: STATUS, CANCEL, RUN_NOW.
    JobInfo one_job(std::string_view command, JobId id) {
        IdRequest m{next_req++, id};
        auto env = call(command, encode(m), m.req);
        expect(env, cmd::kJob);
        Body b(env.body);
        return decode_job_info(b.reader().map("job"));
    }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

const std::string& Client::endpoint() const {
    return impl_->brokers[impl_->current];
}

std::uint64_t Client::failovers() const {
    return impl_->failovers;
}

Submitted Client::submit(JobSpec spec) {
    std::vector<JobSpec> one;
    one.push_back(std::move(spec));
    return submit_batch(std::move(one)).front();
}

std::vector<Submitted> Client::submit_batch(std::vector<JobSpec> specs) {
    std::vector<Submitted> out;
    out.reserve(specs.size());
    for (std::size_t start = 0; start < specs.size(); start += limits::kMaxBatch) {
        SubmitRequest m;
        m.req = impl_->next_req++;
        std::size_t end = std::min(specs.size(), start + limits::kMaxBatch);
        for (std::size_t i = start; i < end; ++i) {
            if (!specs[i].token) specs[i].token = unique_token();
            m.jobs.push_back(std::move(specs[i]));
        }
        auto env = impl_->call(cmd::kSubmit, encode(m), m.req);
        Impl::expect(env, cmd::kSubmitted);
        Body b(env.body);
        auto rep = decode_submitted(b.reader());
        if (rep.ids.size() != m.jobs.size())
            throw BrokerError(ErrorCode::internal, "SUBMITTED has the wrong number of ids");
        for (std::size_t i = 0; i < rep.ids.size(); ++i)
            out.push_back({rep.ids[i], i < rep.duplicate.size() && rep.duplicate[i]});
    }
    return out;
}

JobInfo Client::status(JobId id) {
    return impl_->one_job(cmd::kStatus, id);
}

std::optional<JobInfo> Client::wait(JobId id, std::chrono::milliseconds timeout) {
    const Millis timeout_ms = std::clamp<Millis>(timeout.count(), 0, limits::kMaxWaitMs);
    WaitRequest m{impl_->next_req++, id, timeout_ms};
    try {
        // A resent WAIT only refreshes the broker's record of this waiter, so resending is safe;
        // it also re-registers the waiter with a broker that restarted meanwhile (or that
        // dropped it: PROTOCOL.md's wait cadence).
        auto env =
            impl_->call(cmd::kWait, encode(m), m.req, timeout_ms + impl_->opt.timeout.count(),
                        std::clamp<Millis>(impl_->opt.resend.count(), 2000, limits::kWaitResendMs),
                        0, {}, true, impl_->opt.timeout.count());
        Impl::expect(env, cmd::kJob);
        Body b(env.body);
        return decode_job_info(b.reader().map("job"));
    } catch (const BrokerError& e) {
        if (e.code() == ErrorCode::timeout) return std::nullopt;
        throw;
    }
}

std::optional<JobInfo> Client::submit_and_wait(JobSpec spec, std::chrono::milliseconds timeout,
                                               Submitted* submitted) {
    const Millis timeout_ms = std::clamp<Millis>(timeout.count(), 0, limits::kMaxWaitMs);
    SubmitRequest m;
    m.req = impl_->next_req++;
    if (!spec.token) spec.token = unique_token();
    m.jobs.push_back(std::move(spec));
    m.wait_ms = timeout_ms;
    auto env = impl_->call(cmd::kSubmit, encode(m), m.req);
    Impl::expect(env, cmd::kSubmitted);
    Body b(env.body);
    auto rep = decode_submitted(b.reader());
    if (rep.ids.size() != 1) throw BrokerError(ErrorCode::internal, "SUBMITTED without one id");
    if (submitted) *submitted = {rep.ids[0], !rep.duplicate.empty() && rep.duplicate[0]};
    // The broker answers the same req again when the job finishes. A WAIT with that req is sent
    // only if nothing came for a while: it is a no-op for the broker that has the waiter, and
    // registers it again with one that restarted meanwhile.
    WaitRequest w{m.req, rep.ids[0], timeout_ms};
    const Millis resend =
        std::clamp<Millis>(impl_->opt.resend.count(), 2000, limits::kWaitResendMs);
    try {
        auto done =
            impl_->call(cmd::kWait, encode(w), w.req, timeout_ms + impl_->opt.timeout.count(),
                        resend, resend, cmd::kSubmitted, true, impl_->opt.timeout.count());
        Impl::expect(done, cmd::kJob);
        Body jb(done.body);
        return decode_job_info(jb.reader().map("job"));
    } catch (const BrokerError& e) {
        if (e.code() == ErrorCode::timeout) return std::nullopt;
        throw;
    }
}

std::vector<JobInfo> Client::list(const ListFilter& filter) {
    ListRequest m{impl_->next_req++, filter.queue, filter.state, filter.limit};
    auto env = impl_->call(cmd::kList, encode(m), m.req);
    Impl::expect(env, cmd::kJobs);
    Body b(env.body);
    const auto& arr = b.reader().array("jobs");
    std::vector<JobInfo> out;
    out.reserve(arr.size);
    for (std::uint32_t i = 0; i < arr.size; ++i)
        out.push_back(decode_job_info(Reader(arr.ptr[i])));
    return out;
}

Pong Client::ping() {
    auto req = impl_->next_req++;
    auto env = impl_->call(cmd::kPing, encode_req(req), req);
    Impl::expect(env, cmd::kPong);
    Body b(env.body);
    return decode_pong(b.reader());
}

}  // namespace errand

namespace errand {

JobInfo Client::cancel(JobId id) {
    return impl_->one_job(cmd::kCancel, id);
}

JobInfo Client::run_now(JobId id) {
    return impl_->one_job(cmd::kRunNow, id);
}

void Client::remove(JobId id, bool force) {
    DeleteRequest m{impl_->next_req++, id, force};
    Impl::expect(impl_->call(cmd::kDelete, encode(m), m.req), cmd::kOk);
}

JobId Client::retry(JobId id) {
    RetryRequest m{impl_->next_req++, id, false, std::nullopt};
    auto env = impl_->call(cmd::kRetry, encode(m), m.req);
    Impl::expect(env, cmd::kRetried);
    Body b(env.body);
    auto ids = decode_ids(b.reader());
    return ids.empty() ? id : ids.front();
}

std::vector<JobId> Client::retry_dead(const std::optional<std::string>& queue) {
    RetryRequest m{impl_->next_req++, std::nullopt, true, queue};
    auto env = impl_->call(cmd::kRetry, encode(m), m.req);
    Impl::expect(env, cmd::kRetried);
    Body b(env.body);
    return decode_ids(b.reader());
}

void Client::pause(const std::string& queue, std::optional<std::chrono::milliseconds> for_) {
    PauseRequest m{impl_->next_req++, queue, std::nullopt};
    if (for_) m.for_ms = for_->count();
    Impl::expect(impl_->call(cmd::kPause, encode(m), m.req), cmd::kOk);
}

void Client::resume(const std::string& queue) {
    QueueRequest m{impl_->next_req++, queue};
    Impl::expect(impl_->call(cmd::kResume, encode(m), m.req), cmd::kOk);
}

std::uint64_t Client::purge(JobState state, const std::optional<std::string>& queue,
                            std::optional<std::chrono::milliseconds> older_than) {
    std::optional<Millis> older_than_ms;
    if (older_than) older_than_ms = older_than->count();
    PurgeRequest m{impl_->next_req++, state, queue, older_than_ms};
    auto env = impl_->call(cmd::kPurge, encode(m), m.req);
    Impl::expect(env, cmd::kPurged);
    Body b(env.body);
    return decode_count(b.reader());
}

QueueSettings Client::queue_set(const QueueSettings& s) {
    QueueSetRequest m{impl_->next_req++, s.queue,        s.max_running, s.rate,
                      std::nullopt,      s.max_attempts, std::nullopt,  s.priority};
    if (s.rate_per) m.rate_per_ms = s.rate_per->count();
    if (s.timeout) m.timeout_ms = s.timeout->count();
    if (s.retention) m.retention_ms = s.retention->count();
    if (s.expires_in) m.expires_in_ms = s.expires_in->count();
    auto env = impl_->call(cmd::kQueueSet, encode(m), m.req);
    Impl::expect(env, cmd::kQueue);
    Body b(env.body);
    return decode_queue(b.reader());
}

QueueSettings Client::queue_unset(const std::string& queue, const std::vector<std::string>& names) {
    QueueUnsetRequest m{impl_->next_req++, queue, names};
    auto env = impl_->call(cmd::kQueueUnset, encode(m), m.req);
    Impl::expect(env, cmd::kQueue);
    Body b(env.body);
    return decode_queue(b.reader());
}

QueueSettings Client::queue_settings(const std::string& queue) {
    QueueRequest m{impl_->next_req++, queue};
    auto env = impl_->call(cmd::kQueueShow, encode(m), m.req);
    Impl::expect(env, cmd::kQueue);
    Body b(env.body);
    return decode_queue(b.reader());
}

std::vector<QueueInfo> Client::queues() {
    auto req = impl_->next_req++;
    auto env = impl_->call(cmd::kQueues, encode_req(req), req);
    Impl::expect(env, cmd::kQueues);
    Body b(env.body);
    return decode_queues(b.reader());
}

Schedule Client::schedule_add(const Schedule& s) {
    ScheduleAddRequest m{impl_->next_req++, s};
    auto env = impl_->call(cmd::kScheduleAdd, encode(m), m.req);
    Impl::expect(env, cmd::kSchedule);
    Body b(env.body);
    return decode_schedule(b.reader());
}
std::vector<Schedule> Client::schedules() {
    auto req = impl_->next_req++;
    auto env = impl_->call(cmd::kScheduleList, encode_req(req), req);
    Impl::expect(env, cmd::kSchedules);
    Body b(env.body);
    return decode_schedules(b.reader());
}
BatchInfo Client::batch_open(const std::string& description,
                             const std::optional<JobSpec>& on_complete,
                             const std::optional<JobSpec>& on_success) {
    // A token, so that a resend after a lost reply (or on another broker) opens one batch.
    BatchOpenRequest m{impl_->next_req++, description, on_complete, on_success, unique_token()};
    auto env = impl_->call(cmd::kBatchOpen, encode(m), m.req);
    Impl::expect(env, cmd::kBatch);
    Body b(env.body);
    return decode_batch(b.reader());
}
namespace {
BatchInfo batch_call(auto& impl, std::string_view command, JobId id) {
    BatchRequest m{impl.next_req++, id};
    auto env = impl.call(command, encode(m), m.req);
    std::remove_reference_t<decltype(impl)>::expect(env, cmd::kBatch);
    Body b(env.body);
    return decode_batch(b.reader());
}
}  // namespace
BatchInfo Client::batch_seal(JobId id) {
    return batch_call(*impl_, cmd::kBatchSeal, id);
}
BatchInfo Client::batch(JobId id) {
    return batch_call(*impl_, cmd::kBatchShow, id);
}
std::vector<BatchInfo> Client::batches(std::uint32_t limit, std::optional<JobId> before) {
    BatchListRequest m{impl_->next_req++, limit, before};
    auto env = impl_->call(cmd::kBatchList, encode(m), m.req);
    Impl::expect(env, cmd::kBatches);
    Body b(env.body);
    return decode_batches(b.reader());
}
namespace {
Schedule schedule_call(auto& impl, std::string_view command, const std::string& name) {
    ScheduleRequest m{impl.next_req++, name};
    auto env = impl.call(command, encode(m), m.req);
    std::remove_reference_t<decltype(impl)>::expect(env, cmd::kSchedule);
    Body b(env.body);
    return decode_schedule(b.reader());
}
}  // namespace
Schedule Client::schedule(const std::string& name) {
    return schedule_call(*impl_, cmd::kScheduleShow, name);
}
void Client::schedule_remove(const std::string& name) {
    ScheduleRequest m{impl_->next_req++, name};
    Impl::expect(impl_->call(cmd::kScheduleRemove, encode(m), m.req), cmd::kOk);
}
Schedule Client::schedule_pause(const std::string& name) {
    return schedule_call(*impl_, cmd::kSchedulePause, name);
}
Schedule Client::schedule_resume(const std::string& name) {
    return schedule_call(*impl_, cmd::kScheduleResume, name);
}

std::vector<Event> Client::history(JobId id) {
    IdRequest m{impl_->next_req++, id};
    auto env = impl_->call(cmd::kHistory, encode(m), m.req);
    Impl::expect(env, cmd::kEvents);
    Body b(env.body);
    return decode_events(b.reader());
}

StatsReply Client::stats() {
    auto req = impl_->next_req++;
    auto env = impl_->call(cmd::kStats, encode_req(req), req);
    Impl::expect(env, cmd::kStats);
    Body b(env.body);
    return decode_stats(b.reader());
}

std::vector<WorkerInfo> Client::workers() {
    auto req = impl_->next_req++;
    auto env = impl_->call(cmd::kWorkers, encode_req(req), req);
    Impl::expect(env, cmd::kWorkers);
    Body b(env.body);
    return decode_workers(b.reader());
}

std::vector<WorkerInfo> Client::control_worker(const std::string& worker, const std::string& action,
                                               std::uint32_t concurrency) {
    WorkerControlRequest m{impl_->next_req++, worker, action, concurrency};
    auto env = impl_->call(cmd::kWorkerControl, encode(m), m.req);
    Impl::expect(env, cmd::kWorkers);
    Body b(env.body);
    return decode_workers(b.reader());
}

std::vector<JobEvent> Client::feed(const std::optional<std::string>& queue, std::uint32_t limit,
                                   std::uint64_t after) {
    FeedRequest m{impl_->next_req++, queue, limit, after};
    auto env = impl_->call(cmd::kFeed, encode(m), m.req);
    Impl::expect(env, cmd::kFeed);
    Body b(env.body);
    return decode_feed_reply(b.reader());
}

}  // namespace errand
