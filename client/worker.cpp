// The worker library. One network thread owns the DEALER socket: it registers, grants credit,
// heartbeats, receives dispatches and (re)sends results until they are acknowledged. Handlers
// run on a pool of `concurrency` threads and hand results back over an inproc PUSH/PULL pair,
// so job code never delays a heartbeat.
#include "errand/worker.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "errand/client.hpp"
#include "errand/clock.hpp"
#include "errand/codec.hpp"
#include "errand/log_fields.hpp"
#include "errand/transport.hpp"

namespace errand {
namespace {

constexpr Millis kInitialBackoffMs = 500;
constexpr Millis kMaxBackoffMs = 5000;

std::string host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
    return buf;
}

// A result waiting for the broker's ACK.
struct Pending {
    std::uint32_t attempt = 0;
    std::string command;
    std::string body;
    Millis sent_at = 0;
    std::string queue;  // for log lines about it
};

}  // namespace

struct JobControl {
    std::atomic<bool> cancelled{false};
    std::mutex mu;
    bool progress_dirty = false;
    std::uint32_t percent = 0;
    std::string message;
    std::uint32_t epoch = 0;  // DISPATCH's epoch, echoed in the result (guarded by mu)
};

bool Job::cancelled() const {
    return control && control->cancelled.load();
}
const std::atomic<bool>* Job::cancel_flag() const {
    return control ? &control->cancelled : nullptr;
}
void Job::progress(std::uint32_t percent, std::string message) const {
    if (!control) return;
    std::lock_guard lock(control->mu);
    control->percent = std::min<std::uint32_t>(percent, 100);
    if (message.size() > limits::kMaxProgressMessage) message.resize(limits::kMaxProgressMessage);
    control->message = std::move(message);
    control->progress_dirty = true;
}

struct Worker::Impl {
    WorkerOptions opt;
    std::vector<std::pair<std::string, Handler>> handlers;
    std::vector<std::uint32_t> weights;  // parallel to handlers; 0 = none given
    std::atomic<bool> stopping{false};
    std::atomic<int> stop_requests{0};  // 1: drain, 2 or more: end the drain now
    std::string instance = unique_token();
    std::string inproc = "inproc://errand-worker-" + instance;
    zmq::context_t& ctx = process_context();

    // Handler pool. `limit` (the concurrency, CONTROL may change it) handlers run at once;
    // the pool has at least that many threads (it grows, never shrinks: idle ones wait).
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> tasks;
    bool pool_closing = false;
    std::uint32_t limit = 1;      // guarded by mu
    std::uint32_t executing = 0;  // handlers running now, guarded by mu
    double run_ms = 0;            // handlers' run time, averaged (adaptive prefetch), guarded by mu
    std::uint64_t runs = 0;       // jobs run, guarded by mu
    std::vector<std::thread> threads;

    explicit Impl(WorkerOptions o) : opt(std::move(o)) {
        brokers = broker_list(opt.endpoint, opt.endpoints);
        if (opt.name.empty()) opt.name = fmt::format("{}:{}", host_name(), getpid());
        if (opt.concurrency < 1) opt.concurrency = 1;
        if (opt.concurrency > limits::kMaxConcurrency) opt.concurrency = limits::kMaxConcurrency;
        opt.prefetch = std::min(opt.prefetch, limits::kMaxPrefetch);
    }

    // A line for the application's log (WorkerOptions::log), formatted only when there is one.
    template <typename... Args>
    void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) const {
        if (opt.log) opt.log(level, fmt::format(format, std::forward<Args>(args)...));
    }

    const Handler* handler_for(const std::string& queue) const {
        for (const auto& [q, h] : handlers)
            if (q == queue) return &h;
        return nullptr;
    }

    Outcome execute(const Job& job) {
        const Handler* h = handler_for(job.queue);
        if (!h)
            return Outcome::failure(fmt::format("no handler for queue '{}'", job.queue), -1, true);
        if (job.argv && !opt.accept_commands)
            return Outcome::failure("this worker does not run job-supplied commands", -1, true);
        try {
            return (*h)(job);
        } catch (const std::exception& e) {
            return Outcome::failure(e.what());
        } catch (...) {
            return Outcome::failure("handler threw a non-standard exception");
        }
    }

    void pool_thread() {
        zmq::socket_t push(ctx, zmq::socket_type::push);
        push.set(zmq::sockopt::linger, 0);
        push.connect(inproc);
        for (;;) {
            Job job;
            {
                std::unique_lock lock(mu);
                cv.wait(lock,
                        [&] { return pool_closing || (!tasks.empty() && executing < limit); });
                // Closing: run() ends only when no job is left (tasks are a part of `running`).
                if (pool_closing) return;
                job = std::move(tasks.front());
                tasks.pop_front();
                ++executing;
            }
            const auto started = std::chrono::steady_clock::now();
            Outcome out = execute(job);
            const double ran_ms = std::chrono::duration<double, std::milli>(
                                      std::chrono::steady_clock::now() - started)
                                      .count();
            {
                std::lock_guard lock(mu);
                --executing;
                // Run time, averaged (weight 1/16 for the newest), for adaptive prefetch.
                run_ms = runs == 0 ? ran_ms : run_ms + (ran_ms - run_ms) / 16;
                ++runs;
            }
            cv.notify_all();  // a thread held back by the limit may go
            JobResult r;
            r.ok = out.ok;
            r.id = job.id;
            r.attempt = job.attempt;
            if (job.control) {
                std::lock_guard lock(job.control->mu);
                r.epoch = job.control->epoch;
            }
            r.exit_code = out.exit_code;
            if (out.result.size() > job.max_result) out.result.resize(job.max_result);
            if (out.ok || !out.result.empty()) r.result = std::move(out.result);
            r.error = std::move(out.error);
            if (r.error.size() > limits::kMaxError) r.error.resize(limits::kMaxError);
            if (!r.ok && r.error.empty()) r.error = "failed";
            r.permanent = out.permanent;
            std::string_view command = r.ok ? cmd::kDone : cmd::kFail;
            push.send(zmq::buffer(command), zmq::send_flags::sndmore);
            push.send(zmq::buffer(encode(r)), zmq::send_flags::none);
        }
    }

    // ---- network thread state ----
    std::vector<std::string> brokers;  // in order of preference
    std::size_t current = 0;           // the one `link` is connected to
    std::unique_ptr<BrokerLink> link;
    bool registered = false;
    bool ever_registered = false;
    std::uint64_t reconnects = 0;  // registrations lost (then sought again)
    Millis register_sent_at = -1;  // the first unanswered REGISTER of this round, or -1
    Millis next_unreachable_log = 0;
    std::uint64_t next_req = 1;
    std::uint64_t register_req = 0;
    Millis heartbeat_ms = 1000;
    Millis expiry_ms = 5000;
    Millis last_heard = 0;
    Millis next_heartbeat = 0;
    Millis next_register = 0;
    Millis backoff = kInitialBackoffMs;
    std::uint64_t max_seq = 0;
    // The broker's limits, from REGISTERED (a broker that predates them: its defaults).
    std::size_t broker_max_result = limits::kDefaultMaxResult;
    std::size_t results_per_message = limits::kMaxBatch;
    bool result_credit = false;  // the broker reads RESULTS' credit (REGISTERED result_credit)
    struct Running {
        std::uint32_t attempt = 0;
        std::shared_ptr<JobControl> control;
        std::string queue;
    };
    std::map<JobId, Running> running;  // being executed
    std::map<JobId, Pending> pending;  // results awaiting ACK
    // Results still unacknowledged when we registered: the broker counts their slots as busy
    // until it has them, so their credit is granted when they are acknowledged.
    std::set<JobId> held_results;
    // Draining: when it ends, and the jobs cancelled by it (a failure of theirs is a RELEASE).
    std::optional<Millis> drain_deadline;
    bool drain_over = false;
    std::set<JobId> released;
    Millis next_status = 0;
    // Control by the broker (CONTROL): quiet takes no new jobs; both are sent again in
    // REGISTER, so a reconnect or a failover keeps them.
    bool quiet = false;
    std::uint32_t concurrency = 1;  // opt.concurrency at first

    const std::string& endpoint() const { return brokers[current]; }

    // A fresh connection to brokers[current]; what was queued for the old one is dropped.
    void open_socket(Millis now) {
        link.reset();
        link = std::make_unique<BrokerLink>(ctx, endpoint(), opt.curve, 100000, now);
    }

    // The registration is gone (broker silent, restarted, shutting down or failed over): register
    // again, on a fresh connection to `next` broker when asked.
    void lose_registration(Millis now, bool next) {
        if (registered) ++reconnects;
        registered = false;
        backoff = kInitialBackoffMs;
        next_register = now;
        if (next && brokers.size() > 1) {
            const std::string& from = endpoint();
            current = (current + 1) % brokers.size();
            log(LogLevel::info, "leaving broker {}; registering with {}", from, endpoint());
        }
        if (next) open_socket(now);
    }

    void send(std::string_view command, const std::string& body) {
        send_message(link->socket, "", command, body);
    }

    void send_register(Millis now) {
        RegisterRequest m;
        m.req = register_req = next_req++;
        m.instance = instance;
        m.name = opt.name;
        m.host = host_name();
        m.pid = static_cast<std::uint64_t>(getpid());
        for (const auto& [q, h] : handlers)
            m.queues.push_back(q);
        if (std::any_of(weights.begin(), weights.end(), [](auto w) { return w > 0; }))
            for (auto w : weights)
                m.weights.push_back(w > 0 ? w : 1);
        m.concurrency = concurrency;
        m.state = std::string(quiet ? kWorkerQuiet : kWorkerActive);
        m.prefetch = declared_prefetch();
        m.commands = opt.accept_commands;
        for (const auto& [id, r] : running)
            m.held.push_back({id, r.attempt});
        held_results.clear();
        for (const auto& [id, p] : pending)
            if (!running.count(id)) {
                m.held.push_back({id, p.attempt});
                held_results.insert(id);
            }
        max_seq = 0;
        m.reconnects = reconnects;
        if (register_sent_at < 0) {
            register_sent_at = now;
        } else if (now >= next_unreachable_log) {
            // Said once when a REGISTER goes unanswered, then at most every 30 s.
            log(LogLevel::warn, "cannot reach broker at {} (no answer for {} ms; retrying)",
                fmt::join(brokers, ", "), now - register_sent_at);
            next_unreachable_log = now + 30000;
        }
        send(cmd::kRegister, encode(m));
        next_register = now + backoff;
        backoff = std::min(backoff * 2, kMaxBackoffMs);
    }

    // ---- adaptive prefetch (WorkerOptions::adaptive_prefetch) ----
    // The broker lets this worker hold concurrency + declared_prefetch() jobs (REGISTER), so its
    // own cap is loose: the worker holds concurrency + extra by giving back only the credit that
    // keeps held + credit at that. `credit_out` is the credit the broker holds for it, as the
    // worker counts it: what it granted, less the jobs dispatched since, set as the broker sets
    // it on registration and control. It may count less than the broker has (then the worker
    // grants more than it needs and the broker's cap takes the rest), never more: a worker that
    // counted credit the broker does not have would wait for jobs that never come.
    std::uint32_t extra = 0;
    std::uint32_t credit_out = 0;

    bool adaptive() const { return opt.prefetch == 0 && opt.adaptive_prefetch; }
    std::uint32_t declared_prefetch() const {
        return adaptive() ? kAdaptivePrefetch : opt.prefetch;
    }
    std::uint32_t slots() const { return concurrency + (adaptive() ? extra : opt.prefetch); }
    std::uint32_t held() const {
        return static_cast<std::uint32_t>(running.size() + held_results.size());
    }
    // At most the credit the broker lets stand (WorkerRec::add_credit: concurrency +
    // prefetch less the jobs it counts as ours). It counts results still on their way as held,
    // so they are subtracted too: all that are unacknowledged, which may be more.
    std::uint32_t broker_room() const {
        const std::uint32_t most = concurrency + declared_prefetch();
        const auto busy = static_cast<std::uint32_t>(held() + pending.size());
        return most > busy ? most - busy : 0;
    }

    // On below 5 ms of run time on average (after 8 jobs), off above 50 ms, as it was between.
    void adapt() {
        double average = 0;
        std::uint64_t n = 0;
        {
            std::lock_guard lock(mu);
            average = run_ms;
            n = runs;
        }
        if (n >= 8 && average < 5)
            extra = kAdaptivePrefetch;
        else if (average > 50)
            extra = 0;
    }

    // The credit to give back once `freed` jobs finished (they are no longer held).
    std::uint32_t credit_for(std::uint32_t freed) {
        if (!adaptive()) return freed;  // the broker caps it at concurrency + prefetch
        adapt();
        const std::uint32_t want = slots(), have = held() + credit_out;
        return want > have ? want - have : 0;
    }

    // CREDIT n, as several CREDITs when n is over what one may carry (concurrency + prefetch
    // can be).
    void grant(std::uint32_t n) {
        if (!registered || stopping) return;
        credit_out += n;
        while (n > 0) {
            const std::uint32_t k = std::min<std::uint32_t>(n, limits::kMaxConcurrency);
            send(cmd::kCredit, encode_credit(k));
            n -= k;
        }
    }

    void send_pending(Millis now, bool all) {
        for (auto& [id, p] : pending) {
            if (all || now - p.sent_at >= heartbeat_ms) {
                send(p.command, p.body);
                p.sent_at = now;
            }
        }
    }

    void on_broker_message(const Envelope& env, Millis now) {
        if (env.frames != 3 || env.version != kProtocolVersion) return;
        last_heard = now;
        Body body(env.body);
        const Reader& r = body.reader();
        if (env.command == cmd::kRegistered) {
            auto rep = decode_registered(r);
            if (rep.req != register_req) return;
            registered = true;
            ever_registered = true;
            register_sent_at = -1;
            next_unreachable_log = 0;
            backoff = kInitialBackoffMs;
            heartbeat_ms = std::max<Millis>(rep.heartbeat_ms, 10);
            expiry_ms = std::max<Millis>(rep.expiry_ms, 2 * heartbeat_ms);
            broker_max_result = static_cast<std::size_t>(rep.max_result);
            result_credit = rep.result_credit;
            results_per_message = static_cast<std::size_t>(
                std::clamp<std::uint64_t>(rep.max_batch, 1, limits::kMaxBatch));
            for (JobId id : rep.held_rejected) {
                // Its attempt is no longer ours: stop it; results would be refused as stale.
                pending.erase(id);
                held_results.erase(id);
                std::string queue;
                if (auto it = running.find(id); it != running.end()) {
                    it->second.control->cancelled = true;
                    queue = it->second.queue;
                }
                log(LogLevel::warn, "{}: the broker gave it to someone else while we were away",
                    job_fields(id, queue, 0));
            }
            log(LogLevel::info, "registered with {} as {} (heartbeat {} ms{})", endpoint(),
                opt.name, heartbeat_ms,
                reconnects ? fmt::format(", reconnect {}", reconnects) : std::string());
            credit_out = 0;  // the broker's count starts again from what we hold
            const std::uint32_t slots = this->slots(), busy = held();
            if (!quiet) grant(slots > busy ? slots - busy : 0);
            send_pending(now, true);
        } else if (env.command == cmd::kDispatch) {
            auto d = decode_dispatch(r);
            max_seq = std::max(max_seq, d.seq);
            if (auto it = running.find(d.id);
                it != running.end() && it->second.attempt == d.attempt) {
                // A duplicate, or the same attempt dispatched again by a broker that lost the
                // first dispatch in a power cut (a new epoch): this run reports under the new one.
                std::lock_guard lock(it->second.control->mu);
                it->second.control->epoch = d.epoch;
                return;
            }
            if (stopping) {
                // Dispatched before the broker had our DRAIN: hand it straight back.
                release(d.id, d.attempt, d.queue, now, "not started, the worker is draining");
                return;
            }
            if (credit_out > 0) --credit_out;
            auto control = std::make_shared<JobControl>();
            control->epoch = d.epoch;
            running[d.id] = Running{d.attempt, control, d.queue};
            {
                std::lock_guard lock(mu);
                std::optional<std::chrono::milliseconds> timeout;
                if (d.timeout_ms) timeout = std::chrono::milliseconds(*d.timeout_ms);
                tasks.push_back(Job{d.id, d.queue, d.attempt, std::move(d.payload),
                                    std::move(d.argv), timeout,
                                    std::min(opt.max_result, broker_max_result), control});
            }
            cv.notify_one();
        } else if (env.command == cmd::kAbort) {
            auto a = decode_abort(r);
            if (auto it = running.find(a.id);
                it != running.end() && it->second.attempt == a.attempt) {
                it->second.control->cancelled = true;
                log(LogLevel::info, "{}: aborted by the broker: {}",
                    job_fields(a.id, it->second.queue, a.attempt), a.reason);
            }
        } else if (env.command == cmd::kControl) {
            on_control(decode_worker_control(r));
        } else if (env.command == cmd::kAck) {
            on_ack(decode_ack(r));
        } else if (env.command == cmd::kAcks) {
            for (const auto& a : decode_acks(r))
                on_ack(a);
        } else if (env.command == cmd::kError) {
            auto e = decode_error(r);
            if (e.code == ErrorCode::stale && e.id) {
                // The job's queue and attempt as this worker knew them (the ERROR names the
                // attempt too; it is the one we sent).
                std::string queue;
                std::uint32_t attempt = e.attempt.value_or(0);
                if (auto p = pending.find(*e.id); p != pending.end()) {
                    queue = p->second.queue;
                    if (!e.attempt) attempt = p->second.attempt;
                    pending.erase(p);
                }
                if (held_results.erase(*e.id)) grant(1);
                log(LogLevel::warn, "{}: result refused as stale: {}",
                    job_fields(*e.id, queue, attempt), e.message);
            } else if (e.code == ErrorCode::not_registered) {
                if (registered || now >= next_register) {
                    if (registered) ++reconnects;
                    registered = false;
                    send_register(now);
                }
            } else {
                log(LogLevel::error, "broker error {}: {}", to_string(e.code), e.message);
            }
        } else if (env.command == cmd::kShutdown) {
            // The broker is going away: reconnect as soon as one is back, on a fresh
            // connection, instead of noticing only after expiry_ms of silence.
            log(LogLevel::info, "broker {} is shutting down; will register again when it is back",
                endpoint());
            lose_registration(now, true);
            if (brokers.size() == 1) next_register = now + kInitialBackoffMs;
        }
        // HEARTBEAT: last_heard is all it carries.
    }

    // CONTROL: the broker has set this worker's credit to match; the worker only changes what
    // it runs. Quiet: nothing new comes; stopping: drain and exit, as stop() does; a new
    // concurrency: that many handlers at once from now on (running ones finish either way).
    void on_control(const WorkerControl& c) {
        const bool quiet_before = quiet;
        const std::uint32_t concurrency_before = concurrency;
        if (c.state == kWorkerStopping) {
            if (!stopping) {
                log(LogLevel::info, "the broker asked this worker to stop: draining");
                int none = 0;
                stop_requests.compare_exchange_strong(none, 1);
                stopping = true;
            }
        } else if ((c.state == kWorkerQuiet) != quiet) {
            quiet = c.state == kWorkerQuiet;
            if (quiet)
                log(LogLevel::info, "quiet: taking no new jobs, finishing the {} held",
                    running.size());
            else
                log(LogLevel::info, "resumed: taking jobs again ({} held)", running.size());
        }
        const bool resumed = c.state == kWorkerActive && quiet_before;
        if (c.concurrency != concurrency) {
            log(LogLevel::info, "concurrency {} -> {} ({} running)", concurrency, c.concurrency,
                running.size());
            set_concurrency(c.concurrency);
        }
        // The broker's credit after this control, as it sets it (apply_control): none while
        // quiet or stopping; all the room there is on a resume; a larger concurrency adds the
        // difference, a smaller one caps it to the room left.
        if (quiet || stopping)
            credit_out = 0;
        else if (resumed)
            credit_out = broker_room();
        else
            credit_out = std::min(
                credit_out +
                    (concurrency > concurrency_before ? concurrency - concurrency_before : 0),
                broker_room());
    }

    void set_concurrency(std::uint32_t n) {
        concurrency = n;
        {
            std::lock_guard lock(mu);
            limit = n;
        }
        while (threads.size() < n)
            threads.emplace_back([this] { pool_thread(); });
        cv.notify_all();
    }

    // Hands an attempt back to the broker uncharged; resent like a result until acknowledged.
    void release(JobId id, std::uint32_t attempt, const std::string& queue, Millis now,
                 const char* why) {
        log(LogLevel::info, "{}: handed back to the broker ({})", job_fields(id, queue, attempt),
            why);
        pending[id] =
            Pending{attempt, std::string(cmd::kRelease), encode(Ack{id, attempt}), now, queue};
        if (registered) send(cmd::kRelease, pending[id].body);
    }

    // Drain steps, run on every pass of the network loop once stop() was called.
    void drain(Millis now) {
        if (!drain_deadline) {
            drain_deadline = opt.drain_timeout ? now + opt.drain_timeout->count() : INT64_MAX;
            if (registered) send(cmd::kDrain, Writer(0).take());
            // Jobs waiting for a handler thread (prefetched) never start.
            std::deque<Job> waiting;
            {
                std::lock_guard lock(mu);
                waiting.swap(tasks);
            }
            for (const Job& job : waiting) {
                running.erase(job.id);
                release(job.id, job.attempt, job.queue, now, "not started, the worker is draining");
            }
            log(LogLevel::info, "draining: {} jobs running{}", running.size(),
                opt.drain_timeout
                    ? fmt::format(", stopping them in {} ms", opt.drain_timeout->count())
                    : std::string());
        }
        if (stop_requests.load() > 1) drain_deadline = now;
        if (!drain_over && now >= *drain_deadline) {
            drain_over = true;
            if (!running.empty())
                log(LogLevel::warn,
                    "drain time is over: stopping {} running jobs and handing them back",
                    running.size());
            for (auto& [id, run] : running) {
                run.control->cancelled = true;
                released.insert(id);
            }
        }
    }

    void report_status(Millis now) {
        if (!opt.on_status || now < next_status) return;
        next_status = now + opt.status_interval.count();
        WorkerStatus st;
        st.busy = static_cast<std::uint32_t>(running.size());
        st.slots = slots();
        st.unacknowledged = pending.size();
        st.connected = registered;
        st.broker = endpoint();
        st.reconnects = reconnects;
        st.draining = stopping;
        st.quiet = quiet;
        st.concurrency = concurrency;
        opt.on_status(st);
    }

    void send_progress() {
        for (auto& [id, run] : running) {
            Progress p;
            {
                std::lock_guard lock(run.control->mu);
                if (!run.control->progress_dirty) continue;
                run.control->progress_dirty = false;
                p = Progress{id, run.attempt, run.control->percent, run.control->message};
            }
            send(cmd::kProgress, encode(p));
        }
    }

    void on_result(zmq::socket_t& pull, Millis now) {
        std::uint32_t freed = 0;
        std::vector<JobId> fresh;  // results of this wake-up, sent together below
        while (true) {
            zmq::message_t command, body;
            if (!pull.recv(command, zmq::recv_flags::dontwait)) break;
            (void)pull.recv(body, zmq::recv_flags::none);
            Body b(body.to_string_view());
            auto id = b.reader().u64("id");
            auto attempt = static_cast<std::uint32_t>(b.reader().u64("attempt"));
            std::string queue;
            if (auto it = running.find(id); it != running.end()) queue = it->second.queue;
            running.erase(id);
            ++freed;
            if (released.erase(id) && command.to_string_view() == cmd::kFail) {
                // Stopped by the drain, not failed: the attempt goes back uncharged.
                release(id, attempt, queue, now, "stopped, the drain time is over");
                continue;
            }
            pending[id] = Pending{attempt, command.to_string(), body.to_string(), now, queue};
            fresh.push_back(id);
        }
        const std::uint32_t credit = credit_for(freed);
        if (!registered || fresh.empty()) {
            grant(credit);
            return;
        }
        // The credit for every result of this wake-up rides on the results when the broker
        // reads it there (one message per finished job instead of two); else one CREDIT.
        const std::uint32_t carried = result_credit && !stopping
                                          ? std::min<std::uint32_t>(credit, limits::kMaxConcurrency)
                                          : 0;
        send_results(fresh, carried);
        credit_out += carried;
        grant(credit - carried);
    }

    // One DONE/FAIL, or one RESULTS for several (up to kMaxBatch each): the broker then
    // acknowledges them with one ACKS. With `credit`, always RESULTS (it carries the credit,
    // on the first message). Resends (send_pending) go one by one, without credit.
    void send_results(const std::vector<JobId>& ids, std::uint32_t credit) {
        if (ids.size() == 1 && credit == 0) {
            const Pending& p = pending.at(ids.front());
            send(p.command, p.body);
            return;
        }
        for (std::size_t from = 0; from < ids.size(); from += results_per_message) {
            std::vector<std::string_view> bodies;
            for (std::size_t i = from; i < ids.size() && i < from + results_per_message; ++i)
                bodies.push_back(pending.at(ids[i]).body);
            send(cmd::kResults, encode_results(bodies, from == 0 ? credit : 0));
        }
    }

    void on_ack(const Ack& a) {
        auto it = pending.find(a.id);
        if (it != pending.end() && it->second.attempt == a.attempt) {
            pending.erase(it);
            if (held_results.erase(a.id)) grant(credit_for(1));
        }
    }

    void run() {
        zmq::socket_t pull(ctx, zmq::socket_type::pull);
        pull.set(zmq::sockopt::linger, 0);
        pull.bind(inproc);
        set_concurrency(opt.concurrency);

        Millis now = steady_ms();
        open_socket(now);
        last_heard = now;
        send_register(now);
        bool announced_stop = false;
        while (true) {
            now = steady_ms();
            if (stopping && !announced_stop) {
                announced_stop = true;
                log(LogLevel::info, "stopping: {} jobs running, {} results unacknowledged",
                    running.size(), pending.size());
            }
            if (stopping) drain(now);
            report_status(now);
            if (stopping && running.empty() && pending.empty()) break;
            if (stopping && running.empty() && now - last_heard > expiry_ms) {
                log(LogLevel::warn, "giving up on {} unacknowledged results: broker unreachable",
                    pending.size());
                break;
            }
            zmq::pollitem_t items[] = {{link->socket.handle(), 0, ZMQ_POLLIN, 0},
                                       {pull.handle(), 0, ZMQ_POLLIN, 0},
                                       {link->watch.events().handle(), 0, ZMQ_POLLIN, 0}};
            Millis wake = registered ? next_heartbeat : next_register;
            Millis wait = std::clamp<Millis>(wake - now, 0, 100);
            try {
                zmq::poll(items, 3, std::chrono::milliseconds(wait));
            } catch (const zmq::error_t& e) {
                if (e.num() != EINTR) throw;
            }
            now = steady_ms();
            if (items[0].revents & ZMQ_POLLIN) {
                while (auto env = recv_message(link->socket, false)) {
                    try {
                        on_broker_message(*env, now);
                    } catch (const std::exception& e) {
                        log(LogLevel::error, "bad message {} from broker: {}", env->command,
                            e.what());
                    }
                }
            }
            if (items[1].revents & ZMQ_POLLIN) on_result(pull, now);
            link->watch.update(now);
            if (registered) send_progress();

            if (brokers.size() > 1 && link->watch.down_for(now) >= opt.failover.count()) {
                log(LogLevel::warn, "lost the connection to broker {}", endpoint());
                lose_registration(now, true);
            } else if (registered && now - last_heard > expiry_ms) {
                log(LogLevel::warn, "broker {} silent for {} ms; reconnecting", endpoint(),
                    now - last_heard);
                lose_registration(now, brokers.size() > 1);
            }
            if (!registered && now >= next_register) {
                // A fresh connection (to the same broker) after a long silence.
                if (brokers.size() == 1 && now - last_heard > expiry_ms) open_socket(now);
                send_register(now);
            }
            if (registered && now >= next_heartbeat) {
                WorkerHeartbeat hb;
                hb.seq = max_seq;
                for (const auto& [id, run] : running)
                    hb.running.push_back(id);
                for (const auto& [id, p] : pending)
                    hb.running.push_back(id);
                send(cmd::kHeartbeat, encode(hb));
                next_heartbeat = now + heartbeat_ms;
                send_pending(now, false);
            }
        }
        {
            std::lock_guard lock(mu);
            pool_closing = true;
        }
        cv.notify_all();
        for (auto& t : threads)
            t.join();
        threads.clear();
        link.reset();
    }
};

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Worker::~Worker() = default;

void Worker::handle(const std::string& queue, Handler handler, std::uint32_t weight) {
    if (!valid_queue_name(queue))
        throw std::invalid_argument(fmt::format("invalid queue name '{}'", queue));
    if (weight > limits::kMaxQueueWeight)
        throw std::invalid_argument(
            fmt::format("queue weight must be 1-{}", limits::kMaxQueueWeight));
    impl_->handlers.emplace_back(queue, std::move(handler));
    impl_->weights.push_back(weight);
}

void Worker::run() {
    if (impl_->handlers.empty()) throw std::logic_error("Worker::run: no queue has a handler");
    impl_->run();
}

void Worker::stop() {
    impl_->stop_requests.fetch_add(1);
    impl_->stopping.store(true, std::memory_order_relaxed);
}

}  // namespace errand
