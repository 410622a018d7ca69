// libFuzzer entry point for the broker's command handling; the logic is in broker_entry.cpp
// (docs/FUZZING.md).
#include <cstddef>
#include <cstdint>

#include "entries.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    errand::fuzz::quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    errand::fuzz::run_broker(data, size);
    return 0;
}
