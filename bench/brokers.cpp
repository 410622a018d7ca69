// The brokers of a run and their database (brokers.hpp).
#include "brokers.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <stdexcept>

namespace errand::bench {
namespace {

// One libpq connection for one query; closed on return.
struct PgConn {
    PGconn* conn;
    explicit PgConn(const std::string& conninfo) : conn(PQconnectdb(conninfo.c_str())) {
        if (PQstatus(conn) != CONNECTION_OK) {
            std::string msg = PQerrorMessage(conn);
            PQfinish(conn);
            throw std::runtime_error("cannot connect to " + conninfo + ": " + msg);
        }
    }
    ~PgConn() { PQfinish(conn); }
    PgConn(const PgConn&) = delete;
    PgConn& operator=(const PgConn&) = delete;
};

struct PgResult {
    PGresult* res;
    ~PgResult() { PQclear(res); }
};

}  // namespace

Brokers::Brokers(const Options& opt) : opt_(opt), db_(opt.db) {
    if (opt.pg) {
        pg_ = std::make_unique<pgserver::PgServer>(pgserver::PgServerOptions{
            .durable = true, .parent = opt.tmpdir, .keep = opt.keep_tmp, .settings = {}});
        db_ = pg_->uri();
    }
    const unsigned n = std::max(1u, opt.brokers);
    // One at a time: the first creates the schema, the others find it.
    for (unsigned i = 0; i < n; ++i)
        brokers_.push_back(std::make_unique<BrokerProcess>(opt, db_));
}

Brokers::~Brokers() {
    brokers_.clear();
    pg_.reset();
}

const std::string& Brokers::endpoint(std::size_t i) const {
    return brokers_[i % brokers_.size()]->endpoint();
}

std::string Brokers::label() const {
    if (!opt_.broker.empty()) return opt_.broker;
    if (!postgres()) return "own (synchronous=" + opt_.synchronous + ")";
    const std::string where =
        pg_ ? "a throwaway PostgreSQL (fsync on, synchronous_commit on)" : opt_.db;
    return fmt::format("{} own on {}", brokers_.size(), where);
}

Brokers::Counts Brokers::counts(const std::string& queue) const {
    if (!postgres()) throw std::logic_error("Brokers::counts needs PostgreSQL");
    PgConn c(db_);
    const char* params[] = {queue.c_str()};
    PgResult r{PQexecParams(c.conn,
                            "SELECT coalesce(broker, ''), count(*), "
                            "count(*) FILTER (WHERE state = 'succeeded') "
                            "FROM jobs WHERE queue = $1 GROUP BY 1 ORDER BY 2 DESC",
                            1, nullptr, params, nullptr, nullptr, 0)};
    if (PQresultStatus(r.res) != PGRES_TUPLES_OK)
        throw std::runtime_error(std::string("counting jobs: ") + PQerrorMessage(c.conn));
    Counts out;
    for (int row = 0; row < PQntuples(r.res); ++row) {
        const auto total = std::stoull(PQgetvalue(r.res, row, 1));
        out.total += total;
        out.succeeded += std::stoull(PQgetvalue(r.res, row, 2));
        out.by_broker.push_back(total);
    }
    return out;
}

std::string Brokers::durability() const {
    if (!postgres()) throw std::logic_error("Brokers::durability needs PostgreSQL");
    PgConn c(db_);
    PgResult r{PQexec(c.conn,
                      "SELECT 'fsync=' || current_setting('fsync') || ' synchronous_commit=' || "
                      "current_setting('synchronous_commit') || ' full_page_writes=' || "
                      "current_setting('full_page_writes')")};
    if (PQresultStatus(r.res) != PGRES_TUPLES_OK)
        throw std::runtime_error(std::string("reading settings: ") + PQerrorMessage(c.conn));
    return PQgetvalue(r.res, 0, 0);
}

std::vector<std::vector<std::string>> Brokers::query(const std::string& sql) const {
    if (!postgres()) throw std::logic_error("Brokers::query needs PostgreSQL");
    PgConn c(db_);
    PgResult r{PQexec(c.conn, sql.c_str())};
    if (PQresultStatus(r.res) != PGRES_TUPLES_OK)
        throw std::runtime_error(std::string("querying: ") + PQerrorMessage(c.conn));
    std::vector<std::vector<std::string>> rows;
    for (int row = 0; row < PQntuples(r.res); ++row) {
        auto& out = rows.emplace_back();
        for (int col = 0; col < PQnfields(r.res); ++col)
            out.emplace_back(PQgetvalue(r.res, row, col));
    }
    return rows;
}

double Brokers::broker_cpu_seconds() const {
    double total = 0;
    for (const auto& b : brokers_)
        total += b->cpu_seconds();
    return total;
}

std::uint64_t Brokers::broker_write_bytes() const {
    std::uint64_t total = 0;
    for (const auto& b : brokers_)
        if (!b->external()) total += write_bytes(b->pid());
    return total;
}

std::map<pid_t, double> Brokers::postgres_cpu() const {
    return pg_ ? cpu_of_children(pg_->pid()) : std::map<pid_t, double>{};
}

double cpu_between(const std::map<pid_t, double>& before, const std::map<pid_t, double>& after) {
    double total = 0;
    for (const auto& [pid, seconds] : after) {
        const auto it = before.find(pid);
        total += seconds - (it == before.end() ? 0 : it->second);
    }
    return total;
}

}  // namespace errand::bench
