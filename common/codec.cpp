// MessagePack reader/writer, and the encoders/decoders of every protocol message as thin calls of
// the generic encode/decode (fields.hpp) over each message's field table (tables.hpp).
#include "errand/codec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "fields.hpp"
#include "tables.hpp"

namespace errand {

namespace fields {

namespace {
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
}  // namespace

void bad(const std::string& msg) {
    throw ProtocolError(ErrorCode::bad_request, msg);
}
void wrong_type(std::string_view key, const char* want, const msgpack::object& o) {
    bad(fmt::format("field '{}' must be {}, got {}", key, want, type_name(o)));
}
void out_of_range(std::string_view key) {
    bad(fmt::format("field '{}' is out of range", key));
}
void too_long(std::string_view key, std::size_t max_len) {
    bad(fmt::format("field '{}' is longer than {} bytes", key, max_len));
}
void too_large(std::string_view key, std::size_t n, std::size_t max_len) {
    throw ProtocolError(
        ErrorCode::too_large,
        fmt::format("field '{}' is {} bytes, over the limit of {} bytes", key, n, max_len));
}
void empty(std::string_view key) {
    bad(fmt::format("field '{}' must not be empty", key));
}
void above_ms(std::string_view key, Millis max) {
    bad(fmt::format("field '{}' must be at most {} ms", key, max));
}
void too_many(std::string_view key, std::size_t max_items) {
    bad(fmt::format("field '{}' has more than {} items", key, max_items));
}
void missing(std::string_view key) {
    bad(fmt::format("missing field '{}'", key));
}
void bad_queue(std::string_view queue) {
    bad(fmt::format("invalid queue name '{}': use 1-{} of A-Z a-z 0-9 _ . -", queue,
                    limits::kMaxQueueName));
}
void unknown_state(std::string_view key, std::string_view text) {
    bad(fmt::format("unknown state '{}' in field '{}'", text, key));
}

}  // namespace fields

namespace {

using fields::as_i64;
using fields::as_str;
using fields::as_u64;
using fields::bad;
using fields::pack_str;
using fields::type_name;
using fields::wrong_type;
using msgpack::type::object_type;

// Protection against hostile bodies: bounded nesting and element counts.
const msgpack::unpack_limit kUnpackLimit(/*array=*/1 << 20, /*map=*/4096, /*str=*/1u << 30,
                                         /*bin=*/1u << 30, /*ext=*/0, /*depth=*/8);

// Each element of a body becomes a msgpack::object of 24 bytes however small it was on the wire
// (a nil is one byte), and the unpack limits above are per container: a 60 MB body of nil arrays
// decoded into 1.5 GB. So a body may hold at most kMaxElements elements in all (array items and
// map keys and values, at any depth): about 24 MiB decoded, whatever the body's size. A SUBMIT of
// 1000 jobs with 256 argv entries each stays under it. Counted without decoding, by a parse that
// builds nothing.
//
// msgpack allocates a container's objects when it reads the header, before its elements: a body
// of 38 bytes, seven nested array headers that each claim 2^20 items, made it allocate 235 MB
// before finding the body short (fuzz_codec's memory bound, fuzz/regressions/codec/
// short-body-claims-2p20-elements). Every element takes at least one byte, so a body of n bytes
// holds at most n elements: the headers' claims are counted against that too, for every body.
constexpr std::uint64_t kMaxElements = 1 << 20;

struct ElementBudget : msgpack::v2::null_visitor {
    explicit ElementBudget(std::uint64_t n) : left(n) {}
    std::uint64_t left;
    bool over = false;
    bool take(std::uint64_t n) {
        if (n > left) {
            over = true;
            return false;  // stops the parse
        }
        left -= n;
        return true;
    }
    bool start_array(std::uint32_t n) { return take(n); }
    bool start_map(std::uint32_t n) { return take(2ULL * n); }
    void parse_error(std::size_t, std::size_t) {}
    void insufficient_bytes(std::size_t, std::size_t) {}
};

[[maybe_unused]] void check_element_budget(std::string_view bytes) {
    ElementBudget budget(std::min<std::uint64_t>(kMaxElements, bytes.size()));
    std::size_t off = 0;
    msgpack::v2::parse(bytes.data(), bytes.size(), off, budget);
    if (!budget.over) return;
    if (bytes.size() < kMaxElements)
        throw ProtocolError(ErrorCode::bad_frame,
                            fmt::format("body claims more MessagePack elements than its {} bytes "
                                        "can hold",
                                        bytes.size()));
    throw ProtocolError(ErrorCode::bad_frame,
                        fmt::format("body holds more than {} MessagePack elements", kMaxElements));
}

msgpack::object_handle parse_map(std::string_view bytes) {
#ifndef ERRAND_CODEC_BENCH_NO_ELEMENT_BUDGET  // only bench/'s A/B binary defines it
    check_element_budget(bytes);
#endif
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

std::string_view key_of(const msgpack::object& o) {
    if (o.type != object_type::STR) return {};
    return {o.via.str.ptr, o.via.str.size};
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
    return fields::F64{}.read(key, o, {});
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
    return std::string(as_str(key, need(key), max_len));
}
std::optional<std::string> Reader::opt_str(std::string_view key, std::size_t max_len) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return std::string(as_str(key, *o, max_len));
}
std::string Reader::bin(std::string_view key, std::size_t max_len) const {
    return fields::Bin{fields::Limit{max_len}}.read(key, need(key), {});
}
std::optional<std::string> Reader::opt_bin(std::string_view key, std::size_t max_len) const {
    const auto* o = find(key);
    if (!o) return std::nullopt;
    return fields::Bin{fields::Limit{max_len}}.read(key, *o, {});
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
        out.emplace_back(as_str(key, a.ptr[i], max_len));
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

using namespace fields;

template <class S>
std::string encode_as(const message_of<S>& m) {
    msgpack::sbuffer buf(256);  // msgpack's default is 8 KiB; it doubles as needed
    Packer pk(&buf);
    pack<S>(pk, m);
    return std::string(buf.data(), buf.size());
}

template <class S>
message_of<S> decode_as(const Reader& r, const DecodeLimits& lim = {}) {
    return unpack<S>(r.object(), lim);
}

template <class S>
MessageTable describe() {
    constexpr const auto& t = S::table;
    MessageTable out{t.name, {}};
    std::apply(
        [&](const auto&... f) {
            (out.fields.push_back({f.name, f.rule == Rule::required,
                                   std::remove_cvref_t<decltype(f.codec)>::wire,
                                   f.rule == Rule::nullable}),
             ...);
        },
        t.fields);
    return out;
}

}  // namespace

const std::vector<MessageTable>& message_tables() {
    static const std::vector<MessageTable> tables = [] {
        std::vector<MessageTable> out;
        std::apply([&](auto... s) { (out.push_back(describe<decltype(s)>()), ...); }, AllTables{});
        return out;
    }();
    return tables;
}

std::string encode(const SubmitRequest& m) {
    return encode_as<SubmitT>(m);
}
SubmitRequest decode_submit(const Reader& r, const DecodeLimits& lim) {
    return decode_as<SubmitT>(r, lim);
}

std::string encode(const SubmitReply& m) {
    return encode_as<SubmittedT>(m);
}
SubmitReply decode_submitted(const Reader& r) {
    return decode_as<SubmittedT>(r);
}

std::string encode(const IdRequest& m) {
    return encode_as<IdRequestT>(m);
}
IdRequest decode_id_request(const Reader& r) {
    return decode_as<IdRequestT>(r);
}

std::string encode(const WaitRequest& m) {
    return encode_as<WaitT>(m);
}
WaitRequest decode_wait(const Reader& r) {
    return decode_as<WaitT>(r);
}

std::string encode(const ListRequest& m) {
    return encode_as<ListT>(m);
}
ListRequest decode_list(const Reader& r) {
    return decode_as<ListT>(r);
}

std::string encode_job(const JobInfo& job, std::uint64_t req) {
    return encode_as<JobT>({req, &job});
}
std::string encode_jobs(const std::vector<JobInfo>& jobs, std::uint64_t req) {
    return encode_as<JobsT>({req, jobs});
}
JobInfo decode_job_info(const Reader& r) {
    return decode_as<JobInfoT>(r);
}

std::string encode(const RegisterRequest& m) {
    return encode_as<RegisterT>(m);
}
RegisterRequest decode_register(const Reader& r) {
    return decode_as<RegisterT>(r);
}

std::string encode(const RegisteredReply& m) {
    return encode_as<RegisteredT>(m);
}
RegisteredReply decode_registered(const Reader& r) {
    return decode_as<RegisteredT>(r);
}

std::string encode_credit(std::uint32_t n) {
    return encode_as<CreditT>({n});
}
std::uint32_t decode_credit(const Reader& r) {
    return decode_as<CreditT>(r).n;
}

std::string encode(const Dispatch& m) {
    return encode_as<DispatchT>(m);
}
Dispatch decode_dispatch(const Reader& r) {
    return decode_as<DispatchT>(r);
}

std::string encode(const WorkerHeartbeat& m) {
    return encode_as<HeartbeatT>(m);
}
WorkerHeartbeat decode_worker_heartbeat(const Reader& r) {
    return decode_as<HeartbeatT>(r);
}

std::string encode(const JobResult& m) {
    return m.ok ? encode_as<DoneT>(m) : encode_as<FailT>(m);
}
JobResult decode_result(const Reader& r, bool ok, const DecodeLimits& lim) {
    return unpack_result(r.object(), ok, lim);
}

std::string encode(const Ack& m) {
    return encode_as<AckT>(m);
}
Ack decode_ack(const Reader& r) {
    return decode_as<AckT>(r);
}

// The bodies are already encoded (the worker library keeps them to resend): they are appended as
// they are, which gives the bytes encode_as<ResultsT> would.
std::string encode_results(const std::vector<std::string_view>& bodies, std::uint32_t credit) {
    constexpr const auto& t = ResultsT::table;
    static_assert(std::remove_cvref_t<decltype(t)>::size == 2, "RESULTS: credit, results");
    msgpack::sbuffer buf(256);
    Packer pk(&buf);
    pk.pack_map(credit ? 2 : 1);
    if (credit) {
        pack_str(pk, std::get<0>(t.fields).name);
        pk.pack(credit);
    }
    pack_str(pk, std::get<1>(t.fields).name);
    pk.pack_array(static_cast<std::uint32_t>(bodies.size()));
    std::string out(buf.data(), buf.size());
    for (std::string_view b : bodies)
        out.append(b);  // each body is one complete MessagePack map
    return out;
}
std::vector<JobResult> decode_results(const Reader& r, const DecodeLimits& lim) {
    return decode_as<ResultsT>(r, lim).results;
}
ResultsMessage decode_results_message(const Reader& r, const DecodeLimits& lim) {
    return decode_as<ResultsT>(r, lim);
}

std::string encode_acks(const std::vector<Ack>& acks) {
    AckLists m;
    m.ids.reserve(acks.size());
    m.attempts.reserve(acks.size());
    for (const auto& a : acks) {
        m.ids.push_back(a.id);
        m.attempts.push_back(a.attempt);
    }
    return encode_as<AcksT>(m);
}
std::vector<Ack> decode_acks(const Reader& r) {
    auto m = decode_as<AcksT>(r);
    std::vector<Ack> out;
    out.reserve(m.ids.size());
    for (std::size_t i = 0; i < m.ids.size(); ++i)
        out.push_back({m.ids[i], m.attempts[i]});
    return out;
}

std::string encode(const ErrorReply& m) {
    return encode_as<ErrorT>(m);
}
ErrorReply decode_error(const Reader& r) {
    return decode_as<ErrorT>(r);
}

std::string encode(const Pong& m) {
    return encode_as<PongT>(m);
}
Pong decode_pong(const Reader& r) {
    return decode_as<PongT>(r);
}

std::string encode(const Progress& m) {
    return encode_as<ProgressT>(m);
}
Progress decode_progress(const Reader& r) {
    return decode_as<ProgressT>(r);
}

std::string encode(const Abort& m) {
    return encode_as<AbortT>(m);
}
Abort decode_abort(const Reader& r) {
    return decode_as<AbortT>(r);
}

std::string encode(const QueueRequest& m) {
    return encode_as<QueueRequestT>(m);
}
QueueRequest decode_queue_request(const Reader& r) {
    return decode_as<QueueRequestT>(r);
}

std::string encode(const RetryRequest& m) {
    return encode_as<RetryT>(m);
}
RetryRequest decode_retry(const Reader& r) {
    return decode_as<RetryT>(r);
}

std::string encode(const PurgeRequest& m) {
    return encode_as<PurgeT>(m);
}
PurgeRequest decode_purge(const Reader& r) {
    return decode_as<PurgeT>(r);
}

std::string encode(const DeleteRequest& m) {
    return encode_as<DeleteT>(m);
}
DeleteRequest decode_delete(const Reader& r) {
    return decode_as<DeleteT>(r);
}

std::string encode(const PauseRequest& m) {
    return encode_as<PauseT>(m);
}
PauseRequest decode_pause(const Reader& r) {
    return decode_as<PauseT>(r);
}

std::string encode(const QueueSetRequest& m) {
    return encode_as<QueueSetT>(m);
}
QueueSetRequest decode_queue_set(const Reader& r) {
    return decode_as<QueueSetT>(r);
}
std::string encode(const QueueUnsetRequest& m) {
    return encode_as<QueueUnsetT>(m);
}
QueueUnsetRequest decode_queue_unset(const Reader& r) {
    return decode_as<QueueUnsetT>(r);
}
std::string encode_queue(std::uint64_t req, const QueueSettings& s) {
    return encode_as<QueueT>({req, s.queue, s.max_running, s.rate, s.rate_per, s.held,
                              s.max_attempts, s.timeout, s.priority, s.retention, s.expires_in});
}
QueueSettings decode_queue(const Reader& r) {
    auto f = decode_as<QueueT>(r);
    return {std::move(f.queue), f.max_running, f.rate,     f.rate_per,  std::move(f.held),
            f.max_attempts,     f.timeout,     f.priority, f.retention, f.expires_in};
}

std::string encode_ids(std::uint64_t req, const std::vector<JobId>& ids) {
    return encode_as<RetriedT>({req, ids});
}
std::vector<JobId> decode_ids(const Reader& r) {
    return decode_as<RetriedT>(r).ids;
}

std::string encode_count(std::uint64_t req, std::uint64_t count) {
    return encode_as<PurgedT>({req, count});
}
std::uint64_t decode_count(const Reader& r) {
    return decode_as<PurgedT>(r).count;
}

std::string encode(const BatchOpenRequest& m) {
    return encode_as<BatchOpenT>(m);
}
BatchOpenRequest decode_batch_open(const Reader& r) {
    return decode_as<BatchOpenT>(r);
}
std::string encode(const BatchRequest& m) {
    return encode_as<BatchRequestT>(m);
}
BatchRequest decode_batch_request(const Reader& r) {
    return decode_as<BatchRequestT>(r);
}
std::string encode(const BatchListRequest& m) {
    return encode_as<BatchListT>(m);
}
BatchListRequest decode_batch_list(const Reader& r) {
    return decode_as<BatchListT>(r);
}
std::string encode_batch(std::uint64_t req, const BatchInfo& b) {
    return encode_as<BatchReplyT>({req, b});
}
BatchInfo decode_batch(const Reader& r) {
    return decode_as<BatchReplyT>(r).batch;
}
std::string encode_batches(std::uint64_t req, const std::vector<BatchInfo>& b) {
    return encode_as<BatchesT>({req, b});
}
std::vector<BatchInfo> decode_batches(const Reader& r) {
    return decode_as<BatchesT>(r).batches;
}

std::string encode_queues(std::uint64_t req, const std::vector<QueueInfo>& queues) {
    return encode_as<QueuesT>({req, queues});
}
std::vector<QueueInfo> decode_queues(const Reader& r) {
    return decode_as<QueuesT>(r).queues;
}

std::string encode_events(std::uint64_t req, JobId id, const std::vector<Event>& events) {
    return encode_as<EventsT>({req, id, events});
}
std::vector<Event> decode_events(const Reader& r) {
    return decode_as<EventsT>(r).events;
}

std::string encode(const ScheduleAddRequest& m) {
    return encode_as<ScheduleAddT>(m);
}
ScheduleAddRequest decode_schedule_add(const Reader& r, const DecodeLimits& lim) {
    return decode_as<ScheduleAddT>(r, lim);
}
std::string encode(const ScheduleRequest& m) {
    return encode_as<ScheduleRequestT>(m);
}
ScheduleRequest decode_schedule_request(const Reader& r) {
    return decode_as<ScheduleRequestT>(r);
}
std::string encode_schedule(std::uint64_t req, const Schedule& s) {
    return encode_as<ScheduleReplyT>({req, s});
}
Schedule decode_schedule(const Reader& r) {
    return decode_as<ScheduleReplyT>(r).schedule;
}
std::string encode_schedules(std::uint64_t req, const std::vector<Schedule>& s) {
    return encode_as<SchedulesT>({req, s});
}
std::vector<Schedule> decode_schedules(const Reader& r) {
    return decode_as<SchedulesT>(r).schedules;
}
std::string encode(const JobSpec& m) {
    return encode_as<JobSpecT>(m);
}
JobSpec decode_job_spec(const Reader& r) {
    return decode_as<JobSpecT>(r);
}

std::string encode(const WorkerControlRequest& m) {
    return encode_as<WorkerControlRequestT>(m);
}
WorkerControlRequest decode_worker_control_request(const Reader& r) {
    return decode_as<WorkerControlRequestT>(r);
}
std::string encode(const WorkerControl& m) {
    return encode_as<WorkerControlT>(m);
}
WorkerControl decode_worker_control(const Reader& r) {
    return decode_as<WorkerControlT>(r);
}

std::string encode_req(std::uint64_t req) {
    return encode_as<ReqOnlyT>({req});
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

std::string encode(const JobEvent& m) {
    return encode_as<JobEventT>(m);
}
JobEvent decode_job_event(const Reader& r) {
    return decode_as<JobEventT>(r);
}

std::string encode(const FeedRequest& m) {
    return encode_as<FeedT>(m);
}
FeedRequest decode_feed(const Reader& r) {
    return decode_as<FeedT>(r);
}

std::string encode_feed(std::uint64_t req, const std::vector<JobEvent>& events) {
    return encode_as<FeedReplyT>({req, events});
}
std::vector<JobEvent> decode_feed_reply(const Reader& r) {
    return decode_as<FeedReplyT>(r).events;
}

std::string encode(const StatsReply& m) {
    return encode_as<StatsT>(m);
}
StatsReply decode_stats(const Reader& r) {
    return decode_as<StatsT>(r);
}

std::string encode_workers(std::uint64_t req, const std::vector<WorkerInfo>& workers) {
    return encode_as<WorkersT>({req, workers});
}
std::vector<WorkerInfo> decode_workers(const Reader& r) {
    return decode_as<WorkersT>(r).workers;
}

}  // namespace errand
