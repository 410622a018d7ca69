// HTTP endpoints: /metrics (Prometheus), /healthz, the JSON API under /api and the dashboard.
//
// Where each answer comes from (CQRS: nothing here runs on, or blocks, the broker loop):
//   live picture (queues, workers, metrics, recent events, per-minute counts, page totals)
//                                                          <- the loop's latest Snapshot
//   jobs, searches, one job, its payload, history, progress, database size, schedules,
//   batches                                                <- the read-only QueryStore
//   retry, cancel, run-now, delete (one job or many), pause, resume (a queue or a schedule)
//                  -> RETRY/CANCEL/RUN_NOW/DELETE/PAUSE/RESUME/SCHEDULE_PAUSE/SCHEDULE_RESUME
//                     over inproc:// to the loop's
//                     admin socket, so they take the same path as the CLI's: same handlers,
//                     same state machine, committed before the reply. (An errand::Client over
//                     TCP would need its own CURVE key when CURVE is on and would expose nothing
//                     more; inproc needs neither.)
//
// Connections are accepted and requests read by HttpGate (http_gate.cpp), which hands each
// complete request to httplib's routing below; /healthz is answered on the gate's I/O thread.
// Before any route, trusted() checks the Host header of every request and the token and origin
// of every POST.
#include "http_server.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "errand/json.hpp"
#include "errand/transport.hpp"
#include "errand/version.hpp"
#include "web_assets.hpp"

namespace errand::broker {

// Every JSON form here is ordered (keys in the field tables' order); jobs, events, queues and
// workers are the forms of errand/json.hpp, with RFC 3339 times.
using json = Json;

namespace {

constexpr std::size_t kMaxPage = 1000;
// A search's total is counted up to this many matches ("10000+").
constexpr std::uint64_t kMaxCount = 10000;
// The job page shows this much of a payload.
constexpr std::size_t kPayloadShown = 64 * 1024;
// Ids one bulk action may name.
constexpr std::size_t kMaxBulk = 1000;
// Schedules /api/schedules and /metrics read: the engine's limit (limits::kMaxSchedules), so
// every schedule is shown and the metrics' schedule label has at most this many values.
using limits::kMaxSchedules;
// Batches a page of /api/batches holds without a limit (BATCH_LIST's default).
constexpr std::size_t kDefaultBatchPage = 100;

// Standard base64 (RFC 4648) of any bytes: how the API carries a payload that is not UTF-8.
std::string base64(std::string_view in) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        auto n = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
        for (int k = 18; k >= 0; k -= 6)
            out += kAlphabet[(n >> k) & 63];
    }
    if (i < in.size()) {
        unsigned n = static_cast<unsigned char>(in[i]) << 16;
        if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
        out += kAlphabet[(n >> 18) & 63];
        out += kAlphabet[(n >> 12) & 63];
        out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

// True when `needle` occurs in `hay`, ASCII letters in any case (as the stores' error search).
bool contains_ascii_nocase(std::string_view hay, std::string_view needle) {
    auto lower = [](char c) {
        return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    };
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                       [&](char a, char b) { return lower(a) == lower(b); }) != hay.end();
}

// True when `s` is valid UTF-8 with no control characters but tab, newline and carriage return.
// `cut` tolerates an incomplete sequence at the very end (a payload shortened mid-character).
bool printable_utf8(std::string_view s, bool cut) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80         ? 1
                          : (c >> 5) == 6  ? 2
                          : (c >> 4) == 14 ? 3
                          : (c >> 3) == 30 ? 4
                                           : 0;
        if (len == 0) return false;
        if (len == 1 && ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f))
            return false;
        if (i + len > s.size()) return cut;
        for (std::size_t k = 1; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
        i += len;
    }
    return true;
}

Millis wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

json counts_json(const std::array<std::uint64_t, kStateCount>& c) {
    json out = json::object();
    for (JobState s : kAllStates)
        out[std::string(to_string(s))] = c[static_cast<std::size_t>(s)];
    return out;
}

// Results may hold any bytes: invalid UTF-8 is replaced rather than failing the response.
void send_json(httplib::Response& res, const json& body, int status = 200) {
    res.status = status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, std::string_view code,
                const std::string& message) {
    send_json(res, {{"error", {{"code", code}, {"message", message}}}}, status);
}

// A request that cannot be served, with its HTTP status.
struct HttpError {
    int status;
    std::string code;
    std::string message;
};

std::uint64_t parse_u64(const std::string& s, const char* what) {
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty())
        throw HttpError{400, "bad_request", fmt::format("{} must be a positive integer", what)};
    return v;
}

int status_of(ErrorCode code) {
    switch (code) {
        case ErrorCode::not_found:
            return 404;
        case ErrorCode::invalid_state:
            return 409;
        case ErrorCode::bad_request:
        case ErrorCode::too_large:
            return 400;
        case ErrorCode::forbidden:
            return 403;
        case ErrorCode::storage:
            return 503;
        default:
            return 500;
    }
}

}  // namespace

bool is_loopback_host(const std::string& host) {
    return host.rfind("127.", 0) == 0 || host == "localhost" || host == "::1" || host == "[::1]";
}

std::string host_header_name(std::string_view h) {
    std::string_view name = h;
    if (!h.empty() && h.front() == '[') {
        auto close = h.find(']');
        if (close == std::string_view::npos) return {};
        name = h.substr(1, close - 1);
        auto rest = h.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return {};
    } else if (auto colon = h.find(':'); colon != std::string_view::npos) {
        name = h.substr(0, colon);
    }
    std::string out;
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (!std::isalnum(u) && c != '.' && c != '-' && c != ':' && c != '_') return {};
        out += static_cast<char>(std::tolower(u));
    }
    return out;
}

std::string generate_http_token() {
    unsigned char bytes[32];
    std::size_t got = 0;
    while (got < sizeof bytes) {
        auto n = ::getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::runtime_error("getrandom failed: cannot make an HTTP token");
        got += static_cast<std::size_t>(n);
    }
    std::string out;
    for (auto b : bytes)
        out += fmt::format("{:02x}", b);
    return out;
}

namespace {

// httplib::Server's routing, driven by HttpGate instead of httplib's own accept loop.
class Router : public httplib::Server {
  public:
    bool serve(httplib::Stream& stream, bool close_connection, bool& connection_closed) {
        return process_request(stream, close_connection, connection_closed, nullptr);
    }
};

bool same_token(std::string_view a, std::string_view b) {
    // Constant time in the contents: how much of a guess was right does not show in the timing.
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

bool is_loopback_ip(const std::string& name) {
    in_addr v4{};
    in6_addr v6{};
    if (::inet_pton(AF_INET, name.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return ::inet_pton(AF_INET6, name.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// The dashboard's page with the token in its <meta name="errand-token">: only a page from this
// origin can read it (same-origin policy), and only a request naming this broker gets it (Host).
std::string dashboard_page(const std::string& token) {
    for (std::size_t i = 0; i < kWebAssetCount; ++i) {
        if (kWebAssets[i].path != "/") continue;
        std::string html(kWebAssets[i].data);
        const std::string slot = R"(<meta name="errand-token" content="">)";
        auto at = html.find(slot);
        if (at == std::string::npos)
            throw std::logic_error("web/index.html has no <meta name=\"errand-token\"> slot");
        html.replace(at, slot.size(),
                     fmt::format(R"(<meta name="errand-token" content="{}">)", token));
        return html;
    }
    throw std::logic_error("no web asset for /");
}

}  // namespace

struct HttpServer::Impl {
    HttpOptions opt;
    Router server;
    std::mutex queries_mu;           // the read-only connection is used by one request at a time
    std::string page;                // "/": the dashboard with its token
    std::vector<std::string> names;  // the Host header's names served besides loopback ones
    std::unique_ptr<HttpGate> gate;

    // ---- trust: runs before every route ----------------------------------------------------

    // Refuses (with the answer in `res`) a request that does not name this broker, or that
    // changes something without the token or from another origin.
    bool trusted(const httplib::Request& req, httplib::Response& res) {
        auto host = req.get_header_value("Host");
        if (host.empty()) {
            send_error(res, 400, "bad_request", "a Host header is required");
            return false;
        }
        auto name = host_header_name(host);
        bool served = !name.empty() && (is_loopback_ip(name) || name == "localhost" ||
                                        std::find(names.begin(), names.end(), name) != names.end());
        if (!served) {
            // A page of another site whose name now points here (DNS rebinding), or a name the
            // operator has not listed.
            send_error(res, 421, "misdirected",
                       fmt::format("Host '{}' is not a name this broker serves (loopback names, "
                                   "the --http address, and each --http-host)",
                                   host.substr(0, 200)));
            return false;
        }
        if (req.method == "GET" || req.method == "HEAD") return true;
        if (opt.read_only) {
            send_error(res, 403, "read_only",
                       "the HTTP side is read-only (--http-readonly): retry, cancel, run-now, "
                       "delete, pause and resume with the errand CLI");
            return false;
        }
        auto origin = req.get_header_value("Origin");
        auto fetch_site = req.get_header_value("Sec-Fetch-Site");
        // https:// too: behind a proxy that terminates TLS and passes the Host on.
        bool same_origin = iequals(origin, "http://" + host) || iequals(origin, "https://" + host);
        if ((!origin.empty() && !same_origin) ||
            (!fetch_site.empty() && fetch_site != "same-origin" && fetch_site != "none")) {
            send_error(res, 403, "forbidden",
                       fmt::format("cross-origin request refused: Origin '{}' is not http://{}",
                                   origin.substr(0, 200), host.substr(0, 200)));
            return false;
        }
        if (!same_token(req.get_header_value("X-Errand-Token"), opt.token)) {
            send_error(res, 403, "forbidden",
                       "this request needs the X-Errand-Token header with the broker's HTTP "
                       "token (from --http-token-file, or the one the broker logged at start)");
            return false;
        }
        return true;
    }

    std::shared_ptr<const Snapshot> snapshot() {
        auto s = opt.snapshots ? opt.snapshots->latest() : nullptr;
        if (!s) throw HttpError{503, "starting", "the broker has not published its state yet"};
        return s;
    }

    // Sends one command to the loop's admin socket and returns (command, body) of its reply.
    std::pair<std::string, std::string> admin(std::string_view command, const std::string& body) {
        if (!opt.context || opt.admin_endpoint.empty())
            throw HttpError{503, "unavailable", "admin actions are not enabled"};
        zmq::socket_t s(*opt.context, zmq::socket_type::dealer);
        s.set(zmq::sockopt::linger, 0);
        s.connect(opt.admin_endpoint);
        send_message(s, "", command, body);
        zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, std::chrono::milliseconds(opt.admin_timeout_ms)) <= 0)
            throw HttpError{504, "timeout", "the broker did not answer in time"};
        auto env = recv_message(s, false);
        if (!env) throw HttpError{502, "internal", "no reply from the broker"};
        if (env->command == cmd::kError) {
            auto e = decode_error(Body(env->body).reader());
            throw HttpError{status_of(e.code), std::string(to_string(e.code)), e.message};
        }
        return {env->command, env->body};
    }

    JobId job_id(const httplib::Request& req) {
        auto id = parse_u64(req.matches[1].str(), "the job id");
        if (id == 0) throw HttpError{404, "not_found", "no job 0"};
        return id;
    }

    // ---- handlers -------------------------------------------------------------------------

    void metrics(const httplib::Request&, httplib::Response& res) {
        auto s = snapshot();
        Gauges g;
        for (const auto& q : s->queues) {
            g.jobs[q.name] = q.counts;
            g.paused[q.name] = q.paused;
            g.oldest_ready_age[q.name] = ready_age(*s, q);
            g.queue_slots[q.name] = 0;
        }
        g.workers = s->workers.size();
        for (const auto& w : s->workers) {
            g.worker_slots += w.concurrency;
            g.running += w.jobs.size();
            for (const auto& q : w.queues)
                g.queue_slots[q] += w.concurrency;
        }
        g.version = ERRAND_VERSION;
        {
            std::lock_guard lock(queries_mu);
            g.db_bytes = opt.queries->size_bytes();
            for (const auto& sc : opt.queries->schedules(kMaxSchedules))
                g.schedules[sc.name] = {sc.paused, to_ms(sc.next_at), to_ms(sc.last_at)};
        }
        g.uptime_seconds = static_cast<double>(s->at - s->started_at) / 1000.0;
        g.last_loop_seconds = static_cast<double>(s->at) / 1000.0;
        res.set_content(render_prometheus(s->metrics, g, read_process_stats()),
                        "text/plain; version=0.0.4; charset=utf-8");
    }

    // Seconds the queue's oldest ready job has waited at the snapshot's time; 0: none ready.
    static double ready_age(const Snapshot& s, const QueueView& q) {
        if (!q.oldest_ready_at || q.counts[static_cast<std::size_t>(JobState::ready)] == 0)
            return 0;
        return static_cast<double>(std::max<Millis>(0, s.at - *q.oldest_ready_at)) / 1000.0;
    }

    void healthz(const httplib::Request&, httplib::Response& res) {
        auto s = opt.snapshots ? opt.snapshots->latest() : nullptr;
        Millis age = s ? wall_ms() - s->at : -1;
        bool ok = s && age < opt.stale_after_ms;
        send_json(res,
                  {{"status", ok ? "ok" : "stalled"},
                   {"loop_age_ms", s ? json(age) : json(nullptr)},
                   {"workers", s ? s->workers.size() : 0}},
                  ok ? 200 : 503);
    }

    void queues(const httplib::Request&, httplib::Response& res) {
        auto s = snapshot();
        std::unordered_map<std::string, std::uint64_t> slots;
        for (const auto& w : s->workers)
            for (const auto& q : w.queues)
                slots[q] += w.concurrency;
        json out = json::array();
        for (const auto& q : s->queues) {
            json totals = json::object();
            if (auto m = s->metrics.queues.find(q.name); m != s->metrics.queues.end())
                totals = {{"submitted", m->second.submitted}, {"succeeded", m->second.succeeded},
                          {"failed", m->second.failed},       {"dead", m->second.dead},
                          {"cancelled", m->second.cancelled}, {"expired", m->second.expired}};
            out.push_back({{"name", q.name},
                           {"paused", q.paused},
                           {"paused_until", json_time(to_time(q.paused_until))},
                           {"counts", counts_json(q.counts)},
                           {"oldest_ready_at", json_time(to_time(q.oldest_ready_at))},
                           {"oldest_ready_age_seconds", ready_age(*s, q)},
                           {"worker_slots", slots.count(q.name) ? slots[q.name] : 0},
                           {"finished_per_second", q.finished_per_second},
                           {"submitted_per_second", q.submitted_per_second},
                           {"totals", totals},
                           {"max_running",
                            q.limits.max_running ? json(*q.limits.max_running) : json(nullptr)},
                           {"rate", q.limits.rate ? json(*q.limits.rate) : json(nullptr)},
                           {"rate_per_ms",
                            q.limits.rate_per_ms ? json(*q.limits.rate_per_ms) : json(nullptr)},
                           {"held", q.held ? json(*q.held) : json(nullptr)}});
        }
        json states = json::array();
        for (JobState st : kAllStates)
            states.push_back(to_string(st));
        send_json(res, {{"time", format_time(s->at)}, {"states", states}, {"queues", out}});
    }

    void stats(const httplib::Request&, httplib::Response& res) {
        auto s = snapshot();
        std::array<std::uint64_t, kStateCount> totals{};
        std::uint64_t submitted = 0, succeeded = 0, failed = 0, dead = 0;
        for (const auto& q : s->queues)
            for (std::size_t i = 0; i < totals.size(); ++i)
                totals[i] += q.counts[i];
        double finished_rate = 0;
        for (const auto& q : s->queues)
            finished_rate += q.finished_per_second;
        for (const auto& [name, m] : s->metrics.queues) {
            submitted += m.submitted;
            succeeded += m.succeeded;
            failed += m.failed;
            dead += m.dead;
        }
        std::uint64_t running = 0;
        for (const auto& w : s->workers)
            running += w.jobs.size();
        const auto& c = s->metrics.commit_seconds;
        send_json(res, {{"time", format_time(s->at)},
                        {"started_at", format_time(s->started_at)},
                        {"jobs", counts_json(totals)},
                        {"totals",
                         {{"submitted", submitted},
                          {"succeeded", succeeded},
                          {"failed", failed},
                          {"dead", dead}}},
                        {"finished_per_second", finished_rate},
                        {"workers", s->workers.size()},
                        {"running", running},
                        {"commits",
                         {{"count", c.count},
                          {"failures", s->metrics.commit_failures},
                          {"seconds_sum", c.sum},
                          {"jobs_sum", s->metrics.commit_jobs.sum}}}});
    }

    void workers(const httplib::Request&, httplib::Response& res) {
        auto s = snapshot();
        // Progress lives in the database: one query for all running jobs, not one per job.
        std::size_t held = 0;
        for (const auto& w : s->workers)
            held += w.jobs.size();
        std::unordered_map<JobId, JobInfo> running;
        if (held > 0) {
            JobPage page;
            page.state = JobState::running;
            page.limit = held + 100;
            std::lock_guard lock(queries_mu);
            for (auto& j : opt.queries->jobs(page))
                running.emplace(j.id, std::move(j));
        }
        json out = json::array();
        for (const auto& w : s->workers) {
            json x = to_json(w);
            for (auto& j : x["jobs"]) {
                auto info = running.find(j["id"].get<JobId>());
                bool known = info != running.end();
                j["progress"] =
                    known && info->second.progress ? json(*info->second.progress) : json(nullptr);
                j["progress_message"] = known && info->second.progress_message
                                            ? json(*info->second.progress_message)
                                            : json(nullptr);
            }
            out.push_back(std::move(x));
        }
        send_json(res, {{"time", format_time(s->at)}, {"workers", out}});
    }

    void events(const httplib::Request& req, httplib::Response& res) {
        auto s = snapshot();
        std::uint64_t after =
            req.has_param("after") ? parse_u64(req.get_param_value("after"), "after") : 0;
        std::optional<std::string> queue;
        if (req.has_param("queue")) queue = req.get_param_value("queue");
        json out = json::array();
        for (const auto& e : s->recent) {
            if (e.seq <= after || (queue && e.queue != *queue)) continue;
            out.push_back(to_json(e));
        }
        send_json(res, {{"events", out}});
    }

    // GET /api/jobs?queue=Q&state=S&limit=N&after=ID&id=ID&unique=KEY&error=TEXT: a page of
    // jobs, newest first, and how many match. Without a search the total comes from the
    // snapshot's counts (exact, no query); with one it is counted, up to kMaxCount.
    void jobs(const httplib::Request& req, httplib::Response& res) {
        JobPage page;
        auto param = [&req](const char* name) -> std::optional<std::string> {
            if (!req.has_param(name) || req.get_param_value(name).empty()) return std::nullopt;
            return req.get_param_value(name);
        };
        if (auto st = param("state")) {
            page.state = parse_job_state(*st);
            if (!page.state)
                throw HttpError{400, "bad_request", fmt::format("unknown state '{}'", *st)};
        }
        if (auto q = param("queue")) {
            page.queue = *q;
            if (!valid_queue_name(*page.queue))
                throw HttpError{400, "bad_request", "invalid queue name"};
        }
        if (auto l = param("limit")) {
            page.limit = parse_u64(*l, "limit");
            if (page.limit < 1 || page.limit > kMaxPage)
                throw HttpError{400, "bad_request", fmt::format("limit must be 1-{}", kMaxPage)};
        }
        if (auto a = param("after")) page.before = parse_u64(*a, "after");
        if (auto u = param("unique")) {
            if (u->size() > limits::kMaxUniqueKey)
                throw HttpError{400, "bad_request", "unique key too long"};
            page.unique_key = *u;
        }
        if (auto e = param("error")) {
            if (e->size() > 256) throw HttpError{400, "bad_request", "error search too long"};
            page.error_contains = *e;
        }
        std::optional<JobId> id;
        if (auto i = param("id")) id = parse_u64(*i, "id");

        std::vector<JobInfo> rows;
        json total;
        bool capped = false;
        if (id) {
            // One job, if it passes the other filters.
            std::optional<JobInfo> j;
            {
                std::lock_guard lock(queries_mu);
                j = opt.queries->get_job(*id);
            }
            auto keep = [&](const JobInfo& x) {
                return (!page.queue || x.queue == *page.queue) &&
                       (!page.state || x.state == *page.state) &&
                       (!page.unique_key || x.unique == page.unique_key) &&
                       (!page.error_contains ||
                        (x.error && contains_ascii_nocase(*x.error, *page.error_contains))) &&
                       (!page.before || x.id < *page.before);
            };
            if (j && keep(*j)) rows.push_back(std::move(*j));
            total = rows.size();
        } else if (page.unique_key || page.error_contains) {
            std::uint64_t n = 0;
            {
                std::lock_guard lock(queries_mu);
                rows = opt.queries->jobs(page);
                n = opt.queries->count(page, kMaxCount);
            }
            total = n;
            capped = n >= kMaxCount;
        } else {
            auto s = snapshot();
            std::uint64_t n = 0;
            for (const auto& q : s->queues) {
                if (page.queue && q.name != *page.queue) continue;
                for (JobState st : kAllStates)
                    if (!page.state || st == *page.state)
                        n += q.counts[static_cast<std::size_t>(st)];
            }
            total = n;
            std::lock_guard lock(queries_mu);
            rows = opt.queries->jobs(page);
        }
        json out = json::array();
        for (const auto& j : rows)
            out.push_back(to_json(j));
        json next = !id && rows.size() == page.limit ? json(rows.back().id) : json(nullptr);
        send_json(res, {{"jobs", out}, {"next", next}, {"total", total}, {"total_capped", capped}});
    }

    void job(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        std::optional<JobInfo> j;
        std::vector<Event> history;
        std::optional<std::string> payload;
        {
            std::lock_guard lock(queries_mu);
            j = opt.queries->get_job(id);
            if (j) {
                history = opt.queries->events(id);
                payload = opt.queries->payload(id, kPayloadShown);
            }
        }
        if (!j) throw HttpError{404, "not_found", fmt::format("no job {}", id)};
        json events = json::array();
        for (const auto& e : history)
            events.push_back(to_json(e));
        auto out = to_json(*j);
        out["events"] = events;
        // The payload's first kPayloadShown bytes: as text when they are printable UTF-8, else
        // base64, so any bytes reach the page intact.
        std::string shown = payload.value_or("");
        bool truncated = j->payload_size > shown.size();
        bool text = printable_utf8(shown, truncated);
        out["payload"] = {{"size", j->payload_size},
                          {"shown", shown.size()},
                          {"truncated", truncated},
                          {"encoding", text ? "utf-8" : "base64"},
                          {"data", text ? shown : base64(shown)}};
        send_json(res, out);
    }

    // GET /api/throughput?minutes=N: jobs submitted, succeeded, failed (attempts) and dead per
    // minute, all queues, the last N minutes (1-360, default 60), oldest first. Kept by the
    // broker (Metrics::minutes), so the dashboard's chart survives a reload.
    void throughput(const httplib::Request& req, httplib::Response& res) {
        auto s = snapshot();
        std::size_t minutes = 60;
        if (req.has_param("minutes")) {
            minutes = parse_u64(req.get_param_value("minutes"), "minutes");
            if (minutes < 1 || minutes > MinuteSeries::kMinutes)
                throw HttpError{400, "bad_request",
                                fmt::format("minutes must be 1-{}", MinuteSeries::kMinutes)};
        }
        json out = json::array();
        for (const auto& m : s->metrics.minutes.last(s->at, minutes))
            out.push_back({{"at", format_time(m.minute * 60000)},
                           {"submitted", m.submitted},
                           {"succeeded", m.succeeded},
                           {"failed", m.failed},
                           {"dead", m.dead}});
        send_json(res, {{"time", format_time(s->at)},
                        {"started_at", format_time(s->started_at)},
                        {"minutes", out}});
    }

    void retry(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        RetryRequest m;
        m.req = 1;
        m.id = id;
        auto [command, body] = admin(cmd::kRetry, encode(m));
        send_json(res, {{"retried", decode_ids(Body(body).reader())}});
    }

    void cancel(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        auto [command, body] = admin(cmd::kCancel, encode(IdRequest{1, id}));
        send_json(res, to_json(decode_job_info(Body(body).reader().map("job"))));
    }

    // The body of a bulk POST: a JSON object, else 400.
    static json body_of(const httplib::Request& req) {
        json b = json::parse(req.body, nullptr, false);
        if (b.is_discarded() || !b.is_object())
            throw HttpError{400, "bad_request", "the body must be a JSON object"};
        return b;
    }

    // {"ids": [1, 2, …]}: at most kMaxBulk positive integers.
    static std::vector<JobId> ids_of(const json& b) {
        if (!b.contains("ids") || !b["ids"].is_array())
            throw HttpError{400, "bad_request", "\"ids\" must be an array of job ids"};
        if (b["ids"].size() > kMaxBulk)
            throw HttpError{400, "bad_request", fmt::format("at most {} ids at once", kMaxBulk)};
        std::vector<JobId> ids;
        for (const auto& v : b["ids"]) {
            if (!v.is_number_unsigned() || v.get<JobId>() == 0)
                throw HttpError{400, "bad_request", "\"ids\" must hold positive integers"};
            ids.push_back(v.get<JobId>());
        }
        return ids;
    }

    // POST /api/jobs/retry {"ids": […]} or {"queue": "Q", "state": "dead"} (every dead job of Q;
    // without "queue", of every queue): RETRY for each, as the CLI sends it. Per-id answers, so
    // one job in the wrong state does not hide the others.
    void retry_many(const httplib::Request& req, httplib::Response& res) {
        auto b = body_of(req);
        json retried = json::array(), failed = json::array();
        if (b.contains("ids")) {
            for (JobId id : ids_of(b)) {
                RetryRequest m;
                m.req = 1;
                m.id = id;
                try {
                    auto [command, body] = admin(cmd::kRetry, encode(m));
                    for (auto x : decode_ids(Body(body).reader()))
                        retried.push_back(x);
                } catch (const HttpError& e) {
                    if (e.status >= 500) throw;
                    failed.push_back({{"id", id}, {"code", e.code}, {"message", e.message}});
                }
            }
        } else {
            if (b.value("state", "") != "dead")
                throw HttpError{400, "bad_request",
                                "give \"ids\", or \"state\": \"dead\" (and a \"queue\")"};
            RetryRequest m;
            m.req = 1;
            m.dead = true;
            if (b.contains("queue")) {
                if (!b["queue"].is_string() || !valid_queue_name(b["queue"].get<std::string>()))
                    throw HttpError{400, "bad_request", "invalid queue name"};
                m.queue = b["queue"].get<std::string>();
            }
            auto [command, body] = admin(cmd::kRetry, encode(m));
            for (auto x : decode_ids(Body(body).reader()))
                retried.push_back(x);
        }
        send_json(res, {{"retried", retried}, {"failed", failed}});
    }

    // POST /api/jobs/cancel {"ids": […]}: CANCEL for each.
    void cancel_many(const httplib::Request& req, httplib::Response& res) {
        auto ids = ids_of(body_of(req));
        json cancelled = json::array(), failed = json::array();
        for (JobId id : ids) {
            try {
                admin(cmd::kCancel, encode(IdRequest{1, id}));
                cancelled.push_back(id);
            } catch (const HttpError& e) {
                if (e.status >= 500) throw;
                failed.push_back({{"id", id}, {"code", e.code}, {"message", e.message}});
            }
        }
        send_json(res, {{"cancelled", cancelled}, {"failed", failed}});
    }

    // POST /api/jobs/N/run-now: RUN_NOW, as `errand run-now N`: the job.
    void run_now(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        auto [command, body] = admin(cmd::kRunNow, encode(IdRequest{1, id}));
        send_json(res, to_json(decode_job_info(Body(body).reader().map("job"))));
    }

    // {"force": true} of a DELETE body; absent: false.
    static bool force_of(const httplib::Request& req) {
        if (req.body.empty()) return false;
        auto b = body_of(req);
        if (!b.contains("force")) return false;
        if (!b["force"].is_boolean())
            throw HttpError{400, "bad_request", "\"force\" must be true or false"};
        return b["force"].get<bool>();
    }

    // POST /api/jobs/N/delete [{"force": true}]: DELETE, as `errand delete [--force] N`.
    void remove(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        admin(cmd::kDelete, encode(DeleteRequest{1, id, force_of(req)}));
        send_json(res, {{"deleted", id}});
    }

    // POST /api/jobs/run-now {"ids": […]} and /api/jobs/delete {"ids": […], "force": bool}:
    // RUN_NOW or DELETE for each, answered per id like cancel_many.
    void run_now_many(const httplib::Request& req, httplib::Response& res) {
        auto ids = ids_of(body_of(req));
        json done = json::array(), failed = json::array();
        for (JobId id : ids) {
            try {
                admin(cmd::kRunNow, encode(IdRequest{1, id}));
                done.push_back(id);
            } catch (const HttpError& e) {
                if (e.status >= 500) throw;
                failed.push_back({{"id", id}, {"code", e.code}, {"message", e.message}});
            }
        }
        send_json(res, {{"ready", done}, {"failed", failed}});
    }
    void remove_many(const httplib::Request& req, httplib::Response& res) {
        auto ids = ids_of(body_of(req));
        const bool force = force_of(req);
        json done = json::array(), failed = json::array();
        for (JobId id : ids) {
            try {
                admin(cmd::kDelete, encode(DeleteRequest{1, id, force}));
                done.push_back(id);
            } catch (const HttpError& e) {
                if (e.status >= 500) throw;
                failed.push_back({{"id", id}, {"code", e.code}, {"message", e.message}});
            }
        }
        send_json(res, {{"deleted", done}, {"failed", failed}});
    }

    // POST /api/queues/Q/pause and /resume: PAUSE/RESUME, as `errand pause|resume Q`.
    void set_paused(const httplib::Request& req, httplib::Response& res, bool pause) {
        auto queue = req.matches[1].str();
        if (!valid_queue_name(queue)) throw HttpError{400, "bad_request", "invalid queue name"};
        admin(pause ? cmd::kPause : cmd::kResume, encode(QueueRequest{1, queue}));
        send_json(res, {{"queue", queue}, {"paused", pause}});
    }
    void pause(const httplib::Request& req, httplib::Response& res) { set_paused(req, res, true); }
    void resume(const httplib::Request& req, httplib::Response& res) {
        set_paused(req, res, false);
    }

    // One schedule as /api/schedules shows it: the fields of `errand schedule list`, its job's
    // queue (not the whole job: a payload may be any bytes).
    static json schedule_json(const Schedule& s) {
        return {{"name", s.name},
                {"cron", s.cron},
                {"zone", s.zone},
                {"catch_up", s.catch_up},
                {"queue", s.job.queue},
                {"paused", s.paused},
                {"created_at", json_time(s.created_at)},
                {"next_at", json_time(s.next_at)},
                {"last_at", json_time(s.last_at)},
                {"last_job", s.last_job ? json(*s.last_job) : json(nullptr)},
                {"last_state", s.last_state ? json(to_string(*s.last_state)) : json(nullptr)}};
    }

    // GET /api/schedules: every schedule by name with its last job's state, from the read-only
    // connection (as `errand schedule list` shows them, without a turn of the loop).
    void schedules(const httplib::Request&, httplib::Response& res) {
        json out = json::array();
        {
            std::lock_guard lock(queries_mu);
            for (auto& s : opt.queries->schedules(kMaxSchedules)) {
                if (s.last_job)
                    if (auto j = opt.queries->get_job(*s.last_job)) s.last_state = j->state;
                out.push_back(schedule_json(s));
            }
        }
        send_json(res, {{"time", format_time(wall_ms())}, {"schedules", out}});
    }

    // GET /api/batches?limit=N&before=ID: batches newest first (limit 1-1000, default 100;
    // before: ids below it, the `next` of the previous page), without their callbacks' specs
    // (their jobs' ids are there), from the read-only connection (as `errand batch list`,
    // without a turn of the loop).
    void batches(const httplib::Request& req, httplib::Response& res) {
        auto param = [&req](const char* name) -> std::optional<std::string> {
            if (!req.has_param(name) || req.get_param_value(name).empty()) return std::nullopt;
            return req.get_param_value(name);
        };
        std::size_t limit = kDefaultBatchPage;
        if (auto l = param("limit")) {
            limit = parse_u64(*l, "limit");
            if (limit < 1 || limit > kMaxPage)
                throw HttpError{400, "bad_request", fmt::format("limit must be 1-{}", kMaxPage)};
        }
        std::optional<JobId> before;
        if (auto b = param("before")) {
            before = parse_u64(*b, "before");
            if (*before == 0)
                throw HttpError{400, "bad_request", "before must be a positive integer"};
        }
        std::vector<BatchInfo> rows;
        {
            std::lock_guard lock(queries_mu);
            rows = opt.queries->batches(limit, before);
        }
        json out = json::array();
        for (auto& b : rows) {
            with_batch_state(b);
            auto x = to_json(b);
            // Not read for a page (BATCH_LIST's rule): absent, where null would say "none".
            x.erase("on_complete");
            x.erase("on_success");
            out.push_back(std::move(x));
        }
        json next = rows.size() == limit ? json(rows.back().id) : json(nullptr);
        send_json(res, {{"time", format_time(wall_ms())}, {"batches", out}, {"next", next}});
    }

    // GET /api/batches/ID: the batch with its callbacks' specs (as `errand batch status ID`).
    void batch(const httplib::Request& req, httplib::Response& res) {
        auto id = parse_u64(req.matches[1].str(), "the batch id");
        std::optional<BatchInfo> b;
        if (id != 0) {
            std::lock_guard lock(queries_mu);
            b = opt.queries->batch(id);
        }
        if (!b) throw HttpError{404, "not_found", fmt::format("no batch {}", id)};
        with_batch_state(*b);
        send_json(res, to_json(*b));
    }

    // POST /api/schedules/S/pause and /resume: SCHEDULE_PAUSE/SCHEDULE_RESUME, as
    // `errand schedule pause|resume S`: the schedule.
    void set_schedule_paused(const httplib::Request& req, httplib::Response& res) {
        auto name = req.matches[1].str();
        if (!valid_queue_name(name))  // schedule names follow the queue names' rule
            throw HttpError{400, "bad_request", "invalid schedule name"};
        bool pause = req.matches[2].str() == "pause";
        auto [command, body] = admin(pause ? cmd::kSchedulePause : cmd::kScheduleResume,
                                     encode(ScheduleRequest{1, name}));
        send_json(res, schedule_json(decode_schedule(Body(body).reader())));
    }

    // POST /api/workers/W/quiet, /resume and /stop: WORKER_CONTROL, as `errand worker ACTION W`
    // (W a worker name or instance id). Answers {"workers": [...]}, the workers it reached.
    void control_worker(const httplib::Request& req, httplib::Response& res) {
        WorkerControlRequest m;
        m.req = 1;
        m.worker = req.matches[1].str();
        m.action = req.matches[2].str();
        auto [command, body] = admin(cmd::kWorkerControl, encode(m));
        json out = json::array();
        for (const auto& w : decode_workers(Body(body).reader()))
            out.push_back(to_json(w));
        send_json(res, {{"workers", out}});
    }

    // Every handler runs inside this: errors become JSON with a 4xx/5xx status, never a crash.
    httplib::Server::Handler wrap(void (Impl::*fn)(const httplib::Request&, httplib::Response&)) {
        return [this, fn](const httplib::Request& req, httplib::Response& res) {
            try {
                (this->*fn)(req, res);
            } catch (const HttpError& e) {
                send_error(res, e.status, e.code, e.message);
            } catch (const ProtocolError& e) {
                send_error(res, 502, "internal",
                           fmt::format("bad reply from the broker: {}", e.what()));
            } catch (const StoreError& e) {
                send_error(res, 503, "storage", e.what());
            } catch (const std::exception& e) {
                spdlog::error("http {} {}: {}", req.method, req.path, e.what());
                send_error(res, 500, "internal", e.what());
            }
        };
    }

    void routes() {
        server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            return trusted(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                     : httplib::Server::HandlerResponse::Handled;
        });
        // No page of another site may frame the dashboard (its buttons) or sniff types.
        server.set_default_headers({{"X-Frame-Options", "DENY"},
                                    {"Content-Security-Policy", "frame-ancestors 'none'"},
                                    {"X-Content-Type-Options", "nosniff"},
                                    {"Referrer-Policy", "no-referrer"}});
        for (std::size_t i = 0; i < kWebAssetCount; ++i) {
            const auto& a = kWebAssets[i];
            if (a.path == "/") continue;
            server.Get(std::string(a.path), [&a](const httplib::Request&, httplib::Response& res) {
                res.set_content(a.data.data(), a.data.size(), std::string(a.content_type).c_str());
            });
        }
        auto serve_page = [this](const httplib::Request&, httplib::Response& res) {
            res.set_header("Cache-Control", "no-store");
            res.set_content(page, "text/html; charset=utf-8");
        };
        server.Get("/", serve_page);
        // A job's page as a link of its own (the page opens #job-N from it).
        server.Get(R"(/jobs/(\d+))", serve_page);
        server.Get("/metrics", wrap(&Impl::metrics));
        server.Get("/healthz", wrap(&Impl::healthz));
        server.Get("/api/queues", wrap(&Impl::queues));
        server.Get("/api/stats", wrap(&Impl::stats));
        server.Get("/api/workers", wrap(&Impl::workers));
        server.Get("/api/events", wrap(&Impl::events));
        server.Get("/api/jobs", wrap(&Impl::jobs));
        server.Get("/api/throughput", wrap(&Impl::throughput));
        server.Get(R"(/api/jobs/([^/]+))", wrap(&Impl::job));
        server.Post("/api/jobs/retry", wrap(&Impl::retry_many));
        server.Post("/api/jobs/cancel", wrap(&Impl::cancel_many));
        server.Post(R"(/api/jobs/([^/]+)/retry)", wrap(&Impl::retry));
        server.Post(R"(/api/jobs/([^/]+)/cancel)", wrap(&Impl::cancel));
        server.Post(R"(/api/queues/([^/]+)/pause)", wrap(&Impl::pause));
        server.Post(R"(/api/queues/([^/]+)/resume)", wrap(&Impl::resume));
        server.Post(R"(/api/workers/([^/]+)/(quiet|resume|stop))", wrap(&Impl::control_worker));
        server.Get("/api/schedules", wrap(&Impl::schedules));
        server.Post(R"(/api/schedules/([^/]+)/(pause|resume))", wrap(&Impl::set_schedule_paused));
        server.Post("/api/jobs/run-now", wrap(&Impl::run_now_many));
        server.Post("/api/jobs/delete", wrap(&Impl::remove_many));
        server.Post(R"(/api/jobs/([^/]+)/run-now)", wrap(&Impl::run_now));
        server.Post(R"(/api/jobs/([^/]+)/delete)", wrap(&Impl::remove));
        server.Get("/api/batches", wrap(&Impl::batches));
        server.Get(R"(/api/batches/([^/]+))", wrap(&Impl::batch));
        // Anything else: a JSON 404 (or whatever status a handler set without a body).
        server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;
            send_error(res, res.status, res.status == 404 ? "not_found" : "bad_request",
                       fmt::format("{} {}: {}", req.method, req.path,
                                   res.status == 404 ? "no such resource" : "request refused"));
        });
        server.set_exception_handler(
            [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
                send_error(res, 500, "internal", "internal error");
            });
        server.set_payload_max_length(opt.limits.max_body);
    }
};

HttpServer::HttpServer(HttpOptions options) : impl_(std::make_unique<Impl>()) {
    auto& m = *impl_;
    m.opt = std::move(options);
    auto& o = m.opt;
    if (!o.queries) throw std::invalid_argument("HttpServer needs a QueryStore");
    if (!o.read_only && o.token.size() < 16)
        throw std::invalid_argument("HttpServer needs a token of 16 or more characters");
    if (o.read_only) o.token.clear();
    m.page = dashboard_page(o.token);
    auto serve_name = [&m](const std::string& h) {
        auto name = host_header_name(h.find(':') != std::string::npos ? "[" + h + "]" : h);
        if (name.empty()) throw std::invalid_argument("not a host name: '" + h + "'");
        m.names.push_back(name);
    };
    for (const auto& h : o.hosts)
        serve_name(h);
    if (o.host != "0.0.0.0" && o.host != "::" && !o.host.empty()) serve_name(o.host);
    m.routes();
    // /healthz (GET or HEAD, any query) is cheap and answered on the gate's I/O thread, so it
    // answers however busy the API is.
    auto is_healthz = [](std::string_view line) {
        for (std::string_view m : {"GET /healthz", "HEAD /healthz"})
            if (line.substr(0, m.size()) == m && line.size() > m.size() &&
                (line[m.size()] == ' ' || line[m.size()] == '?'))
                return true;
        return false;
    };
    m.gate = std::make_unique<HttpGate>(
        o.host, o.port, o.limits,
        [impl = impl_.get()](httplib::Stream& s, bool close, bool& closed) {
            return impl->server.serve(s, close, closed);
        },
        is_healthz);
}

HttpServer::~HttpServer() {
    impl_->gate.reset();  // joins every thread that could still be in a handler
}

int HttpServer::port() const {
    return impl_->gate->port();
}

}  // namespace errand::broker
