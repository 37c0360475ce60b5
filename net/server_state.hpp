#pragma once
// What the listener and every session share: settings, the node, counters, the live-session
// registry and the Asio threads. Held by shared_ptr from each session, so the io_contexts outlive
// every socket even when a node callback keeps a session alive past server::stop().

#include <atomic>
#include <chrono>
#include <map>
#include <string>

#include "actors/node.hpp"
#include "net/audit_log.hpp"
#include "net/io_pool.hpp"
#include "net/jwt_keys.hpp"
#include "net/net_counters.hpp"
#include "net/server.hpp"
#include "net/session_registry.hpp"

namespace relay::net {

class server_state {
 public:
  server_state(server_settings settings, relay::node& n)
      : settings_(std::move(settings)),
        node_(n),
        jwt_keys_(load_jwt_keys(settings_)),
        audit_(settings_.audit_path, settings_.audit_failures_per_min),
        pool_(settings_.io_threads) {}
  server_state(const server_state&) = delete;
  server_state& operator=(const server_state&) = delete;

  const server_settings& settings() const noexcept { return settings_; }
  relay::node& node() const noexcept { return node_; }
  net_counters& counters() noexcept { return counters_; }
  const net_counters& counters() const noexcept { return counters_; }
  session_registry& sessions() noexcept { return sessions_; }
  io_pool& pool() noexcept { return pool_; }
  /// The token verification keys (read at start-up, immutable).
  const jwt_key_set& jwt_keys() const noexcept { return *jwt_keys_; }
  audit_log& audit() noexcept { return audit_; }

  /// The admin endpoints an embedding program added (written before start(), then read-only).
  std::map<std::string, admin_action, std::less<>>& admin_actions() noexcept { return admin_; }
  const std::map<std::string, admin_action, std::less<>>& admin_actions() const noexcept {
    return admin_;
  }

  /// Seconds since the server was constructed (for /health).
  int64_t uptime_s() const noexcept {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                            started_)
        .count();
  }

  /// Set once server::stop() has stopped the Asio threads: late node callbacks are dropped
  /// instead of being posted to a context that no longer runs.
  bool halted() const noexcept { return halted_.load(std::memory_order_acquire); }
  void set_halted() noexcept { halted_.store(true, std::memory_order_release); }

 private:
  const server_settings settings_;
  relay::node& node_;
  std::shared_ptr<const jwt_key_set> jwt_keys_;
  audit_log audit_;
  net_counters counters_;
  std::map<std::string, admin_action, std::less<>> admin_;
  session_registry sessions_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<bool> halted_{false};
  io_pool pool_;  // last: its contexts (and the handlers queued in them) go first
};

}  // namespace relay::net
