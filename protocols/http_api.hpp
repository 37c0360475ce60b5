#pragma once
// The HTTP surface of PROTOCOL.md as pure functions: routing a method + target to an endpoint,
// query parameters, bearer tokens. No sockets: net/ calls these, tests and fuzzers call them too.

#include <optional>
#include <string>
#include <string_view>

#include "protocols/error.hpp"

namespace relay {

enum class endpoint : uint8_t {
  health,        // GET  /health
  metrics,       // GET  /metrics
  runs_create,   // POST /v1/runs
  runs_list,     // GET  /v1/runs
  run_get,       // GET  /v1/runs/{id}
  run_append,    // POST /v1/runs/{id}/events
  run_stream,    // GET  /v1/runs/{id}/events   (SSE)
  run_complete,  // POST /v1/runs/{id}/complete
  run_fail,      // POST /v1/runs/{id}/fail
  run_cancel,    // POST /v1/runs/{id}/cancel
  // New values go last: net/ switches on this enum.
  room_post_message,  // POST /v1/rooms/{room}/messages
  room_history,       // GET  /v1/rooms/{room}/messages
  room_stream,        // GET  /v1/rooms/{room}/events   (SSE)
  room_presence,      // GET  /v1/rooms/{room}/presence
  websocket,          // GET  /v1/ws                    (upgrade)
};

struct route {
  endpoint what = endpoint::health;
  // The run id for /v1/runs/{id}/... (valid_run_id) or the room id for /v1/rooms/{room}/...
  // (valid_room_id, not percent-decoded); empty otherwise.
  std::string id;
};

/// Routes `method` ("GET", "POST", ...) and the request target (path plus optional `?query`).
/// Unknown path or malformed id: not_found. Known path, other method: errc::bad_request with
/// message "method not allowed" (the caller answers 405 with an Allow header).
/// Targets over 8 KiB are bad_request.
result<route> match_route(std::string_view method, std::string_view target);

/// True when the route error above means "method not allowed".
bool is_method_not_allowed(const error& e) noexcept;

/// The path part of a target (before '?').
std::string_view target_path(std::string_view target) noexcept;

/// The percent-decoded value of query parameter `name` ('+' is a space); nullopt if absent or
/// malformed (bad %-escape). The first occurrence wins.
std::optional<std::string> query_param(std::string_view target, std::string_view name);

/// The token of an `Authorization: Bearer <jwt>` header value (scheme case-insensitive), or
/// nullopt when the header is empty or another scheme.
std::optional<std::string_view> bearer_token(std::string_view authorization) noexcept;

}  // namespace relay
