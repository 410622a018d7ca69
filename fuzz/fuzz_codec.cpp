// libFuzzer entry point for the message codec; the logic is in codec_entry.cpp (docs/FUZZING.md).
#include <cstddef>
#include <cstdint>

#include "entries.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    errand::fuzz::run_codec(data, size);
    return 0;
}
