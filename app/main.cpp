// relay: the executable. `relay [serve]` runs the server until SIGTERM/SIGINT, `relay token` mints
// a JWT with the configured secret, `relay config` prints the effective configuration. Exit codes:
// 0 done, 1 start-up failed (an exception: bind error, …), 2 bad command line or configuration.

#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "actors/node.hpp"
#include "app/config.hpp"
#include "net/server.hpp"
#include "protocols/jwt.hpp"

namespace {

constexpr int exit_startup_failed = 1;
constexpr int exit_usage = 2;

relay::result<std::string> read_file(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    return relay::error{relay::errc::not_found, "does not exist"};
  if (std::filesystem::is_directory(status))
    return relay::error{relay::errc::internal, "is a directory"};
  std::ifstream in(path, std::ios::binary);
  if (!in) return relay::error{relay::errc::internal, std::strerror(errno)};
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return relay::error{relay::errc::internal, "read error"};
  return text.str();
}

/// One console logger on stderr (stdout stays for what a command prints: the listening line, a
/// token, a config file), used by every layer through spdlog's default logger.
void set_up_logging(const relay::app_config& cfg) {
  auto logger = spdlog::stderr_color_mt("relay");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(cfg.log_format);
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
}

int64_t now_s() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

int print_token(const relay::app_config& cfg, const relay::token_request& req) {
  auto iat = now_s();
  relay::claims c;
  c.sub = req.sub;
  c.who = req.who;
  c.exp = iat + req.ttl_s;
  c.rooms = req.rooms;
  if (req.key_path.empty()) {
    std::cout << relay::sign_hs256(c, cfg.server.jwt_secret, iat, req.kid) << std::endl;
    return 0;
  }
  std::ifstream in{req.key_path, std::ios::binary};
  std::ostringstream pem;
  pem << in.rdbuf();
  if (!in) {
    std::cerr << "relay token: cannot read --key " << req.key_path << ": " << std::strerror(errno)
              << "\n";
    return 1;
  }
  auto token = relay::sign_rs256(c, pem.str(), iat, req.kid);
  if (!token) {
    std::cerr << "relay token: --key " << req.key_path << ": " << token.err().message << "\n";
    return 1;
  }
  std::cout << *token << std::endl;
  return 0;
}

/// Runs the server until SIGTERM or SIGINT, then stops it gracefully (stop accepting, flush and
/// close sessions, stop the actors) and returns 0. Throws if start-up fails.
int serve(const relay::app_config& cfg) {
  // Block the stop signals before any thread exists: CAF and Asio threads inherit the mask, so
  // only the sigwait below ever sees them and no handler runs on a random thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A peer that goes away mid-write is an error code on its session, never a process kill.
  std::signal(SIGPIPE, SIG_IGN);

  if (auto warning = relay::insecure_secret_warning(cfg)) spdlog::warn("{}", *warning);

#ifdef RELAY_FAULT_INJECTION
  // The relay-fault-test binary (tests/CMakeLists.txt): the relay executable compiled with an
  // admin endpoint that crashes a topic's actor, for the black-box supervision tests. Never in a
  // default build: `relay` itself has neither the endpoint nor node_settings.fault_injection.
  auto node_cfg = cfg.node;
  node_cfg.fault_injection = true;
  relay::node node(node_cfg);
  relay::server server(cfg.server, node);
  server.add_admin_action("fault", [&node](std::string topic, relay::admin_reply reply) {
    node.inject_fault(std::move(topic), [reply = std::move(reply)](relay::result<bool> r) {
      if (r)
        reply(200, R"({"fault":"injected"})");
      else
        reply(relay::http_status(r.err().code), relay::error_body(r.err()));
    });
  });
  spdlog::warn("fault injection is on (relay-fault-test): POST /v1/admin/fault/<topic>");
#else
  relay::node node(cfg.node);
  relay::server server(cfg.server, node);
#endif
  server.start();
  // Tests and scripts parse this line (with port 0 it is the only way to learn the port).
  // With TLS on, ` tls_port=N` follows (the TLS listener's bound port).
  std::printf("relay listening host=%s port=%u node=%s", cfg.server.host.c_str(),
              static_cast<unsigned>(server.bound_port()), node.name().c_str());
  if (server.bound_tls_port() != 0)
    std::printf(" tls_port=%u", static_cast<unsigned>(server.bound_tls_port()));
  std::printf("\n");
  std::fflush(stdout);
  spdlog::info("relay started version={} pid={}", relay::relay_version, getpid());

  int sig = 0;
  sigwait(&stop_signals, &sig);
  // A second signal now takes the default action: an operator can force a stuck shutdown.
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  spdlog::info("relay stopping signal={}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server.stop();
  node.stop();
  spdlog::info("relay stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto cl = relay::parse_command_line(args);
  if (!cl) {
    std::fprintf(stderr, "relay: %s\n", cl.err().message.c_str());
    return exit_usage;
  }
  if (cl->cmd == relay::command::help) {
    std::cout << relay::help_text();
    return 0;
  }
  if (cl->cmd == relay::command::version) {
    std::cout << "relay " << relay::relay_version << '\n';
    return 0;
  }
  auto cfg = relay::resolve_config(*cl, read_file);
  if (!cfg) {
    std::fprintf(stderr, "relay: %s\n", cfg.err().message.c_str());
    return exit_usage;
  }
  try {
    set_up_logging(*cfg);
    switch (cl->cmd) {
      case relay::command::token:
        return print_token(*cfg, cl->token);
      case relay::command::config:
        std::cout << relay::render_config_file(*cfg);
        return 0;
      default:
        return serve(*cfg);
    }
  } catch (const std::exception& e) {
    spdlog::critical("relay failed to start: {}", e.what());
    return exit_startup_failed;
  }
}
