// Runs saved inputs through a fuzz target's logic without libFuzzer (any compiler):
//   fuzz_replay codec|broker FILE...
// With ERRAND_FUZZ_TRACE=1, the broker target prints each message it sends and every reply.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "entries.hpp"

int main(int argc, char** argv) {
    std::string target = argc > 1 ? argv[1] : "";
    if (argc < 3 || (target != "codec" && target != "broker")) {
        std::fprintf(stderr, "usage: fuzz_replay codec|broker FILE...\n");
        return 2;
    }
    errand::fuzz::quiet_logs();
    for (int i = 2; i < argc; ++i) {
        std::ifstream in(argv[i], std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "fuzz_replay: cannot read %s\n", argv[i]);
            return 1;
        }
        std::string b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        std::fprintf(stderr, "%s\n", argv[i]);
        const auto* data = reinterpret_cast<const std::uint8_t*>(b.data());
        if (target == "codec")
            errand::fuzz::run_codec(data, b.size());
        else
            errand::fuzz::run_broker(data, b.size());
    }
    return 0;
}
