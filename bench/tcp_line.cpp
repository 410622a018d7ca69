#include "tcp_line.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace errand::bench {

TcpLine::TcpLine(const std::string& addr, std::string server, int recv_timeout_s)
    : server_(std::move(server)) {
    const auto colon = addr.rfind(':');
    if (colon == std::string::npos) throw std::invalid_argument("--addr must be HOST:PORT");
    const std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
        throw std::runtime_error("cannot resolve " + addr);
    fd_ = ::socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    const int rc = fd_ < 0 ? -1 : ::connect(fd_, res->ai_addr, res->ai_addrlen);
    ::freeaddrinfo(res);
    if (rc != 0) {
        const int e = errno;
        if (fd_ >= 0) ::close(fd_);
        throw std::system_error(e, std::generic_category(), "connect to " + server_ + " " + addr);
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{recv_timeout_s, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

TcpLine::~TcpLine() {
    ::close(fd_);
}

void TcpLine::send_all(std::string_view data) {
    std::size_t off = 0;
    while (off < data.size()) {
        const ssize_t w = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "send to " + server_);
        }
        off += static_cast<std::size_t>(w);
    }
}

void TcpLine::fill() {
    char chunk[4096];
    ssize_t r;
    do
        r = ::recv(fd_, chunk, sizeof chunk, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) throw std::system_error(errno, std::generic_category(), "recv from " + server_);
    if (r == 0) throw std::runtime_error(server_ + " closed the connection");
    buf_.append(chunk, static_cast<std::size_t>(r));
}

std::string TcpLine::read_line() {
    std::size_t end;
    while ((end = buf_.find("\r\n")) == std::string::npos)
        fill();
    std::string line = buf_.substr(0, end);
    buf_.erase(0, end + 2);
    return line;
}

std::string TcpLine::read_exact(std::size_t n) {
    while (buf_.size() < n)
        fill();
    std::string data = buf_.substr(0, n);
    buf_.erase(0, n);
    return data;
}

void TcpLine::skip_exact(std::size_t n) {
    while (buf_.size() < n)
        fill();
    buf_.erase(0, n);
}

}  // namespace errand::bench
