// HTTP endpoints: /metrics (Prometheus), /healthz, the JSON API under /api and the dashboard.
//
// Where each answer comes from (CQRS: nothing here runs on, or blocks, the broker loop):
//   live picture (queues, workers, metrics, recent events) <- the loop's latest Snapshot
//   jobs, one job, its history, progress, database size    <- a read-only SQLite connection
//   retry, cancel  -> RETRY/CANCEL over inproc:// to the loop's admin socket, so they take the
//                     same path as the CLI's: same handlers, same state machine, committed
//                     before the reply. (An errand::Client over TCP would need its own CURVE key
//                     when CURVE is on and would expose nothing more; inproc needs neither.)
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
#include "web_assets.hpp"

namespace errand::broker {

// Every JSON form here is ordered (keys in the field tables' order); jobs, events, queues and
// workers are the forms of errand/json.hpp, with RFC 3339 times.
using json = Json;

namespace {

constexpr std::size_t kMaxPage = 1000;

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
                       "the HTTP side is read-only (--http-readonly): retry and cancel with the "
                       "errand CLI");
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
        }
        g.workers = s->workers.size();
        for (const auto& w : s->workers) {
            g.worker_slots += w.concurrency;
            g.running += w.jobs.size();
        }
        {
            std::lock_guard lock(queries_mu);
            g.db_bytes = opt.queries->size_bytes();
        }
        g.uptime_seconds = static_cast<double>(s->at - s->started_at) / 1000.0;
        g.last_loop_seconds = static_cast<double>(s->at) / 1000.0;
        res.set_content(render_prometheus(s->metrics, g),
                        "text/plain; version=0.0.4; charset=utf-8");
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
        json out = json::array();
        for (const auto& q : s->queues) {
            json totals = json::object();
            if (auto m = s->metrics.queues.find(q.name); m != s->metrics.queues.end())
                totals = {{"submitted", m->second.submitted},
                          {"succeeded", m->second.succeeded},
                          {"failed", m->second.failed},
                          {"dead", m->second.dead},
                          {"cancelled", m->second.cancelled}};
            out.push_back({{"name", q.name},
                           {"paused", q.paused},
                           {"counts", counts_json(q.counts)},
                           {"oldest_ready_at", json_time(q.oldest_ready_at)},
                           {"finished_per_second", q.finished_per_second},
                           {"submitted_per_second", q.submitted_per_second},
                           {"totals", totals}});
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

    void jobs(const httplib::Request& req, httplib::Response& res) {
        JobPage page;
        if (req.has_param("state") && !req.get_param_value("state").empty()) {
            auto st = req.get_param_value("state");
            page.state = parse_job_state(st);
            if (!page.state)
                throw HttpError{400, "bad_request", fmt::format("unknown state '{}'", st)};
        }
        if (req.has_param("queue") && !req.get_param_value("queue").empty()) {
            page.queue = req.get_param_value("queue");
            if (!valid_queue_name(*page.queue))
                throw HttpError{400, "bad_request", "invalid queue name"};
        }
        if (req.has_param("limit")) {
            page.limit = parse_u64(req.get_param_value("limit"), "limit");
            if (page.limit < 1 || page.limit > kMaxPage)
                throw HttpError{400, "bad_request", fmt::format("limit must be 1-{}", kMaxPage)};
        }
        if (req.has_param("after") && !req.get_param_value("after").empty())
            page.before = parse_u64(req.get_param_value("after"), "after");
        std::vector<JobInfo> rows;
        {
            std::lock_guard lock(queries_mu);
            rows = opt.queries->jobs(page);
        }
        json out = json::array();
        for (const auto& j : rows)
            out.push_back(to_json(j));
        json next = rows.size() == page.limit ? json(rows.back().id) : json(nullptr);
        send_json(res, {{"jobs", out}, {"next", next}});
    }

    void job(const httplib::Request& req, httplib::Response& res) {
        JobId id = job_id(req);
        std::optional<JobInfo> j;
        std::vector<Event> history;
        {
            std::lock_guard lock(queries_mu);
            j = opt.queries->get_job(id);
            if (j) history = opt.queries->events(id);
        }
        if (!j) throw HttpError{404, "not_found", fmt::format("no job {}", id)};
        json events = json::array();
        for (const auto& e : history)
            events.push_back(to_json(e));
        auto out = to_json(*j);
        out["events"] = events;
        send_json(res, out);
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
        server.Get("/", [this](const httplib::Request&, httplib::Response& res) {
            res.set_header("Cache-Control", "no-store");
            res.set_content(page, "text/html; charset=utf-8");
        });
        server.Get("/metrics", wrap(&Impl::metrics));
        server.Get("/healthz", wrap(&Impl::healthz));
        server.Get("/api/queues", wrap(&Impl::queues));
        server.Get("/api/stats", wrap(&Impl::stats));
        server.Get("/api/workers", wrap(&Impl::workers));
        server.Get("/api/events", wrap(&Impl::events));
        server.Get("/api/jobs", wrap(&Impl::jobs));
        server.Get(R"(/api/jobs/([^/]+))", wrap(&Impl::job));
        server.Post(R"(/api/jobs/([^/]+)/retry)", wrap(&Impl::retry));
        server.Post(R"(/api/jobs/([^/]+)/cancel)", wrap(&Impl::cancel));
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
