// A deterministic reader of fuzz bytes, in the spirit of libFuzzer's FuzzedDataProvider but
// header-only and compiler-neutral, so the regression test (built with gcc, without libFuzzer)
// replays an input exactly as the fuzzer saw it. Reads never fail: past the end they return 0
// or empty, so every input is a valid program.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace errand::fuzz {

class Input {
  public:
    Input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}

    bool empty() const { return n_ == 0; }
    std::size_t remaining() const { return n_; }

    std::uint8_t byte() {
        if (n_ == 0) return 0;
        --n_;
        return *p_++;
    }
    bool boolean() { return byte() & 1; }

    // Little-endian, `bytes` bytes (at most 8).
    std::uint64_t bits(int bytes) {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i)
            v |= static_cast<std::uint64_t>(byte()) << (8 * i);
        return v;
    }

    // A value in [lo, hi], reading only as many bytes as the range needs.
    std::uint64_t range(std::uint64_t lo, std::uint64_t hi) {
        if (hi <= lo) return lo;
        std::uint64_t span = hi - lo;
        int bytes = 0;
        for (std::uint64_t s = span; s != 0; s >>= 8)
            ++bytes;
        std::uint64_t v = bits(bytes);
        return span == UINT64_MAX ? v : lo + v % (span + 1);
    }
    std::int64_t srange(std::int64_t lo, std::int64_t hi) {
        auto span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
        return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + range(0, span));
    }

    // One of `count` choices.
    std::size_t pick(std::size_t count) { return count == 0 ? 0 : range(0, count - 1); }

    // A string of up to `max` bytes, its length read first.
    std::string bytes(std::size_t max) {
        std::size_t len = range(0, max);
        if (len > n_) len = n_;
        std::string out(reinterpret_cast<const char*>(p_), len);
        p_ += len;
        n_ -= len;
        return out;
    }

    // Everything that is left.
    std::string rest() {
        std::string out(reinterpret_cast<const char*>(p_), n_);
        p_ += n_;
        n_ = 0;
        return out;
    }

  private:
    const std::uint8_t* p_;
    std::size_t n_;
};

}  // namespace errand::fuzz
