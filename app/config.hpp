#pragma once
// Relay's configuration. One table of options (app/config.cpp) drives the config file, the command
// line, `relay --help` and the documented config file (`relay config` prints it; config/relay.conf
// is its output). Parsing is pure — text and argument lists in, a config or an error out — so every
// rule is unit-tested (tests/app/config_test.cpp); only app/main.cpp touches files.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/node.hpp"
#include "net/server.hpp"
#include "protocols/error.hpp"
#include "protocols/jwt.hpp"

namespace relay {

/// Keep in step with project(VERSION) in CMakeLists.txt (a unit test checks).
inline constexpr std::string_view relay_version = "0.1.0";

/// Loaded when --config is not given and the file exists relative to the working directory.
inline constexpr std::string_view default_config_path = "config/relay.conf";

/// The built-in auth.jwt_secret: public, for development only (a warning says so off loopback).
inline constexpr std::string_view development_secret = "relay-development-secret-change-me";

struct app_config {
  server_settings server;
  node_settings node;
  std::string log_level = "info";                             // log.level
  std::string log_format = "[%Y-%m-%d %H:%M:%S.%e] [%l] %v";  // log.format (spdlog pattern)

  app_config() { server.jwt_secret = development_secret; }
};

enum class command : uint8_t {
  serve,    // relay [serve]: run the server
  token,    // relay token: print a signed JWT
  config,   // relay config: print the effective configuration as a config file
  help,     // relay --help
  version,  // relay --version
};

/// What `relay token` signs.
struct token_request {
  std::string sub;
  role who = role::user;
  int64_t ttl_s = 3600;
  std::string kid;       // --kid: the header's kid (empty: none)
  std::string key_path;  // --key: an RSA private key (PEM) to sign RS256 with; empty: HS256
  std::optional<std::vector<std::string>> rooms;  // --rooms: the rooms claim (absent: none)
};

/// The command line, parsed but not yet applied: settings are checked against the option table
/// (unknown keys are errors here) and their values when resolve_config applies them.
struct command_line {
  command cmd = command::serve;
  std::optional<std::string> config_path;  // --config; absent: default_config_path if it exists
  std::vector<std::pair<std::string, std::string>> settings;  // (key, value) in argument order
  token_request token;                                        // cmd == token
};

/// Parses the arguments after the program name: `[serve|token|config] [--key=value | --key
/// value]…`, the aliases --host, --port, --config, and --help/-h, --version. Errors are bad_request
/// with a message naming the argument.
result<command_line> parse_command_line(const std::vector<std::string_view>& args);

/// Applies config file text (`key = value` lines, `#` comments, `[section]` prefixes, "quoted"
/// values) on top of the built-in defaults and checks the result. Errors name `origin:line` and
/// the key.
result<app_config> parse_config_text(std::string_view text, std::string_view origin);

/// Reads a whole file. errc::not_found when it does not exist, errc::internal when it cannot be
/// read.
using file_reader = std::function<result<std::string>(const std::string& path)>;

/// Start-up resolution: built-in defaults, then the config file (explicit --config must exist;
/// otherwise default_config_path if `read` finds it), then the command-line settings in order,
/// then the cross-checks (e.g. runs.inactivity_s <= runs.max_inactivity_s).
result<app_config> resolve_config(const command_line& cl, const file_reader& read);

/// Sets one option from its text form (what a file line or --key=value carries). Returns the
/// reason when the key is unknown or the value is invalid.
std::optional<std::string> set_option(app_config& cfg, std::string_view key,
                                      std::string_view value);

/// The text form of an option's value as a config file would hold it; nullopt for unknown keys.
std::optional<std::string> get_option(const app_config& cfg, std::string_view key);

/// Every option key, in table order (grouped by section).
std::vector<std::string_view> option_keys();

/// `relay --help`: usage, commands and every option with its default and what it is for.
std::string help_text();

/// `relay config`: `cfg` as a documented config file, grouped by section, every option with a
/// line saying what it is for (and its default where `cfg` differs from it).
std::string render_config_file(const app_config& cfg);

/// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host) noexcept;

/// The start-up warning when the public development secret guards a non-loopback listener.
std::optional<std::string> insecure_secret_warning(const app_config& cfg);

}  // namespace relay
