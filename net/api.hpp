#pragma once
// The run API of PROTOCOL.md ("HTTP"): routing, authentication, role checks, the node call and
// the formatting of its answer. Sessions move bytes; this file decides what the bytes say.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "net/responses.hpp"
#include "protocols/cors.hpp"
#include "protocols/jwt.hpp"

namespace relay::net {

class http_session;
class server_state;

/// A request that becomes an SSE stream once the node accepts the subscription.
struct stream_request {
  caller who;
  std::string topic;      // "run:<id>" or "room:<id>"
  uint64_t after = 0;     // the client's position
  bool from_now = false;  // no position given on a room: start at its current last seq
  unsigned version = 11;
  bool keep_alive = true;  // for an error answer to the subscribe
  /// The token's `exp`: the stream ends then (plus auth.leeway_s).
  int64_t expires_at_s = 0;
  // Set by the http_session that hands the connection over: the stream's head (or its error
  // answer) carries the same browser headers as any answer.
  cors_match cors = cors_none;
  bool tls = false;
};

/// A request that becomes a WebSocket session (PROTOCOL.md "WebSocket"): authenticated, with the
/// upgrade headers checked.
struct ws_request {
  caller who;
  int64_t expires_at_s = 0;  // the token's `exp` (the `auth` op can extend it)
  std::string accept_key;    // Sec-WebSocket-Accept for the 101 answer
  /// The token's `rooms` claim (protocols/room_access.hpp; the `auth` op can replace it).
  std::optional<std::vector<std::string>> rooms;
};

/// Room history pages: messages per page unless `limit` says otherwise, and at most.
constexpr uint32_t default_history_limit = 50;
constexpr uint32_t max_history_limit = 500;

/// The last bearer token a connection presented, with its verified claims: a keep-alive client
/// sends the same token on every request, and its signature (an RSA verify for RS256) is checked
/// once per connection instead of once per request. Reused only for the same bytes and while
/// `exp` (plus the leeway) is not past; anything else is verified in full.
struct token_cache {
  std::string token;
  claims verified;
};

class api {
 public:
  explicit api(server_state& state) noexcept : state_(state) {}

  /// Handles one complete request on the session's thread. Exactly one of these follows, each on
  /// the session's thread (node answers are posted back to it): session->reply(response),
  /// session->start_stream(stream_request) or session->start_websocket(ws_request).
  void handle(request&& req, const std::shared_ptr<http_session>& session);

  /// The caller of a /v1 request: `Authorization: Bearer` or the `access_token` query parameter,
  /// verified with the configured keys (auth.jwt_secret, auth.jwt_keys). Errors are unauthorized.
  result<caller> authenticate(const request& req) const;

  /// Verifies a bearer token against the configured keys (the `auth` op of a WebSocket reuses it).
  result<claims> verify_token(std::string_view token) const;

  /// Counts a refused token of `peer` ("ip:port") in /metrics and the audit log's per-IP window.
  void auth_failed(std::string_view peer, const error& why) const;

 private:
  /// POST /v1/admin/<name>/<arg> for an action added with server::add_admin_action: answers it
  /// (401/403/the action's answer) and returns true; false when no such action exists.
  bool admin_action(const request& req, const std::shared_ptr<http_session>& s);
  /// The claims of the request's token (header, else `access_token`); `cache`: the connection's
  /// last verified token (read and updated).
  result<claims> token_claims(const request& req, token_cache* cache = nullptr) const;
  /// Answers a body that failed validation (counting too_large as a data_too_large refusal).
  void refuse_input(const error& e, const caller& who, const std::shared_ptr<http_session>& s);
  response health() const;
  response metrics() const;
  void create_run(const request& req, const caller& who, const std::shared_ptr<http_session>& s);
  void list_runs(const request& req, const caller& who, const std::shared_ptr<http_session>& s);
  void append(const request& req, const caller& who, std::string id,
              const std::shared_ptr<http_session>& s);
  void finish(const request& req, const caller& who, std::string id, finish_kind how,
              const std::shared_ptr<http_session>& s);
  /// SSE on a topic; without Last-Event-ID or `after`, a run starts at 0 and a room "now".
  void stream(const request& req, const caller& who, std::string topic, bool default_from_now,
              int64_t expires_at_s, const std::shared_ptr<http_session>& s);
  void post_message(const request& req, const caller& who, std::string room,
                    const std::shared_ptr<http_session>& s);
  /// GET /v1/ws: checks the upgrade headers (RFC 6455 4.2.1) and hands the connection over.
  void upgrade(const request& req, const std::shared_ptr<http_session>& s);
  /// GET /v1/rooms/{room}/messages?before_seq=&limit= (limit: default 50, at most 500).
  void history(const request& req, const caller& who, std::string room,
               const std::shared_ptr<http_session>& s);
  void presence(const caller& who, std::string room, const std::shared_ptr<http_session>& s);

  server_state& state_;
};

}  // namespace relay::net
