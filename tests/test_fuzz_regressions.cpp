// Replays the fuzzers' seed corpus and every saved crash input (fuzz/regressions/) through the
// fuzz targets' own logic, without libFuzzer: each must run to the end. ERRAND_FUZZ_DIR names the
// fuzz/ folder of the source tree (tests/meson.build sets it).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "entries.hpp"

namespace fs = std::filesystem;

namespace {

fs::path fuzz_dir() {
    const char* dir = std::getenv("ERRAND_FUZZ_DIR");
    REQUIRE_MESSAGE(dir != nullptr, "ERRAND_FUZZ_DIR is not set");
    return fs::path(dir);
}

// Every regular file under the given folders (those that exist), sorted for a stable order.
std::vector<fs::path> inputs(const std::vector<fs::path>& dirs) {
    std::vector<fs::path> out;
    for (const auto& d : dirs) {
        if (!fs::is_directory(d)) continue;
        for (const auto& e : fs::recursive_directory_iterator(d))
            if (e.is_regular_file() && e.path().filename().string().front() != '.')
                out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <class Run>
std::size_t replay(const std::vector<fs::path>& files, Run run) {
    for (const auto& f : files) {
        // A crash ends the process: name the input first so the log says which one.
        std::fprintf(stderr, "replaying %s\n", f.c_str());
        auto bytes = read(f);
        run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    return files.size();
}

}  // namespace

TEST_CASE("the codec fuzz target survives its corpus and every saved crash") {
    auto dir = fuzz_dir();
    auto files = inputs({dir / "corpus" / "codec", dir / "regressions" / "codec"});
    CHECK(files.size() > 0);
    CHECK(replay(files, errand::fuzz::run_codec) == files.size());
}

TEST_CASE("the broker fuzz target survives its corpus and every saved crash") {
    errand::fuzz::quiet_logs();
    auto dir = fuzz_dir();
    auto files = inputs({dir / "corpus" / "broker", dir / "regressions" / "broker"});
    CHECK(files.size() > 0);
    CHECK(replay(files, errand::fuzz::run_broker) == files.size());
}
