#pragma once
// Every limit the server enforces, counted per kind (relay_refused_total{reason="..."}) and logged
// at most once per offender per minute, so a flood cannot flood the log too.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "protocols/metrics.hpp"

namespace relay::net {

/// Why something was refused (the `reason` label of relay_refused_total).
enum class refusal : uint8_t {
  header_too_large,    // 413: request line + headers past limits.header_bytes
  body_too_large,      // 413: body past limits.body_bytes
  data_too_large,      // 413 / `error` op: an event's data past runs.max_data_bytes
  frame_too_large,     // close 1009: a WebSocket message past ws.max_message_bytes
  subscriptions,       // `error` op: ws.max_subscriptions
  rooms,               // `error` op: ws.max_rooms
  connections,         // 503: limits.max_connections
  connections_per_ip,  // 429: limits.max_connections_per_ip
  active_runs,         // 429: runs.max_active_per_user
  header_timeout,      // closed: a request head not complete within limits.header_timeout_s
  body_timeout,        // closed: a body not complete within limits.body_timeout_s
  ws_timeout,          // close 1001: no complete frame within ws.timeout_ms
  rate_connections,    // 429: rate.connections_* (per address)
  rate_runs,           // 429 / `error` op: rate.runs_* (per user)
  rate_events,         // 429 / `error` op: rate.events_* (per user, counted in events)
  rate_messages,       // 429 / `error` op: rate.messages_* (per user)
  shunned,             // an address shunned (limits.shun_*): counted once per shun
  count_               // not a reason
};

/// The address part of a peer written "address:port".
inline std::string_view address_of(std::string_view peer) noexcept {
  const auto colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

/// True at most once per refusals::log_interval for one `last_s` (the steady clock's second of the
/// last true): the log throttle of refusals whose offenders are not worth a table entry (CORS,
/// TLS handshakes), where one line a minute for all of them is enough.
bool once_a_minute(std::atomic<int64_t>& last_s) noexcept;

/// The label value, e.g. "rate_events".
std::string_view to_string(refusal r) noexcept;

/// Counts refusals and logs them, at most once per (reason, offender) per `log_interval`.
/// Thread-safe; counting is a relaxed atomic, logging takes a mutex only when a line is due.
class refusals {
 public:
  static constexpr std::chrono::seconds log_interval{60};
  /// (reason, offender) pairs remembered for the log throttle; past it the oldest are forgotten.
  static constexpr std::size_t max_remembered = 4096;

  /// Counts one refusal; logs `detail` at warn level unless this offender (an address or a
  /// user) was logged for this reason within log_interval.
  void refuse(refusal why, std::string_view offender, std::string_view detail = {});

  /// True when a line for (why, offender) is due at `now`, and remembers that it was written.
  /// (The throttle alone, for tests and for callers that log themselves.)
  bool should_log(refusal why, std::string_view offender,
                  std::chrono::steady_clock::time_point now);

  uint64_t count(refusal why) const noexcept {
    return counts_[static_cast<std::size_t>(why)].load(std::memory_order_relaxed);
  }

  /// One relay_refused_total sample per reason.
  void append_to(std::vector<metric_sample>& out) const;

 private:
  std::array<std::atomic<uint64_t>, static_cast<std::size_t>(refusal::count_)> counts_{};
  std::mutex mutex_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> last_logged_;
};

/// Open connections per client address (limits.max_connections_per_ip). An entry lives only
/// while its address has a connection open, so the table is bounded by open connections.
class ip_connections {
 public:
  /// Counts one more connection of `ip`; answers the count including it.
  uint32_t open(const std::string& ip);
  void close(const std::string& ip);
  std::size_t addresses() const;

 private:
  static constexpr std::size_t shard_count = 16;
  struct shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, uint32_t> open;
  };
  shard& shard_of(const std::string& ip);
  std::array<shard, shard_count> shards_;
};

/// One connection counted in ip_connections for as long as it lives (moves with the socket from
/// session to session, as connection_slot does).
class ip_slot {
 public:
  ip_slot() noexcept = default;
  ip_slot(ip_connections& table, std::string ip) : table_(&table), ip_(std::move(ip)) {
    count_ = table_->open(ip_);
  }
  ip_slot(ip_slot&& o) noexcept
      : table_(std::exchange(o.table_, nullptr)), ip_(std::move(o.ip_)), count_(o.count_) {}
  ip_slot& operator=(ip_slot&& o) noexcept {
    if (this != &o) {
      reset();
      table_ = std::exchange(o.table_, nullptr);
      ip_ = std::move(o.ip_);
      count_ = o.count_;
    }
    return *this;
  }
  ip_slot(const ip_slot&) = delete;
  ip_slot& operator=(const ip_slot&) = delete;
  ~ip_slot() { reset(); }

  /// This address's open connections right after this one was counted.
  uint32_t count_at_open() const noexcept { return count_; }

 private:
  void reset() noexcept {
    if (table_) table_->close(ip_);
    table_ = nullptr;
  }
  ip_connections* table_ = nullptr;
  std::string ip_;
  uint32_t count_ = 0;
};

}  // namespace relay::net
