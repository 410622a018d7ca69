// The logic of the fuzz targets, kept apart from libFuzzer's entry points so the regression
// test (tests/test_fuzz_regressions.cpp) replays saved inputs through exactly the same code.
// Each function returns normally for any input; a bug shows as a crash, a sanitizer report,
// an exception other than ProtocolError escaping, or a failed invariant (abort with a message).
#pragma once

#include <cstddef>
#include <cstdint>

namespace errand::fuzz {

// The input is one frame 2 (a MessagePack body): parses it, runs every decoder over it, and
// checks that whatever decodes re-encodes to a body that decodes to the same thing.
void run_codec(const std::uint8_t* data, std::size_t size);

// The input is a short script of messages from a few clients and workers, mostly built with the
// real encoders from fuzz bytes, fed through Broker::process over an in-memory SQLite store at a
// fake time that advances; the store can be made to fail and the broker can be restarted.
void run_broker(const std::uint8_t* data, std::size_t size);

// The memory-bound oracle of both targets (docs/FUZZING.md, "Memory bound"): the most heap bytes
// the process may hold at once, above what it held before, while it runs one input of `size`
// bytes. Over it, the target aborts.
//
// A body holds at most min(size, 2^20) MessagePack elements (common/codec.cpp counts what its
// headers claim against that before it parses). Parsing makes each a 24-byte msgpack::object in a
// zone whose chunks double (up to twice that) and copies strings and bins into the zone once. So
// the parse may take 48 bytes per element and a few per byte. Item 2 of issue 17 (no count: 16 MiB
// of nils parsed into 512 MiB, 32 bytes per byte) is over this bound for any body past 2 MiB.
inline constexpr std::size_t kBodyElements = std::size_t{1} << 20;
inline constexpr std::size_t kParseHeapPerElement = 48;
inline constexpr std::size_t kParseHeapPerByte = 4;
inline constexpr std::size_t kParseHeapBase = 64 * 1024;
std::size_t codec_parse_heap_bound(std::size_t size);
// The whole input: every decoder and two round trips, each holding its decoded structs, its
// encoding and a second parse at once. A decoded element may take a few hundred bytes (a WORKERS
// entry of 21 elements and 99 bytes is a 200-byte WorkerInfo, held twice, in vectors that double:
// 314 bytes per element measured); string bytes are copied a few times.
inline constexpr std::size_t kCodecHeapPerElement = 512;
inline constexpr std::size_t kCodecHeapPerByte = 8;
inline constexpr std::size_t kCodecHeapBase = 256 * 1024;
std::size_t codec_heap_bound(std::size_t size);

// A script has at most 48 steps built from its bytes (a raw body is at most 255 of them): what
// grows with the input is jobs, their events, workers and replies, well under a KiB per byte of
// script. The base is the in-memory SQLite database, the broker and its statements: about 310 KB
// for the seed scripts.
inline constexpr std::size_t kBrokerHeapPerByte = 1024;
inline constexpr std::size_t kBrokerHeapBase = 4 * 1024 * 1024;
std::size_t broker_heap_bound(std::size_t size);

// Silences the broker's logging (call once before running inputs).
void quiet_logs();

}  // namespace errand::fuzz
