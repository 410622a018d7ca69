// errand-codec-bench: ns per encode and per decode of each hot-path message (docs/PERFORMANCE.md).
// No broker, no sockets: the codec alone, so a change to it can be measured in isolation.
// Usage: errand-codec-bench [N [ROW]]: N calls per small message (default 200000, fewer for
// batches); ROW runs only the row of that name, e.g. "DONE";
// a small N suits valgrind --tool=callgrind, whose instruction counts do not depend on the load.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "errand/codec.hpp"

using namespace errand;

namespace {

volatile std::size_t g_sink = 0;  // keeps the optimizer from dropping the work
std::string g_only;               // run only rows whose name starts with this

// Runs fn `n` times (after a warm-up) and returns ns per call, best of 5 rounds.
double ns_per(std::size_t n, const std::function<void()>& fn) {
    for (std::size_t i = 0; i < n / 10 + 1; ++i)
        fn();
    double best = 1e300;
    for (int round = 0; round < 5; ++round) {
        auto t0 = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < n; ++i)
            fn();
        auto t1 = std::chrono::steady_clock::now();
        double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / double(n);
        if (ns < best) best = ns;
    }
    return best;
}

template <class Encode, class Decode>
void row(const char* name, std::size_t n, Encode encode, Decode decode) {
    if (!g_only.empty() && g_only != name) return;
    std::string body = encode();
    double enc = ns_per(n, [&] { g_sink = g_sink + encode().size(); });
    double dec = ns_per(n, [&] {
        Body b(body);
        decode(b.reader());
    });
    std::printf("%-22s %6zu B  encode %9.1f ns  decode %9.1f ns  total %9.1f ns\n", name,
                body.size(), enc, dec, enc + dec);
}

JobSpec spec(int i) {
    JobSpec j;
    j.queue = "emails";
    j.payload = std::string(64, 'p');
    j.token = "0123456789abcdef" + std::to_string(i);
    return j;
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t n =
        std::max<std::size_t>(argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 200000, 500);
    if (argc > 2) g_only = argv[2];

    SubmitRequest one{1, {spec(0)}};
    row(
        "SUBMIT (1 job)", n, [&] { return encode(one); },
        [](const Reader& r) { g_sink = g_sink + decode_submit(r).jobs.size(); });

    SubmitRequest batch{2, {}};
    for (int i = 0; i < 1000; ++i)
        batch.jobs.push_back(spec(i));
    row(
        "SUBMIT (1000 jobs)", n / 500, [&] { return encode(batch); },
        [](const Reader& r) { g_sink = g_sink + decode_submit(r).jobs.size(); });

    SubmitReply submitted{1, {42}, {false}};
    row(
        "SUBMITTED (1 id)", n, [&] { return encode(submitted); },
        [](const Reader& r) { g_sink = g_sink + decode_submitted(r).ids.size(); });

    Dispatch dispatch{12345, "emails", 1, std::string(64, 'p'), std::nullopt, 17, std::nullopt};
    row(
        "DISPATCH", n, [&] { return encode(dispatch); },
        [](const Reader& r) { g_sink = g_sink + decode_dispatch(r).id; });

    JobResult done{true, 12345, 1, 0, std::string("ok\n"), "", false};
    row(
        "DONE", n, [&] { return encode(done); },
        [](const Reader& r) { g_sink = g_sink + decode_result(r, true).id; });

    JobResult fail{false, 12345, 1, 2, std::nullopt, "exit status 2", false};
    row(
        "FAIL", n, [&] { return encode(fail); },
        [](const Reader& r) { g_sink = g_sink + decode_result(r, false).id; });

    std::vector<std::string> bodies;
    for (int i = 0; i < 16; ++i)
        bodies.push_back(encode(JobResult{true, JobId(1000 + i), 1, 0, std::string("ok\n")}));
    std::vector<std::string_view> views(bodies.begin(), bodies.end());
    row(
        "RESULTS (16)", n / 16, [&] { return encode_results(views); },
        [](const Reader& r) { g_sink = g_sink + decode_results(r).size(); });

    Ack ack{12345, 1};
    row(
        "ACK", n, [&] { return encode(ack); },
        [](const Reader& r) { g_sink = g_sink + decode_ack(r).id; });

    std::vector<Ack> acks;
    for (int i = 0; i < 16; ++i)
        acks.push_back({JobId(1000 + i), 1});
    row(
        "ACKS (16)", n / 4, [&] { return encode_acks(acks); },
        [](const Reader& r) { g_sink = g_sink + decode_acks(r).size(); });

    row(
        "CREDIT", n, [] { return encode_credit(1); },
        [](const Reader& r) { g_sink = g_sink + decode_credit(r); });

    WorkerHeartbeat hb{17, {12345, 12346}};
    row(
        "HEARTBEAT", n, [&] { return encode(hb); },
        [](const Reader& r) { g_sink = g_sink + decode_worker_heartbeat(r).seq; });
    return 0;
}
