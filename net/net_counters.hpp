#pragma once
// The network layer's own Prometheus samples, as plain atomics bumped on the Asio threads.

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "net/refusals.hpp"
#include "protocols/metrics.hpp"

namespace relay::net {

struct net_counters {
  std::atomic<int64_t> connections{0};           // gauge: open client sockets
  std::atomic<int64_t> sse_sessions{0};          // gauge: streams past their response header
  std::atomic<int64_t> ws_sessions{0};           // gauge: upgraded WebSocket connections
  std::atomic<int64_t> shunned_clients{0};       // gauge: clients the kernel drops (shunner)
  std::atomic<uint64_t> ws_messages_in{0};       // client WebSocket messages (data frames)
  std::atomic<uint64_t> ws_errors{0};            // `error` answers to client ops
  std::atomic<uint64_t> http_requests{0};        // requests read (answered or streamed)
  std::atomic<uint64_t> slow_consumer_drops{0};  // streams closed at the outbound limit
  std::atomic<uint64_t> frames_out{0};  // SSE event/gap frames and WebSocket messages written
  std::atomic<uint64_t> bytes_out{0};   // bytes written to clients (HTTP and SSE)
  std::atomic<uint64_t> writes{0};      // socket write calls (HTTP and SSE)

  // Browsers and TLS: preflights and WebSocket upgrades refused for their Origin; TLS
  // connections past their handshake; failed or timed-out handshakes.
  std::atomic<uint64_t> cors_refusals{0};
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_handshake_failures{0};
  // Auth (counted once per refusal; the audit log has the per-IP detail).
  std::atomic<uint64_t> auth_failures{0};   // requests, upgrades, `auth` ops refused: 401
  std::atomic<uint64_t> auth_forbidden{0};  // refused by a token's rights (rooms claim, admin)
  std::atomic<uint64_t> token_expiries{0};  // live connections ended by their token's expiry
  std::atomic<uint64_t> token_verifications{
      0};  // signatures checked (not the per-connection reuse)

  /// Appends one sample per counter (relay_connections, relay_http_requests_total, ...).
  void append_to(std::vector<metric_sample>& out) const;
};

/// Counts one open connection for as long as it lives; moves with the socket from the HTTP
/// session to the SSE session and back.
class connection_slot {
 public:
  connection_slot() noexcept = default;
  explicit connection_slot(std::atomic<int64_t>& gauge) noexcept
      : gauge_(&gauge), count_(gauge.fetch_add(1, std::memory_order_relaxed) + 1) {}
  connection_slot(connection_slot&& other) noexcept
      : gauge_(std::exchange(other.gauge_, nullptr)),
        count_(other.count_),
        ip_(std::move(other.ip_)) {}
  connection_slot& operator=(connection_slot&& other) noexcept {
    if (this != &other) {
      reset();
      gauge_ = std::exchange(other.gauge_, nullptr);
      count_ = other.count_;
      ip_ = std::move(other.ip_);
    }
    return *this;
  }
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;
  ~connection_slot() { reset(); }

  /// Open connections right after this one was counted (for the max_connections check).
  int64_t count_at_open() const noexcept { return count_; }
  /// Counts the connection for its client address too (limits.max_connections_per_ip).
  void attach(ip_slot&& ip) noexcept { ip_ = std::move(ip); }
  const ip_slot& ip() const noexcept { return ip_; }

 private:
  void reset() noexcept {
    if (gauge_) gauge_->fetch_sub(1, std::memory_order_relaxed);
    gauge_ = nullptr;
    ip_ = ip_slot{};
  }
  std::atomic<int64_t>* gauge_ = nullptr;
  int64_t count_ = 0;
  ip_slot ip_;
};

}  // namespace relay::net
