#include "net/net_counters.hpp"

namespace relay::net {

namespace {

template <class T>
void add(std::vector<metric_sample>& out, const char* name, const char* help, const char* type,
         const std::atomic<T>& value) {
  metric_sample s;
  s.name = name;
  s.help = help;
  s.type = type;
  s.value = static_cast<double>(value.load(std::memory_order_relaxed));
  out.push_back(std::move(s));
}

}  // namespace

void net_counters::append_to(std::vector<metric_sample>& out) const {
  add(out, "relay_connections", "Open client connections.", "gauge", connections);
  add(out, "relay_sse_sessions", "Open SSE streams.", "gauge", sse_sessions);
  add(out, "relay_ws_sessions", "Open WebSocket connections.", "gauge", ws_sessions);
  add(out, "relay_shunned_clients",
      "Clients (addresses, IPv6 prefixes) whose connection attempts are dropped (limits.shun_s).",
      "gauge", shunned_clients);
  add(out, "relay_ws_messages_in_total", "WebSocket messages received from clients.", "counter",
      ws_messages_in);
  add(out, "relay_ws_errors_total", "WebSocket error answers to client ops.", "counter", ws_errors);
  add(out, "relay_http_requests_total", "HTTP requests read.", "counter", http_requests);
  add(out, "relay_slow_consumer_drops_total",
      "Streams closed because their outbound queue exceeded the limit.", "counter",
      slow_consumer_drops);
  add(out, "relay_frames_out_total", "SSE frames written.", "counter", frames_out);
  add(out, "relay_bytes_out_total", "Bytes written to clients.", "counter", bytes_out);
  add(out, "relay_writes_total",
      "Socket write calls; frames_out/writes shows how many frames share a writev.", "counter",
      writes);
  add(out, "relay_cors_refusals_total",
      "CORS preflights and WebSocket upgrades refused for an Origin not in http.cors_origins.",
      "counter", cors_refusals);
  add(out, "relay_tls_handshakes_total", "TLS handshakes completed.", "counter", tls_handshakes);
  add(out, "relay_tls_handshake_failures_total",
      "TLS handshakes that failed or passed tls.handshake_timeout_s.", "counter",
      tls_handshake_failures);
  add(out, "relay_auth_failures_total",
      "Requests, upgrades and WebSocket auth ops refused for a missing or invalid token.",
      "counter", auth_failures);
  add(out, "relay_auth_forbidden_total",
      "Requests and ops refused by the token's rights (rooms claim, admin role).", "counter",
      auth_forbidden);
  add(out, "relay_token_expiries_total",
      "WebSocket connections (1008) and SSE streams ended because their token expired.", "counter",
      token_expiries);
  add(out, "relay_token_verifications_total",
      "Bearer-token signatures checked; a keep-alive connection repeating its token is checked "
      "once.",
      "counter", token_verifications);
}

}  // namespace relay::net
