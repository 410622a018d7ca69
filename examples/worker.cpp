// Example: a C++ worker that upper-cases payloads of the "upper" queue.
//   example-worker [ENDPOINT]
#include <errand/worker.hpp>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <string>

namespace {
errand::Worker* g_worker = nullptr;
void on_signal(int) {
    if (g_worker) g_worker->stop();
}
}  // namespace

int main(int argc, char** argv) {
    std::string endpoint = argc > 1 ? argv[1] : std::string(errand::kDefaultEndpoint);
    errand::Worker worker({.endpoint = endpoint, .name = "example-worker", .concurrency = 2});
    worker.handle("upper", [](const errand::Job& job) {
        std::string out = job.payload;
        for (char& c : out)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return errand::Outcome::success(out);
    });
    g_worker = &worker;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    worker.run();
    return 0;
}
