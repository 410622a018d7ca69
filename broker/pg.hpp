// A small RAII wrapper over libpq for the PostgreSQL engine (the SQLite one has its own in
// store_sqlite.cpp): a connection, prepared statements, parameters and results in binary form
// (bytea in hex text would double a 1 MiB payload), and pipelines that send several statements
// in one round trip. Errors are StoreError with PostgreSQL's message and SQLSTATE.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store.hpp"

namespace errand::broker::pg {

// A PostgreSQL error: `sqlstate` is the five-character code ("23505" unique violation, "40001"
// serialization failure, "" when the connection itself failed).
class Error : public StoreError {
  public:
    Error(const std::string& message, std::string sqlstate, bool disk)
        : StoreError(message, disk), sqlstate_(std::move(sqlstate)) {}
    const std::string& sqlstate() const { return sqlstate_; }

  private:
    std::string sqlstate_;
};

// The parameters of one statement. Integers and bytes travel in binary; text as text.
class Params {
  public:
    Params& i64(std::int64_t v);
    Params& i32(std::int32_t v);
    Params& boolean(bool v);
    Params& text(std::string_view v);
    Params& bytes(std::string_view v);
    Params& null();
    template <class T>
    Params& opt_i64(const std::optional<T>& v) {
        return v ? i64(static_cast<std::int64_t>(*v)) : null();
    }
    Params& opt_text(const std::optional<std::string>& v) { return v ? text(*v) : null(); }
    Params& opt_bytes(const std::optional<std::string>& v) { return v ? bytes(*v) : null(); }

    // One-dimensional arrays in binary form (for `$1::bigint[]`, `::text[]`, `::bytea[]`, used
    // with unnest() to write many rows in one statement); nullopt elements are NULL.
    Params& i64_array(const std::vector<std::optional<std::int64_t>>& v);
    Params& text_array(const std::vector<std::optional<std::string_view>>& v);
    Params& bytes_array(const std::vector<std::optional<std::string_view>>& v);

    int size() const { return static_cast<int>(lengths_.size()); }
    // libpq's view; valid while this object lives and is not changed.
    std::vector<const char*> values() const;
    const int* lengths() const { return lengths_.data(); }
    const int* formats() const { return formats_.data(); }

  private:
    Params& add(std::string bytes, int format, bool is_null = false);
    std::vector<std::string> data_;
    std::vector<bool> null_;
    std::vector<int> lengths_;
    std::vector<int> formats_;
};

// One result, in binary form. Column accessors throw Error on a type or size mismatch.
class Result {
  public:
    Result() = default;
    explicit Result(PGresult* r) : r_(r, &PQclear) {}

    int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
    int columns() const { return r_ ? PQnfields(r_.get()) : 0; }
    int affected() const;  // rows changed by INSERT/UPDATE/DELETE
    bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
    std::int64_t i64(int row, int col) const;  // int8, int4 or int2
    bool boolean(int row, int col) const;
    std::string text(int row, int col) const;  // text, varchar, bytea: the raw bytes
    std::optional<std::int64_t> opt_i64(int row, int col) const;
    std::optional<std::string> opt_text(int row, int col) const;
    PGresult* get() const { return r_.get(); }

  private:
    std::string_view raw(int row, int col) const;
    std::unique_ptr<PGresult, decltype(&PQclear)> r_{nullptr, &PQclear};
};

// A prepared statement to run in a pipeline; its parameters are the caller's (a payload is not
// copied), and must live until pipeline() returns.
struct Call {
    std::string_view statement;      // name given to Connection::prepare
    const Params* params = nullptr;  // none
};

class Connection {
  public:
    // `conninfo`: a postgresql:// URI or key=value string; libpq's PG* environment variables and
    // service file fill in what it leaves out.
    explicit Connection(const std::string& conninfo);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Runs SQL text with no parameters (DDL, BEGIN/COMMIT); several statements allowed.
    void exec(const std::string& sql);
    // Runs SQL text with no parameters and returns its rows (binary).
    Result query(const std::string& sql);
    // Prepares `sql` under `name` (once per connection).
    void prepare(const std::string& name, const std::string& sql, int params);
    // Runs a prepared statement and waits for its result.
    Result run(std::string_view name, const Params& params = {});
    // Runs the calls in one round trip (pipeline mode) inside one transaction's worth of
    // statements sent together; the results in order. The first failure throws, and the
    // statements after it are not run.
    std::vector<Result> pipeline(const std::vector<Call>& calls);

    // The connection's socket, for polling in an event loop (-1 when it is down).
    int socket() const { return PQsocket(conn_.get()); }
    // False once the server or the network dropped the connection.
    bool ok() const { return !broken_ && PQstatus(conn_.get()) == CONNECTION_OK; }
    // Connects again with the same parameters (prepared statements and LISTENs are gone);
    // false when the server cannot be reached.
    bool reset();
    // Reads what the server sent without waiting, and returns the notifications sent by other
    // sessions (LISTEN) as (channel, payload), oldest first.
    std::vector<std::pair<std::string, std::string>> notifications();
    PGconn* get() const { return conn_.get(); }

  private:
    [[noreturn]] void fail(const char* what, PGresult* r = nullptr) const;
    void abandon_pipeline();
    bool broken_ = false;  // stuck in pipeline mode: down until reset()
    Result check(PGresult* r, const char* what) const;
    std::unique_ptr<PGconn, decltype(&PQfinish)> conn_{nullptr, &PQfinish};
};

}  // namespace errand::broker::pg
