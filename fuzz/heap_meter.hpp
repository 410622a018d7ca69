// Measures the heap bytes an input makes the process hold at its peak, for the fuzz targets'
// memory-bound oracle (docs/FUZZING.md, "Memory bound").
//
// Every malloc and free of the process is counted, libraries' too (msgpack's zones, SQLite,
// libstdc++'s operator new): through the sanitizer allocator's hooks in a build with ASan, else
// by interposing malloc, calloc, realloc, free and the aligned allocators on glibc's own
// (__libc_malloc, ...). Single-threaded use only, as the fuzz targets are.
#pragma once

#include <cstddef>

namespace errand::fuzz {

// Peak heap use above the level at which it was started. Meters nest: an inner one does not
// change what the outer one reports.
class HeapMeter {
  public:
    HeapMeter();  // starts counting
    ~HeapMeter();
    HeapMeter(const HeapMeter&) = delete;
    HeapMeter& operator=(const HeapMeter&) = delete;
    // The most bytes held at once since construction, beyond what was held then. Blocks freed
    // meanwhile that were allocated before the meter started lower the level, so this can
    // under-count by their size, never over-count.
    std::size_t peak() const;
    // False when this build cannot count (no ASan and no glibc): peak() is then 0.
    static bool available();

  private:
    long long base_;
    long long outer_high_;  // the enclosing meter's peak so far, given back at destruction
};

// The memory-bound oracle: aborts with a message when `peak` bytes exceed `bound` for an input of
// `size` bytes. With ERRAND_FUZZ_TRACE set, prints the figures for every input.
void check_heap(const char* target, std::size_t peak, std::size_t size, std::size_t bound);

}  // namespace errand::fuzz
