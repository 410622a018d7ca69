// What a scenario run produces (figures plus the configuration it ran with), the median over
// repeated runs, percentiles, and the two outputs: a readable table and one JSON object.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace errand::bench {

struct Figure {
    std::string key;  // JSON key, e.g. "jobs_per_s"
    double value = 0;
    std::string unit;  // shown in the table, e.g. "jobs/s"
};

struct Result {
    std::string scenario;
    nlohmann::ordered_json config = nlohmann::ordered_json::object();
    std::vector<Figure> figures;
    std::vector<std::string> notes;  // shown under the table, e.g. "stopped at --max-seconds"

    void add(std::string key, double value, std::string unit) {
        figures.push_back({std::move(key), value, std::move(unit)});
    }
};

double median(std::vector<double> values);
// The q-quantile (0..1) of `sorted` by nearest rank.
double quantile(const std::vector<double>& sorted, double q);

// One result whose figures are the medians of `runs` (all with the same figures, in order);
// its JSON also lists every run's values.
Result combine(const std::vector<Result>& runs);

void print_table(const Result& result, std::size_t runs);
nlohmann::ordered_json to_json(const Result& result, const std::vector<Result>& runs);

}  // namespace errand::bench
