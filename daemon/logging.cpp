// The JSON lines formatter and the reopenable file sink behind setup_logging().
#include "logging.hpp"

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>

namespace errand::daemon {
namespace {

void append(spdlog::memory_buf_t& dest, std::string_view text) {
    dest.append(text.data(), text.data() + text.size());
}

// Length of the valid UTF-8 sequence at text[i], or 0 when it is not one.
std::size_t utf8_length(std::string_view text, std::size_t i) {
    auto c = static_cast<unsigned char>(text[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > text.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(text[i + k]) >> 6) != 2) return 0;
    return n;
}

// A JSON string literal; bytes that are not UTF-8 become U+FFFD so every line parses.
void append_json_string(spdlog::memory_buf_t& dest, std::string_view text) {
    dest.push_back('"');
    for (std::size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            dest.push_back('\\');
            dest.push_back(static_cast<char>(c));
            ++i;
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            append(dest, buf);
            ++i;
        } else if (std::size_t n = utf8_length(text, i); n > 0) {
            append(dest, text.substr(i, n));
            i += n;
        } else {
            append(dest, "\\ufffd");
            ++i;
        }
    }
    dest.push_back('"');
}

bool all_digits(std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// Splits "job=12 queue=emails attempt=2: rest" into its parts (see errand/log_fields.hpp).
struct JobPrefix {
    std::string_view job, queue, attempt, rest;
};
std::optional<JobPrefix> parse_job_prefix(std::string_view msg) {
    if (msg.rfind("job=", 0) != 0) return std::nullopt;
    auto end = msg.find(": ");
    auto head = msg.substr(0, end);
    JobPrefix p;
    p.rest = end == std::string_view::npos ? std::string_view{} : msg.substr(end + 2);
    while (!head.empty()) {
        auto sp = head.find(' ');
        auto field = head.substr(0, sp);
        head = sp == std::string_view::npos ? std::string_view{} : head.substr(sp + 1);
        auto eq = field.find('=');
        if (eq == std::string_view::npos) return std::nullopt;
        auto key = field.substr(0, eq), value = field.substr(eq + 1);
        if (key == "job")
            p.job = value;
        else if (key == "queue")
            p.queue = value;
        else if (key == "attempt")
            p.attempt = value;
        else
            return std::nullopt;
    }
    if (!all_digits(p.job) || (!p.attempt.empty() && !all_digits(p.attempt))) return std::nullopt;
    return p;
}

class JsonFormatter final : public spdlog::formatter {
  public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        using namespace std::chrono;
        auto since = msg.time.time_since_epoch();
        auto secs = duration_cast<seconds>(since);
        auto ms = duration_cast<milliseconds>(since - secs).count();
        std::time_t t = secs.count();
        std::tm tm{};
        ::gmtime_r(&t, &tm);
        char ts[96];
        std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                      static_cast<int>(ms));
        append(dest, "{\"ts\":\"");
        append(dest, ts);
        append(dest, "\",\"level\":");
        auto level = spdlog::level::to_string_view(msg.level);
        append_json_string(dest, std::string_view(level.data(), level.size()));
        append(dest, ",\"logger\":");
        append_json_string(dest, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
        std::string_view text(msg.payload.data(), msg.payload.size());
        if (auto p = parse_job_prefix(text)) {
            append(dest, ",\"job\":");
            append(dest, p->job);
            if (!p->queue.empty()) {
                append(dest, ",\"queue\":");
                append_json_string(dest, p->queue);
            }
            if (!p->attempt.empty()) {
                append(dest, ",\"attempt\":");
                append(dest, p->attempt);
            }
            text = p->rest;
        }
        append(dest, ",\"msg\":");
        append_json_string(dest, text);
        append(dest, "}\n");
    }
    std::unique_ptr<spdlog::formatter> clone() const override {
        return std::make_unique<JsonFormatter>();
    }
};

// Appends to a file; reopen() starts over at the same path (after logrotate moved the file).
class ReopenableFileSink final : public spdlog::sinks::base_sink<std::mutex> {
  public:
    explicit ReopenableFileSink(std::string path) : path_(std::move(path)) { file_ = open(); }
    ~ReopenableFileSink() override {
        if (file_) std::fclose(file_);
    }
    void reopen() {
        std::lock_guard lock(mutex_);
        std::FILE* fresh = open();
        if (file_) std::fclose(file_);
        file_ = fresh;
    }

  protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t buf;
        formatter_->format(msg, buf);
        std::fwrite(buf.data(), 1, buf.size(), file_);
    }
    void flush_() override { std::fflush(file_); }

  private:
    std::FILE* open() const {
        std::FILE* f = std::fopen(path_.c_str(), "a");
        if (!f)
            throw std::runtime_error("cannot open log file " + path_ + ": " + std::strerror(errno));
        return f;
    }
    std::string path_;
    std::FILE* file_ = nullptr;
};

std::shared_ptr<ReopenableFileSink> g_file_sink;

}  // namespace

std::optional<LogFormat> parse_log_format(std::string_view text) {
    if (text == "text") return LogFormat::text;
    if (text == "json") return LogFormat::json;
    return std::nullopt;
}

std::unique_ptr<spdlog::formatter> make_json_formatter() {
    return std::make_unique<JsonFormatter>();
}

void setup_logging(const LogOptions& options) {
    spdlog::sink_ptr sink;
    if (options.file.empty()) {
        sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    } else {
        g_file_sink = std::make_shared<ReopenableFileSink>(options.file);
        sink = g_file_sink;
    }
    auto logger = std::make_shared<spdlog::logger>(options.name, sink);
    if (options.format == LogFormat::json) logger->set_formatter(make_json_formatter());
    logger->set_level(spdlog::level::from_str(options.level));
    // Every line reaches the file at once: operators tail it, tests read it.
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
}

void reopen_logs() {
    if (g_file_sink) g_file_sink->reopen();
}

}  // namespace errand::daemon
