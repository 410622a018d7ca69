// Where the daemons' settings come from: flags, ERRAND_* environment variables and a TOML config
// file (--config), with the precedence flag > environment > file > default.
//
// All three become command-line arguments for one CLI11 parse: each ERRAND_NAME variable whose
// --name flag is not on the command line turns into "--name=VALUE", and then each key of the
// file (read with toml++) whose option neither gave into "--key=VALUE". The file is a flat list
// of `key = value` lines whose keys are the long flags without "--"; an unknown key, a table, a
// value of the wrong shape or a bad value is an error naming the file, the line and the key:
//   worker.toml:3: unknown key 'worker-timout' (did you mean 'worker-timeout'?)
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace errand::daemon {

// Adds --config FILE and --dump-config to `app`; returns the dump flag.
CLI::Option* add_config_options(CLI::App& app, bool& dump_config);

// Parses the command line, the environment and the --config file into `app` (see above). Throws
// CLI::ParseError (CLI::ConfigError for the file, "FILE:LINE: ..."), for CLI::App::exit().
void parse_settings(CLI::App& app, int argc, char** argv);

// The environment variable for an option's long name: worker-timeout -> ERRAND_WORKER_TIMEOUT.
std::string env_name(const std::string& long_name);

// argv[1..] with "--name=VALUE" put in front for every option of `app` that has a set
// ERRAND_* variable and is not given on the command line; in the reverse order that
// CLI::App::parse(std::vector<std::string>&) expects.
std::vector<std::string> args_with_env(const CLI::App& app, int argc, char** argv);

// The effective configuration as TOML that --config reads back, written by toml++: every
// option's value (from wherever it came) or its default, in the order of --help; options with
// neither are written commented out.
std::string dump_config(const CLI::App& app, const std::string& program);

}  // namespace errand::daemon
