// HttpGate (http_gate.hpp): one I/O thread polls the listening socket and every connection that
// waits for (the rest of) a request; complete requests go to a bounded pool of threads.
//
// A connection's life (the I/O thread performs every edge except serving):
//   accepted -> reading --(complete request)--> busy (a pool thread; /healthz: the I/O thread)
//   busy --(kept alive)--> reading            busy --(Connection: close, last, error)--> closed
//   reading --(idle or request deadline, EOF, bad head, evicted for a newer one)--> closed
// Only the I/O thread adds, removes or polls connections. A busy connection belongs to the
// thread serving it, which hands it back through `returned` and the wake eventfd.
//
// Bounds (GateLimits): past max_per_address (or max_connections), the address's (or anyone's)
// connection that has waited longest without being served is closed to make room; when every
// one of them is busy, the newcomer gets 503. So slow clients cannot lock out a new request,
// and an address never holds more than its share.
#include "http_gate.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "errand/fd.hpp"

namespace errand::broker {
namespace {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

struct Conn {
    Fd fd;
    std::string peer;  // the client's address: the key of the per-address bound
    int peer_port = 0;
    std::string buf;               // bytes read and not yet served
    std::size_t request_size = 0;  // of the complete request at the front of buf, while busy
    std::size_t served = 0;
    bool busy = false;        // on a pool thread, which alone may touch buf
    bool eof = false;         // the client shut down its side: answer what it sent, then close
    bool in_request = false;  // a byte of the next request has arrived: its deadline runs
    bool closed = false;      // gone from the table; a stale pointer in this round's poll list
    TimePoint deadline;
    TimePoint waiting_since;  // accepted, or last answered: the longest-waiting is evicted first
};

const char* reason(int status) {
    switch (status) {
        case 400:
            return "Bad Request";
        case 408:
            return "Request Timeout";
        case 413:
            return "Payload Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 501:
            return "Not Implemented";
        default:
            return "Service Unavailable";
    }
}

// A whole response the gate writes itself, with a JSON error like the API's, then closes.
std::string error_response(int status, std::string_view code, std::string_view message) {
    std::string body = R"({"error":{"code":")" + std::string(code) + R"(","message":")";
    for (char c : message)
        if (c == '"' || c == '\\')
            body += '\\', body += c;
        else if (static_cast<unsigned char>(c) >= 0x20)
            body += c;
    body += "\"}}";
    return fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n{}",
        status, reason(status), body.size(), body);
}

// One non-blocking attempt: for a short answer to a client about to be dropped.
void send_now(int fd, const std::string& bytes) {
    if (bytes.empty()) return;
    [[maybe_unused]] auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
}

bool is_header(std::string_view line, std::string_view name) {
    if (line.size() <= name.size() || line[name.size()] != ':') return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// What the front of a connection's buffer holds: not yet a whole request, one of `size` bytes
// (head and body), or one to refuse with `status`.
struct Scan {
    enum Kind { incomplete, complete, bad } kind = incomplete;
    std::size_t size = 0;
    int status = 0;
    std::string code, message;
};

Scan scan_request(const std::string& buf, const GateLimits& lim) {
    auto too_big = [&] {
        return Scan{Scan::bad, 0, 431, "too_large",
                    fmt::format("the request line and headers are over {} bytes", lim.max_head)};
    };
    auto end = buf.find("\r\n\r\n");
    if (end == std::string::npos) return buf.size() > lim.max_head ? too_big() : Scan{};
    if (end + 4 > lim.max_head) return too_big();
    std::optional<std::uint64_t> body;
    for (auto pos = buf.find("\r\n"); pos < end;) {
        auto next = buf.find("\r\n", pos + 2);
        std::string_view line(buf.data() + pos + 2, next - pos - 2);
        pos = next;
        if (is_header(line, "transfer-encoding"))
            return {Scan::bad, 0, 501, "bad_request",
                    "request bodies must come with a Content-Length (no Transfer-Encoding)"};
        if (!is_header(line, "content-length")) continue;
        auto v = trim(line.substr(15));
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (body || v.empty() || ec != std::errc() || p != v.data() + v.size())
            return {Scan::bad, 0, 400, "bad_request", "one Content-Length, a number, please"};
        if (n > lim.max_body)
            return {Scan::bad, 0, 413, "too_large",
                    fmt::format("request bodies are limited to {} bytes", lim.max_body)};
        body = n;
    }
    std::size_t total = end + 4 + static_cast<std::size_t>(body.value_or(0));
    if (buf.size() < total) return {};
    return {Scan::complete, total, 0, {}, {}};
}

// The stream httplib reads one request from (the bytes already read, never the socket: it
// cannot block on a slow client) and writes the response to, under a write deadline.
class ConnStream final : public httplib::Stream {
  public:
    ConnStream(Conn& c, TimePoint write_deadline) : c_(c), deadline_(write_deadline) {}

    bool is_readable() const override { return true; }
    bool is_writable() const override { return wait_writable(); }
    ssize_t read(char* ptr, size_t size) override {
        size = std::min(size, c_.request_size - pos_);
        std::memcpy(ptr, c_.buf.data() + pos_, size);
        pos_ += size;
        return static_cast<ssize_t>(size);
    }
    ssize_t write(const char* ptr, size_t size) override {
        std::size_t done = 0;
        while (done < size) {
            auto n = ::send(c_.fd.get(), ptr + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                done += static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!wait_writable()) return -1;
            } else {
                return -1;
            }
        }
        return static_cast<ssize_t>(size);
    }
    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        ip = c_.peer;
        port = c_.peer_port;
    }
    void get_local_ip_and_port(std::string& ip, int& port) const override {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";
        if (::getsockname(c_.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
            ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv,
                          sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            ip = host;
            port = std::atoi(serv);
        }
    }
    // httplib built with select() answers 500 to a socket >= FD_SETSIZE; it never selects on
    // this one (reads come from the buffer, writes go through write() above).
    socket_t socket() const override { return c_.fd.get() < FD_SETSIZE ? c_.fd.get() : 0; }

  private:
    bool wait_writable() const {
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - SteadyClock::now());
        pollfd p{c_.fd.get(), POLLOUT, 0};
        int ms = static_cast<int>(std::max<std::int64_t>(0, left.count()));
        return ::poll(&p, 1, ms) > 0 && (p.revents & POLLOUT) && !(p.revents & POLLERR);
    }

    Conn& c_;
    TimePoint deadline_;
    std::size_t pos_ = 0;
};

// Threads serving complete requests, with a bounded queue: past it, try_push says no.
class Pool {
  public:
    Pool(std::size_t threads, std::size_t capacity) : capacity_(capacity) {
        for (std::size_t i = 0; i < threads; ++i)
            threads_.emplace_back([this] { work(); });
    }
    ~Pool() { stop(); }

    bool try_push(std::function<void()> job) {
        std::lock_guard lock(mu_);
        if (stopping_ || jobs_.size() >= capacity_) return false;
        jobs_.push_back(std::move(job));
        cv_.notify_one();
        return true;
    }
    // Finishes the jobs being run, drops the queued ones, joins.
    void stop() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_)
            if (t.joinable()) t.join();
        jobs_.clear();
    }

  private:
    void work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
                if (stopping_) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }

    std::size_t capacity_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

std::pair<std::string, int> peer_of(const sockaddr_storage& ss, socklen_t len) {
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "0";
    ::getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    std::string ip = host;
    if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) ip = ip.substr(7);
    return {ip, std::atoi(serv)};
}

}  // namespace

struct HttpGate::Impl {
    GateLimits lim;
    Serve serve;
    Inline is_inline;
    Fd listener;
    Fd wake;  // eventfd: a pool thread handed a connection back, or stop()
    int port = 0;
    std::atomic<bool> stopping{false};

    // The I/O thread's alone.
    std::unordered_map<int, std::shared_ptr<Conn>> conns;  // by fd, busy ones too
    std::unordered_map<std::string, std::size_t> per_address;

    std::mutex returned_mu;
    std::vector<std::pair<std::shared_ptr<Conn>, bool>> returned;  // (connection, keep it)

    std::unique_ptr<Pool> pool;
    std::thread io;

    void bind(const std::string& host, int wanted) {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        addrinfo* found = nullptr;
        auto service = std::to_string(wanted);
        int rc =
            ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
        if (rc != 0)
            throw std::runtime_error(fmt::format("cannot listen for HTTP on {}:{}: {}", host,
                                                 wanted, ::gai_strerror(rc)));
        std::string why = "no address";
        for (auto* ai = found; ai; ai = ai->ai_next) {
            Fd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                          ai->ai_protocol));
            if (s.get() < 0) continue;
            // SO_REUSEADDR for a quick rebind after a restart; never SO_REUSEPORT, which would
            // let a second broker share this port and its requests.
            int yes = 1;
            ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
            if (::bind(s.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(s.get(), 128) == 0) {
                listener = std::move(s);
                break;
            }
            why = std::strerror(errno);
        }
        ::freeaddrinfo(found);
        if (listener.get() < 0)
            throw std::runtime_error(
                fmt::format("cannot listen for HTTP on {}:{}: {}", host, wanted, why));
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len);
        port = peer_of(ss, len).second;
    }

    void close(const std::shared_ptr<Conn>& c, const std::string& response = {}) {
        if (c->closed) return;
        send_now(c->fd.get(), response);
        c->closed = true;
        conns.erase(c->fd.get());
        if (auto it = per_address.find(c->peer); it != per_address.end() && --it->second == 0)
            per_address.erase(it);
        c->fd.reset();
    }

    // Closes the longest-waiting connection that is not being served (of `peer` only, when
    // given); false when there is none.
    bool evict_oldest(const std::string* peer) {
        std::shared_ptr<Conn> oldest;
        for (const auto& [fd, c] : conns)
            if (!c->busy && (!peer || c->peer == *peer) &&
                (!oldest || c->waiting_since < oldest->waiting_since))
                oldest = c;
        if (!oldest) return false;
        close(oldest, oldest->buf.empty()
                          ? std::string()
                          : error_response(503, "busy",
                                           "closed to make room for a newer connection from the "
                                           "same address: too many at once"));
        return true;
    }

    void admit(Fd fd, const sockaddr_storage& ss, socklen_t len) {
        auto [peer, peer_port] = peer_of(ss, len);
        auto count = [&] {
            auto it = per_address.find(peer);
            return it == per_address.end() ? std::size_t{0} : it->second;
        };
        if (count() >= lim.max_per_address && !evict_oldest(&peer)) {
            send_now(fd.get(), error_response(503, "busy",
                                              fmt::format("too many connections from {} (at "
                                                          "most {} at once)",
                                                          peer, lim.max_per_address)));
            return;
        }
        if (conns.size() >= lim.max_connections && !evict_oldest(nullptr)) {
            send_now(fd.get(),
                     error_response(503, "busy",
                                    fmt::format("too many connections (at most {} at once)",
                                                lim.max_connections)));
            return;
        }
        int yes = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
        auto c = std::make_shared<Conn>();
        c->peer = peer;
        c->peer_port = peer_port;
        c->waiting_since = SteadyClock::now();
        c->deadline = c->waiting_since + std::chrono::milliseconds(lim.idle_timeout_ms);
        c->fd = std::move(fd);
        int key = c->fd.get();
        conns.emplace(key, std::move(c));
        ++per_address[peer];
    }

    void accept_all() {
        for (int i = 0; i < 64; ++i) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            int fd = ::accept4(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                admit(Fd(fd), ss, len);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                // Out of descriptors: make room rather than spin on a readable listener.
                spdlog::warn("http: out of file descriptors; closing an idle connection");
                evict_oldest(nullptr);
            }
            return;
        }
    }

    // Serves the complete request at the front of c.buf; true when the connection stays open.
    bool serve_one(Conn& c, TimePoint write_deadline) {
        bool last = c.served + 1 >= lim.max_requests_per_connection || stopping;
        bool closed = false, ok = false;
        ConnStream stream(c, write_deadline);
        try {
            ok = serve(stream, last, closed);
        } catch (const std::exception& e) {
            spdlog::error("http: serving a request: {}", e.what());
        }
        c.buf.erase(0, c.request_size);
        c.request_size = 0;
        ++c.served;
        return ok && !last && !closed;
    }

    // A connection whose request was answered: wait for its next one, or close it.
    void answered(const std::shared_ptr<Conn>& c, bool keep) {
        c->busy = false;
        if (!keep || stopping || (c->eof && c->buf.empty())) return close(c);
        auto now = SteadyClock::now();
        c->waiting_since = now;
        c->in_request = !c->buf.empty();
        c->deadline = now + std::chrono::milliseconds(c->in_request ? lim.request_timeout_ms
                                                                    : lim.idle_timeout_ms);
        if (!c->buf.empty()) dispatch(c);  // a pipelined request came with the last one
    }

    void dispatch(const std::shared_ptr<Conn>& c) {
        // Empty lines before a request line are ignored (RFC 9112 2.2): some clients send a
        // CRLF after a POST body.
        auto lead = c->buf.find_first_not_of("\r\n");
        c->buf.erase(0, lead == std::string::npos ? c->buf.size() : lead);
        auto scan = scan_request(c->buf, lim);
        if (scan.kind == Scan::incomplete) {
            if (c->eof) close(c);
            return;
        }
        if (scan.kind == Scan::bad)
            return close(c, error_response(scan.status, scan.code, scan.message));
        c->request_size = scan.size;
        std::string_view line(c->buf.data(), c->buf.find("\r\n"));
        if (is_inline(line)) {
            // Cheap and answered now, busy pool or not; a client that does not read it (its
            // socket buffer full) is dropped rather than waited for.
            c->busy = true;
            return answered(c, serve_one(*c, SteadyClock::now()));
        }
        c->busy = true;
        bool queued = pool->try_push([this, c] {
            bool keep =
                serve_one(*c, SteadyClock::now() + std::chrono::milliseconds(lim.write_timeout_ms));
            {
                std::lock_guard lock(returned_mu);
                returned.emplace_back(c, keep);
            }
            std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(wake.get(), &one, sizeof one);
        });
        if (!queued) {
            c->busy = false;
            close(c, error_response(503, "busy",
                                    fmt::format("the HTTP side is busy ({} requests waiting); try "
                                                "again",
                                                lim.queue)));
        }
    }

    void on_readable(const std::shared_ptr<Conn>& c) {
        if (c->closed || c->busy) return;
        char chunk[8192];
        const std::size_t cap = lim.max_head + lim.max_body + 1;
        while (c->buf.size() <= cap) {
            auto n = ::recv(c->fd.get(), chunk, sizeof chunk, MSG_DONTWAIT);
            if (n > 0) {
                if (!c->in_request)
                    c->deadline =
                        SteadyClock::now() + std::chrono::milliseconds(lim.request_timeout_ms);
                c->in_request = true;
                c->buf.append(chunk, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 || c->buf.empty()) return close(c);  // a reset, or gone without asking
            c->eof = true;  // `printf 'GET …' | nc`: answer, then close
            break;
        }
        dispatch(c);
    }

    void expire(TimePoint now) {
        std::vector<std::shared_ptr<Conn>> due;
        for (const auto& [fd, c] : conns)
            if (!c->busy && c->deadline <= now) due.push_back(c);
        for (const auto& c : due)
            close(c, c->buf.empty()
                         ? std::string()
                         : error_response(408, "timeout",
                                          fmt::format("the request did not arrive within {} ms",
                                                      lim.request_timeout_ms)));
    }

    void take_returned() {
        std::uint64_t n = 0;
        [[maybe_unused]] auto r = ::read(wake.get(), &n, sizeof n);
        std::vector<std::pair<std::shared_ptr<Conn>, bool>> back;
        {
            std::lock_guard lock(returned_mu);
            back.swap(returned);
        }
        for (auto& [c, keep] : back)
            answered(c, keep);
    }

    void run() {
        std::vector<pollfd> fds;
        std::vector<std::shared_ptr<Conn>> polled;
        while (!stopping) {
            fds.assign({{listener.get(), POLLIN, 0}, {wake.get(), POLLIN, 0}});
            polled.clear();
            auto now = SteadyClock::now();
            auto next = now + std::chrono::seconds(1);
            for (const auto& [fd, c] : conns) {
                if (c->busy) continue;
                fds.push_back({fd, POLLIN, 0});
                polled.push_back(c);
                next = std::min(next, c->deadline);
            }
            auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
            int rc = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long>(0, wait + 1)));
            if (rc < 0 && errno != EINTR) {
                spdlog::error("http: poll: {}", std::strerror(errno));
                continue;
            }
            if (rc > 0) {
                if (fds[1].revents) take_returned();
                if (fds[0].revents & POLLIN) accept_all();
                for (std::size_t i = 0; i < polled.size(); ++i)
                    if (fds[i + 2].revents) on_readable(polled[i]);
            }
            expire(SteadyClock::now());
        }
    }
};

HttpGate::HttpGate(const std::string& host, int port, GateLimits limits, Serve serve,
                   Inline is_inline)
    : impl_(std::make_unique<Impl>()) {
    auto& m = *impl_;
    m.lim = limits;
    m.serve = std::move(serve);
    m.is_inline = std::move(is_inline);
    m.bind(host, port);
    m.wake = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (m.wake.get() < 0)
        throw std::runtime_error(fmt::format("http: eventfd: {}", std::strerror(errno)));
    m.pool = std::make_unique<Pool>(std::max<std::size_t>(1, limits.threads), limits.queue);
    m.io = std::thread([impl = impl_.get()] { impl->run(); });
}

HttpGate::~HttpGate() {
    auto& m = *impl_;
    m.stopping = true;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(m.wake.get(), &one, sizeof one);
    if (m.io.joinable()) m.io.join();
    m.pool->stop();  // requests being served finish; their connections are dropped below
    m.returned.clear();
    m.conns.clear();
}

int HttpGate::port() const {
    return impl_->port;
}

}  // namespace errand::broker
