#pragma once
// The HTTP/SSE server: Beast on a fixed pool of Asio threads (one io_context per thread, each
// session pinned to one). It answers the HTTP API of PROTOCOL.md and streams SSE, talking to the
// actor layer only through relay::node.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace relay {

class node;

/// A token bucket's refill rate and depth as configured (rate.*); per_s == 0: off.
struct rate_limit {
  uint32_t per_s = 0;
  uint32_t burst = 0;
};

/// Options of the network layer (config keys server.*, auth.*, sse.*, ws.*, limits.*).
struct server_settings {
  std::string host = "127.0.0.1";            // server.host
  uint16_t port = 8080;                      // server.port (0: ephemeral, see bound_port())
  unsigned io_threads = 1;                   // server.io_threads
  std::string jwt_secret;                    // auth.jwt_secret (HS256)
  int64_t jwt_leeway_s = 0;                  // auth.leeway_s
  std::string jwt_keys;                      // auth.jwt_keys: kid=ALG:path,... (RS256, rotation)
  bool jwt_secret_enabled = true;            // auth.jwt_secret_enabled (0: jwt_keys only)
  std::string audit_path;                    // audit.path (empty: no audit log)
  unsigned audit_failures_per_min = 10;      // audit.auth_failures_per_min (one line per IP)
  std::size_t body_limit = 1 << 20;          // limits.body_bytes (413 past it)
  std::size_t header_limit = 16 * 1024;      // limits.header_bytes
  unsigned header_timeout_s = 10;            // limits.header_timeout_s (read deadline of a request)
  unsigned idle_timeout_s = 60;              // limits.idle_timeout_s (keep-alive idle)
  std::size_t sse_outbound_limit = 4 << 20;  // sse.outbound_limit_bytes: past it, slow consumer
  unsigned sse_retry_ms = 2000;              // sse.retry_ms
  unsigned sse_heartbeat_s = 15;             // sse.heartbeat_s
  unsigned sse_write_delay_ms = 0;           // sse.write_delay_ms (coalescing; 0 = off)
  std::size_t max_connections = 100000;      // limits.max_connections (503 past it)
  std::size_t ws_max_message = 64 * 1024;    // ws.max_message_bytes (close 1009 past it)
  unsigned ws_max_subscriptions = 256;       // ws.max_subscriptions (topics per connection)
  unsigned ws_heartbeat_ms = 25000;          // ws.heartbeat_ms (ping frames at this interval)
  unsigned ws_timeout_ms = 60000;            // ws.timeout_ms (a peer silent this long is closed)
  std::size_t ws_outbound_limit = 4 << 20;   // ws.outbound_limit_bytes: past it, close 4001
  std::string public_url;                    // server.public_url, for events_url (empty: relative)
  // Browsers and TLS (net/browser_headers.hpp, net/tls_tunnel.hpp).
  std::string cors_origins;               // http.cors_origins (empty: no CORS headers)
  unsigned cors_max_age_s = 600;          // http.cors_max_age_s (Access-Control-Max-Age)
  std::string tls_cert_path;              // tls.cert_path (PEM chain; empty: no TLS listener)
  std::string tls_key_path;               // tls.key_path (PEM private key)
  std::string tls_host;                   // tls.host (empty: server.host)
  uint16_t tls_port = 8443;               // tls.port (0: ephemeral, see bound_tls_port())
  unsigned tls_handshake_timeout_s = 10;  // tls.handshake_timeout_s
  uint64_t hsts_max_age_s = 31'536'000;   // tls.hsts_max_age_s (0: no Strict-Transport-Security)

  // Limits against hostile clients (issue 5; see README "Limits and rate limits").
  std::size_t max_connections_per_ip = 1000;  // limits.max_connections_per_ip (429; 0 = off)
  unsigned body_timeout_s = 30;               // limits.body_timeout_s (read deadline of a body)
  unsigned ws_max_rooms = 64;                 // ws.max_rooms (rooms joined per connection)
  rate_limit rate_connections{200, 1000};     // rate.connections_*: per client address
  unsigned shun_s = 60;                       // limits.shun_s: repeat offenders dropped (0 = off)
  uint32_t shun_after = 1000;                 // limits.shun_after: refusals at accept that shun
  unsigned ipv6_prefix = 64;                  // limits.ipv6_prefix: the bits of a client's address
  unsigned shun_max_s = 3600;                 // limits.shun_max_s: a repeat offender's longest shun
  rate_limit rate_runs{20, 200};              // rate.runs_*: run creations per user
  rate_limit rate_events{50000, 100000};      // rate.events_*: producer events per user
  rate_limit rate_messages{200, 6000};        // rate.messages_*: room messages per user
  std::size_t rate_max_keys = 100000;         // rate.max_keys: buckets kept per kind at most
};

/// An extra `POST /v1/admin/<name>/<arg>` endpoint added by an embedding program: the
/// relay-fault-test binary (tests/) adds `fault`; the relay executable adds none, so these paths
/// answer 404 there. Only an `admin` token reaches it. Called on a session's thread with <arg> as
/// written in the path (no percent-decoding); `reply(status, json_body)` must be called exactly
/// once, from any thread.
using admin_reply = std::function<void(unsigned status, std::string json_body)>;
using admin_action = std::function<void(std::string arg, admin_reply reply)>;

class server {
 public:
  server(server_settings settings, node& n);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Adds an admin endpoint (see admin_action). Call before start().
  void add_admin_action(std::string name, admin_action action);

  /// Binds and starts accepting on the Asio threads. Throws std::runtime_error if it cannot bind.
  void start();
  /// The port actually bound (useful with port 0).
  uint16_t bound_port() const noexcept;
  /// The TLS port actually bound; 0 when TLS is off (no tls.cert_path).
  uint16_t bound_tls_port() const noexcept;
  /// Graceful stop: stop accepting, close every session after a final flush (bounded wait),
  /// join the Asio threads. Idempotent. Call from a thread that is not an Asio thread.
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace relay
