// The generic to-JSON over the field tables (errand/json.hpp): one value form per field codec.
#include "errand/json.hpp"

#include "errand/duration.hpp"
#include "fields.hpp"
#include "tables.hpp"

namespace errand {
namespace fields {
namespace {

template <class S>
Json object_of(const message_of<S>& m);

template <class C, class V>
Json value_of(const C&, const V& v) {
    return v;  // numbers, bools, strings, bytes (as strings) and their arrays
}
Json value_of(const Time&, Timestamp t) {
    return format_time(t);
}
template <class T>
Json value_of(const DurationOf<T>&, T d) {
    return DurationOf<T>::count(d);
}
Json value_of(const State&, JobState s) {
    return std::string(to_string(s));
}
[[maybe_unused]] Json value_of(const Code&, ErrorCode c) {
    return std::string(to_string(c));
}
Json value_of(const Counts&, const Counts::value_type& counts) {
    Json out = Json::object();
    for (JobState s : kAllStates)
        out[std::string(to_string(s))] = 0;
    for (const auto& [s, n] : counts)
        out[std::string(to_string(s))] = n;
    return out;
}
[[maybe_unused]] Json value_of(const HeldPairs&, const HeldPairs::value_type& held) {
    Json out = Json::array();
    for (const auto& h : held)
        out.push_back({h.id, h.attempt});
    return out;
}
template <class S>
Json value_of(const Msg<S>&, const message_of<S>& m) {
    return object_of<S>(m);
}
template <class S, class V>
Json array_of(const V& items) {
    Json out = Json::array();
    for (const auto& x : items)
        out.push_back(object_of<S>(x));
    return out;
}
template <class S>
Json value_of(const MsgArray<S>&, const typename MsgArray<S>::value_type& v) {
    return array_of<S>(v);
}
template <class S>
Json value_of(const MsgSpan<S>&, const typename MsgSpan<S>::value_type& v) {
    return array_of<S>(v);
}
template <class S>
Json value_of(const MsgRef<S>&, const message_of<S>* m) {
    return object_of<S>(*m);
}
[[maybe_unused]] Json value_of(const ResultList&, const ResultList::value_type& v) {
    Json out = Json::array();
    for (const auto& r : v)
        out.push_back(r.ok ? object_of<DoneT>(r) : object_of<FailT>(r));
    return out;
}

template <class F>
void put(Json& j, const F& f, const typename F::message_type& m) {
    const auto& v = m.*f.member;
    Json& slot = j[std::string(f.name)];
    if constexpr (F::optional_member) {
        if (v)
            slot = value_of(f.codec, *v);
        else
            slot = nullptr;
    } else {
        slot = value_of(f.codec, v);
    }
}

template <class S>
Json object_of(const message_of<S>& m) {
    Json j = Json::object();
    std::apply([&](const auto&... f) { (put(j, f, m), ...); }, S::table.fields);
    return j;
}

}  // namespace
}  // namespace fields

Json to_json(const JobInfo& job) {
    return fields::object_of<fields::JobInfoT>(job);
}
Json to_json(const Event& event) {
    return fields::object_of<fields::EventT>(event);
}
Json to_json(const JobEvent& event) {
    return fields::object_of<fields::JobEventT>(event);
}
Json to_json(const QueueInfo& queue) {
    return fields::object_of<fields::QueueInfoT>(queue);
}
Json to_json(const QueueStats& queue) {
    return fields::object_of<fields::QueueStatsT>(queue);
}
Json to_json(const WorkerInfo& worker) {
    return fields::object_of<fields::WorkerInfoT>(worker);
}
Json to_json(const WorkerJob& job) {
    return fields::object_of<fields::WorkerJobT>(job);
}
Json to_json(const StatsReply& stats) {
    return fields::object_of<fields::StatsT>(stats);
}
Json to_json(const QueueSettings& s) {
    auto j = fields::object_of<fields::QueueT>(
        fields::QueueReply{0, s.queue, s.max_running, s.rate, s.rate_per, s.held, s.max_attempts,
                           s.timeout, s.priority, s.retention, s.expires_in});
    j.erase("req");
    return j;
}
Json to_json(const Schedule& schedule) {
    return fields::object_of<fields::ScheduleT>(schedule);
}

Json to_json(const BatchInfo& batch) {
    return fields::object_of<fields::BatchInfoT>(batch);
}

Json json_time(const std::optional<Timestamp>& t) {
    if (!t) return nullptr;
    return format_time(*t);
}

std::string dump_json(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace errand
