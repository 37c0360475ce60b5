#pragma once
// An event on a topic (PROTOCOL.md "Topics, events, sequence numbers").

#include <cstdint>
#include <string>
#include <string_view>

namespace relay {

/// One event as its topic holds it. `data` is compact one-line JSON text, validated on the way in,
/// so encoders splice it without re-serialising.
struct event {
  uint64_t seq = 0;
  std::string type;
  std::string data = "null";
  int64_t ts = 0;  // ms since epoch, set by the server
};

/// `[a-z0-9_.-]{1,64}`.
bool valid_event_type(std::string_view type) noexcept;

/// Reserved types a producer may not append directly: status, complete, error, cancelled, gap, message.
bool reserved_event_type(std::string_view type) noexcept;

/// `{"seq":17,"type":"delta","data":<data>,"ts":...}` — the event as one line of JSON.
std::string event_json(const event& e);

/// Appends event_json(e) to `out` (no allocation beyond out's growth).
void append_event_json(std::string& out, const event& e);

/// Milliseconds since the Unix epoch (system clock).
int64_t now_ms() noexcept;

}  // namespace relay
