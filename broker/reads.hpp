// STATS and QUEUES answered off the loop. Their cost grows with the number of queues (10,000
// queues: a reply of several hundred KB); encoding that on the loop made every other client wait.
// The loop copies what they report into a ReadView — at most once per few milliseconds, and only
// when a request waits and something changed — and hands the requests with it to ReadSide's
// thread, which sorts, encodes and hands the replies back for the loop to send. A reply reflects
// every change committed before its request arrived (the view is taken after that pass's commit).
#pragma once

#include <zmq.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "errand/messages.hpp"
#include "errand/protocol.hpp"
#include "snapshot.hpp"

namespace errand::broker {

// What STATS and QUEUES report, as of one moment of the loop. `stats` holds everything but `req`
// and `queues`; `queues` is every queue the engine counts or has paused, in any order.
struct ReadView {
    StatsReply stats;
    std::vector<QueueView> queues;
    bool sorted = false;  // set by the first answer
};

// The replies, encoded (also used inline when the broker runs without its loop, in tests).
std::string answer_stats(ReadView& view, std::uint64_t req);
std::string answer_queues(ReadView& view, std::uint64_t req);

class ReadSide {
  public:
    // `endpoint`: an inproc name unique to this broker.
    ReadSide(zmq::context_t& ctx, const std::string& endpoint);
    ~ReadSide();
    ReadSide(const ReadSide&) = delete;
    ReadSide& operator=(const ReadSide&) = delete;

    // Queue a request (cmd::kStats or cmd::kQueues); the view must not be changed by the
    // caller afterwards.
    void ask(const std::string& identity, std::string_view command, std::uint64_t req,
             std::shared_ptr<ReadView> view);
    std::size_t waiting() const { return waiting_; }
    // The loop's end of the channel: readable when replies are ready.
    zmq::socket_t& socket() { return loop_; }
    // Every reply ready now, to `send(identity, command, body)`.
    template <typename Send>
    void take_replies(Send&& send) {
        zmq::message_t identity, command, body;
        while (loop_.recv(identity, zmq::recv_flags::dontwait)) {
            (void)loop_.recv(command);
            (void)loop_.recv(body);
            --waiting_;
            send(identity.to_string(), command.to_string_view(), body.to_string());
        }
    }

  private:
    void serve();

    zmq::socket_t loop_;
    zmq::socket_t side_;
    std::thread thread_;
    std::size_t waiting_ = 0;
};

}  // namespace errand::broker
