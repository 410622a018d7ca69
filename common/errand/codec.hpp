// MessagePack bodies: a typed reader and writer for frame 2, the protocol's remaining message
// structs (the ones the client API returns are in errand/messages.hpp), and their encoders and
// decoders. Decoders throw ProtocolError (bad_frame/bad_request).
// Each message's fields are written once, in a table (common/tables.hpp) that drives its encode,
// decode and JSON form (errand/json.hpp).
#pragma once

#include <msgpack.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "errand/messages.hpp"
#include "errand/protocol.hpp"

namespace errand {

// Read-only view of one MessagePack map. Lookups are linear: bodies have a handful of keys.
class Reader {
  public:
    explicit Reader(const msgpack::object& map);

    bool has(std::string_view key) const { return find(key) != nullptr; }
    // The value at key when it is a non-negative integer; never throws.
    std::optional<std::uint64_t> peek_u64(std::string_view key) const;
    std::uint64_t u64(std::string_view key) const;
    std::optional<std::uint64_t> opt_u64(std::string_view key) const;
    std::int64_t i64(std::string_view key) const;
    double f64(std::string_view key) const;  // a float or an integer
    std::optional<std::int64_t> opt_i64(std::string_view key) const;
    std::string str(std::string_view key, std::size_t max_len) const;
    std::optional<std::string> opt_str(std::string_view key, std::size_t max_len) const;
    // bin (or str) bytes; max_len violations raise too_large.
    std::string bin(std::string_view key, std::size_t max_len) const;
    std::optional<std::string> opt_bin(std::string_view key, std::size_t max_len) const;
    std::optional<bool> opt_bool(std::string_view key) const;
    std::vector<std::string> str_array(std::string_view key, std::size_t max_items,
                                       std::size_t max_len) const;
    std::optional<std::vector<std::string>> opt_str_array(std::string_view key,
                                                          std::size_t max_items,
                                                          std::size_t max_len) const;
    std::vector<std::uint64_t> u64_array(std::string_view key) const;
    // The nested map at key (required).
    Reader map(std::string_view key) const;
    // The array at key (required); each element is returned as a raw object.
    const msgpack::object_array& array(std::string_view key) const;
    // The map itself (what the generic decoder reads).
    const msgpack::object& object() const { return map_; }

  private:
    const msgpack::object* find(std::string_view key) const;
    const msgpack::object& need(std::string_view key) const;
    const msgpack::object& map_;
};

// An owned, parsed body. Throws ProtocolError(bad_frame) when bytes are not one MessagePack map.
class Body {
  public:
    explicit Body(std::string_view bytes);
    const Reader& reader() const { return reader_; }

  private:
    msgpack::object_handle handle_;
    Reader reader_;
};

// Writes one map; the number of fields is declared up front, as MessagePack requires.
class Writer {
  public:
    explicit Writer(std::size_t fields);
    Writer& u64(std::string_view key, std::uint64_t v);
    Writer& i64(std::string_view key, std::int64_t v);
    Writer& str(std::string_view key, std::string_view v);
    Writer& bin(std::string_view key, std::string_view v);
    Writer& boolean(std::string_view key, bool v);
    Writer& nil(std::string_view key);
    Writer& opt_i64(std::string_view key, const std::optional<std::int64_t>& v);
    Writer& opt_str(std::string_view key, const std::optional<std::string>& v);
    Writer& opt_bin(std::string_view key, const std::optional<std::string>& v);
    Writer& str_array(std::string_view key, const std::vector<std::string>& v);
    Writer& opt_str_array(std::string_view key, const std::optional<std::vector<std::string>>& v);
    Writer& u64_array(std::string_view key, const std::vector<std::uint64_t>& v);
    Writer& bool_array(std::string_view key, const std::vector<bool>& v);
    // Raw access for nested structures: write the key, then pack the value with packer().
    Writer& key(std::string_view key);
    msgpack::packer<msgpack::sbuffer>& packer() { return pk_; }
    std::string take() const { return std::string(buf_.data(), buf_.size()); }

  private:
    msgpack::sbuffer buf_;
    msgpack::packer<msgpack::sbuffer> pk_;
};

// ---- Message structs ----------------------------------------------------------------------

struct SubmitRequest {
    std::uint64_t req = 0;
    std::vector<JobSpec> jobs;
    // Submit and wait in one round trip (one job only): after SUBMITTED, the broker answers this
    // `req` again with the job (JOB) once it finishes, or ERROR timeout, as WAIT does.
    std::optional<Millis> wait_ms;
};

struct SubmitReply {
    std::uint64_t req = 0;
    std::vector<JobId> ids;
    std::vector<bool> duplicate;
};

struct IdRequest {  // STATUS
    std::uint64_t req = 0;
    JobId id = 0;
};

struct WaitRequest {
    std::uint64_t req = 0;
    JobId id = 0;
    Millis timeout_ms = limits::kDefaultWaitMs;
};

struct ListRequest {
    std::uint64_t req = 0;
    std::optional<std::string> queue;
    std::optional<JobState> state;
    std::uint32_t limit = limits::kDefaultListLimit;
};

struct HeldJob {
    JobId id = 0;
    std::uint32_t attempt = 0;
};

struct RegisterRequest {
    std::uint64_t req = 0;
    std::string instance;
    std::string name;
    std::string host;
    std::uint64_t pid = 0;
    std::vector<std::string> queues;
    std::uint32_t concurrency = 1;
    bool commands = false;  // accepts jobs that carry their own argv
    std::vector<HeldJob> held;
    std::vector<std::uint32_t> weights;  // empty: strict queue order; else one weight per queue
    std::uint32_t prefetch = 0;          // jobs it may hold beyond `concurrency`, waiting locally
    std::uint64_t reconnects = 0;        // times this instance registered again (any broker)
    // A worker quieted before it lost its registration stays quiet: it says so here (the
    // worker, not the broker, remembers its control state). `active` or `quiet`.
    std::string state = std::string(kWorkerActive);
};

struct RegisteredReply {
    std::uint64_t req = 0;
    Millis heartbeat_ms = 0;
    Millis expiry_ms = 0;
    std::vector<JobId> held_ok;
    std::vector<JobId> held_rejected;
    // The broker's limits a worker must respect. A broker that predates them sends none: the
    // defaults are the limits such a broker starts with.
    std::uint64_t max_result = limits::kDefaultMaxResult;    // bytes of a DONE/FAIL result
    std::uint64_t max_message = limits::kDefaultMaxMessage;  // bytes of one whole message
    std::uint64_t max_batch = limits::kMaxBatch;             // results in one RESULTS
    // The broker reads RESULTS' `credit` (a worker may then grant its credit there instead of
    // in a CREDIT of its own). False from a broker that predates it.
    bool result_credit = false;
};

struct Dispatch {
    JobId id = 0;
    std::string queue;
    std::uint32_t attempt = 0;
    std::string payload;
    std::optional<std::vector<std::string>> argv;
    std::uint64_t seq = 0;
    std::optional<Millis> timeout_ms;
    // With `attempt`, the fencing token: the broker start that dispatched it (0: none given, a
    // store whose commits are durable at once). Echoed in DONE/FAIL.
    std::uint32_t epoch = 0;
};

struct WorkerHeartbeat {
    std::uint64_t seq = 0;
    std::vector<JobId> running;
};

// DONE and FAIL share one struct; `ok` says which.
struct JobResult {
    bool ok = true;
    JobId id = 0;
    std::uint32_t attempt = 0;
    std::int64_t exit_code = 0;
    std::optional<std::string> result;
    std::string error;  // FAIL only
    bool permanent = false;
    std::uint32_t epoch = 0;  // DISPATCH's epoch, echoed; 0: not sent (a worker that predates it)
};

struct Ack {
    JobId id = 0;
    std::uint32_t attempt = 0;
};

struct ErrorReply {
    std::optional<std::uint64_t> req;
    ErrorCode code = ErrorCode::internal;
    std::string message;
    std::optional<JobId> id;  // for stale results
    std::optional<std::uint32_t> attempt;
};

struct Progress {
    JobId id = 0;
    std::uint32_t attempt = 0;
    std::uint32_t percent = 0;
    std::string message;
};

struct Abort {  // broker -> worker: stop this attempt
    JobId id = 0;
    std::uint32_t attempt = 0;
    std::string reason;
};

struct QueueRequest {  // RESUME (PAUSE without for_ms)
    std::uint64_t req = 0;
    std::string queue;
};

struct PauseRequest {  // PAUSE: QueueRequest and, for a timed pause, how long
    std::uint64_t req = 0;
    std::string queue;
    std::optional<Millis> for_ms;  // resumed by itself after this (more than 0)
};

struct RetryRequest {
    std::uint64_t req = 0;
    std::optional<JobId> id;  // one dead job, or
    bool dead = false;        // every dead job (of `queue` when set)
    std::optional<std::string> queue;
};

struct PurgeRequest {
    std::uint64_t req = 0;
    JobState state = JobState::succeeded;  // a terminal state
    std::optional<std::string> queue;
    std::optional<Millis> older_than_ms;  // finished at least this long ago
};

// SCHEDULE_SHOW, SCHEDULE_REMOVE, SCHEDULE_PAUSE, SCHEDULE_RESUME.
struct ScheduleRequest {
    std::uint64_t req = 0;
    std::string name;
};

struct ScheduleAddRequest {
    std::uint64_t req = 0;
    Schedule schedule;  // name, cron, zone, catch_up, job, paused
};

// WORKER_CONTROL: `errand worker quiet|stop|resume|concurrency`.
struct WorkerControlRequest {
    std::uint64_t req = 0;
    std::string worker;             // a worker name (all its instances) or an instance id
    std::string action;             // one of kWorkerActions
    std::uint32_t concurrency = 0;  // action `concurrency` only: 1-kMaxConcurrency
};

// CONTROL (broker -> worker): what the worker does from now on.
struct WorkerControl {
    std::string state = std::string(kWorkerActive);  // active | quiet | stopping
    std::uint32_t concurrency = 1;                   // jobs run at once
};

// DELETE: a finished job, or (force) any job, cancelled first when unfinished.
struct DeleteRequest {
    std::uint64_t req = 0;
    JobId id = 0;
    bool force = false;
};

// QUEUE_SET: the settings given replace the queue's; at least one. `rate` and `rate_per_ms`
// go together.
struct QueueSetRequest {
    std::uint64_t req = 0;
    std::string queue;
    std::optional<std::uint32_t> max_running;
    std::optional<std::uint32_t> rate;
    std::optional<Millis> rate_per_ms;
    std::optional<std::uint32_t> max_attempts;  // defaults for jobs without their own
    std::optional<Millis> timeout_ms;
    std::optional<std::int32_t> priority;
    std::optional<Millis> retention_ms;   // its finished jobs' retention
    std::optional<Millis> expires_in_ms;  // expiry of its jobs without their own
};

// QUEUE_UNSET: removes the named settings (kQueueSettingNames), at least one.
struct QueueUnsetRequest {
    std::uint64_t req = 0;
    std::string queue;
    std::vector<std::string> unset;
};

// BATCH_OPEN: a new, open batch with its callbacks (either, both or none).
struct BatchOpenRequest {
    std::uint64_t req = 0;
    std::string description;
    std::optional<JobSpec> on_complete;
    std::optional<JobSpec> on_success;
    // Idempotency, as a job's token: a BATCH_OPEN with a known token answers that batch (a
    // client resending after a lost reply opens one batch, not two).
    std::optional<std::string> token;
};

// BATCH_SEAL, BATCH_SHOW.
struct BatchRequest {
    std::uint64_t req = 0;
    JobId id = 0;
};

// BATCH_LIST: newest first, ids below `before` when given.
struct BatchListRequest {
    std::uint64_t req = 0;
    std::uint32_t limit = limits::kDefaultListLimit;  // 1-kMaxBatchList
    std::optional<JobId> before;
};

// Limits that decoding enforces (the broker sets them from its flags).
struct DecodeLimits {
    std::size_t max_payload = limits::kDefaultMaxPayload;
    std::size_t max_result = limits::kDefaultMaxResult;
    std::size_t max_batch = limits::kMaxBatch;
};

std::string encode(const SubmitRequest& m);
std::string encode(const SubmitReply& m);
std::string encode(const IdRequest& m);
std::string encode(const WaitRequest& m);
std::string encode(const ListRequest& m);
std::string encode_job(const JobInfo& job, std::uint64_t req);                 // JOB
std::string encode_jobs(const std::vector<JobInfo>& jobs, std::uint64_t req);  // JOBS
std::string encode(const RegisterRequest& m);
std::string encode(const RegisteredReply& m);
std::string encode_credit(std::uint32_t n);
std::string encode(const Dispatch& m);
std::string encode(const WorkerHeartbeat& m);
// A DONE or FAIL body; it also carries "ok", so it can be an element of RESULTS as it is.
std::string encode(const JobResult& m);
// RESULTS: DONE/FAIL bodies (as encode(JobResult) makes them) in one message, and the credit
// the worker grants with them (0: none, the field is left out).
std::string encode_results(const std::vector<std::string_view>& bodies, std::uint32_t credit = 0);
// ACKS: the results of a RESULTS that the broker has committed.
std::string encode_acks(const std::vector<Ack>& acks);
std::string encode(const Ack& m);
std::string encode(const ErrorReply& m);
std::string encode(const Pong& m);
std::string encode(const Progress& m);
std::string encode(const Abort& m);
std::string encode(const QueueRequest& m);
std::string encode(const RetryRequest& m);
std::string encode(const PurgeRequest& m);
std::string encode_ids(std::uint64_t req, const std::vector<JobId>& ids);  // RETRIED
std::string encode_count(std::uint64_t req, std::uint64_t count);          // PURGED
std::string encode_queues(std::uint64_t req, const std::vector<QueueInfo>& queues);
std::string encode_events(std::uint64_t req, JobId id, const std::vector<Event>& events);
std::string encode(const ScheduleAddRequest& m);
std::string encode(const ScheduleRequest& m);
std::string encode_schedule(std::uint64_t req, const Schedule& s);                // SCHEDULE
std::string encode_schedules(std::uint64_t req, const std::vector<Schedule>& s);  // SCHEDULES
// A schedule's job alone, as the stores keep it.
std::string encode(const JobSpec& m);
std::string encode(const WorkerControlRequest& m);
std::string encode(const WorkerControl& m);
std::string encode_req(std::uint64_t req);  // PING, QUEUES, OK
std::string encode_empty();                 // {}
std::string encode(const DeleteRequest& m);
std::string encode(const PauseRequest& m);
std::string encode(const QueueSetRequest& m);
std::string encode(const QueueUnsetRequest& m);
std::string encode_queue(std::uint64_t req, const QueueSettings& s);  // QUEUE
std::string encode(const BatchOpenRequest& m);
std::string encode(const BatchRequest& m);  // BATCH_SEAL, BATCH_SHOW
std::string encode(const BatchListRequest& m);
std::string encode_batch(std::uint64_t req, const BatchInfo& b);                 // BATCH
std::string encode_batches(std::uint64_t req, const std::vector<BatchInfo>& b);  // BATCHES

SubmitRequest decode_submit(const Reader& r, const DecodeLimits& lim = {});
SubmitReply decode_submitted(const Reader& r);
IdRequest decode_id_request(const Reader& r);
WaitRequest decode_wait(const Reader& r);
ListRequest decode_list(const Reader& r);
JobInfo decode_job_info(const Reader& r);
RegisterRequest decode_register(const Reader& r);
RegisteredReply decode_registered(const Reader& r);
std::uint32_t decode_credit(const Reader& r);
Dispatch decode_dispatch(const Reader& r);
WorkerHeartbeat decode_worker_heartbeat(const Reader& r);
JobResult decode_result(const Reader& r, bool ok, const DecodeLimits& lim = {});
Ack decode_ack(const Reader& r);
// At most lim.max_batch results, each with "ok"; any bad element refuses the whole message.
std::vector<JobResult> decode_results(const Reader& r, const DecodeLimits& lim = {});
// RESULTS whole: its results and the credit it grants (as a CREDIT with that n would).
struct ResultsMessage {
    std::vector<JobResult> results;
    std::uint32_t credit = 0;
};
ResultsMessage decode_results_message(const Reader& r, const DecodeLimits& lim = {});
std::vector<Ack> decode_acks(const Reader& r);
ErrorReply decode_error(const Reader& r);
Pong decode_pong(const Reader& r);
Progress decode_progress(const Reader& r);
Abort decode_abort(const Reader& r);
QueueRequest decode_queue_request(const Reader& r);
RetryRequest decode_retry(const Reader& r);
PurgeRequest decode_purge(const Reader& r);
std::vector<JobId> decode_ids(const Reader& r);
std::uint64_t decode_count(const Reader& r);
std::vector<QueueInfo> decode_queues(const Reader& r);
std::vector<Event> decode_events(const Reader& r);
ScheduleAddRequest decode_schedule_add(const Reader& r, const DecodeLimits& lim = {});
ScheduleRequest decode_schedule_request(const Reader& r);
Schedule decode_schedule(const Reader& r);
std::vector<Schedule> decode_schedules(const Reader& r);
JobSpec decode_job_spec(const Reader& r);
WorkerControlRequest decode_worker_control_request(const Reader& r);
WorkerControl decode_worker_control(const Reader& r);
DeleteRequest decode_delete(const Reader& r);
PauseRequest decode_pause(const Reader& r);
QueueSetRequest decode_queue_set(const Reader& r);
QueueUnsetRequest decode_queue_unset(const Reader& r);
QueueSettings decode_queue(const Reader& r);  // QUEUE
BatchOpenRequest decode_batch_open(const Reader& r);
BatchRequest decode_batch_request(const Reader& r);
BatchListRequest decode_batch_list(const Reader& r);
BatchInfo decode_batch(const Reader& r);
std::vector<BatchInfo> decode_batches(const Reader& r);

// ---- Observability: job events, STATS, WORKERS, FEED (docs/PROTOCOL.md) -------------------

struct FeedRequest {
    std::uint64_t req = 0;
    std::optional<std::string> queue;
    std::uint32_t limit = 100;  // 1-kMaxFeed
    std::uint64_t after = 0;    // only events with seq > after
};
inline constexpr std::uint32_t kMaxFeed = 500;

std::string encode(const JobEvent& m);
JobEvent decode_job_event(const Reader& r);
std::string encode(const FeedRequest& m);
FeedRequest decode_feed(const Reader& r);
std::string encode_feed(std::uint64_t req, const std::vector<JobEvent>& events);
std::vector<JobEvent> decode_feed_reply(const Reader& r);
std::string encode(const StatsReply& m);
StatsReply decode_stats(const Reader& r);
std::string encode_workers(std::uint64_t req, const std::vector<WorkerInfo>& workers);
std::vector<WorkerInfo> decode_workers(const Reader& r);

// ---- The field tables, as data (common/tables.hpp is where they are written) --------------

struct FieldInfo {
    std::string_view name;  // the wire key
    bool required = false;  // else optional: absent takes the default, or nil / left out
    std::string_view type;  // as docs/PROTOCOL.md spells it: uint, int, str, bin, [str], map...
    bool nullable = false;  // an absent value is written as nil (else it is left out)
};
struct MessageTable {
    std::string_view name;  // the command ("SUBMIT"), or the nested map's name ("job object")
    std::vector<FieldInfo> fields;
};
// Every message's table, in the order of docs/PROTOCOL.md (tests/test_protocol_doc.cpp).
const std::vector<MessageTable>& message_tables();

// Best-effort extraction of `req` from a body that failed to decode, for the ERROR reply.
std::optional<std::uint64_t> peek_req(std::string_view body);

}  // namespace errand
