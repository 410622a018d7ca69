// Medians, quantiles and output of scenario results (report.hpp).
#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace errand::bench {

double median(std::vector<double> values) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    const std::size_t mid = values.size() / 2;
    return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

double quantile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) return 0;
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

Result combine(const std::vector<Result>& runs) {
    Result out = runs.front();
    for (std::size_t i = 0; i < out.figures.size(); ++i) {
        std::vector<double> values;
        for (const Result& r : runs)
            if (i < r.figures.size()) values.push_back(r.figures[i].value);
        out.figures[i].value = median(values);
    }
    out.notes.clear();
    for (const Result& r : runs)
        for (const std::string& n : r.notes)
            if (std::find(out.notes.begin(), out.notes.end(), n) == out.notes.end())
                out.notes.push_back(n);
    return out;
}

namespace {

std::string format_value(double v) {
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
    if (std::fabs(v) >= 100) return fmt::format("{:.0f}", v);
    if (std::fabs(v) >= 1) return fmt::format("{:.2f}", v);
    return fmt::format("{:.3f}", v);
}

std::string config_value(const nlohmann::ordered_json& v) {
    return v.is_string() ? v.get<std::string>() : v.dump();
}

}  // namespace

void print_table(const Result& result, std::size_t runs) {
    std::string title = "errand-bench " + result.scenario;
    if (runs > 1) title += fmt::format(" (median of {} runs)", runs);
    std::printf("%s\n", title.c_str());
    std::size_t width = 0;
    for (const auto& f : result.figures)
        width = std::max(width, f.key.size());
    for (const auto& [k, v] : result.config.items())
        width = std::max(width, k.size());
    for (const auto& f : result.figures)
        std::printf("  %-*s %14s %s\n", static_cast<int>(width), f.key.c_str(),
                    format_value(f.value).c_str(), f.unit.c_str());
    std::printf("  config:\n");
    for (const auto& [k, v] : result.config.items())
        std::printf("    %-*s %s\n", static_cast<int>(width), k.c_str(), config_value(v).c_str());
    for (const auto& n : result.notes)
        std::printf("  note: %s\n", n.c_str());
    std::fflush(stdout);
}

nlohmann::ordered_json to_json(const Result& result, const std::vector<Result>& runs) {
    nlohmann::ordered_json j;
    j["scenario"] = result.scenario;
    j["runs"] = runs.size();
    for (const auto& f : result.figures)
        j[f.key] = f.value;
    j["config"] = result.config;
    if (runs.size() > 1) {
        nlohmann::ordered_json each = nlohmann::ordered_json::object();
        for (std::size_t i = 0; i < result.figures.size(); ++i) {
            nlohmann::ordered_json values = nlohmann::ordered_json::array();
            for (const Result& r : runs)
                if (i < r.figures.size()) values.push_back(r.figures[i].value);
            each[result.figures[i].key] = values;
        }
        j["each_run"] = each;
    }
    if (!result.notes.empty()) j["notes"] = result.notes;
    return j;
}

}  // namespace errand::bench
