// Config file, environment and flags: see config.hpp for the precedence and how it is achieved.
#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "errand/spelling.hpp"

namespace errand::daemon {
namespace {

// Options that are actions, not settings: never read from the environment, never dumped.
const std::set<std::string> kNotSettings = {"help", "dump-config", "version"};

// The option a file key sets: a setting's long name, not --config itself.
const CLI::Option* setting(const CLI::App& app, const std::string& key) {
    if (kNotSettings.count(key) || key == "config") return nullptr;
    for (const CLI::Option* opt : app.get_options()) {
        const auto& names = opt->get_lnames();
        if (std::find(names.begin(), names.end(), key) != names.end()) return opt;
    }
    return nullptr;
}

std::vector<std::string> setting_names(const CLI::App& app) {
    std::vector<std::string> out;
    for (const CLI::Option* opt : app.get_options()) {
        for (const auto& name : opt->get_lnames())
            if (!kNotSettings.count(name) && name != "config") out.push_back(name);
    }
    return out;
}

// Whether `args` (in order, up to "--") set `opt`, by a long or a short name.
bool given(const CLI::Option& opt, const std::vector<std::string>& args) {
    for (const std::string& arg : args) {
        if (arg == "--") break;
        for (const auto& name : opt.get_lnames()) {
            if (arg == "--" + name || arg.rfind("--" + name + "=", 0) == 0) return true;
        }
        for (const auto& name : opt.get_snames()) {
            if (arg.rfind("-" + name, 0) == 0) return true;
        }
    }
    return false;
}

// The last --config in `args` (in order): "--config=F" or "--config F".
std::optional<std::string> config_path(const std::vector<std::string>& args) {
    std::optional<std::string> path;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--") break;
        if (args[i].rfind("--config=", 0) == 0) path = args[i].substr(9);
        if (args[i] == "--config" && i + 1 < args.size()) path = args[++i];
    }
    return path;
}

std::string scalar_text(const toml::node& node) {
    if (auto s = node.value<std::string>(); s && node.is_string()) return *s;
    if (node.is_integer()) return std::to_string(*node.value<std::int64_t>());
    if (node.is_floating_point()) {
        std::ostringstream out;
        out << *node.value<double>();
        return out.str();
    }
    return *node.value<bool>() ? "true" : "false";
}

// The "--key=VALUE" arguments of a config file's keys that `args` leave unset; `where` gets
// "FILE:LINE" for each key used.
std::vector<std::string> file_args(const CLI::App& app, const std::string& path,
                                   const std::vector<std::string>& args,
                                   std::map<std::string, std::string>& where) {
    {
        std::ifstream probe(path);
        if (!probe) {
            throw CLI::ConfigError(
                fmt::format("cannot read config file {}: {}", path, std::strerror(errno)));
        }
    }
    toml::table table;
    try {
        table = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        throw CLI::ConfigError(
            fmt::format("{}:{}: {}", path, e.source().begin.line, std::string(e.description())));
    }
    // toml++ keeps keys sorted; go through them in the file's order, so the first error
    // reported is the first in the file.
    std::vector<std::pair<std::string, const toml::node*>> entries;
    for (const auto& [key_view, node] : table)
        entries.emplace_back(std::string(key_view.str()), &node);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        return a.second->source().begin.line < b.second->source().begin.line;
    });
    std::vector<std::string> out;
    for (const auto& [key, node_ptr] : entries) {
        const toml::node& node = *node_ptr;
        const auto at = fmt::format("{}:{}", path, node.source().begin.line);
        if (node.is_table()) {
            throw CLI::ConfigError(fmt::format(
                "{}: '{}' is a table; the settings are plain `key = value` lines", at, key));
        }
        const CLI::Option* opt = setting(app, key);
        if (!opt) {
            auto guess = errand::closest_spelling(key, setting_names(app));
            throw CLI::ConfigError(
                fmt::format("{}: unknown key '{}'{}", at, key,
                            guess ? fmt::format(" (did you mean '{}'?)", *guess) : std::string()));
        }
        std::vector<const toml::node*> values;
        if (const toml::array* list = node.as_array()) {
            if (opt->get_expected_max() <= 1) {
                throw CLI::ConfigError(
                    fmt::format("{}: '{}' takes one value, not an array", at, key));
            }
            for (const toml::node& item : *list)
                values.push_back(&item);
        } else {
            values.push_back(&node);
        }
        for (const toml::node* value : values) {
            if (!value->is_string() && !value->is_number() && !value->is_boolean()) {
                throw CLI::ConfigError(
                    fmt::format("{}: '{}' must be a string, a number or true/false{}", at, key,
                                opt->get_expected_max() > 1 ? " (or an array of them)" : ""));
            }
        }
        if (given(*opt, args)) continue;  // the command line or the environment wins
        where[key] = at;
        for (const toml::node* value : values)
            out.push_back("--" + key + "=" + scalar_text(*value));
    }
    return out;
}

// "--name" occurs in `text` as a whole flag (not as the start of a longer one).
bool mentions(const std::string& text, const std::string& name) {
    const std::string flag = "--" + name;
    for (auto at = text.find(flag); at != std::string::npos; at = text.find(flag, at + 1)) {
        const auto end = at + flag.size();
        if (end == text.size() || !(std::isalnum(static_cast<unsigned char>(text[end])) ||
                                    text[end] == '-' || text[end] == '_'))
            return true;
    }
    return false;
}

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

bool truthy(const std::string& s) {
    return s == "true" || s == "1" || s == "on" || s == "yes";
}

}  // namespace

CLI::Option* add_config_options(CLI::App& app, bool& dump_config) {
    // Read by parse_settings, not by CLI11 (whose own config reader knows no line numbers).
    app.add_option("--config", "read settings from this TOML file (see --dump-config)")
        ->type_name("FILE");
    return app.add_flag("--dump-config", dump_config,
                        "print the effective configuration as TOML and exit");
}

void parse_settings(CLI::App& app, int argc, char** argv) {
    auto args = args_with_env(app, argc, argv);
    std::vector<std::string> in_order(args.rbegin(), args.rend());
    const bool only_help = std::any_of(in_order.begin(), in_order.end(), [](const auto& a) {
        return a == "--help" || a == "-h" || a == "--version";
    });
    std::map<std::string, std::string> where;
    if (auto path = config_path(in_order); path && !only_help) {
        auto extra = file_args(app, *path, in_order, where);
        in_order.insert(in_order.begin(), extra.begin(), extra.end());
    }
    args.assign(in_order.rbegin(), in_order.rend());
    try {
        app.parse(args);
    } catch (const CLI::ParseError& e) {
        // A bad value from the file: say where it is.
        for (const auto& [key, at] : where) {
            if (mentions(e.what(), key))
                throw CLI::ConfigError(fmt::format("{}: '{}': {}", at, key, e.what()));
        }
        throw;
    }
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

// `name = value` as toml++ writes it (literal strings where they can be).
std::string toml_line(const std::string& name, toml::node&& value) {
    toml::table one;
    one.insert(name, std::move(value));
    std::ostringstream out;
    out << toml::toml_formatter(one);
    return out.str() + "\n";
}

std::string dump_config(const CLI::App& app, const std::string& program) {
    std::string out = "# " + program + " configuration (" +
                      "precedence: flags > ERRAND_* environment > this file > defaults)\n";
    for (const CLI::Option* opt : app.get_options()) {
        if (opt->get_lnames().empty()) continue;
        const std::string& name = opt->get_lnames().front();
        if (kNotSettings.count(name) || name == "config") continue;
        const bool flag = opt->get_expected_min() == 0;
        std::vector<std::string> values =
            opt->count() > 0 ? opt->results() : std::vector<std::string>{};
        if (values.empty() && !opt->get_default_str().empty() && !flag)
            values.push_back(opt->get_default_str());
        if (flag) {
            bool on = !values.empty() && truthy(values.back());
            if (opt->count() > 0 && values.empty()) on = true;
            out += toml_line(name, toml::value<bool>(on));
        } else if (values.empty()) {
            out += "# " + name + " =\n";
        } else if (opt->get_expected_max() > 1) {
            toml::array list;
            for (const auto& v : values)
                list.push_back(v);
            out += toml_line(name, std::move(list));
        } else if (is_number(values.back()) && values.back().size() < 19) {
            out += toml_line(name, toml::value<std::int64_t>(std::stoll(values.back())));
        } else {
            out += toml_line(name, toml::value<std::string>(values.back()));
        }
    }
    return out;
}

}  // namespace errand::daemon
