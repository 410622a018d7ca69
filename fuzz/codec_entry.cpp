// Fuzz logic for the codec: one body through Body, every decoder, and an encode/decode round trip.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "entries.hpp"
#include "errand/codec.hpp"
#include "errand/duration.hpp"
#include "heap_meter.hpp"

namespace errand::fuzz {
namespace {

[[noreturn]] void fail(std::string_view what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_codec: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

// Decoding may refuse a body (ProtocolError) but nothing else may escape. What decodes must
// re-encode to a body that the same decoder accepts, and a second round must change nothing:
// encode(decode(x)) is a fixed point. `inner` picks the map to decode inside a re-encoded body
// (JOB wraps the job object in {"req", "job"}).
template <class Decode, class Encode>
void round_trip(std::string_view what, const Reader& r, Decode decode, Encode encode,
                Reader (*inner)(const Reader&) = nullptr) {
    std::string first;
    try {
        first = encode(decode(r));
    } catch (const ProtocolError&) {
        return;  // refused: fine
    }
    try {
        Body again(first);
        std::string second =
            inner ? encode(decode(inner(again.reader()))) : encode(decode(again.reader()));
        if (second != first) fail(what, "re-encoding a decoded body changed it");
    } catch (const ProtocolError& e) {
        fail(what, std::string("its own encoding does not decode: ") + e.what());
    }
}

Reader job_of(const Reader& r) {
    return r.map("job");
}

void run_decoders(const Reader& r) {
    const DecodeLimits tight{8, 8, 2};  // small limits reach the too_large paths
    round_trip(
        "SUBMIT", r, [](const Reader& x) { return decode_submit(x); },
        [](const SubmitRequest& m) { return encode(m); });
    round_trip(
        "SUBMIT (tight limits)", r, [&](const Reader& x) { return decode_submit(x, tight); },
        [](const SubmitRequest& m) { return encode(m); });
    round_trip("SUBMITTED", r, decode_submitted, [](const SubmitReply& m) { return encode(m); });
    round_trip("STATUS", r, decode_id_request, [](const IdRequest& m) { return encode(m); });
    round_trip("WAIT", r, decode_wait, [](const WaitRequest& m) { return encode(m); });
    round_trip("LIST", r, decode_list, [](const ListRequest& m) { return encode(m); });
    round_trip(
        "job object", r, decode_job_info, [](const JobInfo& j) { return encode_job(j, 0); },
        job_of);
    round_trip("REGISTER", r, decode_register, [](const RegisterRequest& m) { return encode(m); });
    round_trip("REGISTERED", r, decode_registered,
               [](const RegisteredReply& m) { return encode(m); });
    round_trip("CREDIT", r, decode_credit, encode_credit);
    round_trip("DISPATCH", r, decode_dispatch, [](const Dispatch& m) { return encode(m); });
    round_trip("HEARTBEAT", r, decode_worker_heartbeat,
               [](const WorkerHeartbeat& m) { return encode(m); });
    for (bool ok : {true, false}) {
        round_trip(
            ok ? "DONE" : "FAIL", r, [&](const Reader& x) { return decode_result(x, ok); },
            [](const JobResult& m) { return encode(m); });
        round_trip(
            ok ? "DONE (tight limits)" : "FAIL (tight limits)", r,
            [&](const Reader& x) { return decode_result(x, ok, tight); },
            [](const JobResult& m) { return encode(m); });
    }
    round_trip("ACK", r, decode_ack, [](const Ack& m) { return encode(m); });
    auto encode_all = [](const std::vector<JobResult>& v) {
        std::vector<std::string> bodies;
        for (const auto& m : v)
            bodies.push_back(encode(m));
        return encode_results(std::vector<std::string_view>(bodies.begin(), bodies.end()));
    };
    round_trip(
        "RESULTS", r, [](const Reader& x) { return decode_results(x); }, encode_all);
    round_trip(
        "RESULTS (tight limits)", r, [&](const Reader& x) { return decode_results(x, tight); },
        encode_all);
    round_trip(
        "RESULTS (credit)", r, [](const Reader& x) { return decode_results_message(x); },
        [](const ResultsMessage& m) {
            std::vector<std::string> bodies;
            for (const auto& j : m.results)
                bodies.push_back(encode(j));
            return encode_results(std::vector<std::string_view>(bodies.begin(), bodies.end()),
                                  m.credit);
        });
    round_trip("ACKS", r, decode_acks, [](const std::vector<Ack>& v) { return encode_acks(v); });
    round_trip("ERROR", r, decode_error, [](const ErrorReply& m) { return encode(m); });
    round_trip("PONG", r, decode_pong, [](const Pong& m) { return encode(m); });
    round_trip("PROGRESS", r, decode_progress, [](const Progress& m) { return encode(m); });
    round_trip("ABORT", r, decode_abort, [](const Abort& m) { return encode(m); });
    round_trip("PAUSE", r, decode_queue_request, [](const QueueRequest& m) { return encode(m); });
    round_trip("RETRY", r, decode_retry, [](const RetryRequest& m) { return encode(m); });
    round_trip("PURGE", r, decode_purge, [](const PurgeRequest& m) { return encode(m); });
    round_trip("RETRIED", r, decode_ids,
               [](const std::vector<JobId>& ids) { return encode_ids(0, ids); });
    round_trip("PURGED", r, decode_count, [](std::uint64_t n) { return encode_count(0, n); });
    round_trip("QUEUES", r, decode_queues,
               [](const std::vector<QueueInfo>& q) { return encode_queues(0, q); });
    round_trip("EVENTS", r, decode_events,
               [](const std::vector<Event>& e) { return encode_events(0, 0, e); });
    round_trip(
        "SCHEDULE_ADD", r, [](const Reader& x) { return decode_schedule_add(x); },
        [](const ScheduleAddRequest& m) { return encode(m); });
    round_trip("SCHEDULE_SHOW", r, decode_schedule_request,
               [](const ScheduleRequest& m) { return encode(m); });
    round_trip("SCHEDULE", r, decode_schedule,
               [](const Schedule& s) { return encode_schedule(0, s); });
    round_trip("SCHEDULES", r, decode_schedules,
               [](const std::vector<Schedule>& v) { return encode_schedules(0, v); });
    round_trip("job event", r, decode_job_event, [](const JobEvent& m) { return encode(m); });
    round_trip("FEED", r, decode_feed, [](const FeedRequest& m) { return encode(m); });
    round_trip("FEED reply", r, decode_feed_reply,
               [](const std::vector<JobEvent>& v) { return encode_feed(0, v); });
    round_trip("STATS", r, decode_stats, [](const StatsReply& m) { return encode(m); });
    round_trip("WORKERS", r, decode_workers,
               [](const std::vector<WorkerInfo>& v) { return encode_workers(0, v); });
    round_trip("WORKER_CONTROL", r, decode_worker_control_request,
               [](const WorkerControlRequest& m) { return encode(m); });
    round_trip("CONTROL", r, decode_worker_control,
               [](const WorkerControl& m) { return encode(m); });
    round_trip("BATCH_OPEN", r, decode_batch_open,
               [](const BatchOpenRequest& m) { return encode(m); });
    round_trip("BATCH_SEAL", r, decode_batch_request,
               [](const BatchRequest& m) { return encode(m); });
    round_trip("BATCH_LIST", r, decode_batch_list,
               [](const BatchListRequest& m) { return encode(m); });
    round_trip("BATCH", r, decode_batch, [](const BatchInfo& b) { return encode_batch(0, b); });
    round_trip("BATCHES", r, decode_batches,
               [](const std::vector<BatchInfo>& v) { return encode_batches(0, v); });

    // How clients read JOB and JOBS replies: the nested job object(s).
    try {
        decode_job_info(r.map("job"));
    } catch (const ProtocolError&) {
    }
    try {
        const auto& jobs = r.array("jobs");
        for (std::uint32_t i = 0; i < jobs.size; ++i)
            decode_job_info(Reader(jobs.ptr[i]));
    } catch (const ProtocolError&) {
    }
}

void run_unbounded(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    (void)peek_req(bytes);
    // The text parsers of the vocabulary get the same bytes.
    (void)valid_queue_name(bytes);
    (void)parse_job_state(bytes);
    (void)parse_error_code(bytes);
    if (auto ms = parse_duration(bytes)) (void)format_duration(*ms);
    try {
        std::optional<Body> body;
        {
            HeapMeter parse;
            try {
                body.emplace(bytes);
            } catch (...) {
                check_heap("fuzz_codec (parse)", parse.peak(), size, codec_parse_heap_bound(size));
                throw;
            }
            check_heap("fuzz_codec (parse)", parse.peak(), size, codec_parse_heap_bound(size));
        }
        run_decoders(body->reader());
    } catch (const ProtocolError& e) {
        if (e.code() != ErrorCode::bad_frame && e.code() != ErrorCode::bad_request)
            fail("Body", std::string("unexpected error code: ") + e.what());
    }
}

}  // namespace

std::size_t codec_parse_heap_bound(std::size_t size) {
    return kParseHeapPerElement * std::min(size, kBodyElements) + kParseHeapPerByte * size +
           kParseHeapBase;
}

std::size_t codec_heap_bound(std::size_t size) {
    return kCodecHeapPerElement * std::min(size, kBodyElements) + kCodecHeapPerByte * size +
           kCodecHeapBase;
}

void run_codec(const std::uint8_t* data, std::size_t size) {
    HeapMeter meter;
    run_unbounded(data, size);
    check_heap("fuzz_codec", meter.peak(), size, codec_heap_bound(size));
}

}  // namespace errand::fuzz
