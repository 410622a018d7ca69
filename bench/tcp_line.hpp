// One blocking TCP connection to a server that speaks a line-based protocol (lines end in
// "\r\n"): what the beanstalkd and redis scenarios drive their servers through. Synchronous on
// purpose: one request, then wait for its reply, like the errand sync clients they are set beside.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace errand::bench {

class TcpLine {
  public:
    // Connects to `addr` ("HOST:PORT", IPv4) with TCP_NODELAY and a receive timeout of
    // `recv_timeout_s` (no reply within it is an error, not a hang). `server` names the peer in
    // error messages ("beanstalkd", "redis").
    TcpLine(const std::string& addr, std::string server, int recv_timeout_s = 10);
    ~TcpLine();
    TcpLine(const TcpLine&) = delete;
    TcpLine& operator=(const TcpLine&) = delete;

    // Sends all of `data`; throws std::system_error on failure.
    void send_all(std::string_view data);
    // The next line, without its "\r\n".
    std::string read_line();
    // The next `n` bytes, returned or dropped.
    std::string read_exact(std::size_t n);
    void skip_exact(std::size_t n);

  private:
    void fill();  // one recv() into buf_; throws on error, timeout or a closed connection

    std::string server_;
    int fd_ = -1;
    std::string buf_;
};

}  // namespace errand::bench
