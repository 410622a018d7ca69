// A test-only SQLite VFS that turns a SIGKILL into a power cut (issue 17, item 7), linked only into
// tests/errand-broker-powercut (never into the release broker). It wraps the default VFS and keeps
// every write to a database, WAL or journal file in memory until the file's next xSync, which
// then hands them to the real file in order. The process's memory plays the part of the disk's
// volatile cache: killing the process loses exactly what a machine losing power would lose (what
// was never synced), and the real file holds only what was synced. Connections of one process
// share a file's pending writes (one overlay per path), like they share the page cache.
//
// ERRAND_POWERCUT_TEAR=N: the Nth sync of the process (counted over all files) is cut in the
// middle: a random prefix of its writes reaches the file, then a random part of a sector of the
// next one (a torn sector), and the process kills itself with SIGKILL, a cut that lands mid-sync.
// ERRAND_POWERCUT_SEED seeds that choice.
#include <sqlite3.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace {

// One pending change of a file since its last sync: a write, or a truncation to `offset`.
struct Op {
    sqlite3_int64 offset = 0;
    std::string data;
    bool truncate = false;
};

struct Overlay {
    std::mutex mu;
    std::vector<Op> ops;
};

std::mutex g_mu;
std::map<std::string, std::shared_ptr<Overlay>> g_overlays;  // path -> pending writes
sqlite3_vfs* g_base = nullptr;
std::atomic<long> g_syncs{0};
long g_tear_at = 0;  // 0: never
std::mt19937_64 g_rng;

std::shared_ptr<Overlay> overlay_of(const std::string& path) {
    std::lock_guard lock(g_mu);
    auto& o = g_overlays[path];
    if (!o) o = std::make_shared<Overlay>();
    return o;
}

struct File {
    sqlite3_file base;             // pMethods: ours
    sqlite3_file* real = nullptr;  // the default VFS's file, allocated after this struct
    std::shared_ptr<Overlay>* overlay = nullptr;  // null: passed through (temp files)
};

sqlite3_file* real_of(sqlite3_file* f) {
    return reinterpret_cast<File*>(f)->real;
}
Overlay* overlay_ptr(sqlite3_file* f) {
    auto* p = reinterpret_cast<File*>(f)->overlay;
    return p ? p->get() : nullptr;
}

// The real file's size, then every pending op applied: the size a reader sees.
int logical_size(sqlite3_file* f, Overlay& o, sqlite3_int64* size) {
    int rc = real_of(f)->pMethods->xFileSize(real_of(f), size);
    if (rc != SQLITE_OK) return rc;
    for (const auto& op : o.ops)
        *size = op.truncate ? op.offset
                            : std::max<sqlite3_int64>(
                                  *size, op.offset + static_cast<sqlite3_int64>(op.data.size()));
    return SQLITE_OK;
}

int x_close(sqlite3_file* f) {
    auto* file = reinterpret_cast<File*>(f);
    int rc = file->real->pMethods ? file->real->pMethods->xClose(file->real) : SQLITE_OK;
    delete file
        ->overlay;  // the overlay itself stays in g_overlays: unsynced writes outlive a close
    file->overlay = nullptr;
    return rc;
}

int x_read(sqlite3_file* f, void* buf, int amt, sqlite3_int64 off) {
    auto* o = overlay_ptr(f);
    if (!o) return real_of(f)->pMethods->xRead(real_of(f), buf, amt, off);
    std::lock_guard lock(o->mu);
    int rc = real_of(f)->pMethods->xRead(real_of(f), buf, amt, off);
    if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) return rc;
    auto* out = static_cast<char*>(buf);
    const sqlite3_int64 end = off + amt;
    for (const auto& op : o->ops) {
        if (op.truncate) {
            if (op.offset < end) {
                auto from = std::max(op.offset, off);
                std::memset(out + (from - off), 0, static_cast<std::size_t>(end - from));
            }
            continue;
        }
        const sqlite3_int64 a = std::max(off, op.offset);
        const sqlite3_int64 b =
            std::min(end, op.offset + static_cast<sqlite3_int64>(op.data.size()));
        if (a < b)
            std::memcpy(out + (a - off), op.data.data() + (a - op.offset),
                        static_cast<std::size_t>(b - a));
    }
    sqlite3_int64 size = 0;
    rc = logical_size(f, *o, &size);
    if (rc != SQLITE_OK) return rc;
    if (end > size) {
        auto from = std::max(size, off);
        std::memset(out + (from - off), 0, static_cast<std::size_t>(end - from));
        return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
}

int x_write(sqlite3_file* f, const void* buf, int amt, sqlite3_int64 off) {
    auto* o = overlay_ptr(f);
    if (!o) return real_of(f)->pMethods->xWrite(real_of(f), buf, amt, off);
    std::lock_guard lock(o->mu);
    o->ops.push_back(
        {off, std::string(static_cast<const char*>(buf), static_cast<std::size_t>(amt)), false});
    return SQLITE_OK;
}

int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
    auto* o = overlay_ptr(f);
    if (!o) return real_of(f)->pMethods->xTruncate(real_of(f), size);
    std::lock_guard lock(o->mu);
    o->ops.push_back({size, {}, true});
    return SQLITE_OK;
}

// Hands the pending ops to the real file, in order. No fsync: the test kills processes, not
// machines, so what the kernel has is what survives.
int x_sync(sqlite3_file* f, int flags) {
    auto* o = overlay_ptr(f);
    if (!o) return real_of(f)->pMethods->xSync(real_of(f), flags);
    const bool tear = ++g_syncs == g_tear_at;  // before o->mu: v_delete takes g_mu, then o->mu
    std::lock_guard lock(o->mu);
    auto* real = real_of(f);
    std::size_t n = o->ops.size();
    if (tear && n > 0) n = std::uniform_int_distribution<std::size_t>(0, n - 1)(g_rng);
    for (std::size_t i = 0; i < n; ++i) {
        const auto& op = o->ops[i];
        int rc = op.truncate ? real->pMethods->xTruncate(real, op.offset)
                             : real->pMethods->xWrite(real, op.data.data(),
                                                      static_cast<int>(op.data.size()), op.offset);
        if (rc != SQLITE_OK) return rc;
    }
    if (tear) {
        if (n < o->ops.size() && !o->ops[n].truncate && !o->ops[n].data.empty()) {
            // The next write reaches the disk only in part, ending inside a sector.
            const auto& op = o->ops[n];
            auto part = std::uniform_int_distribution<std::size_t>(1, op.data.size())(g_rng);
            if (part % 512 == 0 && part > 1) --part;
            (void)real->pMethods->xWrite(real, op.data.data(), static_cast<int>(part), op.offset);
        }
        ::kill(::getpid(), SIGKILL);
        for (;;)
            ::pause();
    }
    o->ops.clear();
    return SQLITE_OK;
}

int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
    auto* o = overlay_ptr(f);
    if (!o) return real_of(f)->pMethods->xFileSize(real_of(f), size);
    std::lock_guard lock(o->mu);
    return logical_size(f, *o, size);
}

int x_lock(sqlite3_file* f, int l) {
    return real_of(f)->pMethods->xLock(real_of(f), l);
}
int x_unlock(sqlite3_file* f, int l) {
    return real_of(f)->pMethods->xUnlock(real_of(f), l);
}
int x_check_reserved(sqlite3_file* f, int* out) {
    return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
int x_file_control(sqlite3_file* f, int op, void* arg) {
    // Size hints and chunking would grow the real file behind the overlay's back.
    if (overlay_ptr(f) && (op == SQLITE_FCNTL_SIZE_HINT || op == SQLITE_FCNTL_CHUNK_SIZE))
        return SQLITE_OK;
    return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
int x_sector_size(sqlite3_file* f) {
    return real_of(f)->pMethods->xSectorSize(real_of(f));
}
int x_device_characteristics(sqlite3_file* f) {
    return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
// The wal-index (-shm) is shared memory, not durable data: it passes through (the unix VFS
// rebuilds it from the WAL when the first connection after a crash opens it).
int x_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** pp) {
    return real_of(f)->pMethods->xShmMap(real_of(f), region, size, extend, pp);
}
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}
void x_shm_barrier(sqlite3_file* f) {
    real_of(f)->pMethods->xShmBarrier(real_of(f));
}
int x_shm_unmap(sqlite3_file* f, int del) {
    return real_of(f)->pMethods->xShmUnmap(real_of(f), del);
}

const sqlite3_io_methods kMethods = {
    2,  // no xFetch/xUnfetch: memory-mapped reads would bypass the overlay
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_file_size,
    x_lock,
    x_unlock,
    x_check_reserved,
    x_file_control,
    x_sector_size,
    x_device_characteristics,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    nullptr,
    nullptr,
};

int v_open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
    auto* file = reinterpret_cast<File*>(f);
    file->base.pMethods = nullptr;
    file->overlay = nullptr;
    file->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(File));
    int rc = g_base->xOpen(g_base, name, file->real, flags, out_flags);
    if (rc != SQLITE_OK) return rc;  // pMethods null: SQLite does not close it
    (void)vfs;
    if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)))
        file->overlay = new std::shared_ptr<Overlay>(overlay_of(name));
    file->base.pMethods = &kMethods;
    return SQLITE_OK;
}

int v_delete(sqlite3_vfs*, const char* name, int sync_dir) {
    {
        std::lock_guard lock(g_mu);
        if (auto it = g_overlays.find(name); it != g_overlays.end()) {
            std::lock_guard l2(it->second->mu);
            it->second->ops.clear();
        }
    }
    return g_base->xDelete(g_base, name, sync_dir);
}
int v_access(sqlite3_vfs*, const char* name, int flags, int* out) {
    return g_base->xAccess(g_base, name, flags, out);
}
int v_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
    return g_base->xFullPathname(g_base, name, n, out);
}
void* v_dl_open(sqlite3_vfs*, const char* name) {
    return g_base->xDlOpen(g_base, name);
}
void v_dl_error(sqlite3_vfs*, int n, char* msg) {
    g_base->xDlError(g_base, n, msg);
}
void (*v_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) {
    return g_base->xDlSym(g_base, h, sym);
}
void v_dl_close(sqlite3_vfs*, void* h) {
    g_base->xDlClose(g_base, h);
}
int v_randomness(sqlite3_vfs*, int n, char* out) {
    return g_base->xRandomness(g_base, n, out);
}
int v_sleep(sqlite3_vfs*, int us) {
    return g_base->xSleep(g_base, us);
}
int v_current_time(sqlite3_vfs*, double* t) {
    return g_base->xCurrentTime(g_base, t);
}
int v_get_last_error(sqlite3_vfs*, int n, char* out) {
    return g_base->xGetLastError ? g_base->xGetLastError(g_base, n, out) : 0;
}
int v_current_time_int64(sqlite3_vfs*, sqlite3_int64* t) {
    return g_base->xCurrentTimeInt64(g_base, t);
}

sqlite3_vfs g_vfs;

// Registered as the default VFS before main() runs, so the broker opens every database through it
// without knowing.
bool install() {
    if (sqlite3_initialize() != SQLITE_OK) std::abort();
    g_base = sqlite3_vfs_find(nullptr);
    if (!g_base) std::abort();
    g_vfs = {};
    g_vfs.iVersion = 2;
    g_vfs.szOsFile = static_cast<int>(sizeof(File)) + g_base->szOsFile;
    g_vfs.mxPathname = g_base->mxPathname;
    g_vfs.zName = "errand-powercut";
    g_vfs.xOpen = v_open;
    g_vfs.xDelete = v_delete;
    g_vfs.xAccess = v_access;
    g_vfs.xFullPathname = v_full_pathname;
    g_vfs.xDlOpen = v_dl_open;
    g_vfs.xDlError = v_dl_error;
    g_vfs.xDlSym = v_dl_sym;
    g_vfs.xDlClose = v_dl_close;
    g_vfs.xRandomness = v_randomness;
    g_vfs.xSleep = v_sleep;
    g_vfs.xCurrentTime = v_current_time;
    g_vfs.xGetLastError = v_get_last_error;
    g_vfs.xCurrentTimeInt64 = v_current_time_int64;
    if (const char* t = std::getenv("ERRAND_POWERCUT_TEAR")) g_tear_at = std::atol(t);
    const char* seed = std::getenv("ERRAND_POWERCUT_SEED");
    g_rng.seed(seed ? std::strtoull(seed, nullptr, 10) : 1);
    return sqlite3_vfs_register(&g_vfs, 1) == SQLITE_OK;
}

[[maybe_unused]] const bool g_installed = install();

}  // namespace
