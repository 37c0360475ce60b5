#pragma once
// What browsers are told on every HTTP answer: CORS for the configured origins (preflights
// answered here) and the security headers (nosniff, no framing, no referrer, no caching of API
// answers, HSTS on TLS connections). One object per server, built from the settings at start and
// read-only afterwards, so every session thread uses it without locks.

#include <optional>
#include <string>
#include <string_view>

#include "net/responses.hpp"
#include "net/server.hpp"
#include "protocols/cors.hpp"

namespace relay::net {

class browser_headers {
 public:
  /// Throws std::invalid_argument when http.cors_origins does not parse (the config check should
  /// have refused it before).
  explicit browser_headers(const server_settings& s);

  bool cors_enabled() const noexcept { return cors_.enabled(); }

  /// The request's `Origin` against http.cors_origins.
  cors_match match(const request& req) const noexcept;

  /// A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) while CORS is on:
  /// 204 with the allowed methods and headers for an allowed origin, 403 forbidden for another.
  /// nullopt for every other request (it goes to the api).
  std::optional<response> preflight(const request& req, cors_match m) const;

  /// Adds the security headers and, for an allowed origin, the CORS headers to an answer.
  /// Cache-Control: no-store unless the answer set its own.
  void apply(response& res, cors_match m, bool tls) const;

  /// The same headers as raw `Name: value\r\n` lines, for the SSE stream head (which sets its
  /// own Cache-Control).
  std::string raw_lines(cors_match m, bool tls) const;

 private:
  /// The Access-Control-Allow-Origin value for a match; empty: no CORS headers.
  std::string_view allow_origin(cors_match m) const noexcept;

  cors_allow_list cors_;
  std::string max_age_;  // Access-Control-Max-Age
  std::string hsts_;     // Strict-Transport-Security value; empty: not sent
};

}  // namespace relay::net
