// The machinery behind every message of the protocol (private to common/): a message is a table
// of fields, and one generic encode, one generic decode (here) and one generic to-JSON (json.cpp)
// are driven by it. The tables themselves are in tables.hpp.
//
// A field is: its wire name, the struct member it lives in, a value codec (the wire type with its
// limit), a Rule (required or optional, and how an absent optional is written), and an optional
// per-field check that refuses bad values with a message naming the field. A message adds an
// optional `init` (defaults that differ from the struct's member initializers) and `post`
// (checks that involve several fields). Map sizes are computed from the table when encoding.
//
// Decoding goes over the map once: each key is matched against the table's names (unknown keys
// are ignored, a nil value counts as missing, a repeated key keeps its first value), then the
// required fields that were not seen are reported ("missing field 'x'").
#pragma once

#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "errand/codec.hpp"

namespace errand::fields {

using Packer = msgpack::packer<msgpack::sbuffer>;
using msgpack::type::object_type;

// ---- errors (cold; codec.cpp) ---------------------------------------------------------------

[[noreturn]] void bad(const std::string& msg);
[[noreturn]] void wrong_type(std::string_view key, const char* want, const msgpack::object& o);
[[noreturn]] void out_of_range(std::string_view key);
[[noreturn]] void too_long(std::string_view key, std::size_t max_len);
[[noreturn]] void too_large(std::string_view key, std::size_t n, std::size_t max_len);
[[noreturn]] void empty(std::string_view key);
[[noreturn]] void above_ms(std::string_view key, Millis max);
[[noreturn]] void too_many(std::string_view key, std::size_t max_items);
[[noreturn]] void missing(std::string_view key);
[[noreturn]] void bad_queue(std::string_view queue);
[[noreturn]] void unknown_state(std::string_view key, std::string_view text);

// ---- scalar readers --------------------------------------------------------------------------

inline void pack_str(Packer& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}
inline void pack_bool(Packer& pk, bool v) {
    if (v)
        pk.pack_true();
    else
        pk.pack_false();
}

inline std::uint64_t as_u64(std::string_view key, const msgpack::object& o) {
    if (o.type != object_type::POSITIVE_INTEGER) wrong_type(key, "a non-negative integer", o);
    return o.via.u64;
}
inline std::uint32_t as_u32(std::string_view key, const msgpack::object& o) {
    std::uint64_t v = as_u64(key, o);
    if (v > UINT32_MAX) out_of_range(key);
    return static_cast<std::uint32_t>(v);
}
inline std::int64_t as_i64(std::string_view key, const msgpack::object& o) {
    if (o.type == object_type::NEGATIVE_INTEGER) return o.via.i64;
    if (o.type == object_type::POSITIVE_INTEGER && o.via.u64 <= INT64_MAX)
        return static_cast<std::int64_t>(o.via.u64);
    wrong_type(key, "an integer", o);
}
inline std::string_view as_str(std::string_view key, const msgpack::object& o,
                               std::size_t max_len) {
    if (o.type != object_type::STR) wrong_type(key, "a str", o);
    if (o.via.str.size > max_len) too_long(key, max_len);
    return {o.via.str.ptr, o.via.str.size};
}
inline const msgpack::object_array& as_array(std::string_view key, const msgpack::object& o) {
    if (o.type != object_type::ARRAY) wrong_type(key, "an array", o);
    return o.via.array;
}

// A size limit: fixed, or one of the broker's DecodeLimits.
struct Limit {
    std::size_t fixed = SIZE_MAX;
    std::size_t DecodeLimits::*from = nullptr;
    std::size_t get(const DecodeLimits& l) const { return from ? l.*from : fixed; }
};

// ---- value codecs ----------------------------------------------------------------------------
// Each has value_type, write(packer, v), read(key, object, limits) and a `wire` type name.

struct U64 {
    using value_type = std::uint64_t;
    static constexpr std::string_view wire = "uint";
    void write(Packer& pk, std::uint64_t v) const { pk.pack_uint64(v); }
    std::uint64_t read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        return as_u64(k, o);
    }
};
struct U32 {
    using value_type = std::uint32_t;
    static constexpr std::string_view wire = "uint";
    void write(Packer& pk, std::uint32_t v) const { pk.pack_uint32(v); }
    std::uint32_t read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        return as_u32(k, o);
    }
};
struct I64 {
    using value_type = std::int64_t;
    static constexpr std::string_view wire = "int";
    void write(Packer& pk, std::int64_t v) const { pk.pack_int64(v); }
    std::int64_t read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        return as_i64(k, o);
    }
};
struct I32 {
    using value_type = std::int32_t;
    static constexpr std::string_view wire = "int";
    void write(Packer& pk, std::int32_t v) const { pk.pack_int32(v); }
    std::int32_t read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        auto v = as_i64(k, o);
        if (v < INT32_MIN || v > INT32_MAX) out_of_range(k);
        return static_cast<std::int32_t>(v);
    }
};
// A point in time: int ms since the Unix epoch (RFC 3339 in JSON).
struct Time {
    using value_type = Timestamp;
    static constexpr std::string_view wire = "int";
    void write(Packer& pk, Timestamp v) const { pk.pack_int64(v.time_since_epoch().count()); }
    Timestamp read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        return Timestamp{std::chrono::milliseconds{as_i64(k, o)}};
    }
};
// A duration: uint ms, at most `max` (an integer of ms in JSON too). `T` is the member's type:
// std::chrono::milliseconds in the API's structs (Duration), Millis in the others (DurationMs).
template <class T>
struct DurationOf {
    using value_type = T;
    static constexpr std::string_view wire = "uint";
    Millis max = INT64_MAX;
    static Millis count(T v) {
        if constexpr (std::is_same_v<T, Millis>)
            return v;
        else
            return v.count();
    }
    void write(Packer& pk, T v) const { pk.pack_uint64(static_cast<std::uint64_t>(count(v))); }
    T read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        auto v = as_u64(k, o);
        if (v > static_cast<std::uint64_t>(max)) above_ms(k, max);
        return T{static_cast<Millis>(v)};
    }
};
using Duration = DurationOf<std::chrono::milliseconds>;
using DurationMs = DurationOf<Millis>;
struct F64 {
    using value_type = double;
    static constexpr std::string_view wire = "float";
    void write(Packer& pk, double v) const { pk.pack_double(v); }
    double read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        switch (o.type) {
            case object_type::FLOAT32:
            case object_type::FLOAT64:
                return o.via.f64;
            case object_type::POSITIVE_INTEGER:
                return static_cast<double>(o.via.u64);
            case object_type::NEGATIVE_INTEGER:
                return static_cast<double>(o.via.i64);
            default:
                wrong_type(k, "a number", o);
        }
    }
};
struct Bool {
    using value_type = bool;
    static constexpr std::string_view wire = "bool";
    void write(Packer& pk, bool v) const { pack_bool(pk, v); }
    bool read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        if (o.type != object_type::BOOLEAN) wrong_type(k, "a bool", o);
        return o.via.boolean;
    }
};
struct Str {
    using value_type = std::string;
    static constexpr std::string_view wire = "str";
    Limit max{};
    bool nonempty = false;
    void write(Packer& pk, std::string_view v) const { pack_str(pk, v); }
    std::string read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        auto s = as_str(k, o, max.get(l));
        if (nonempty && s.empty()) empty(k);
        return std::string(s);
    }
};
// Bytes: bin on the wire (a str is accepted); over the limit is too_large.
struct Bin {
    using value_type = std::string;
    static constexpr std::string_view wire = "bin";
    Limit max{};
    void write(Packer& pk, std::string_view v) const {
        pk.pack_bin(static_cast<std::uint32_t>(v.size()));
        pk.pack_bin_body(v.data(), static_cast<std::uint32_t>(v.size()));
    }
    std::string read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        const char* p = nullptr;
        std::size_t n = 0;
        if (o.type == object_type::BIN) {
            p = o.via.bin.ptr;
            n = o.via.bin.size;
        } else if (o.type == object_type::STR) {
            p = o.via.str.ptr;
            n = o.via.str.size;
        } else {
            wrong_type(k, "bin", o);
        }
        if (n > max.get(l)) too_large(k, n, max.get(l));
        return {p, n};
    }
};
// A queue name: 1-64 bytes of A-Z a-z 0-9 _ . -
struct Queue : Str {
    std::string read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        auto s = as_str(k, o, limits::kMaxQueueName * 4);
        if (!valid_queue_name(s)) bad_queue(s);
        return std::string(s);
    }
};
// A job state by its name; unknown names are refused.
struct State {
    using value_type = JobState;
    static constexpr std::string_view wire = "str";
    void write(Packer& pk, JobState v) const { pack_str(pk, to_string(v)); }
    JobState read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        auto s = as_str(k, o, 32);
        auto st = parse_job_state(s);
        if (!st) unknown_state(k, s);
        return *st;
    }
};
// An error code by its name; names this side does not know read as `internal`.
struct Code {
    using value_type = ErrorCode;
    static constexpr std::string_view wire = "str";
    void write(Packer& pk, ErrorCode v) const { pack_str(pk, to_string(v)); }
    ErrorCode read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        return parse_error_code(as_str(k, o, 64)).value_or(ErrorCode::internal);
    }
};
struct StrArray {
    using value_type = std::vector<std::string>;
    static constexpr std::string_view wire = "[str]";
    std::size_t max_items = SIZE_MAX;
    std::size_t max_len = SIZE_MAX;
    void write(Packer& pk, const std::vector<std::string>& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (const auto& s : v)
            pack_str(pk, s);
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        const auto& a = as_array(k, o);
        if (a.size > max_items) too_many(k, max_items);
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i)
            out.emplace_back(as_str(k, a.ptr[i], max_len));
        return out;
    }
};
template <class T>
struct UintArray {
    using value_type = std::vector<T>;
    static constexpr std::string_view wire = "[uint]";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (auto x : v)
            pk.pack_uint64(x);
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        const auto& a = as_array(k, o);
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i) {
            if constexpr (std::is_same_v<T, std::uint32_t>)
                out.push_back(as_u32(k, a.ptr[i]));
            else
                out.push_back(as_u64(k, a.ptr[i]));
        }
        return out;
    }
};
using U64Array = UintArray<std::uint64_t>;
using U32Array = UintArray<std::uint32_t>;
struct BoolArray {
    using value_type = std::vector<bool>;
    static constexpr std::string_view wire = "[bool]";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (bool x : v)
            pack_bool(pk, x);
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        const auto& a = as_array(k, o);
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i)
            out.push_back(Bool{}.read(k, a.ptr[i], l));
        return out;
    }
};
// Jobs per state: a map state name -> uint on the wire; decoded with every state, in enum order
// (0 for the ones left out).
struct Counts {
    using value_type = std::vector<std::pair<JobState, std::uint64_t>>;
    static constexpr std::string_view wire = "map";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_map(static_cast<std::uint32_t>(v.size()));
        for (const auto& [state, n] : v) {
            pack_str(pk, to_string(state));
            pk.pack_uint64(n);
        }
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        if (o.type != object_type::MAP) wrong_type(k, "a map", o);
        value_type out;
        out.reserve(kStateCount);
        for (JobState s : kAllStates)
            out.emplace_back(s, 0);
        for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
            const auto& kv = o.via.map.ptr[i];
            if (kv.key.type != object_type::STR || kv.val.type == object_type::NIL) continue;
            auto st = parse_job_state({kv.key.via.str.ptr, kv.key.via.str.size});
            if (!st) continue;  // unknown keys are ignored, as in any map
            out[static_cast<std::size_t>(*st)].second = as_u64(k, kv.val);
        }
        return out;
    }
};
// REGISTER's held jobs: [[id, attempt], ...].
struct HeldPairs {
    using value_type = std::vector<HeldJob>;
    static constexpr std::string_view wire = "[[uint, uint]]";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (const auto& h : v) {
            pk.pack_array(2);
            pk.pack_uint64(h.id);
            pk.pack_uint32(h.attempt);
        }
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits&) const {
        const auto& a = as_array(k, o);
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i) {
            const auto& pair = a.ptr[i];
            if (pair.type != object_type::ARRAY || pair.via.array.size != 2)
                bad("each 'held' entry must be [id, attempt]");
            out.push_back({as_u64(k, pair.via.array.ptr[0]), as_u32(k, pair.via.array.ptr[1])});
        }
        return out;
    }
};

// ---- fields and messages ---------------------------------------------------------------------

enum class Rule : std::uint8_t {
    required,      // must be present (and not nil); always written
    defaulted,     // may be absent: the member keeps its default; always written
    omit_default,  // may be absent; not written while it equals the default
    omit,          // a std::optional member: nullopt <-> the key is left out
    nullable,      // a std::optional member: nullopt <-> nil
};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class M, class Member, class C>
struct Field {
    using message_type = M;
    using member_type = Member;
    using codec_type = C;
    using value_type = typename C::value_type;
    static constexpr bool optional_member = is_optional<Member>::value;

    std::string_view name;
    Member M::*member;
    C codec;
    Rule rule;
    void (*check)(const value_type&) = nullptr;  // refuses bad values (after type and limit)
};

template <class M, class Member, class C>
constexpr Field<M, Member, C> field(std::string_view name, Member M::*member, C codec, Rule rule,
                                    void (*check)(const typename C::value_type&) = nullptr) {
    return {name, member, codec, rule, check};
}

template <class M>
struct Hooks {
    void (*init)(M&) = nullptr;  // defaults other than the member initializers
    void (*post)(M&, const Reader&, const DecodeLimits&) = nullptr;  // checks across fields
};

template <class M, class... F>
struct Message {
    using message_type = M;
    std::string_view name;  // as in docs/PROTOCOL.md: a command, or "job object" for a nested map
    Hooks<M> hooks;
    std::tuple<F...> fields;
    static constexpr std::size_t size = sizeof...(F);
    static_assert(sizeof...(F) <= 64, "the decoder tracks fields in a 64-bit mask");
};

template <class M, class... F>
constexpr Message<M, F...> message(std::string_view name, Hooks<M> hooks, F... f) {
    return {name, hooks, std::tuple<F...>(f...)};
}

// A schema tag S has `static constexpr auto table = message<M>(...)`.
template <class S>
using message_of = typename std::remove_cvref_t<decltype(S::table)>::message_type;

template <class S>
void pack(Packer& pk, const message_of<S>& m);
template <class S>
message_of<S> unpack(const msgpack::object& map, const DecodeLimits& lim);

// A nested map.
template <class S>
struct Msg {
    using value_type = message_of<S>;
    static constexpr std::string_view wire = "map";
    void write(Packer& pk, const value_type& v) const { pack<S>(pk, v); }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        if (o.type != object_type::MAP) wrong_type(k, "a map", o);
        return unpack<S>(o, l);
    }
};
// An array of nested maps. `sized` checks the element count before any element is read.
template <class S>
struct MsgArray {
    using value_type = std::vector<message_of<S>>;
    static constexpr std::string_view wire = "[map]";
    void (*sized)(std::size_t n, const DecodeLimits&) = nullptr;
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (const auto& x : v)
            pack<S>(pk, x);
    }
    value_type read(std::string_view k, const msgpack::object& o, const DecodeLimits& l) const {
        const auto& a = as_array(k, o);
        if (sized != nullptr) sized(a.size, l);
        value_type out;
        out.reserve(a.size);
        for (std::uint32_t i = 0; i < a.size; ++i) {
            if (a.ptr[i].type != object_type::MAP) wrong_type(k, "an array of maps", a.ptr[i]);
            out.push_back(unpack<S>(a.ptr[i], l));
        }
        return out;
    }
};
// Encode-only views (JOB, JOBS): the broker's job rows are written without being copied.
template <class S>
struct MsgRef {
    using value_type = const message_of<S>*;
    static constexpr std::string_view wire = "map";
    void write(Packer& pk, const value_type& v) const { pack<S>(pk, *v); }
};
template <class S>
struct MsgSpan {
    using value_type = std::span<const message_of<S>>;
    static constexpr std::string_view wire = "[map]";
    void write(Packer& pk, const value_type& v) const {
        pk.pack_array(static_cast<std::uint32_t>(v.size()));
        for (const auto& x : v)
            pack<S>(pk, x);
    }
};

// ---- the generic encode and decode ----------------------------------------------------------

template <class F>
bool is_written(const F& f, const typename F::message_type& m) {
    const auto& v = m.*f.member;
    switch (f.rule) {
        case Rule::omit:
            if constexpr (F::optional_member) return v.has_value();
            return true;
        case Rule::omit_default:
            // Scalars, strings and id lists only (a vector of structs has no usable ==).
            if constexpr (std::is_arithmetic_v<typename F::member_type> ||
                          std::is_same_v<typename F::member_type, std::string> ||
                          std::is_same_v<typename F::member_type, std::vector<JobId>>) {
                static const typename F::message_type kDefault{};
                return !(v == kDefault.*f.member);
            }
            return true;
        default:
            return true;
    }
}

template <class F>
void write_field(Packer& pk, const F& f, const typename F::message_type& m) {
    if (!is_written(f, m)) return;
    pack_str(pk, f.name);
    const auto& v = m.*f.member;
    if constexpr (F::optional_member) {
        if (v)
            f.codec.write(pk, *v);
        else if (f.rule == Rule::nullable || f.rule == Rule::omit)
            pk.pack_nil();
        else
            f.codec.write(pk, typename F::value_type{});  // required: its empty value
    } else {
        f.codec.write(pk, v);
    }
}

template <class S>
void pack(Packer& pk, const message_of<S>& m) {
    constexpr const auto& t = S::table;
    std::uint32_t n = std::apply(
        [&](const auto&... f) { return (std::uint32_t{0} + ... + (is_written(f, m) ? 1u : 0u)); },
        t.fields);
    pk.pack_map(n);
    std::apply([&](const auto&... f) { (write_field(pk, f, m), ...); }, t.fields);
}

template <class S>
message_of<S> unpack(const msgpack::object& map, const DecodeLimits& lim) {
    using M = message_of<S>;
    constexpr const auto& t = S::table;
    constexpr std::size_t N = std::remove_cvref_t<decltype(t)>::size;
    M m{};
    if constexpr (t.hooks.init != nullptr) t.hooks.init(m);
    std::uint64_t seen = 0;
    const auto& entries = map.via.map;
    for (std::uint32_t i = 0; i < entries.size; ++i) {
        const auto& kv = entries.ptr[i];
        if (kv.key.type != object_type::STR || kv.val.type == object_type::NIL) continue;
        const std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
        // The first field whose name is `key` reads the value; no field: an unknown key.
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            (([&] {
                 const auto& f = std::get<I>(t.fields);
                 if (key.size() != f.name.size() ||
                     std::memcmp(key.data(), f.name.data(), key.size()) != 0)
                     return false;
                 constexpr std::uint64_t bit = std::uint64_t{1} << I;
                 if (seen & bit) return true;  // a repeated key: the first one counts
                 seen |= bit;
                 auto v = f.codec.read(f.name, kv.val, lim);
                 if constexpr (std::get<I>(t.fields).check != nullptr) f.check(v);
                 m.*f.member = std::move(v);
                 return true;
             }()) ||
             ...);
        }
        (std::make_index_sequence<N>{});
    }
    constexpr std::uint64_t required = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return ((std::get<I>(t.fields).rule == Rule::required ? std::uint64_t{1} << I : 0) | ...);
    }
    (std::make_index_sequence<N>{});
    if ((seen & required) != required) {
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            ((((required >> I) & 1) && !((seen >> I) & 1) ? missing(std::get<I>(t.fields).name)
                                                          : void()),
             ...);
        }
        (std::make_index_sequence<N>{});
    }
    if constexpr (t.hooks.post != nullptr) t.hooks.post(m, Reader(map), lim);
    return m;
}

}  // namespace errand::fields
