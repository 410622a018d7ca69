// The heap meter's counting: sanitizer allocator hooks under ASan, else glibc malloc
// interposition (see heap_meter.hpp).
#include "heap_meter.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ERRAND_HEAP_METER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ERRAND_HEAP_METER_ASAN 1
#endif

namespace {

// Bytes held now and the most held since the last reset. Plain integers: the targets are
// single-threaded, and an allocator hook must not allocate or lock.
long long live = 0;
long long high = 0;

inline void count_alloc(std::size_t n) {
    live += static_cast<long long>(n);
    high = std::max(high, live);
}
inline void count_free(std::size_t n) {
    live -= static_cast<long long>(n);
}

}  // namespace

#if defined(ERRAND_HEAP_METER_ASAN)

extern "C" {
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                  std::size_t),
                                              void (*free_hook)(const volatile void*));
std::size_t __sanitizer_get_allocated_size(const volatile void* p);
}

namespace {

void on_malloc(const volatile void*, std::size_t size) {
    count_alloc(size);
}
// Called before the block is released, so its size can still be asked for.
void on_free(const volatile void* p) {
    if (p) count_free(__sanitizer_get_allocated_size(p));
}

bool install() {
    return __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0;
}

}  // namespace

namespace errand::fuzz {
bool HeapMeter::available() {
    static const bool ok = install();
    return ok;
}
}  // namespace errand::fuzz

#elif defined(__GLIBC__)

// glibc exports its allocator under these names too, so the process's malloc can be replaced by
// one that counts and forwards. malloc_usable_size gives a block's size at free time (it is at
// least the size asked for; the same figure is added and subtracted).
#include <malloc.h>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
    void* p = __libc_malloc(n);
    if (p) count_alloc(malloc_usable_size(p));
    return p;
}
void* calloc(std::size_t n, std::size_t size) {
    void* p = __libc_calloc(n, size);
    if (p) count_alloc(malloc_usable_size(p));
    return p;
}
void* realloc(void* old, std::size_t n) {
    std::size_t before = old ? malloc_usable_size(old) : 0;
    void* p = __libc_realloc(old, n);
    if (p || n == 0) {  // moved, resized or freed: the old block is gone
        count_free(before);
        if (p) count_alloc(malloc_usable_size(p));
    }
    return p;
}
void free(void* p) {
    if (p) count_free(malloc_usable_size(p));
    __libc_free(p);
}
void* memalign(std::size_t align, std::size_t n) {
    void* p = __libc_memalign(align, n);
    if (p) count_alloc(malloc_usable_size(p));
    return p;
}
void* aligned_alloc(std::size_t align, std::size_t n) {
    return memalign(align, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) {
    if (align < sizeof(void*) || (align & (align - 1)) != 0) return 22;  // EINVAL
    void* p = memalign(align, n);
    if (!p) return 12;  // ENOMEM
    *out = p;
    return 0;
}
}

namespace errand::fuzz {
bool HeapMeter::available() {
    return true;
}
}  // namespace errand::fuzz

#else

namespace errand::fuzz {
bool HeapMeter::available() {
    return false;
}
}  // namespace errand::fuzz

#endif

namespace errand::fuzz {

HeapMeter::HeapMeter() {
    (void)available();  // installs the hooks on first use
    base_ = live;
    outer_high_ = high;
    high = live;
}

HeapMeter::~HeapMeter() {
    high = std::max(high, outer_high_);
}

std::size_t HeapMeter::peak() const {
    return high > base_ ? static_cast<std::size_t>(high - base_) : 0;
}

}  // namespace errand::fuzz

namespace errand::fuzz {

void check_heap(const char* target, std::size_t peak, std::size_t size, std::size_t bound) {
    static const bool trace = std::getenv("ERRAND_FUZZ_TRACE") != nullptr;
    if (trace)
        std::fprintf(stderr, "%s: heap peak %zu bytes for a %zu-byte input (bound %zu)\n", target,
                     peak, size, bound);
    if (peak <= bound) return;
    std::fprintf(stderr,
                 "%s: memory bound: the input of %zu bytes made the process hold %zu heap bytes "
                 "at once, over the bound of %zu (docs/FUZZING.md, \"Memory bound\")\n",
                 target, size, peak, bound);
    std::abort();
}

}  // namespace errand::fuzz
