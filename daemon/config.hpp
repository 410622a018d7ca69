// Where the daemons' settings come from: flags, ERRAND_* environment variables and a TOML config
// file (--config), with the precedence flag > environment > file > default.
//
// CLI11 reads the config file before the environment and both only fill options still unset,
// which would make the file beat the environment. So the environment is applied as if it were
// flags: args_with_env() turns each ERRAND_NAME variable whose --name flag is not on the command
// line into "--name=VALUE" ahead of the real flags, and CLI11's config file then only fills what
// neither gave.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace errand::daemon {

// Adds --config FILE (CLI11's TOML config) and --dump-config to `app`; returns the dump flag.
CLI::Option* add_config_options(CLI::App& app, bool& dump_config);

// The environment variable for an option's long name: worker-timeout -> ERRAND_WORKER_TIMEOUT.
std::string env_name(const std::string& long_name);

// argv[1..] with "--name=VALUE" put in front for every option of `app` that has a set
// ERRAND_* variable and is not given on the command line; in the reverse order that
// CLI::App::parse(std::vector<std::string>&) expects.
std::vector<std::string> args_with_env(const CLI::App& app, int argc, char** argv);

// The effective configuration as TOML that --config reads back: every option's value (from
// wherever it came) or its default; options with neither are written commented out.
std::string dump_config(const CLI::App& app, const std::string& program);

}  // namespace errand::daemon
