// Config file, environment and flags: see config.hpp for the precedence and how it is achieved.
#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

namespace errand::daemon {
namespace {

// Options that are actions, not settings: never read from the environment, never dumped.
const std::set<std::string> kNotSettings = {"help", "dump-config", "version"};

bool given_on_command_line(const std::string& long_name, int argc, char** argv) {
    const std::string flag = "--" + long_name;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--") break;
        if (arg == flag || arg.rfind(flag + "=", 0) == 0) return true;
    }
    return false;
}

bool is_number(const std::string& s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// A TOML string: single-quoted (literal, no escapes) unless the text holds a single quote.
std::string toml_string(const std::string& s) {
    if (s.find('\'') == std::string::npos && s.find('\n') == std::string::npos)
        return "'" + s + "'";
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out + "\"";
}

std::string toml_value(const std::string& s) {
    return is_number(s) ? s : toml_string(s);
}

bool truthy(const std::string& s) {
    return s == "true" || s == "1" || s == "on" || s == "yes";
}

}  // namespace

CLI::Option* add_config_options(CLI::App& app, bool& dump_config) {
    app.set_config("--config", "", "read settings from this TOML file (see --dump-config)")
        ->type_name("FILE");
    // A misspelt key in the file is an error, not a setting silently left at its default.
    app.allow_config_extras(CLI::config_extras_mode::error);
    return app.add_flag("--dump-config", dump_config,
                        "print the effective configuration as TOML and exit");
}

std::string env_name(const std::string& long_name) {
    std::string out = "ERRAND_";
    for (char c : long_name)
        out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

std::vector<std::string> args_with_env(const CLI::App& app, int argc, char** argv) {
    std::vector<std::string> args;
    for (const CLI::Option* opt : app.get_options()) {
        for (const std::string& name : opt->get_lnames()) {
            if (kNotSettings.count(name)) continue;
            const char* value = std::getenv(env_name(name).c_str());
            if (!value || given_on_command_line(name, argc, argv)) continue;
            args.push_back("--" + name + "=" + value);
        }
    }
    for (int i = 1; i < argc; ++i)
        args.emplace_back(argv[i]);
    std::reverse(args.begin(), args.end());
    return args;
}

std::string dump_config(const CLI::App& app, const std::string& program) {
    std::string out = "# " + program + " configuration (" +
                      "precedence: flags > ERRAND_* environment > this file > defaults)\n";
    for (const CLI::Option* opt : app.get_options()) {
        if (opt->get_lnames().empty()) continue;
        const std::string& name = opt->get_lnames().front();
        if (kNotSettings.count(name) || opt == app.get_config_ptr()) continue;
        const bool flag = opt->get_expected_min() == 0;
        std::vector<std::string> values =
            opt->count() > 0 ? opt->results() : std::vector<std::string>{};
        if (values.empty() && !opt->get_default_str().empty() && !flag)
            values.push_back(opt->get_default_str());
        if (flag) {
            bool on = !values.empty() && truthy(values.back());
            if (opt->count() > 0 && values.empty()) on = true;
            out += name + " = " + (on ? "true" : "false") + "\n";
        } else if (values.empty()) {
            out += "# " + name + " =\n";
        } else if (opt->get_expected_max() > 1) {
            out += name + " = [";
            for (std::size_t i = 0; i < values.size(); ++i)
                out += (i ? ", " : "") + toml_string(values[i]);
            out += "]\n";
        } else {
            out += name + " = " + toml_value(values.back()) + "\n";
        }
    }
    return out;
}

}  // namespace errand::daemon
