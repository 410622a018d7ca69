// Example: submit jobs with the C++ client library and wait for their results.
//   example-submit [ENDPOINT] [COUNT]
#include <errand/client.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

int main(int argc, char** argv) {
    std::string endpoint = argc > 1 ? argv[1] : std::string(errand::kDefaultEndpoint);
    int count = argc > 2 ? std::stoi(argv[2]) : 3;
    try {
        errand::Client client({.endpoint = endpoint});
        std::vector<errand::JobSpec> jobs;
        for (int i = 0; i < count; ++i)
            jobs.push_back(
                {.queue = "upper", .payload = "hello " + std::to_string(i), .timeout = 30s});
        for (const auto& s : client.submit_batch(std::move(jobs))) {
            auto job = client.wait(s.id, std::chrono::seconds(30));
            if (!job) {
                std::fprintf(stderr, "job %llu: no result within 30s\n",
                             static_cast<unsigned long long>(s.id));
                return 1;
            }
            std::printf("job %llu %s: %s\n", static_cast<unsigned long long>(job->id),
                        std::string(errand::to_string(job->state)).c_str(),
                        job->result.value_or(job->error.value_or("")).c_str());
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "example-submit: %s\n", e.what());
        return 1;
    }
    return 0;
}
