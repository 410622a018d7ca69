// errand-broker: parse flags, set up logging, open the store, run the broker.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include <zmq.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <vector>

#include "broker.hpp"
#include "config.hpp"
#include "errand/clock.hpp"
#include "errand/curve.hpp"
#include "errand/duration.hpp"
#include "errand/transport.hpp"
#include "errand/version.hpp"
#include "http_server.hpp"
#include "logging.hpp"
#include "notify.hpp"
#include "signals.hpp"
#include "store_pg.hpp"
#include "store_sqlite.hpp"

namespace {

// Exit codes: 0 clean stop (SIGTERM, SIGINT), 2 bad flags (from the command line, the
// environment or the config file), 3 database unusable, 4 cannot listen.
constexpr int kExitUsage = 2;
constexpr int kExitDatabase = 3;
constexpr int kExitListen = 4;

// True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost.
bool is_loopback(const std::string& endpoint) {
    if (endpoint.rfind("tcp://", 0) != 0) return true;
    std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);
    return host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]" || host == "::1";
}

// The token in FILE: its first line without surrounding whitespace; "" when it is not one of
// 16 or more printable characters without spaces.
std::string read_token_file(const std::string& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    auto first = line.find_first_not_of(" \t\r");
    auto last = line.find_last_not_of(" \t\r");
    if (first == std::string::npos) return "";
    line = line.substr(first, last - first + 1);
    bool printable =
        std::all_of(line.begin(), line.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
    return printable && line.size() >= 16 ? line : "";
}

CLI::Validator duration_validator() {
    return CLI::Validator(
        [](std::string& s) -> std::string {
            return errand::parse_duration(s) ? "" : "not a duration (like 250ms, 5s, 2m): " + s;
        },
        "DURATION");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"errand-broker: the errand job broker"};
    app.set_version_flag("--version", "errand-broker " ERRAND_VERSION,
                         "print the version and exit");
    errand::broker::BrokerConfig cfg;
    std::string db = "./errand.db";
    std::string heartbeat = "1s", worker_timeout = "5s", retry_delay = "1s", retry_cap = "10m";
    std::string timeout_grace = "10s", retention = "7d", wait_idle = "15s";
    std::string dead_retention = "180d";
    std::string synchronous = "full";
    std::string log_level = "info";
    std::string log_format = "text";
    std::string log_file;
    bool dump = false;
    std::string curve_secret_file, authorized_dir;
    std::string http;  // HOST:PORT of the HTTP side (metrics, API, dashboard); empty: off
    std::string http_token_file;
    std::vector<std::string> http_hosts;
    bool http_readonly = false;
    app.footer(
        "Every flag can also come from a TOML file (--config) or an ERRAND_* environment\n"
        "variable (--worker-timeout: ERRAND_WORKER_TIMEOUT). Precedence: flag > environment >\n"
        "file > default. SIGTERM/SIGINT: finish the current commit, tell waiters and workers,\n"
        "exit 0. SIGHUP reopens --log-file and re-reads --authorized-keys (which is also\n"
        "re-read when the directory changes: deleting a key's file revokes it).");
    app.add_option("--listen", cfg.listen, "ZeroMQ endpoint to bind")->capture_default_str();
    app.add_option("--db", db,
                   "SQLite database file, or a postgresql:// URI (libpq's PG* environment "
                   "variables and service file fill in what the URI leaves out)")
        ->capture_default_str();
    app.add_option("--heartbeat", heartbeat, "heartbeat interval")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--worker-timeout", worker_timeout,
                   "silence after which a worker is declared lost")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--retry-delay", retry_delay,
                   "default backoff base: the first retry waits about this long, each next one "
                   "twice as long (jittered)")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--retry-cap", retry_cap, "default backoff cap")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--timeout-grace", timeout_grace,
                   "a job with a timeout that has no result this long after it is failed and "
                   "retried by the broker")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--retention", retention,
                   "finished jobs are deleted after this long (dead ones: --dead-retention)")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--dead-retention", dead_retention, "dead jobs are deleted after this long")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--max-payload", cfg.max_payload, "largest job payload in bytes")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 30));
    app.add_option("--max-result", cfg.max_result, "largest job result in bytes")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 30));
    app.add_option(
           "--max-message", cfg.max_message,
           "largest message in bytes (ZeroMQ closes the connection that sends a larger one)")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 31));
    app.add_option("--max-batch", cfg.max_batch, "most jobs in one SUBMIT")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
    app.add_option("--max-waits-total", cfg.max_waits_total,
                   "most outstanding WAITs of all connections together")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{100000000}));
    app.add_option("--wait-idle", wait_idle,
                   "a waiting client that has not resent its WAIT for this long is presumed gone "
                   "and its wait dropped (clients resend every 5s at most)")
        ->capture_default_str()
        ->check(duration_validator());
    app.add_option("--max-queues", cfg.max_queues,
                   "most distinct queues at once (a queue without jobs, workers or pause is "
                   "forgotten after a minute)")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}));
    app.add_option("--max-waits", cfg.max_waits, "most outstanding WAITs per connection")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
    app.add_option("--synchronous", synchronous,
                   "SQLite synchronous mode: full (every commit survives power loss) or normal")
        ->capture_default_str()
        ->check(CLI::IsMember({"full", "normal"}));
    auto* curve_opt = app.add_option("--curve-secret-key", curve_secret_file,
                                     "encrypt with CURVE: the broker's secret key file "
                                     "(errand keygen); needs --authorized-keys")
                          ->check(CLI::ExistingFile);
    auto* keys_opt = app.add_option("--authorized-keys", authorized_dir,
                                    "directory of public key files allowed to connect, one per "
                                    "file: 'KEY [any|client|worker]'")
                         ->check(CLI::ExistingDirectory);
    curve_opt->needs(keys_opt);
    keys_opt->needs(curve_opt);
    app.add_option("--http", http,
                   "serve /metrics, /healthz, the JSON API and the dashboard on HOST:PORT "
                   "(port 0: any free port). Reads need no credential, so keep it on loopback or "
                   "behind a proxy; POSTs (every action: retry, cancel, run now, delete, pause, "
                   "resume) need the token "
                   "(--http-token-file)")
        ->check(CLI::Validator(
            [](std::string& s) -> std::string {
                auto colon = s.rfind(':');
                if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
                    return "expected HOST:PORT, e.g. 127.0.0.1:7780";
                try {
                    int p = std::stoi(s.substr(colon + 1));
                    if (p < 0 || p > 65535) return "port out of range: " + s;
                } catch (const std::exception&) {
                    return "not a port: " + s;
                }
                return "";
            },
            "HOST:PORT"));
    auto* token_opt =
        app.add_option("--http-token-file", http_token_file,
                       "file holding the token every POST to the HTTP API must carry as the "
                       "X-Errand-Token header (16+ printable characters); default: a random "
                       "token, logged at start. The dashboard page carries it.")
            ->check(CLI::ExistingFile)
            ->type_name("PATH");
    app.add_option("--http-host", http_hosts,
                   "a name the HTTP side answers to (the Host header's), besides loopback names "
                   "and the --http address; repeatable. Any other Host gets 421")
        ->type_name("NAME")
        ->check(CLI::Validator(
            [](std::string& s) -> std::string {
                if (errand::broker::host_header_name(s).empty() || s.find(':') != std::string::npos)
                    return "not a host name (letters, digits, '.', '-'; no port): " + s;
                return "";
            },
            "NAME"));
    app.add_flag("--http-readonly", http_readonly,
                 "the HTTP side refuses every POST (every action: retry, cancel, run now, delete, "
                 "pause, resume): metrics, health "
                 "and reads only")
        ->excludes(token_opt);
    app.add_option("--events", cfg.events_endpoint,
                   "ZeroMQ PUB endpoint streaming job state changes (errand events --follow)");
    app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
        ->capture_default_str()
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
    app.add_option("--log-format", log_format, "text, or json (one object per line)")
        ->capture_default_str()
        ->check(CLI::IsMember({"text", "json"}));
    app.add_option("--log-file", log_file, "log to this file instead of stderr (SIGHUP reopens it)")
        ->type_name("PATH");
    errand::daemon::add_config_options(app, dump);
    try {
        errand::daemon::parse_settings(app, argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : kExitUsage;
    }
    for (auto [flag, ep] : {std::pair<const char*, std::string*>{"--listen", &cfg.listen},
                            {"--events", &cfg.events_endpoint}}) {
        if (ep->empty() && std::string_view(flag) == "--events") continue;
        if (auto why = errand::endpoint_error(*ep, true)) {
            std::fprintf(stderr, "errand-broker: bad %s '%s': %s\n", flag, ep->c_str(),
                         why->c_str());
            return kExitUsage;
        }
    }
    cfg.heartbeat_ms = *errand::parse_duration(heartbeat);
    cfg.worker_timeout_ms = *errand::parse_duration(worker_timeout);
    cfg.retry_delay_ms = *errand::parse_duration(retry_delay);
    cfg.retry_cap_ms = *errand::parse_duration(retry_cap);
    cfg.timeout_grace_ms = *errand::parse_duration(timeout_grace);
    cfg.wait_idle_ms = *errand::parse_duration(wait_idle);
    cfg.retention_ms = *errand::parse_duration(retention);
    cfg.dead_retention_ms = *errand::parse_duration(dead_retention);
    if (cfg.heartbeat_ms < 10 || cfg.worker_timeout_ms < 2 * cfg.heartbeat_ms) {
        std::fprintf(stderr,
                     "errand-broker: --worker-timeout must be at least twice --heartbeat "
                     "(and --heartbeat at least 10ms)\n");
        return kExitUsage;
    }
    if (cfg.retention_ms <= 0) {
        // 0 would delete a finished job as it finishes: its result, unread.
        std::fprintf(stderr, "errand-broker: --retention must be more than 0 (got %s)\n",
                     retention.c_str());
        return kExitUsage;
    }
    if (cfg.dead_retention_ms <= 0) {
        // 0 would delete every failure as it happens, before anyone could look at it.
        std::fprintf(stderr, "errand-broker: --dead-retention must be more than 0 (got %s)\n",
                     dead_retention.c_str());
        return kExitUsage;
    }
    if (cfg.wait_idle_ms < 100) {
        std::fprintf(stderr, "errand-broker: --wait-idle must be at least 100ms (got %s)\n",
                     wait_idle.c_str());
        return kExitUsage;
    }
    if (dump) {
        std::fputs(errand::daemon::dump_config(app, "errand-broker").c_str(), stdout);
        return 0;
    }

    try {
        errand::daemon::setup_logging({.name = "errand-broker",
                                       .level = log_level,
                                       .format = *errand::daemon::parse_log_format(log_format),
                                       .file = log_file});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "errand-broker: %s\n", e.what());
        return kExitUsage;
    }
    // Signals go to one thread of ours (sigwait), blocked everywhere else: ZeroMQ's threads,
    // started below, inherit the mask.
    std::signal(SIGPIPE, SIG_IGN);
    errand::daemon::SignalThread::block();

    // systemd (Type=notify): STATUS= and WATCHDOG=1 come from the broker's loop, so a loop that
    // hangs stops pinging and the watchdog restarts the service.
    errand::daemon::ServiceNotifier notifier;
    cfg.on_status = [&notifier](const errand::broker::BrokerStatus& st) {
        notifier.status(fmt::format("{} ready, {} running, {} waiting, {} workers", st.ready,
                                    st.running, st.scheduled, st.workers));
        notifier.watchdog(errand::steady_ms());
    };
    if (auto wd = notifier.watchdog_interval())
        cfg.status_interval_ms = std::min(cfg.status_interval_ms, *wd);

    if (!curve_secret_file.empty()) {
        try {
            cfg.curve_secret_key = errand::read_key_file(curve_secret_file);
            errand::public_from_secret(*cfg.curve_secret_key);
            cfg.authorized_keys = std::make_shared<errand::broker::KeyRing>(authorized_dir);
        } catch (const std::exception& e) {
            spdlog::critical("{}", e.what());
            return kExitUsage;
        }
        spdlog::info("CURVE on: {} authorized keys", cfg.authorized_keys->size());
    } else {
        if (!is_loopback(cfg.listen))
            spdlog::warn(
                "listening on {} without CURVE: anyone who can reach it can submit and run "
                "jobs; see --curve-secret-key and docs/SECURITY.md",
                cfg.listen);
        if (!cfg.events_endpoint.empty() && !is_loopback(cfg.events_endpoint))
            spdlog::warn(
                "publishing events on {} without CURVE: anyone who can reach it can follow "
                "every job's state changes, queues and worker names; see --curve-secret-key and "
                "docs/SECURITY.md",
                cfg.events_endpoint);
    }

    std::unique_ptr<errand::broker::Store> store;
    try {
        if (errand::broker::is_postgres_uri(db))
            store = std::make_unique<errand::broker::PgStore>(db);
        else
            store = std::make_unique<errand::broker::SqliteStore>(
                db, errand::broker::SqliteOptions{synchronous == "full"});
    } catch (const std::exception& e) {
        // libpq quotes a URI it cannot parse: never with its password.
        std::string message = e.what();
        if (auto redacted = errand::broker::redact_uri(db); redacted != db)
            for (auto at = message.find(db); at != std::string::npos;
                 at = message.find(db, at + redacted.size()))
                message.replace(at, db.size(), redacted);
        spdlog::critical("{}", message);
        return kExitDatabase;
    }

    std::string http_host;
    int http_port = 0;
    if (!http.empty()) {
        auto colon = http.rfind(':');
        http_host = http.substr(0, colon);
        if (http_host.size() > 2 && http_host.front() == '[' && http_host.back() == ']')
            http_host = http_host.substr(1, http_host.size() - 2);
        http_port = std::stoi(http.substr(colon + 1));
        cfg.snapshots = std::make_shared<errand::broker::SnapshotHub>();
        cfg.admin_endpoint = "inproc://errand-admin";
    }
    std::string http_token;
    if (!http.empty() && !http_readonly && !http_token_file.empty()) {
        http_token = read_token_file(http_token_file);
        if (http_token.empty()) {
            std::fprintf(stderr,
                         "errand-broker: --http-token-file %s: the token must be one line of 16 "
                         "or more printable characters, no spaces\n",
                         http_token_file.c_str());
            return kExitUsage;
        }
    }

    errand::SystemClock clock;
    std::unique_ptr<errand::broker::Broker> broker;
    try {
        broker = std::make_unique<errand::broker::Broker>(cfg, std::move(store), clock);
    } catch (const zmq::error_t& e) {
        spdlog::critical("cannot listen on {}: {}", cfg.listen, e.what());
        return kExitListen;
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        return kExitDatabase;
    }
    std::unique_ptr<errand::broker::HttpServer> http_server;
    if (!http.empty()) {
        try {
            errand::broker::HttpOptions o;
            o.host = http_host;
            o.port = http_port;
            o.snapshots = cfg.snapshots;
            if (errand::broker::is_postgres_uri(db))
                o.queries = std::make_unique<errand::broker::PgQueryStore>(db);
            else
                o.queries = std::make_unique<errand::broker::SqliteQueryStore>(db);
            o.context = &broker->context();
            o.admin_endpoint = cfg.admin_endpoint;
            o.hosts = http_hosts;
            o.read_only = http_readonly;
            o.token = http_readonly || !http_token.empty() ? http_token
                                                           : errand::broker::generate_http_token();
            http_token = o.token;
            http_server = std::make_unique<errand::broker::HttpServer>(std::move(o));
        } catch (const std::exception& e) {
            spdlog::critical("{}", e.what());
            return kExitListen;
        }
        spdlog::info("http listening on {}:{}{}", http_host, http_server->port(),
                     http_readonly ? " (read-only)" : "");
        if (!http_readonly && http_token_file.empty())
            spdlog::info(
                "http POSTs (every action: retry, cancel, run now, delete, pause, resume) need the "
                "header X-Errand-Token: {} "
                "(generated at "
                "start; --http-token-file sets one; the dashboard page carries it)",
                http_token);
        if (!errand::broker::is_loopback_host(http_host))
            spdlog::warn(
                "HTTP on {} is not loopback: its reads (/api, /metrics) need no credential and "
                "nothing is encrypted; put it behind a proxy with TLS and authentication "
                "(docs/SECURITY.md)",
                http);
    }
    if (!cfg.events_endpoint.empty())
        spdlog::info("events published on {}", broker->events_endpoint());
    errand::daemon::SignalThread signals([&broker, &notifier, &cfg](int sig) {
        if (sig == SIGHUP) {
            try {
                errand::daemon::reopen_logs();
                spdlog::info("SIGHUP: log file reopened");
            } catch (const std::exception& e) {
                spdlog::error("SIGHUP: {}", e.what());
            }
            if (cfg.authorized_keys) cfg.authorized_keys->reload("SIGHUP");
            return;
        }
        spdlog::info("SIG{}: stopping", ::sigabbrev_np(sig));
        notifier.stopping();
        broker->stop();
    });
    if (errand::broker::is_postgres_uri(db))
        spdlog::info("errand-broker listening on {} (PostgreSQL {})", broker->endpoint(),
                     errand::broker::redact_uri(db));
    else
        spdlog::info("errand-broker listening on {} (db {}, synchronous={})", broker->endpoint(),
                     db, synchronous);
    notifier.ready(fmt::format("listening on {}", broker->endpoint()));
    broker->run();
    http_server.reset();  // before the broker: it uses the broker's context
    return 0;
}
