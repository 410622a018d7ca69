// MessagePack reader/writer and the encoders/decoders of every protocol message.
#include "errand/codec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>

namespace errand {
namespace {

using msgpack::type::object_type;

[[noreturn]] void bad(const std::string& msg) {
    throw ProtocolError(ErrorCode::bad_request, msg);
}

std::string_view key_of(const msgpack::object& o) {
    if (o.type != object_type::STR) return {};
    return {o.via.str.ptr, o.via.str.size};
}

const char* type_name(const msgpack::object& o) {
    switch (o.type) {
        case object_type::NIL:
            return "nil";
        case object_type::BOOLEAN:
            return "bool";
        case object_type::POSITIVE_INTEGER:
        case object_type::NEGATIVE_INTEGER:
            return "integer";
        case object_type::FLOAT32:
        case object_type::FLOAT64:
            return "float";
        case object_type::STR:
            return "str";
        case object_type::BIN:
            return "bin";
        case object_type::ARRAY:
            return "array";
        case object_type::MAP:
            return "map";
        default:
            return "ext";
    }
}

[[noreturn]] void wrong_type(std::string_view key, const char* want, const msgpack::object& o) {
    bad(fmt::format("field '{}' must be {}, got {}", key, want, type_name(o)));
}

std::uint64_t as_u64(std::string_view key, const msgpack::object& o) {
    if (o.type != object_type::POSITIVE_INTEGER) wrong_type(key, "a non-negative integer", o);
    return o.via.u64;
}

std::int64_t as_i64(std::string_view key, const msgpack::object& o) {
    if (o.type == object_type::NEGATIVE_INTEGER) return o.via.i64;
    if (o.type == object_type::POSITIVE_INTEGER && o.via.u64 <= INT64_MAX)
        return static_cast<std::int64_t>(o.via.u64);
    wrong_type(key, "an integer", o);
}

std::string as_str(std::string_view key, const msgpack::object& o, std::size_t max_len) {
    if (o.type != object_type::STR) wrong_type(key, "a str", o);
    if (o.via.str.size > max_len)
        bad(fmt::format("field '{}' is longer than {} bytes", key, max_len));
    return {o.via.str.ptr, o.via.str.size};
}

std::string as_bytes(std::string_view key, const msgpack::object& o, std::size_t max_len) {
    const char* p = nullptr;
    std::size_t n = 0;
    if (o.type == object_type::BIN) {
        p = o.via.bin.ptr;
        n = o.via.bin.size;
    } else if (o.type == object_type::STR) {
        p = o.via.str.ptr;
        n = o.via.str.size;
    } else {
        wrong_type(key, "bin", o);
    }
    if (n > max_len)
        throw ProtocolError(
            ErrorCode::too_large,
            fmt::format("field '{}' is {} bytes, over the limit of {} bytes", key, n, max_len));
    return {p, n};
}

std::uint32_t as_u32(std::string_view key, const msgpack::object& o) {
    std::uint64_t v = as_u64(key, o);
    if (v > UINT32_MAX) bad(fmt::format("field '{}' is out of range", key));
    return static_cast<std::uint32_t>(v);
}

// Protection against hostile bodies: bounded nesting and element counts.
const msgpack::unpack_limit kUnpackLimit(/*array=*/1 << 20, /*map=*/4096, /*str=*/1u << 30,
                                         /*bin=*/1u << 30, /*ext=*/0, /*depth=*/8);

msgpack::object_handle parse_map(std::string_view bytes) {
    msgpack::object_handle h;
    std::size_t off = 0;
    try {
        // msgpack's default zone starts with an 8 KiB chunk: for the small messages of the hot
        // path (DONE, ACK, one-job SUBMIT) that was a malloc outside the allocator's per-thread
        // cache, and malloc/free were ~13 % of the broker. Small bodies get a small first chunk.
        auto zone = std::make_unique<msgpack::zone>(
            std::clamp<std::size_t>(bytes.size() * 4, 512, MSGPACK_ZONE_CHUNK_SIZE));
        bool referenced = false;
        auto obj = msgpack::unpack(*zone, bytes.data(), bytes.size(), off, referenced, nullptr,
                                   nullptr, kUnpackLimit);
        h = msgpack::object_handle(obj, std::move(zone));
    } catch (const std::exception& e) {
        throw ProtocolError(ErrorCode::bad_frame,
                            fmt::format("body is not valid MessagePack ({})", e.what()));
    }
    if (off != bytes.size())
        throw ProtocolError(ErrorCode::bad_frame, "body has trailing bytes after the map");
    if (h.get().type != object_type::MAP)
        throw ProtocolError(ErrorCode::bad_frame,
                            fmt::format("body must be a map, got {}", type_name(h.get())));
    return h;
}

void pack_str(msgpack::packer<msgpack::sbuffer>& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

}  // namespace

// ---- Reader -------------------------------------------------------------------------------

Reader::Reader(const msgpack::object& map) : map_(map) {
    if (map.type != object_type::MAP) bad(fmt::format("expected a map, got {}", type_name(map)));
}

const msgpack::object* Reader::find(std::string_view key) const {
    for (std::uint32_t i = 0; i < map_.via.map.size; ++i) {
        const auto& kv = map_.via.map.ptr[i];
        if (key_of(kv.key) == key) return kv.val.type == object_type::NIL ? nullptr : &kv.val;
    }
    return nullptr;
}

const msgpack::object& Reader::need(std::string_view key) const {
    const auto* o = find(key);
    if (!o) bad(fmt::format("missing field '{}'", key));
    return *o;
}

std::optional<std::uint64_t> Reader::peek_u64(std::string_view key) const {
    const auto* o = find(key);
    if (!o || o->type != object_type::POSITIVE_INTEGER) return std::nullopt;
    return o->via.u64;
}

std::uint64_t Reader::u64(std::string_view key) const {
    return as_u64(key, need(key));
}
std::optional<std::uint64_t> Reader::opt_u64(std::string_view key) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return as_u64(key, *o);
}
double Reader::f64(std::string_view key) const {
    const auto& o = need(key);
    switch (o.type) {
        case msgpack::type::FLOAT32:
        case msgpack::type::FLOAT64:
            return o.via.f64;
        case msgpack::type::POSITIVE_INTEGER:
            return static_cast<double>(o.via.u64);
        case msgpack::type::NEGATIVE_INTEGER:
            return static_cast<double>(o.via.i64);
        default:
            bad(fmt::format("field '{}' must be a number, got {}", key, type_name(o)));
    }
}
std::int64_t Reader::i64(std::string_view key) const {
    return as_i64(key, need(key));
}
std::optional<std::int64_t> Reader::opt_i64(std::string_view key) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return as_i64(key, *o);
}
std::string Reader::str(std::string_view key, std::size_t max_len) const {
    return as_str(key, need(key), max_len);
}
std::optional<std::string> Reader::opt_str(std::string_view key, std::size_t max_len) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return as_str(key, *o, max_len);
}
std::string Reader::bin(std::string_view key, std::size_t max_len) const {
    return as_bytes(key, need(key), max_len);
}
std::optional<std::string> Reader::opt_bin(std::string_view key, std::size_t max_len) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return as_bytes(key, *o, max_len);
}
std::optional<bool> Reader::opt_bool(std::string_view key) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    if (o->type != object_type::BOOLEAN) wrong_type(key, "a bool", *o);
    return o->via.boolean;
}
Reader Reader::map(std::string_view key) const {
    const auto& o = need(key);
    if (o.type != object_type::MAP) wrong_type(key, "a map", o);
    return Reader(o);
}

const msgpack::object_array& Reader::array(std::string_view key) const {
    const auto& o = need(key);
    if (o.type != object_type::ARRAY) wrong_type(key, "an array", o);
    return o.via.array;
}
std::vector<std::string> Reader::str_array(std::string_view key, std::size_t max_items,
                                           std::size_t max_len) const {
    const auto& a = array(key);
    if (a.size > max_items) bad(fmt::format("field '{}' has more than {} items", key, max_items));
    std::vector<std::string> out;
    out.reserve(a.size);
    for (std::uint32_t i = 0; i < a.size; ++i)
        out.push_back(as_str(key, a.ptr[i], max_len));
    return out;
}
std::optional<std::vector<std::string>> Reader::opt_str_array(std::string_view key,
                                                              std::size_t max_items,
                                                              std::size_t max_len) const {
    if (!has(key)) return std::nullopt;
    return str_array(key, max_items, max_len);
}
std::vector<std::uint64_t> Reader::u64_array(std::string_view key) const {
    const auto& a = array(key);
    std::vector<std::uint64_t> out;
    out.reserve(a.size);
    for (std::uint32_t i = 0; i < a.size; ++i)
        out.push_back(as_u64(key, a.ptr[i]));
    return out;
}

Body::Body(std::string_view bytes) : handle_(parse_map(bytes)), reader_(handle_.get()) {}

// ---- Writer -------------------------------------------------------------------------------

// The buffer starts small (msgpack's default is 8 KiB) and doubles as needed.
Writer::Writer(std::size_t fields) : buf_(256), pk_(&buf_) {
    pk_.pack_map(static_cast<std::uint32_t>(fields));
}
Writer& Writer::key(std::string_view k) {
    pack_str(pk_, k);
    return *this;
}
Writer& Writer::u64(std::string_view k, std::uint64_t v) {
    key(k);
    pk_.pack_uint64(v);
    return *this;
}
Writer& Writer::i64(std::string_view k, std::int64_t v) {
    key(k);
    pk_.pack_int64(v);
    return *this;
}
Writer& Writer::str(std::string_view k, std::string_view v) {
    key(k);
    pack_str(pk_, v);
    return *this;
}
Writer& Writer::bin(std::string_view k, std::string_view v) {
    key(k);
    pk_.pack_bin(static_cast<std::uint32_t>(v.size()));
    pk_.pack_bin_body(v.data(), static_cast<std::uint32_t>(v.size()));
    return *this;
}
Writer& Writer::boolean(std::string_view k, bool v) {
    key(k);
    if (v)
        pk_.pack_true();
    else
        pk_.pack_false();
    return *this;
}
Writer& Writer::nil(std::string_view k) {
    key(k);
    pk_.pack_nil();
    return *this;
}
Writer& Writer::opt_i64(std::string_view k, const std::optional<std::int64_t>& v) {
    return v ? i64(k, *v) : nil(k);
}
Writer& Writer::opt_str(std::string_view k, const std::optional<std::string>& v) {
    return v ? str(k, *v) : nil(k);
}
Writer& Writer::opt_bin(std::string_view k, const std::optional<std::string>& v) {
    return v ? bin(k, *v) : nil(k);
}
Writer& Writer::str_array(std::string_view k, const std::vector<std::string>& v) {
    key(k);
    pk_.pack_array(static_cast<std::uint32_t>(v.size()));
    for (const auto& s : v)
        pack_str(pk_, s);
    return *this;
}
Writer& Writer::opt_str_array(std::string_view k,
                              const std::optional<std::vector<std::string>>& v) {
    return v ? str_array(k, *v) : nil(k);
}
Writer& Writer::u64_array(std::string_view k, const std::vector<std::uint64_t>& v) {
    key(k);
    pk_.pack_array(static_cast<std::uint32_t>(v.size()));
    for (auto x : v)
        pk_.pack_uint64(x);
    return *this;
}
Writer& Writer::bool_array(std::string_view k, const std::vector<bool>& v) {
    key(k);
    pk_.pack_array(static_cast<std::uint32_t>(v.size()));
    for (bool x : v) {
        if (x)
            pk_.pack_true();
        else
            pk_.pack_false();
    }
    return *this;
}

// ---- Messages -----------------------------------------------------------------------------

namespace {

void pack_opt_ms(msgpack::packer<msgpack::sbuffer>& pk, std::string_view key,
                 const std::optional<Millis>& v) {
    if (!v) return;
    pack_str(pk, key);
    pk.pack_int64(*v);
}

void pack_job_spec(msgpack::packer<msgpack::sbuffer>& pk, const JobSpec& j) {
    std::uint32_t n = 3 + (j.argv ? 1 : 0) + (j.token ? 1 : 0) + (j.priority != 0 ? 1 : 0) +
                      (j.run_at ? 1 : 0) + (j.delay_ms ? 1 : 0) + (j.timeout_ms ? 1 : 0) +
                      (j.backoff_ms ? 1 : 0) + (j.backoff_cap_ms ? 1 : 0) + (j.unique ? 1 : 0);
    pk.pack_map(n);
    pack_str(pk, "queue");
    pack_str(pk, j.queue);
    pack_str(pk, "payload");
    pk.pack_bin(static_cast<std::uint32_t>(j.payload.size()));
    pk.pack_bin_body(j.payload.data(), static_cast<std::uint32_t>(j.payload.size()));
    pack_str(pk, "max_attempts");
    pk.pack_uint32(j.max_attempts);
    if (j.argv) {
        pack_str(pk, "argv");
        pk.pack_array(static_cast<std::uint32_t>(j.argv->size()));
        for (const auto& a : *j.argv)
            pack_str(pk, a);
    }
    if (j.token) {
        pack_str(pk, "token");
        pack_str(pk, *j.token);
    }
    if (j.priority != 0) {
        pack_str(pk, "priority");
        pk.pack_int32(j.priority);
    }
    pack_opt_ms(pk, "run_at", j.run_at);
    pack_opt_ms(pk, "delay_ms", j.delay_ms);
    pack_opt_ms(pk, "timeout_ms", j.timeout_ms);
    pack_opt_ms(pk, "backoff_ms", j.backoff_ms);
    pack_opt_ms(pk, "backoff_cap_ms", j.backoff_cap_ms);
    if (j.unique) {
        pack_str(pk, "unique");
        pack_str(pk, *j.unique);
    }
}

void pack_job_info(Writer& w, const JobInfo& j) {
    w.u64("id", j.id)
        .str("queue", j.queue)
        .str("state", to_string(j.state))
        .u64("attempts", j.attempts)
        .u64("max_attempts", j.max_attempts)
        .opt_i64("exit_code", j.exit_code)
        .opt_bin("result", j.result)
        .opt_str("error", j.error)
        .opt_str("worker", j.worker)
        .opt_str_array("argv", j.argv)
        .u64("payload_size", j.payload_size)
        .i64("created_at", j.created_at)
        .opt_i64("started_at", j.started_at)
        .opt_i64("finished_at", j.finished_at)
        .opt_i64("run_at", j.run_at)
        .i64("priority", j.priority)
        .opt_i64("timeout_ms", j.timeout_ms)
        .opt_str("unique", j.unique)
        .opt_i64("progress", j.progress ? std::optional<std::int64_t>(*j.progress) : std::nullopt)
        .opt_str("progress_message", j.progress_message);
}
constexpr std::size_t kJobInfoFields = 20;

// A duration field: non-negative, at most `max`.
std::optional<Millis> opt_ms(const Reader& r, std::string_view key, Millis max) {
    auto v = r.opt_u64(key);
    if (!v) return std::nullopt;
    if (*v > static_cast<std::uint64_t>(max))
        bad(fmt::format("field '{}' must be at most {} ms", key, max));
    return static_cast<Millis>(*v);
}

std::vector<std::string> validated_argv(const Reader& r) {
    auto argv = r.str_array("argv", limits::kMaxArgv, limits::kMaxArgvBytes);
    if (argv.empty()) bad("field 'argv' must not be empty");
    std::size_t total = 0;
    for (const auto& a : argv)
        total += a.size();
    if (total > limits::kMaxArgvBytes)
        bad(fmt::format("field 'argv' is longer than {} bytes in all", limits::kMaxArgvBytes));
    return argv;
}

std::string checked_queue(const Reader& r) {
    auto q = r.str("queue", limits::kMaxQueueName * 4);
    if (!valid_queue_name(q))
        bad(fmt::format("invalid queue name '{}': use 1-{} of A-Z a-z 0-9 _ . -", q,
                        limits::kMaxQueueName));
    return q;
}

}  // namespace

std::string encode(const SubmitRequest& m) {
    Writer w(m.wait_ms ? 3 : 2);
    w.u64("req", m.req).key("jobs");
    w.packer().pack_array(static_cast<std::uint32_t>(m.jobs.size()));
    for (const auto& j : m.jobs)
        pack_job_spec(w.packer(), j);
    if (m.wait_ms) w.u64("wait_ms", static_cast<std::uint64_t>(*m.wait_ms));
    return w.take();
}

SubmitRequest decode_submit(const Reader& r, const DecodeLimits& lim) {
    SubmitRequest m;
    m.req = r.u64("req");
    const auto& jobs = r.array("jobs");
    if (jobs.size == 0) bad("field 'jobs' must hold at least one job");
    if (jobs.size > lim.max_batch)
        throw ProtocolError(
            ErrorCode::too_large,
            fmt::format("{} jobs in one SUBMIT, over the limit of {}", jobs.size, lim.max_batch));
    m.jobs.reserve(jobs.size);
    for (std::uint32_t i = 0; i < jobs.size; ++i) {
        Reader j(jobs.ptr[i]);
        JobSpec s;
        s.queue = checked_queue(j);
        s.payload = j.opt_bin("payload", lim.max_payload).value_or("");
        if (j.has("argv")) s.argv = validated_argv(j);
        if (auto ma = j.opt_u64("max_attempts")) {
            if (*ma < 1 || *ma > limits::kMaxMaxAttempts)
                bad(fmt::format("max_attempts must be 1-{}", limits::kMaxMaxAttempts));
            s.max_attempts = static_cast<std::uint32_t>(*ma);
        }
        if (auto t = j.opt_str("token", limits::kMaxToken)) {
            if (t->empty()) bad("field 'token' must not be empty");
            s.token = std::move(*t);
        }
        if (auto p = j.opt_i64("priority")) {
            if (*p < limits::kMinPriority || *p > limits::kMaxPriority)
                bad(fmt::format("priority must be {} to {}", limits::kMinPriority,
                                limits::kMaxPriority));
            s.priority = static_cast<std::int32_t>(*p);
        }
        s.run_at = j.opt_i64("run_at");
        if (s.run_at && (*s.run_at < 0 || *s.run_at > limits::kMaxRunAt))
            bad(fmt::format("run_at must be 0 to {} (ms since the Unix epoch)", limits::kMaxRunAt));
        s.delay_ms = opt_ms(j, "delay_ms", limits::kMaxDelayMs);
        if (s.run_at && s.delay_ms) bad("give either 'run_at' or 'delay_ms', not both");
        s.timeout_ms = opt_ms(j, "timeout_ms", limits::kMaxTimeoutMs);
        if (s.timeout_ms && *s.timeout_ms == 0) bad("field 'timeout_ms' must be positive");
        s.backoff_ms = opt_ms(j, "backoff_ms", limits::kMaxDelayMs);
        s.backoff_cap_ms = opt_ms(j, "backoff_cap_ms", limits::kMaxDelayMs);
        if (auto u = j.opt_str("unique", limits::kMaxUniqueKey)) {
            if (u->empty()) bad("field 'unique' must not be empty");
            s.unique = std::move(*u);
        }
        m.jobs.push_back(std::move(s));
    }
    m.wait_ms = opt_ms(r, "wait_ms", limits::kMaxWaitMs);
    if (m.wait_ms && m.jobs.size() != 1) bad("'wait_ms' needs exactly one job in 'jobs'");
    return m;
}

std::string encode(const SubmitReply& m) {
    return Writer(3)
        .u64("req", m.req)
        .u64_array("ids", m.ids)
        .bool_array("duplicate", m.duplicate)
        .take();
}

SubmitReply decode_submitted(const Reader& r) {
    SubmitReply m;
    m.req = r.u64("req");
    m.ids = r.u64_array("ids");
    const auto& d = r.array("duplicate");
    for (std::uint32_t i = 0; i < d.size; ++i)
        m.duplicate.push_back(d.ptr[i].type == object_type::BOOLEAN && d.ptr[i].via.boolean);
    return m;
}

std::string encode(const IdRequest& m) {
    return Writer(2).u64("req", m.req).u64("id", m.id).take();
}

IdRequest decode_id_request(const Reader& r) {
    return {r.u64("req"), r.u64("id")};
}

std::string encode(const WaitRequest& m) {
    return Writer(3)
        .u64("req", m.req)
        .u64("id", m.id)
        .u64("timeout_ms", static_cast<std::uint64_t>(m.timeout_ms))
        .take();
}

WaitRequest decode_wait(const Reader& r) {
    WaitRequest m;
    m.req = r.u64("req");
    m.id = r.u64("id");
    if (auto t = r.opt_u64("timeout_ms")) {
        if (*t > static_cast<std::uint64_t>(limits::kMaxWaitMs))
            bad(fmt::format("timeout_ms must be at most {}", limits::kMaxWaitMs));
        m.timeout_ms = static_cast<Millis>(*t);
    }
    return m;
}

std::string encode(const ListRequest& m) {
    std::size_t n = 2 + (m.queue ? 1 : 0) + (m.state ? 1 : 0);
    Writer w(n);
    w.u64("req", m.req).u64("limit", m.limit);
    if (m.queue) w.str("queue", *m.queue);
    if (m.state) w.str("state", to_string(*m.state));
    return w.take();
}

ListRequest decode_list(const Reader& r) {
    ListRequest m;
    m.req = r.u64("req");
    m.queue = r.opt_str("queue", limits::kMaxQueueName * 4);
    if (m.queue && !valid_queue_name(*m.queue))
        bad(fmt::format("invalid queue name '{}': use 1-{} of A-Z a-z 0-9 _ . -", *m.queue,
                        limits::kMaxQueueName));
    if (auto s = r.opt_str("state", 32)) {
        m.state = parse_job_state(*s);
        if (!m.state) bad(fmt::format("unknown state '{}'", *s));
    }
    if (auto l = r.opt_u64("limit")) {
        if (*l < 1 || *l > limits::kMaxListLimit)
            bad(fmt::format("limit must be 1-{}", limits::kMaxListLimit));
        m.limit = static_cast<std::uint32_t>(*l);
    }
    return m;
}

std::string encode_job(const JobInfo& job, std::uint64_t req) {
    Writer w(2);
    w.u64("req", req).key("job");
    w.packer().pack_map(kJobInfoFields);  // the nested job map is written through the same Writer
    pack_job_info(w, job);
    return w.take();
}

std::string encode_jobs(const std::vector<JobInfo>& jobs, std::uint64_t req) {
    Writer w(2);
    w.u64("req", req).key("jobs");
    w.packer().pack_array(static_cast<std::uint32_t>(jobs.size()));
    for (const auto& j : jobs) {
        w.packer().pack_map(kJobInfoFields);
        pack_job_info(w, j);
    }
    return w.take();
}

JobInfo decode_job_info(const Reader& r) {
    JobInfo j;
    j.id = r.u64("id");
    j.queue = r.str("queue", 1024);
    auto st = r.str("state", 32);
    auto parsed = parse_job_state(st);
    if (!parsed) bad(fmt::format("unknown state '{}'", st));
    j.state = *parsed;
    j.attempts = static_cast<std::uint32_t>(r.u64("attempts"));
    j.max_attempts = static_cast<std::uint32_t>(r.u64("max_attempts"));
    j.exit_code = r.opt_i64("exit_code");
    j.result = r.opt_bin("result", SIZE_MAX);
    j.error = r.opt_str("error", SIZE_MAX);
    j.worker = r.opt_str("worker", SIZE_MAX);
    j.argv = r.opt_str_array("argv", SIZE_MAX, SIZE_MAX);
    j.payload_size = r.opt_u64("payload_size").value_or(0);
    j.created_at = r.i64("created_at");
    j.started_at = r.opt_i64("started_at");
    j.finished_at = r.opt_i64("finished_at");
    j.run_at = r.opt_i64("run_at");
    j.priority = static_cast<std::int32_t>(r.opt_i64("priority").value_or(0));
    j.timeout_ms = r.opt_i64("timeout_ms");
    j.unique = r.opt_str("unique", SIZE_MAX);
    if (auto p = r.opt_u64("progress")) j.progress = static_cast<std::uint32_t>(*p);
    j.progress_message = r.opt_str("progress_message", SIZE_MAX);
    return j;
}

std::string encode(const RegisterRequest& m) {
    Writer w(11);
    w.u64("req", m.req).u64("prefetch", m.prefetch).key("weights");
    w.packer().pack_array(static_cast<std::uint32_t>(m.weights.size()));
    for (auto x : m.weights)
        w.packer().pack_uint32(x);
    w.boolean("commands", m.commands)
        .str("instance", m.instance)
        .str("name", m.name)
        .str("host", m.host)
        .u64("pid", m.pid)
        .str_array("queues", m.queues)
        .u64("concurrency", m.concurrency)
        .key("held");
    w.packer().pack_array(static_cast<std::uint32_t>(m.held.size()));
    for (const auto& h : m.held) {
        w.packer().pack_array(2);
        w.packer().pack_uint64(h.id);
        w.packer().pack_uint32(h.attempt);
    }
    return w.take();
}

RegisterRequest decode_register(const Reader& r) {
    RegisterRequest m;
    m.req = r.u64("req");
    m.instance = r.str("instance", 128);
    if (m.instance.empty()) bad("field 'instance' must not be empty");
    m.name = r.str("name", 256);
    m.host = r.opt_str("host", 256).value_or("");
    m.pid = r.opt_u64("pid").value_or(0);
    m.queues = r.str_array("queues", 256, limits::kMaxQueueName * 4);
    if (m.queues.empty()) bad("field 'queues' must name at least one queue");
    for (const auto& q : m.queues)
        if (!valid_queue_name(q)) bad(fmt::format("invalid queue name '{}'", q));
    auto c = r.u64("concurrency");
    if (c < 1 || c > limits::kMaxConcurrency)
        bad(fmt::format("concurrency must be 1-{}", limits::kMaxConcurrency));
    m.concurrency = static_cast<std::uint32_t>(c);
    m.commands = r.opt_bool("commands").value_or(false);
    auto prefetch = r.opt_u64("prefetch").value_or(0);
    if (prefetch > limits::kMaxPrefetch)
        bad(fmt::format("prefetch must be at most {}", limits::kMaxPrefetch));
    m.prefetch = static_cast<std::uint32_t>(prefetch);
    if (r.has("weights")) {
        auto weights = r.u64_array("weights");
        if (!weights.empty() && weights.size() != m.queues.size())
            bad("field 'weights' must have one weight per queue");
        for (auto x : weights) {
            if (x < 1 || x > limits::kMaxQueueWeight)
                bad(fmt::format("queue weights must be 1-{}", limits::kMaxQueueWeight));
            m.weights.push_back(static_cast<std::uint32_t>(x));
        }
    }
    if (r.has("held")) {
        const auto& held = r.array("held");
        for (std::uint32_t i = 0; i < held.size; ++i) {
            const auto& pair = held.ptr[i];
            if (pair.type != object_type::ARRAY || pair.via.array.size != 2)
                bad("each 'held' entry must be [id, attempt]");
            m.held.push_back(
                {as_u64("held", pair.via.array.ptr[0]), as_u32("held", pair.via.array.ptr[1])});
        }
    }
    return m;
}

std::string encode(const RegisteredReply& m) {
    return Writer(5)
        .u64("req", m.req)
        .u64("heartbeat_ms", static_cast<std::uint64_t>(m.heartbeat_ms))
        .u64("expiry_ms", static_cast<std::uint64_t>(m.expiry_ms))
        .u64_array("held_ok", m.held_ok)
        .u64_array("held_rejected", m.held_rejected)
        .take();
}

RegisteredReply decode_registered(const Reader& r) {
    RegisteredReply m;
    m.req = r.u64("req");
    m.heartbeat_ms = static_cast<Millis>(r.u64("heartbeat_ms"));
    m.expiry_ms = static_cast<Millis>(r.u64("expiry_ms"));
    m.held_ok = r.u64_array("held_ok");
    m.held_rejected = r.u64_array("held_rejected");
    return m;
}

std::string encode_credit(std::uint32_t n) {
    return Writer(1).u64("n", n).take();
}

std::uint32_t decode_credit(const Reader& r) {
    auto n = r.u64("n");
    if (n > limits::kMaxConcurrency)
        bad(fmt::format("credit must be at most {}", limits::kMaxConcurrency));
    return static_cast<std::uint32_t>(n);
}

std::string encode(const Dispatch& m) {
    return Writer(7)
        .u64("id", m.id)
        .str("queue", m.queue)
        .u64("attempt", m.attempt)
        .bin("payload", m.payload)
        .opt_str_array("argv", m.argv)
        .u64("seq", m.seq)
        .opt_i64("timeout_ms", m.timeout_ms)
        .take();
}

Dispatch decode_dispatch(const Reader& r) {
    Dispatch m;
    m.id = r.u64("id");
    m.queue = r.str("queue", 1024);
    auto attempt = r.u64("attempt");
    if (attempt > UINT32_MAX) bad("attempt is out of range");
    m.attempt = static_cast<std::uint32_t>(attempt);
    m.payload = r.opt_bin("payload", SIZE_MAX).value_or("");
    m.argv = r.opt_str_array("argv", SIZE_MAX, SIZE_MAX);
    m.seq = r.opt_u64("seq").value_or(0);
    m.timeout_ms = r.opt_i64("timeout_ms");
    return m;
}

std::string encode(const WorkerHeartbeat& m) {
    return Writer(2).u64("seq", m.seq).u64_array("running", m.running).take();
}

WorkerHeartbeat decode_worker_heartbeat(const Reader& r) {
    WorkerHeartbeat m;
    m.seq = r.opt_u64("seq").value_or(0);
    if (r.has("running")) m.running = r.u64_array("running");
    return m;
}

std::string encode(const JobResult& m) {
    if (m.ok) {
        return Writer(5)
            .boolean("ok", true)
            .u64("id", m.id)
            .u64("attempt", m.attempt)
            .bin("result", m.result.value_or(""))
            .i64("exit_code", m.exit_code)
            .take();
    }
    return Writer(7)
        .boolean("ok", false)
        .u64("id", m.id)
        .u64("attempt", m.attempt)
        .str("error", m.error)
        .i64("exit_code", m.exit_code)
        .opt_bin("result", m.result)
        .boolean("permanent", m.permanent)
        .take();
}

JobResult decode_result(const Reader& r, bool ok, const DecodeLimits& lim) {
    JobResult m;
    m.ok = ok;
    m.id = r.u64("id");
    auto attempt = r.u64("attempt");
    if (attempt > UINT32_MAX) bad("attempt is out of range");
    m.attempt = static_cast<std::uint32_t>(attempt);
    if (ok) {
        m.result = r.bin("result", lim.max_result);
        m.exit_code = r.opt_i64("exit_code").value_or(0);
    } else {
        m.error = r.str("error", limits::kMaxError);
        m.exit_code = r.opt_i64("exit_code").value_or(-1);
        m.result = r.opt_bin("result", lim.max_result);
        m.permanent = r.opt_bool("permanent").value_or(false);
    }
    return m;
}

std::string encode(const Ack& m) {
    return Writer(2).u64("id", m.id).u64("attempt", m.attempt).take();
}

Ack decode_ack(const Reader& r) {
    return {r.u64("id"), static_cast<std::uint32_t>(r.u64("attempt"))};
}

std::string encode_results(const std::vector<std::string_view>& bodies) {
    Writer w(1);
    w.key("results");
    w.packer().pack_array(static_cast<std::uint32_t>(bodies.size()));
    std::string out = w.take();
    for (std::string_view b : bodies)
        out.append(b);  // each body is one complete MessagePack map
    return out;
}

std::vector<JobResult> decode_results(const Reader& r, const DecodeLimits& lim) {
    const auto& items = r.array("results");
    if (items.size == 0) bad("field 'results' must hold at least one result");
    if (items.size > lim.max_batch)
        throw ProtocolError(ErrorCode::too_large,
                            fmt::format("{} results in one RESULTS, over the limit of {}",
                                        items.size, lim.max_batch));
    std::vector<JobResult> out;
    out.reserve(items.size);
    for (std::uint32_t i = 0; i < items.size; ++i) {
        Reader item(items.ptr[i]);
        auto ok = item.opt_bool("ok");
        if (!ok) bad(fmt::format("result {} has no boolean 'ok'", i));
        out.push_back(decode_result(item, *ok, lim));
    }
    return out;
}

std::string encode_acks(const std::vector<Ack>& acks) {
    std::vector<std::uint64_t> ids, attempts;
    for (const auto& a : acks) {
        ids.push_back(a.id);
        attempts.push_back(a.attempt);
    }
    return Writer(2).u64_array("ids", ids).u64_array("attempts", attempts).take();
}

std::vector<Ack> decode_acks(const Reader& r) {
    auto ids = r.u64_array("ids");
    auto attempts = r.u64_array("attempts");
    if (ids.size() != attempts.size()) bad("'ids' and 'attempts' differ in length");
    std::vector<Ack> out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (attempts[i] > UINT32_MAX) bad("attempt is out of range");
        out.push_back({ids[i], static_cast<std::uint32_t>(attempts[i])});
    }
    return out;
}

std::string encode(const ErrorReply& m) {
    std::size_t n = 2 + (m.req ? 1 : 0) + (m.id ? 1 : 0) + (m.attempt ? 1 : 0);
    Writer w(n);
    w.str("code", to_string(m.code)).str("message", m.message);
    if (m.req) w.u64("req", *m.req);
    if (m.id) w.u64("id", *m.id);
    if (m.attempt) w.u64("attempt", *m.attempt);
    return w.take();
}

ErrorReply decode_error(const Reader& r) {
    ErrorReply m;
    m.req = r.opt_u64("req");
    auto code = r.str("code", 64);
    m.code = parse_error_code(code).value_or(ErrorCode::internal);
    m.message = r.opt_str("message", SIZE_MAX).value_or(code);
    m.id = r.opt_u64("id");
    if (auto a = r.opt_u64("attempt")) m.attempt = static_cast<std::uint32_t>(*a);
    return m;
}

std::string encode(const Pong& m) {
    return Writer(3).u64("req", m.req).str("version", m.version).i64("time", m.time).take();
}

Pong decode_pong(const Reader& r) {
    return {r.u64("req"), r.opt_str("version", 64).value_or(""), r.opt_i64("time").value_or(0)};
}

std::string encode(const Progress& m) {
    return Writer(4)
        .u64("id", m.id)
        .u64("attempt", m.attempt)
        .u64("percent", m.percent)
        .str("message", m.message)
        .take();
}

Progress decode_progress(const Reader& r) {
    Progress m;
    m.id = r.u64("id");
    auto attempt = r.u64("attempt");
    if (attempt > UINT32_MAX) bad("attempt is out of range");
    m.attempt = static_cast<std::uint32_t>(attempt);
    auto pct = r.u64("percent");
    if (pct > 100) bad("percent must be 0-100");
    m.percent = static_cast<std::uint32_t>(pct);
    m.message = r.opt_str("message", limits::kMaxProgressMessage).value_or("");
    return m;
}

std::string encode(const Abort& m) {
    return Writer(3).u64("id", m.id).u64("attempt", m.attempt).str("reason", m.reason).take();
}

Abort decode_abort(const Reader& r) {
    return {r.u64("id"), static_cast<std::uint32_t>(r.u64("attempt")),
            r.opt_str("reason", SIZE_MAX).value_or("")};
}

std::string encode(const QueueRequest& m) {
    return Writer(2).u64("req", m.req).str("queue", m.queue).take();
}

QueueRequest decode_queue_request(const Reader& r) {
    QueueRequest m;
    m.req = r.u64("req");
    m.queue = checked_queue(r);
    return m;
}

std::string encode(const RetryRequest& m) {
    std::size_t n = 2 + (m.id ? 1 : 0) + (m.queue ? 1 : 0);
    Writer w(n);
    w.u64("req", m.req).boolean("dead", m.dead);
    if (m.id) w.u64("id", *m.id);
    if (m.queue) w.str("queue", *m.queue);
    return w.take();
}

RetryRequest decode_retry(const Reader& r) {
    RetryRequest m;
    m.req = r.u64("req");
    m.id = r.opt_u64("id");
    m.dead = r.opt_bool("dead").value_or(false);
    if (r.has("queue")) m.queue = checked_queue(r);
    if (m.id.has_value() == m.dead) bad("give either 'id' or 'dead': true");
    if (m.id && m.queue) bad("'queue' goes with 'dead', not with 'id'");
    return m;
}

std::string encode(const PurgeRequest& m) {
    std::size_t n = 2 + (m.queue ? 1 : 0) + (m.older_than_ms ? 1 : 0);
    Writer w(n);
    w.u64("req", m.req).str("state", to_string(m.state));
    if (m.queue) w.str("queue", *m.queue);
    if (m.older_than_ms) w.u64("older_than_ms", static_cast<std::uint64_t>(*m.older_than_ms));
    return w.take();
}

PurgeRequest decode_purge(const Reader& r) {
    PurgeRequest m;
    m.req = r.u64("req");
    auto st = r.str("state", 32);
    auto parsed = parse_job_state(st);
    if (!parsed) bad(fmt::format("unknown state '{}'", st));
    if (!is_terminal(*parsed))
        bad(fmt::format("only finished jobs can be purged (succeeded, dead, cancelled), not {}",
                        st));
    m.state = *parsed;
    if (r.has("queue")) m.queue = checked_queue(r);
    m.older_than_ms = opt_ms(r, "older_than_ms", limits::kMaxDelayMs);
    return m;
}

std::string encode_ids(std::uint64_t req, const std::vector<JobId>& ids) {
    return Writer(2).u64("req", req).u64_array("ids", ids).take();
}

std::vector<JobId> decode_ids(const Reader& r) {
    return r.u64_array("ids");
}

std::string encode_count(std::uint64_t req, std::uint64_t count) {
    return Writer(2).u64("req", req).u64("count", count).take();
}

std::uint64_t decode_count(const Reader& r) {
    return r.u64("count");
}

std::string encode_queues(std::uint64_t req, const std::vector<QueueInfo>& queues) {
    Writer w(2);
    w.u64("req", req).key("queues");
    auto& pk = w.packer();
    pk.pack_array(static_cast<std::uint32_t>(queues.size()));
    for (const auto& q : queues) {
        pk.pack_map(4);
        pack_str(pk, "name");
        pack_str(pk, q.name);
        pack_str(pk, "paused");
        if (q.paused)
            pk.pack_true();
        else
            pk.pack_false();
        pack_str(pk, "counts");
        pk.pack_map(static_cast<std::uint32_t>(q.counts.size()));
        for (const auto& [state, n] : q.counts) {
            pack_str(pk, to_string(state));
            pk.pack_uint64(n);
        }
        pack_str(pk, "oldest_ready_at");
        if (q.oldest_ready_at)
            pk.pack_int64(*q.oldest_ready_at);
        else
            pk.pack_nil();
    }
    return w.take();
}

std::vector<QueueInfo> decode_queues(const Reader& r) {
    std::vector<QueueInfo> out;
    const auto& arr = r.array("queues");
    for (std::uint32_t i = 0; i < arr.size; ++i) {
        Reader q(arr.ptr[i]);
        QueueInfo info;
        info.name = q.str("name", SIZE_MAX);
        info.paused = q.opt_bool("paused").value_or(false);
        Reader counts = q.map("counts");
        for (auto s : {JobState::scheduled, JobState::ready, JobState::running, JobState::retrying,
                       JobState::succeeded, JobState::dead, JobState::cancelled})
            info.counts.emplace_back(s, counts.opt_u64(to_string(s)).value_or(0));
        info.oldest_ready_at = q.opt_i64("oldest_ready_at");
        out.push_back(std::move(info));
    }
    return out;
}

std::string encode_events(std::uint64_t req, JobId id, const std::vector<Event>& events) {
    Writer w(3);
    w.u64("req", req).u64("id", id).key("events");
    w.packer().pack_array(static_cast<std::uint32_t>(events.size()));
    for (const auto& e : events) {
        w.packer().pack_map(6);
        w.i64("at", e.at)
            .opt_str("from", e.from ? std::optional<std::string>(std::string(to_string(*e.from)))
                                    : std::nullopt)
            .str("to", to_string(e.to))
            .u64("attempt", e.attempt)
            .opt_str("worker", e.worker)
            .str("reason", e.reason);
    }
    return w.take();
}

std::vector<Event> decode_events(const Reader& r) {
    std::vector<Event> out;
    const auto& arr = r.array("events");
    for (std::uint32_t i = 0; i < arr.size; ++i) {
        Reader e(arr.ptr[i]);
        Event ev;
        ev.at = e.i64("at");
        if (auto f = e.opt_str("from", 32)) ev.from = parse_job_state(*f);
        ev.to = parse_job_state(e.str("to", 32)).value_or(JobState::ready);
        ev.attempt = static_cast<std::uint32_t>(e.u64("attempt"));
        ev.worker = e.opt_str("worker", SIZE_MAX);
        ev.reason = e.opt_str("reason", SIZE_MAX).value_or("");
        out.push_back(std::move(ev));
    }
    return out;
}

std::string encode_req(std::uint64_t req) {
    return Writer(1).u64("req", req).take();
}
std::string encode_empty() {
    return Writer(0).take();
}

std::optional<std::uint64_t> peek_req(std::string_view body) {
    try {
        Body b(body);
        return b.reader().peek_u64("req");
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// ---- Observability ------------------------------------------------------------------------

namespace {
void pack_event(Writer& w, const JobEvent& e) {
    w.u64("seq", e.seq)
        .u64("id", e.id)
        .str("queue", e.queue)
        .opt_str("from", e.from ? std::optional<std::string>(std::string(to_string(*e.from)))
                                : std::nullopt)
        .str("to", to_string(e.to))
        .u64("attempt", e.attempt)
        .i64("at", e.at)
        .opt_str("worker", e.worker)
        .str("reason", e.reason);
}
constexpr std::size_t kEventFields = 9;

JobState need_state(const Reader& r, std::string_view key) {
    auto s = r.str(key, 32);
    auto st = parse_job_state(s);
    if (!st) bad(fmt::format("unknown state '{}'", s));
    return *st;
}
}  // namespace

std::string encode(const JobEvent& m) {
    Writer w(kEventFields);
    pack_event(w, m);
    return w.take();
}

JobEvent decode_job_event(const Reader& r) {
    JobEvent e;
    e.seq = r.u64("seq");
    e.id = r.u64("id");
    e.queue = r.str("queue", limits::kMaxQueueName * 4);
    if (auto f = r.opt_str("from", 32)) {
        e.from = parse_job_state(*f);
        if (!e.from) bad(fmt::format("unknown state '{}'", *f));
    }
    e.to = need_state(r, "to");
    e.attempt = static_cast<std::uint32_t>(r.u64("attempt"));
    e.at = r.i64("at");
    e.worker = r.opt_str("worker", 1024);
    e.reason = r.opt_str("reason", 64 * 1024).value_or("");
    return e;
}

std::string encode(const FeedRequest& m) {
    Writer w(m.queue ? 4 : 3);
    w.u64("req", m.req).u64("limit", m.limit).u64("after", m.after);
    if (m.queue) w.str("queue", *m.queue);
    return w.take();
}

FeedRequest decode_feed(const Reader& r) {
    FeedRequest m;
    m.req = r.u64("req");
    if (r.has("queue")) m.queue = checked_queue(r);
    if (auto l = r.opt_u64("limit")) {
        if (*l < 1 || *l > kMaxFeed) bad(fmt::format("limit must be 1-{}", kMaxFeed));
        m.limit = static_cast<std::uint32_t>(*l);
    }
    m.after = r.opt_u64("after").value_or(0);
    return m;
}

std::string encode_feed(std::uint64_t req, const std::vector<JobEvent>& events) {
    Writer w(2);
    w.u64("req", req).key("events");
    w.packer().pack_array(static_cast<std::uint32_t>(events.size()));
    for (const auto& e : events) {
        w.packer().pack_map(kEventFields);
        pack_event(w, e);
    }
    return w.take();
}

std::vector<JobEvent> decode_feed_reply(const Reader& r) {
    std::vector<JobEvent> out;
    const auto& arr = r.array("events");
    for (std::uint32_t i = 0; i < arr.size; ++i)
        out.push_back(decode_job_event(Reader(arr.ptr[i])));
    return out;
}

std::string encode(const StatsReply& m) {
    Writer w(11);
    w.u64("req", m.req)
        .i64("time", m.time)
        .i64("started_at", m.started_at)
        .u64("workers", m.workers)
        .u64("running", m.running)
        .u64("commits", m.commits)
        .u64("commit_failures", m.commit_failures)
        .u64("commit_jobs_sum", m.commit_jobs_sum)
        .opt_str("events_endpoint", m.events_endpoint);
    w.key("commit_seconds_sum").packer().pack_double(m.commit_seconds_sum);
    w.key("queues");
    auto& pk = w.packer();
    pk.pack_array(static_cast<std::uint32_t>(m.queues.size()));
    for (const auto& q : m.queues) {
        pk.pack_map(10);
        w.str("name", q.name).boolean("paused", q.paused);
        w.key("counts");
        pk.pack_map(static_cast<std::uint32_t>(q.counts.size()));
        for (const auto& [state, n] : q.counts) {
            pack_str(pk, to_string(state));
            pk.pack_uint64(n);
        }
        w.u64("submitted", q.submitted)
            .u64("succeeded", q.succeeded)
            .u64("failed", q.failed)
            .u64("dead", q.dead)
            .u64("cancelled", q.cancelled);
        w.key("finished_per_second").packer().pack_double(q.finished_per_second);
        w.key("submitted_per_second").packer().pack_double(q.submitted_per_second);
    }
    return w.take();
}

StatsReply decode_stats(const Reader& r) {
    StatsReply m;
    m.req = r.u64("req");
    m.time = r.i64("time");
    m.started_at = r.i64("started_at");
    m.workers = r.u64("workers");
    m.running = r.u64("running");
    m.commits = r.u64("commits");
    m.commit_failures = r.u64("commit_failures");
    m.commit_jobs_sum = r.u64("commit_jobs_sum");
    m.events_endpoint = r.opt_str("events_endpoint", 1024);
    m.commit_seconds_sum = r.f64("commit_seconds_sum");
    const auto& arr = r.array("queues");
    for (std::uint32_t i = 0; i < arr.size; ++i) {
        Reader q(arr.ptr[i]);
        QueueStats s;
        s.name = q.str("name", limits::kMaxQueueName * 4);
        s.paused = q.opt_bool("paused").value_or(false);
        Reader counts = q.map("counts");
        for (auto st : {JobState::scheduled, JobState::ready, JobState::running, JobState::retrying,
                        JobState::succeeded, JobState::dead, JobState::cancelled})
            s.counts.emplace_back(st, counts.opt_u64(to_string(st)).value_or(0));
        s.submitted = q.u64("submitted");
        s.succeeded = q.u64("succeeded");
        s.failed = q.u64("failed");
        s.dead = q.u64("dead");
        s.cancelled = q.u64("cancelled");
        s.finished_per_second = q.f64("finished_per_second");
        s.submitted_per_second = q.f64("submitted_per_second");
        m.queues.push_back(std::move(s));
    }
    return m;
}

std::string encode_workers(std::uint64_t req, const std::vector<WorkerInfo>& workers) {
    Writer w(2);
    w.u64("req", req).key("workers");
    auto& pk = w.packer();
    pk.pack_array(static_cast<std::uint32_t>(workers.size()));
    for (const auto& x : workers) {
        pk.pack_map(10);
        w.str("name", x.name)
            .str("instance", x.instance)
            .str("host", x.host)
            .u64("pid", x.pid)
            .str_array("queues", x.queues)
            .u64("concurrency", x.concurrency)
            .u64("prefetch", x.prefetch)
            .u64("credit", x.credit)
            .i64("last_seen", x.last_seen)
            .key("jobs");
        pk.pack_array(static_cast<std::uint32_t>(x.jobs.size()));
        for (const auto& j : x.jobs) {
            pk.pack_map(4);
            w.u64("id", j.id)
                .str("queue", j.queue)
                .u64("attempt", j.attempt)
                .i64("started_at", j.started_at);
        }
    }
    return w.take();
}

std::vector<WorkerInfo> decode_workers(const Reader& r) {
    std::vector<WorkerInfo> out;
    const auto& arr = r.array("workers");
    for (std::uint32_t i = 0; i < arr.size; ++i) {
        Reader x(arr.ptr[i]);
        WorkerInfo w;
        w.name = x.str("name", 1024);
        w.instance = x.str("instance", 1024);
        w.host = x.str("host", 1024);
        w.pid = x.u64("pid");
        w.queues = x.str_array("queues", 4096, limits::kMaxQueueName * 4);
        w.concurrency = static_cast<std::uint32_t>(x.u64("concurrency"));
        w.prefetch = static_cast<std::uint32_t>(x.u64("prefetch"));
        w.credit = static_cast<std::uint32_t>(x.u64("credit"));
        w.last_seen = x.i64("last_seen");
        const auto& jobs = x.array("jobs");
        for (std::uint32_t k = 0; k < jobs.size; ++k) {
            Reader j(jobs.ptr[k]);
            w.jobs.push_back({j.u64("id"), j.str("queue", limits::kMaxQueueName * 4),
                              static_cast<std::uint32_t>(j.u64("attempt")), j.i64("started_at")});
        }
        out.push_back(std::move(w));
    }
    return out;
}

}  // namespace errand
