#pragma once
// The WebSocket protocol of PROTOCOL.md "WebSocket" as plain data, independent of framing: client
// ops decoded from one JSON text into structs, server messages encoded to JSON text. A later
// Socket.IO framing maps onto the same ops. Dispatch lives in net/, not here. Pure: no I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "protocols/room.hpp"

namespace relay {

/// Bounds on client ops (from config). Oversized text/data is too_large, other strings bad_request.
struct ws_limits {
  std::size_t max_message_bytes = 65536;  // one text frame (the session closes 1009 past it)
  std::size_t max_data_bytes = 65536;     // `data` of send/publish, as compact JSON
  std::size_t max_text_bytes = 16384;     // `text` of send
  std::size_t max_ref_bytes = 128;
  std::size_t max_client_msg_id_bytes = 128;
  std::size_t max_token_bytes = 8192;  // `token` of auth

  room_limits room() const noexcept {
    return {max_text_bytes, max_data_bytes, max_client_msg_id_bytes};
  }
};

/// A topic name split into its kind and id: `run:<valid_run_id>` or `room:<valid_room_id>`.
enum class topic_kind : uint8_t { run, room };
struct topic_name {
  topic_kind kind = topic_kind::run;
  std::string_view id;  // points into the parsed text
};

/// nullopt for anything that is not a valid topic.
std::optional<topic_name> parse_topic(std::string_view topic) noexcept;

namespace ws {

// Client ops. `ref` is not repeated in each: it is in decoded_op / decode_failure.

/// `after` absent: the topic's default start, as for SSE (0 for a run, "now" for a room).
struct subscribe {
  std::string topic;  // validated with parse_topic
  std::optional<uint64_t> after;
};
struct unsubscribe {
  std::string topic;  // validated with parse_topic
};
/// `after` absent: "now" (no replay).
struct join {
  std::string room;  // validated with valid_room_id
  std::optional<uint64_t> after;
};
struct leave {
  std::string room;
};
struct send {
  std::string room;
  room_message_input message;  // text and/or data, client_msg_id (same rules as the HTTP POST)
};
/// Appends to a run (service role; the server checks the role, not the decoder).
struct publish {
  std::string topic;          // always a run topic
  std::string type;           // valid, not reserved
  std::string data = "null";  // compact JSON; "null" when absent
};
struct ping {};
struct auth {
  std::string token;
};

using client_op = std::variant<subscribe, unsubscribe, join, leave, send, publish, ping, auth>;

/// A decoded op and the `ref` to echo in its answer (empty: none given).
struct decoded_op {
  client_op op;
  std::string ref;
};

/// Why a text was refused, and the `ref` to echo in the `error` answer: the client's ref when the
/// text was a JSON object with a valid string `ref`, else empty.
struct decode_failure {
  error err;
  std::string ref;
};

/// Index 0: decoded_op, index 1: decode_failure.
using decode_result = std::variant<decoded_op, decode_failure>;

/// Decodes one client text frame. Unknown fields are ignored; a null optional field is absent.
/// Errors (bad_request unless noted): text over max_message_bytes (too_large), invalid JSON
/// (including invalid UTF-8 and nesting deeper than 64), not an object, `ref` not a string or
/// over max_ref_bytes, `op` missing, not a string or unknown, a required field missing, a field of
/// the wrong type, an invalid topic / room id / event type, a reserved type, `after` not a
/// non-negative integer, send with neither text nor data, text or data over its bound (too_large).
decode_result decode_client_op(std::string_view text, const ws_limits& limits);

// Server messages. A `ref` argument that is empty is omitted from the output.

/// `{"op":"hello","session_id":..,"node":..,"heartbeat_ms":N}` — the first message.
std::string encode_hello(std::string_view session_id, std::string_view node, uint64_t heartbeat_ms);

/// Appends `{"op":"event","topic":..,"seq":N,"type":..,"data":<raw>,"ts":N}` to out. Hot path:
/// once per event per topic (the result is shared by every subscriber), no temporaries.
void append_event(std::string& out, std::string_view topic, const event& e);

/// append_event into a new string.
std::string encode_event(std::string_view topic, const event& e);

/// `{"op":"gap","topic":..,"from":F,"to":T}`.
std::string encode_gap(std::string_view topic, uint64_t from, uint64_t to);

enum class presence_change : uint8_t { joined, left };

/// `{"op":"presence","room":..,"joined"|"left":{"user":..,"session_id":..}}`.
std::string encode_presence(std::string_view room, presence_change change, std::string_view user,
                            std::string_view session_id);

/// `{"op":"ack","ref":..<members>}` where `members` is raw JSON object members without braces
/// (e.g. `"seq":5`), spliced verbatim after a comma; empty for none.
std::string encode_ack(std::string_view ref, std::string_view members);

/// `{"op":"ack","ref":..}`.
std::string encode_ack_plain(std::string_view ref);

/// `{"op":"ack","ref":..,"topic":..,"last_seq":N,"recovered":true|false}`.
std::string encode_ack_subscribe(std::string_view ref, std::string_view topic, uint64_t last_seq,
                                 bool recovered);

/// `{"op":"ack","ref":..,"message_id":..,"seq":N}`.
std::string encode_ack_send(std::string_view ref, std::string_view message_id, uint64_t seq);

/// `{"op":"ack","ref":..,"seq":N}`.
std::string encode_ack_publish(std::string_view ref, uint64_t seq);

/// `{"op":"error","ref":..,"code":..,"message":..}`.
std::string encode_error(std::string_view ref, errc code, std::string_view message);
inline std::string encode_error(std::string_view ref, const error& e) {
  return encode_error(ref, e.code, e.message);
}

/// `{"op":"error","ref":..,"topic":..,"code":..,"message":..}`: an error about one subscription
/// (its subscribe failed, or the topic ended it); the topic is omitted when empty.
std::string encode_topic_error(std::string_view ref, std::string_view topic, errc code,
                               std::string_view message);

/// `{"op":"pong","ref":..}`.
std::string encode_pong(std::string_view ref);

}  // namespace ws

}  // namespace relay
