// The libpq wrapper: binary parameters and results, prepared statements, pipelines.
#include "pg.hpp"

#include <endian.h>
#include <fmt/format.h>

#include <cstring>

namespace errand::broker::pg {
namespace {

// Class 53 (insufficient resources: disk full, out of memory) and 58 (system error: I/O) are
// what an operator fixes; the rest are ours or the data's.
bool disk_state(std::string_view sqlstate) {
    return sqlstate.starts_with("53") || sqlstate.starts_with("58");
}

template <class T>
std::string big_endian(T v) {
    std::string out(sizeof(T), '\0');
    if constexpr (sizeof(T) == 8) {
        std::uint64_t be = htobe64(static_cast<std::uint64_t>(v));
        std::memcpy(out.data(), &be, 8);
    } else {
        std::uint32_t be = htobe32(static_cast<std::uint32_t>(v));
        std::memcpy(out.data(), &be, 4);
    }
    return out;
}

}  // namespace

// ---- Params --------------------------------------------------------------------------------

Params& Params::add(std::string bytes, int format, bool is_null) {
    lengths_.push_back(static_cast<int>(bytes.size()));
    formats_.push_back(format);
    null_.push_back(is_null);
    data_.push_back(std::move(bytes));
    return *this;
}
Params& Params::i64(std::int64_t v) {
    return add(big_endian(v), 1);
}
Params& Params::i32(std::int32_t v) {
    return add(big_endian(v), 1);
}
Params& Params::boolean(bool v) {
    return add(std::string(1, v ? '\1' : '\0'), 1);
}
Params& Params::text(std::string_view v) {
    return add(std::string(v), 0);
}
Params& Params::bytes(std::string_view v) {
    return add(std::string(v), 1);
}
Params& Params::null() {
    return add({}, 0, true);
}

namespace {

// PostgreSQL's binary array format (array_recv): ndim, has-nulls flag, element type, then per
// dimension its length and lower bound, then each element as a length (-1: NULL) and its bytes.
constexpr std::int32_t kInt8Oid = 20;
constexpr std::int32_t kTextOid = 25;
constexpr std::int32_t kByteaOid = 17;

template <class Element, class Encode>
std::string binary_array(std::int32_t oid, const std::vector<std::optional<Element>>& v,
                         Encode encode) {
    bool nulls = false;
    for (const auto& e : v)
        nulls = nulls || !e;
    std::string out;
    out += big_endian<std::int32_t>(v.empty() ? 0 : 1);
    out += big_endian<std::int32_t>(nulls ? 1 : 0);
    out += big_endian<std::int32_t>(oid);
    if (v.empty()) return out;
    out += big_endian<std::int32_t>(static_cast<std::int32_t>(v.size()));
    out += big_endian<std::int32_t>(1);
    for (const auto& e : v) {
        if (!e) {
            out += big_endian<std::int32_t>(-1);
            continue;
        }
        std::string bytes = encode(*e);
        out += big_endian<std::int32_t>(static_cast<std::int32_t>(bytes.size()));
        out += bytes;
    }
    return out;
}

}  // namespace

Params& Params::i64_array(const std::vector<std::optional<std::int64_t>>& v) {
    return add(binary_array(kInt8Oid, v, [](std::int64_t x) { return big_endian(x); }), 1);
}
Params& Params::text_array(const std::vector<std::optional<std::string_view>>& v) {
    return add(binary_array(kTextOid, v, [](std::string_view x) { return std::string(x); }), 1);
}
Params& Params::bytes_array(const std::vector<std::optional<std::string_view>>& v) {
    return add(binary_array(kByteaOid, v, [](std::string_view x) { return std::string(x); }), 1);
}
std::vector<const char*> Params::values() const {
    std::vector<const char*> out;
    out.reserve(data_.size());
    for (std::size_t i = 0; i < data_.size(); ++i)
        out.push_back(null_[i] ? nullptr : data_[i].data());
    return out;
}

// ---- Result --------------------------------------------------------------------------------

int Result::affected() const {
    const char* n = PQcmdTuples(r_.get());
    return n && *n ? std::atoi(n) : 0;
}

std::string_view Result::raw(int row, int col) const {
    return {PQgetvalue(r_.get(), row, col),
            static_cast<std::size_t>(PQgetlength(r_.get(), row, col))};
}

std::int64_t Result::i64(int row, int col) const {
    auto v = raw(row, col);
    if (v.size() == 8) {
        std::uint64_t be;
        std::memcpy(&be, v.data(), 8);
        return static_cast<std::int64_t>(be64toh(be));
    }
    if (v.size() == 4) {
        std::uint32_t be;
        std::memcpy(&be, v.data(), 4);
        return static_cast<std::int32_t>(be32toh(be));
    }
    if (v.size() == 2) {
        std::uint16_t be;
        std::memcpy(&be, v.data(), 2);
        return static_cast<std::int16_t>(be16toh(be));
    }
    throw Error(fmt::format("column {} is not an integer ({} bytes)", col, v.size()), "", false);
}

bool Result::boolean(int row, int col) const {
    auto v = raw(row, col);
    if (v.size() != 1) throw Error(fmt::format("column {} is not a boolean", col), "", false);
    return v[0] != 0;
}

std::string Result::text(int row, int col) const {
    return std::string(raw(row, col));
}

std::optional<std::int64_t> Result::opt_i64(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return i64(row, col);
}

std::optional<std::string> Result::opt_text(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return text(row, col);
}

// ---- Connection ----------------------------------------------------------------------------

Connection::Connection(const std::string& conninfo)
    : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {
    if (!conn_) throw Error("cannot connect to PostgreSQL: out of memory", "", true);
    if (PQstatus(conn_.get()) != CONNECTION_OK) fail("cannot connect to PostgreSQL");
    // NOTICEs ("table does not exist, skipping") are not errors: not printed on stderr.
    PQsetNoticeProcessor(
        conn_.get(), [](void*, const char*) {}, nullptr);
}

void Connection::fail(const char* what, PGresult* r) const {
    std::string state;
    std::string message;
    if (r) {
        if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) state = s;
        message = PQresultErrorMessage(r);
    }
    if (message.empty()) message = PQerrorMessage(conn_.get());
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
        message.pop_back();
    bool disk = disk_state(state) || PQstatus(conn_.get()) != CONNECTION_OK;
    if (r) PQclear(r);
    throw Error(fmt::format("{}: {}", what, message), state, disk);
}

bool Connection::reset() {
    PQreset(conn_.get());
    broken_ = false;  // a new session, out of pipeline mode
    return ok();
}

std::vector<std::pair<std::string, std::string>> Connection::notifications() {
    std::vector<std::pair<std::string, std::string>> out;
    if (!ok() || PQconsumeInput(conn_.get()) != 1) return out;
    const int self = PQbackendPID(conn_.get());
    while (PGnotify* n = PQnotifies(conn_.get())) {
        if (n->be_pid != self) out.emplace_back(n->relname, n->extra);
        PQfreemem(n);
    }
    return out;
}

Result Connection::check(PGresult* r, const char* what) const {
    if (!r) fail(what);
    auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(what, r);
    return Result(r);
}

void Connection::exec(const std::string& sql) {
    PGresult* r = PQexec(conn_.get(), sql.c_str());
    // Several statements: PQexec returns the last one's result (or the first error).
    check(r, "PostgreSQL statement failed");
}

Result Connection::query(const std::string& sql) {
    return check(PQexecParams(conn_.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1),
                 "PostgreSQL query failed");
}

void Connection::prepare(const std::string& name, const std::string& sql, int params) {
    check(PQprepare(conn_.get(), name.c_str(), sql.c_str(), params, nullptr),
          "PostgreSQL cannot prepare a statement");
}

Result Connection::run(std::string_view name, const Params& params) {
    std::string n(name);
    auto values = params.values();
    return check(PQexecPrepared(conn_.get(), n.c_str(), params.size(), values.data(),
                                params.lengths(), params.formats(), /*binary results=*/1),
                 "PostgreSQL statement failed");
}

// After a failed send: what was queued is ended with a sync and its results read, so the
// connection leaves pipeline mode (a later exec() would fail in it); when even that fails, ok()
// says the connection is down, and the owner connects again.
void Connection::abandon_pipeline() {
    PGconn* c = conn_.get();
    if (PQpipelineStatus(c) == PQ_PIPELINE_OFF) return;
    if (PQpipelineSync(c) == 1) {
        while (PQstatus(c) == CONNECTION_OK) {
            PGresult* r = PQgetResult(c);
            if (!r) continue;
            const bool synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
            PQclear(r);
            if (synced) break;
        }
    }
    if (PQexitPipelineMode(c) != 1) broken_ = true;
}

std::vector<Result> Connection::pipeline(const std::vector<Call>& calls) {
    PGconn* c = conn_.get();
    if (PQenterPipelineMode(c) != 1) fail("PostgreSQL cannot enter pipeline mode");
    for (const auto& call : calls) {
        static const Params kNone;
        const Params& p = call.params ? *call.params : kNone;
        std::string n(call.statement);
        auto values = p.values();
        if (PQsendQueryPrepared(c, n.c_str(), p.size(), values.data(), p.lengths(), p.formats(),
                                1) != 1) {
            abandon_pipeline();
            fail("PostgreSQL cannot send a statement");
        }
    }
    if (PQpipelineSync(c) != 1) {
        abandon_pipeline();
        fail("PostgreSQL cannot send a pipeline");
    }
    std::vector<Result> out;
    out.reserve(calls.size());
    PGresult* first_error = nullptr;
    // Each statement's result is followed by a null; the pipeline ends with PGRES_PIPELINE_SYNC.
    for (;;) {
        PGresult* r = PQgetResult(c);
        if (!r) {
            if (PQstatus(c) != CONNECTION_OK) break;
            continue;
        }
        auto st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            out.emplace_back(r);
        } else if (st == PGRES_PIPELINE_ABORTED) {
            PQclear(r);
        } else if (!first_error) {
            first_error = r;
        } else {
            PQclear(r);
        }
        if (PQstatus(c) != CONNECTION_OK) break;
    }
    PQexitPipelineMode(c);
    if (first_error) fail("PostgreSQL statement failed", first_error);
    if (PQstatus(c) != CONNECTION_OK) fail("PostgreSQL connection lost");
    return out;
}

}  // namespace errand::broker::pg
