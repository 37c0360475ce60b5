#include "app/config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace relay {
namespace {

/// A file of the repository. The root is two levels above this file (__FILE__ is absolute under
/// CMake), or else the nearest directory above the working directory that holds app/config.hpp.
std::string source_file(const std::string& relative) {
  namespace fs = std::filesystem;
  auto root = fs::path(__FILE__).parent_path().parent_path().parent_path();
  for (auto dir = fs::current_path(); !fs::exists(root / "app/config.hpp");
       dir = dir.parent_path()) {
    root = dir;
    if (dir == dir.parent_path()) break;
  }
  std::ifstream in(root / relative, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << (root / relative);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

result<command_line> parse_args(std::initializer_list<std::string_view> args) {
  return parse_command_line(std::vector<std::string_view>(args));
}

/// A file_reader over an in-memory map of path → text.
file_reader files(std::map<std::string, std::string> contents) {
  return [contents](const std::string& path) -> result<std::string> {
    auto it = contents.find(path);
    if (it == contents.end()) return error{errc::not_found, "no such file"};
    return it->second;
  };
}

TEST(config, defaults_match_the_layers_and_the_contract) {
  app_config cfg;
  EXPECT_EQ(cfg.server.host, "127.0.0.1");
  EXPECT_EQ(cfg.server.port, 8080);
  EXPECT_EQ(cfg.server.jwt_secret, development_secret);
  EXPECT_EQ(cfg.server.sse_outbound_limit, 4u << 20);
  EXPECT_EQ(cfg.node.ring_capacity, 2000u);
  EXPECT_EQ(cfg.log_level, "info");
}

TEST(config, every_documented_key_is_an_option) {
  std::vector<std::string_view> expected = {
      "server.host",
      "server.port",
      "server.io_threads",
      "server.public_url",
      "auth.jwt_secret",
      "auth.leeway_s",
      "auth.jwt_keys",
      "auth.jwt_secret_enabled",
      "limits.body_bytes",
      "limits.header_bytes",
      "limits.header_timeout_s",
      "limits.idle_timeout_s",
      "limits.max_connections",
      "limits.max_connections_per_ip",
      "limits.shun_s",
      "limits.shun_after",
      "limits.shun_max_s",
      "limits.ipv6_prefix",
      "limits.body_timeout_s",
      "sse.outbound_limit_bytes",
      "sse.retry_ms",
      "sse.heartbeat_s",
      "sse.write_delay_ms",
      "ws.max_message_bytes",
      "ws.max_subscriptions",
      "ws.max_rooms",
      "ws.heartbeat_ms",
      "ws.timeout_ms",
      "ws.outbound_limit_bytes",
      "http.cors_origins",
      "http.cors_max_age_s",
      "tls.cert_path",
      "tls.key_path",
      "tls.host",
      "tls.port",
      "tls.handshake_timeout_s",
      "tls.hsts_max_age_s",
      "node.name",
      "node.scheduler_threads",
      "node.scheduler_poll",
      "runs.ring_capacity",
      "runs.inactivity_s",
      "runs.max_inactivity_s",
      "runs.ttl_s",
      "runs.max_ttl_s",
      "runs.max_data_bytes",
      "runs.max_events_per_post",
      "runs.max_active_per_user",
      "runs.max_key_bytes",
      "runs.max_synthetic_count",
      "runs.max_synthetic_size",
      "runs.synthetic_batch",
      "rooms.idle_s",
      "rooms.dedup_window",
      "storage.backend",
      "storage.path",
      "storage.postgres",
      "storage.durability",
      "storage.flush_ms",
      "storage.flush_events",
      "storage.max_pending_events",
      "storage.backpressure_events",
      "storage.retention_events_s",
      "storage.retention_runs_s",
      "storage.retention_interval_s",
      "supervisor.restart_max",
      "supervisor.restart_window_s",
      "rate.connections_per_s",
      "rate.connections_burst",
      "rate.runs_per_s",
      "rate.runs_burst",
      "rate.events_per_s",
      "rate.events_burst",
      "rate.messages_per_s",
      "rate.messages_burst",
      "rate.max_keys",
      "audit.path",
      "audit.auth_failures_per_min",
      "log.level",
      "log.format",
  };
  EXPECT_EQ(option_keys(), expected);
}

TEST(config, every_option_round_trips_its_default) {
  app_config defaults;
  for (auto key : option_keys()) {
    auto text = get_option(defaults, key);
    ASSERT_TRUE(text) << key;
    app_config cfg;
    EXPECT_EQ(set_option(cfg, key, *text), std::nullopt) << key;
    EXPECT_EQ(get_option(cfg, key), text) << key;
  }
}

TEST(config, options_reach_the_settings_structs) {
  app_config cfg;
  EXPECT_FALSE(set_option(cfg, "server.port", "9001"));
  EXPECT_FALSE(set_option(cfg, "auth.jwt_secret", "s3cret"));
  EXPECT_FALSE(set_option(cfg, "limits.body_bytes", "2048"));
  EXPECT_FALSE(set_option(cfg, "sse.outbound_limit_bytes", "65536"));
  EXPECT_FALSE(set_option(cfg, "runs.inactivity_s", "30"));
  EXPECT_FALSE(set_option(cfg, "runs.ttl_s", "5"));
  EXPECT_FALSE(set_option(cfg, "runs.ring_capacity", "10"));
  EXPECT_FALSE(set_option(cfg, "supervisor.restart_max", "7"));
  EXPECT_FALSE(set_option(cfg, "log.level", "debug"));
  EXPECT_EQ(cfg.server.port, 9001);
  EXPECT_EQ(cfg.server.jwt_secret, "s3cret");
  EXPECT_EQ(cfg.server.body_limit, 2048u);
  EXPECT_EQ(cfg.server.sse_outbound_limit, 65536u);
  EXPECT_EQ(cfg.node.limits.default_inactivity_s, 30u);
  EXPECT_EQ(cfg.node.limits.default_ttl_s, 5u);
  EXPECT_EQ(cfg.node.ring_capacity, 10u);
  EXPECT_EQ(cfg.node.restart_max, 7u);
  EXPECT_EQ(cfg.log_level, "debug");
}

TEST(config, values_are_validated) {
  app_config cfg;
  EXPECT_TRUE(set_option(cfg, "server.port", "65536"));
  EXPECT_TRUE(set_option(cfg, "server.port", "-1"));
  EXPECT_TRUE(set_option(cfg, "server.port", "80x"));
  EXPECT_TRUE(set_option(cfg, "server.port", ""));
  EXPECT_TRUE(set_option(cfg, "server.io_threads", "0"));
  EXPECT_TRUE(set_option(cfg, "server.public_url", "relay.example.com"));
  EXPECT_TRUE(set_option(cfg, "server.public_url", "https://relay.example.com/"));
  EXPECT_FALSE(set_option(cfg, "server.public_url", "https://relay.example.com"));
  EXPECT_TRUE(set_option(cfg, "auth.jwt_secret", ""));
  EXPECT_TRUE(set_option(cfg, "node.name", "has space"));
  EXPECT_TRUE(set_option(cfg, "log.level", "verbose"));
  EXPECT_TRUE(set_option(cfg, "no.such_key", "1"));
  EXPECT_TRUE(set_option(cfg, "auth.jwt_keys", "k=ES256:/p"));
  EXPECT_TRUE(set_option(cfg, "auth.jwt_keys", "a=RS256:/p, a=HS256:/q"));
  EXPECT_TRUE(set_option(cfg, "auth.jwt_secret_enabled", "2"));
  EXPECT_TRUE(set_option(cfg, "audit.auth_failures_per_min", "0"));
  EXPECT_EQ(cfg.server.port, 8080);  // failed sets leave the value alone
}

TEST(config, auth_keys_and_audit_options) {
  app_config cfg;
  EXPECT_TRUE(cfg.server.jwt_keys.empty());
  EXPECT_TRUE(cfg.server.jwt_secret_enabled);
  EXPECT_TRUE(cfg.server.audit_path.empty());  // the audit log is off by default
  EXPECT_EQ(cfg.server.audit_failures_per_min, 10u);
  EXPECT_FALSE(set_option(cfg, "auth.jwt_keys", "new=RS256:/etc/relay/new.pem, old=HS256:/k"));
  EXPECT_EQ(cfg.server.jwt_keys, "new=RS256:/etc/relay/new.pem, old=HS256:/k");
  EXPECT_FALSE(set_option(cfg, "audit.path", "/var/log/relay/audit.log"));
  EXPECT_EQ(cfg.server.audit_path, "/var/log/relay/audit.log");
  // Turning the shared secret off needs another key.
  auto none = parse_config_text("auth.jwt_secret_enabled = 0\n", "relay.conf");
  ASSERT_FALSE(none);
  EXPECT_NE(none.err().message.find("auth.jwt_keys"), std::string::npos) << none.err().message;
  auto rs_only = parse_config_text(
      "auth.jwt_secret_enabled = 0\nauth.jwt_keys = \"k=RS256:/etc/k.pem\"\n", "relay.conf");
  ASSERT_TRUE(rs_only) << rs_only.err().message;
  EXPECT_FALSE(rs_only->server.jwt_secret_enabled);
  // Without the shared secret, the development secret is no longer a risk off loopback.
  rs_only->server.host = "0.0.0.0";
  EXPECT_FALSE(insecure_secret_warning(*rs_only));
}

TEST(config_file, keys_sections_comments_and_quotes) {
  auto cfg = parse_config_text(
      "# a comment\n"
      "\n"
      "server.port = 9000\n"
      "[auth]\n"
      "jwt_secret = \"with # hash and \\\"quotes\\\"\"   # trailing comment\n"
      "leeway_s=5\r\n"
      "  [ runs ]  \n"
      "ring_capacity = 100 # bare value, then a comment\n"
      "[node]\n"
      "name = n1 # a name\n"
      "[log]\n"
      "format = %l#%v\n",
      "test.conf");
  ASSERT_TRUE(cfg) << cfg.err().message;
  EXPECT_EQ(cfg->server.port, 9000);
  EXPECT_EQ(cfg->server.jwt_secret, "with # hash and \"quotes\"");
  EXPECT_EQ(cfg->server.jwt_leeway_s, 5);
  EXPECT_EQ(cfg->node.ring_capacity, 100u);
  EXPECT_EQ(cfg->node.name, "n1");
  EXPECT_EQ(cfg->log_format, "%l#%v");
}

TEST(config_file, a_section_header_equals_a_dotted_key) {
  auto a = parse_config_text("[server]\nport = 8081\n", "a");
  auto b = parse_config_text("server.port = 8081\n", "b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->server.port, b->server.port);
}

TEST(config_file, errors_name_file_line_and_key) {
  auto expect_error = [](std::string_view text, std::string_view fragment) {
    auto cfg = parse_config_text(text, "relay.conf");
    ASSERT_FALSE(cfg) << text;
    EXPECT_NE(cfg.err().message.find(fragment), std::string::npos)
        << "message: " << cfg.err().message << "\nwanted: " << fragment;
  };
  expect_error("\n\nserver.prot = 1\n", "relay.conf:3: unknown key 'server.prot'");
  expect_error("[server]\nport = eighty\n", "relay.conf:2: server.port: 'eighty' is not a whole");
  expect_error("[server]\nport = 70000\n", "relay.conf:2: server.port: 70000 is out of range");
  expect_error("[sse]\nretry_ms = 1e3\n", "relay.conf:2: sse.retry_ms");
  expect_error("server.port 8080\n", "relay.conf:1: expected `key = value`");
  expect_error("[server\n", "relay.conf:1: a section header");
  expect_error("[]\n", "relay.conf:1: empty section");
  expect_error("auth.jwt_secret = \"open\n", "relay.conf:1: auth.jwt_secret: unterminated");
  expect_error("auth.jwt_secret = \"a\" b\n", "relay.conf:1: auth.jwt_secret: unexpected text");
  expect_error("log.level = loud\n", "relay.conf:1: log.level: must be one of");
}

TEST(config_file, defaults_may_not_exceed_their_maxima) {
  auto cfg = parse_config_text("runs.max_inactivity_s = 100\n\nruns.inactivity_s = 200\n", "f");
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().message,
            "f:3: runs.inactivity_s = 200 exceeds runs.max_inactivity_s = 100 (f:1)");
  auto ttl = parse_config_text("runs.ttl_s = 90000\n", "g");
  ASSERT_FALSE(ttl);
  EXPECT_NE(ttl.err().message.find("runs.max_ttl_s = 86400 (built-in default)"), std::string::npos);
}

TEST(command_line, commands_and_settings) {
  auto cl = parse_args({});
  ASSERT_TRUE(cl);
  EXPECT_EQ(cl->cmd, command::serve);
  EXPECT_FALSE(cl->config_path);

  cl = parse_args({"serve", "--port", "0", "--host=0.0.0.0", "--sse.retry_ms=500",
                   "--auth.jwt_secret", "x", "--config", "my.conf"});
  ASSERT_TRUE(cl) << cl.err().message;
  EXPECT_EQ(cl->cmd, command::serve);
  EXPECT_EQ(cl->config_path, "my.conf");
  std::vector<std::pair<std::string, std::string>> expected = {{"server.port", "0"},
                                                               {"server.host", "0.0.0.0"},
                                                               {"sse.retry_ms", "500"},
                                                               {"auth.jwt_secret", "x"}};
  EXPECT_EQ(cl->settings, expected);

  // A value may itself contain '='.
  cl = parse_args({"--auth.jwt_secret=a=b"});
  ASSERT_TRUE(cl);
  EXPECT_EQ(cl->settings.at(0).second, "a=b");

  EXPECT_EQ(parse_args({"--help"})->cmd, command::help);
  EXPECT_EQ(parse_args({"serve", "-h"})->cmd, command::help);
  EXPECT_EQ(parse_args({"--version"})->cmd, command::version);
  EXPECT_EQ(parse_args({"config", "--port=1"})->cmd, command::config);
}

TEST(command_line, token_subcommand) {
  auto cl = parse_args(
      {"token", "--sub", "alice", "--role=service", "--ttl", "60", "--auth.jwt_secret=k"});
  ASSERT_TRUE(cl) << cl.err().message;
  EXPECT_EQ(cl->cmd, command::token);
  EXPECT_EQ(cl->token.sub, "alice");
  EXPECT_EQ(cl->token.who, role::service);
  EXPECT_EQ(cl->token.ttl_s, 60);
  EXPECT_EQ(cl->settings.size(), 1u);

  cl = parse_args({"token", "--sub", "bob", "--role", "user"});
  ASSERT_TRUE(cl);
  EXPECT_EQ(cl->token.ttl_s, 3600);
  EXPECT_EQ(cl->token.kid, "");
  EXPECT_EQ(cl->token.key_path, "");
  EXPECT_FALSE(cl->token.rooms.has_value()) << "no --rooms: no claim (every room)";
}

TEST(command_line, token_kid_key_and_rooms) {
  auto cl = parse_args({"token", "--sub", "a", "--role", "user", "--kid", "rs-2026.12", "--key",
                        "/etc/relay/private.pem", "--rooms", " support-*, team.a ,lobby"});
  ASSERT_TRUE(cl) << cl.err().message;
  EXPECT_EQ(cl->token.kid, "rs-2026.12");
  EXPECT_EQ(cl->token.key_path, "/etc/relay/private.pem");
  ASSERT_TRUE(cl->token.rooms.has_value());
  EXPECT_EQ(*cl->token.rooms, (std::vector<std::string>{"support-*", "team.a", "lobby"}));

  cl = parse_args({"token", "--sub", "a", "--role", "user", "--rooms="});
  ASSERT_TRUE(cl) << cl.err().message;
  ASSERT_TRUE(cl->token.rooms.has_value());
  EXPECT_TRUE(cl->token.rooms->empty()) << "an empty list: no room at all";
}

TEST(command_line, errors) {
  auto expect_error = [](std::initializer_list<std::string_view> args, std::string_view fragment) {
    auto cl = parse_args(args);
    ASSERT_FALSE(cl);
    EXPECT_NE(cl.err().message.find(fragment), std::string::npos)
        << "message: " << cl.err().message << "\nwanted: " << fragment;
  };
  expect_error({"--nope=1"}, "unknown option --nope");
  expect_error({"--port"}, "--port needs a value");
  expect_error({"stray"}, "unknown command 'stray'");
  expect_error({"serve", "stray"}, "unexpected argument 'stray'");
  expect_error({"--sub", "alice"}, "--sub is an option of `relay token`");
  expect_error({"token", "--sub", "alice"}, "needs --sub NAME and --role");
  expect_error({"token", "--role", "user"}, "needs --sub NAME and --role");
  expect_error({"token", "--sub", "a", "--role", "root"}, "--role: 'root'");
  expect_error({"token", "--sub", "a", "--role", "user", "--ttl", "0"}, "--ttl: '0'");
  expect_error({"token", "--sub", "a", "--role", "user", "--ttl", "1h"}, "--ttl: '1h'");
  expect_error({"--kid", "k1"}, "--kid is an option of `relay token`");
  expect_error({"token", "--sub", "a", "--role", "user", "--kid", "a b"}, "--kid: 'a b'");
  expect_error({"token", "--sub", "a", "--role", "user", "--kid", std::string(65, 'k')}, "--kid");
  expect_error({"token", "--sub", "a", "--role", "user", "--key="}, "--key needs the path");
  expect_error({"token", "--sub", "a", "--role", "user", "--rooms", "ok,not ok"},
               "--rooms: 'not ok'");
  expect_error({"token", "--sub", "a", "--role", "user", "--rooms", "a,,b"}, "--rooms: ''");
}

TEST(resolve, file_then_command_line) {
  auto cl = parse_args({"--port", "9002", "--config", "my.conf"});
  ASSERT_TRUE(cl);
  auto cfg = resolve_config(*cl, files({{"my.conf", "server.port = 9001\nnode.name = n7\n"}}));
  ASSERT_TRUE(cfg) << cfg.err().message;
  EXPECT_EQ(cfg->server.port, 9002);  // the command line wins
  EXPECT_EQ(cfg->node.name, "n7");    // the file still applies
}

TEST(resolve, default_file_is_optional_but_an_explicit_one_is_not) {
  auto cfg = resolve_config(*parse_args({}), files({}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.port, 8080);

  cfg = resolve_config(*parse_args({}), files({{"config/relay.conf", "server.port = 1234\n"}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.port, 1234);

  cfg = resolve_config(*parse_args({"--config", "missing.conf"}), files({}));
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.err().message.find("missing.conf"), std::string::npos);

  auto unreadable = [](const std::string&) -> result<std::string> {
    return error{errc::internal, "permission denied"};
  };
  cfg = resolve_config(*parse_args({}), unreadable);
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.err().message.find("permission denied"), std::string::npos);
}

TEST(resolve, errors_name_their_origin) {
  auto cfg = resolve_config(*parse_args({"--server.port=99999"}), files({}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().message,
            "command line --server.port: server.port: 99999 is out of range 0..65535");

  cfg = resolve_config(*parse_args({"--runs.inactivity_s=5000"}),
                       files({{"config/relay.conf", "[runs]\nmax_inactivity_s = 4000\n"}}));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().message,
            "command line --runs.inactivity_s: runs.inactivity_s = 5000 exceeds "
            "runs.max_inactivity_s = 4000 (config/relay.conf:2)");
}

TEST(documented_file, round_trips_every_option) {
  app_config changed;
  ASSERT_FALSE(set_option(changed, "server.port", "1"));
  ASSERT_FALSE(set_option(changed, "auth.jwt_secret", "quote \" and backslash \\ and # hash"));
  ASSERT_FALSE(set_option(changed, "log.format", "[%l] %v"));
  ASSERT_FALSE(set_option(changed, "runs.max_ttl_s", "5"));
  ASSERT_FALSE(set_option(changed, "runs.ttl_s", "5"));
  auto text = render_config_file(changed);
  auto parsed = parse_config_text(text, "rendered");
  ASSERT_TRUE(parsed) << parsed.err().message;
  for (auto key : option_keys())
    EXPECT_EQ(get_option(*parsed, key), get_option(changed, key)) << key;
  EXPECT_NE(text.find("(default: 8080)"), std::string::npos);
}

TEST(documented_file, config_relay_conf_is_the_generated_file) {
  // config/relay.conf documents every option with its default; it must not drift from the table.
  // After changing an option: build/relay config --config /dev/null > config/relay.conf
  EXPECT_EQ(source_file("config/relay.conf"), render_config_file(app_config{}));
}

TEST(documented_file, help_lists_every_option_with_its_default) {
  auto help = help_text();
  app_config defaults;
  for (auto key : option_keys())
    EXPECT_NE(help.find("--" + std::string(key) + "=" + *get_option(defaults, key)),
              std::string::npos)
        << key;
}

TEST(version, matches_the_cmake_project) {
  auto cmake = source_file("CMakeLists.txt");
  EXPECT_NE(cmake.find("VERSION " + std::string(relay_version)), std::string::npos);
}

TEST(security, warns_about_the_development_secret_off_loopback) {
  app_config cfg;
  EXPECT_FALSE(insecure_secret_warning(cfg));
  cfg.server.host = "0.0.0.0";
  EXPECT_TRUE(insecure_secret_warning(cfg));
  cfg.server.jwt_secret = "a real secret";
  EXPECT_FALSE(insecure_secret_warning(cfg));

  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
}

TEST(security, warns_when_only_the_tls_listener_is_off_loopback) {
  app_config cfg;
  cfg.server.tls_host = "0.0.0.0";
  EXPECT_FALSE(insecure_secret_warning(cfg));  // no certificate: no TLS listener
  cfg.server.tls_cert_path = "relay.crt";
  auto warning = insecure_secret_warning(cfg);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("0.0.0.0"), std::string::npos) << *warning;
  cfg.server.tls_host.clear();  // TLS on server.host, which is loopback
  EXPECT_FALSE(insecure_secret_warning(cfg));
}

TEST(config, cors_origins_are_checked_when_the_config_is_read) {
  auto ok = parse_config_text(
      "[http]\ncors_origins = \"https://a.example, http://localhost:3000\"\n", "relay.conf");
  ASSERT_TRUE(ok) << ok.err().message;
  EXPECT_EQ(ok->server.cors_origins, "https://a.example, http://localhost:3000");
  auto bad = parse_config_text("[http]\ncors_origins = \"https://a.example/app\"\n", "relay.conf");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("relay.conf:2"), std::string::npos) << bad.err().message;
  EXPECT_NE(bad.err().message.find("https://a.example/app"), std::string::npos)
      << bad.err().message;
}

}  // namespace
}  // namespace relay
