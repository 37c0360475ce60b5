#pragma once
// What the listener and every session share: settings, the node, counters, the live-session
// registry and the Asio threads. Held by shared_ptr from each session, so the io_contexts outlive
// every socket even when a node callback keeps a session alive past server::stop().

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "actors/node.hpp"
#include "net/audit_log.hpp"
#include "net/browser_headers.hpp"
#include "net/io_pool.hpp"
#include "net/jwt_keys.hpp"
#include "net/net_counters.hpp"
#include "net/rate_limiter.hpp"
#include "net/refusals.hpp"
#include "net/server.hpp"
#include "net/session_registry.hpp"

namespace relay::net {

class server_state {
 public:
  server_state(server_settings settings, relay::node& n)
      : settings_(std::move(settings)),
        node_(n),
        browser_(settings_),
        jwt_keys_(load_jwt_keys(settings_)),
        audit_(settings_.audit_path, settings_.audit_failures_per_min),
        rate_connections_(spec_of(settings_.rate_connections), settings_.rate_max_keys),
        rate_runs_(spec_of(settings_.rate_runs), settings_.rate_max_keys),
        rate_events_(spec_of(settings_.rate_events), settings_.rate_max_keys),
        rate_messages_(spec_of(settings_.rate_messages), settings_.rate_max_keys),
        pool_(settings_.io_threads) {}
  server_state(const server_state&) = delete;
  server_state& operator=(const server_state&) = delete;

  const server_settings& settings() const noexcept { return settings_; }
  relay::node& node() const noexcept { return node_; }
  net_counters& counters() noexcept { return counters_; }
  const net_counters& counters() const noexcept { return counters_; }
  session_registry& sessions() noexcept { return sessions_; }
  /// CORS and security headers of every HTTP answer.
  const browser_headers& browser() const noexcept { return browser_; }
  /// Refusals by limit (counted, logged once per offender per minute) and open connections per
  /// client address.
  net::refusals& refusals() noexcept { return refusals_; }
  const net::refusals& refusals() const noexcept { return refusals_; }
  ip_connections& per_ip() noexcept { return per_ip_; }
  /// The token buckets of rate.*: connection attempts per address; run creations, producer
  /// events and room messages per user.
  keyed_limiter& rate_connections() noexcept { return rate_connections_; }
  keyed_limiter& rate_runs() noexcept { return rate_runs_; }
  keyed_limiter& rate_events() noexcept { return rate_events_; }
  keyed_limiter& rate_messages() noexcept { return rate_messages_; }
  io_pool& pool() noexcept { return pool_; }
  /// The token verification keys (read at start-up, immutable).
  const jwt_key_set& jwt_keys() const noexcept { return *jwt_keys_; }
  audit_log& audit() noexcept { return audit_; }

  /// The admin endpoints an embedding program added (written before start(), then read-only).
  std::map<std::string, admin_action, std::less<>>& admin_actions() noexcept { return admin_; }
  const std::map<std::string, admin_action, std::less<>>& admin_actions() const noexcept {
    return admin_;
  }

  /// Takes `n` tokens from `key`'s bucket of `bucket`. On refusal, counts and logs it (`why`,
  /// offender `key`) and answers the error for the client: rate_limited with the wait in whole
  /// seconds (rounded up), or too_large when `n` exceeds what the bucket can ever hold.
  std::optional<std::pair<error, int64_t>> take(keyed_limiter& bucket, refusal why,
                                                std::string_view key, double n) {
    const auto t = bucket.try_take(key, n, limiter_clock::now());
    if (t.ok) return std::nullopt;
    refusals_.refuse(why, key);
    if (t.never)
      return std::pair{
          error{errc::too_large, std::to_string(static_cast<uint64_t>(n)) +
                                     " at once exceed the rate limit's burst of " +
                                     std::to_string(static_cast<uint64_t>(bucket.spec().burst))},
          int64_t{0}};
    const auto s = t.retry_after_s();
    return std::pair{error{errc::rate_limited, "rate limit (" + std::string{to_string(why)} +
                                                   "): retry after " + std::to_string(s) + " s"},
                     s};
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
  const browser_headers browser_;
  static rate_spec spec_of(const rate_limit& r) noexcept {
    return rate_spec{static_cast<double>(r.per_s), static_cast<double>(r.burst)};
  }

  std::shared_ptr<const jwt_key_set> jwt_keys_;
  audit_log audit_;
  net_counters counters_;
  net::refusals refusals_;
  ip_connections per_ip_;
  keyed_limiter rate_connections_;
  keyed_limiter rate_runs_;
  keyed_limiter rate_events_;
  keyed_limiter rate_messages_;
  std::map<std::string, admin_action, std::less<>> admin_;
  session_registry sessions_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<bool> halted_{false};
  io_pool pool_;  // last: its contexts (and the handlers queued in them) go first
};

}  // namespace relay::net
