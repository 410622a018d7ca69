// The library's default log sink: one line per call on stderr.
#include "errand/log.hpp"

#include <cstdio>
#include <string>

namespace errand {

std::string_view to_string(LogLevel level) {
    switch (level) {
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::warn:
            return "warn";
        case LogLevel::error:
            return "error";
    }
    return "?";
}

LogFn stderr_log(LogLevel min) {
    return [min](LogLevel level, std::string_view message) {
        if (level < min) return;
        // One write per line, so lines from several threads do not interleave.
        std::string line = "errand: ";
        line += to_string(level);
        line += ": ";
        line += message;
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), stderr);
    };
}

}  // namespace errand
