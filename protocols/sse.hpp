#pragma once
// Server-Sent Events framing (PROTOCOL.md "Server-Sent Events"). Pure functions.

#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/error.hpp"
#include "protocols/event.hpp"

namespace relay {

/// `id: <seq>\nevent: <type>\ndata: <event_json>\n\n`.
std::string sse_frame(const event& e);

/// `event: gap\ndata: {"from":F,"to":T}\n\n` (no id: a gap has no seq of its own).
std::string sse_gap_frame(uint64_t from, uint64_t to);

/// `retry: <ms>\n\n` — the stream's first bytes.
std::string sse_retry(unsigned ms);

/// `: hb\n\n`.
std::string_view sse_heartbeat() noexcept;

/// Parses a resume position (Last-Event-ID header or `after=` query value): a decimal uint64,
/// surrounding blanks allowed, at most 20 digits. Errors are bad_request.
result<uint64_t> parse_position(std::string_view text);

}  // namespace relay
