#pragma once
// Runs as the contract describes them (PROTOCOL.md "HTTP", run status and kinds), and the
// validation of the run endpoints' request bodies. Pure: no I/O, no actors.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/error.hpp"

namespace relay {

enum class run_status : uint8_t { running, completed, failed, cancelled, timed_out };
enum class run_kind : uint8_t { external, synthetic };

std::string_view to_string(run_status s) noexcept;
std::string_view to_string(run_kind k) noexcept;
inline bool is_terminal(run_status s) noexcept { return s != run_status::running; }

/// The public view of a run: GET /v1/runs/{id}.
struct run_info {
  std::string id;
  run_kind kind = run_kind::external;
  run_status status = run_status::running;
  std::string owner;
  std::string reason;  // why it ended, for failed/timed_out ("crashed", "inactivity", ...)
  uint64_t last_seq = 0;
  int64_t created_at = 0;  // ms since epoch
  int64_t ended_at = 0;    // 0 while running
};

/// Parameters of a synthetic run (`input` of a synthetic create).
struct synthetic_params {
  uint32_t count = 10;        // delta events before `complete`
  uint32_t size = 32;         // bytes of payload text per delta
  uint32_t interval_ms = 100; // 0 = as fast as the run can go
};

/// Bounds the server puts on create requests (from config).
struct run_limits {
  uint32_t default_inactivity_s = 60;
  uint32_t max_inactivity_s = 3600;
  uint32_t default_ttl_s = 600;
  uint32_t max_ttl_s = 86400;
  uint32_t max_synthetic_count = 1'000'000;
  uint32_t max_synthetic_size = 65536;
  std::size_t max_data_bytes = 65536;  // an event's `data`, as JSON text
  std::size_t max_events_per_post = 1000;
  std::size_t max_key_bytes = 256;     // idempotency key, owner
  // runs.max_active_per_user: running runs per owner at once (0 = no limit)
  uint32_t max_active_per_user = 1000;
};

/// POST /v1/runs, validated. Defaults from run_limits are filled in.
struct create_run_request {
  run_kind kind = run_kind::external;
  std::string input = "{}";            // compact JSON text of `input`
  synthetic_params synthetic;          // meaningful when kind == synthetic
  std::string idempotency_key;         // empty: none
  std::string owner;                   // empty: the caller (only a service may set it)
  uint32_t inactivity_s = 60;
  uint32_t ttl_s = 600;
};

/// One event a producer appends: type and compact JSON data.
struct event_input {
  std::string type;
  std::string data = "null";
};

/// Parses and validates a POST /v1/runs body. Errors: bad_request (shape, types, ranges),
/// too_large (input over max_data_bytes).
result<create_run_request> parse_create_run(std::string_view body, const run_limits& limits);

/// Parses POST /v1/runs/{id}/events: one `{"type","data"}` object or a non-empty array of them.
/// Types must be valid and not reserved; data at most max_data_bytes as compact JSON (too_large).
result<std::vector<event_input>> parse_events(std::string_view body, const run_limits& limits);

/// POST /v1/runs/{id}/complete: empty body or `{"data"?: any}` → compact JSON of data ("null" if absent).
result<std::string> parse_complete(std::string_view body, const run_limits& limits);

/// POST /v1/runs/{id}/fail: `{"error": {...}}` → compact JSON of the error object
/// (an empty body gives `{"code":"failed"}`).
result<std::string> parse_fail(std::string_view body, const run_limits& limits);

/// `{"id","kind","status","owner","last_seq","created_at","ended_at"?,"reason"?}`.
std::string run_info_json(const run_info& info);

/// 201/200 body of POST /v1/runs: `{"id","status","created_at","events_url"}`.
std::string run_created_json(const run_info& info);

/// `{"runs":[run_info_json...]}`.
std::string run_list_json(const std::vector<run_info>& runs);

/// A new run id: 128 random bits (OpenSSL RAND_bytes), base64url without padding (22 chars).
std::string new_run_id();

/// True for strings a run id can be: `[A-Za-z0-9_-]{1,64}` (rejects anything else before lookup).
bool valid_run_id(std::string_view id) noexcept;

}  // namespace relay
