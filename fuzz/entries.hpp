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

// Silences the broker's logging (call once before running inputs).
void quiet_logs();

}  // namespace errand::fuzz
