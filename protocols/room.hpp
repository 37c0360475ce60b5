#pragma once
// Chat rooms as the contract describes them (PROTOCOL.md "Topics", "HTTP" room rows): room ids,
// the message body shared by POST /v1/rooms/{room}/messages and the WebSocket `send` op, the
// `message` event's data and the presence answer. Pure: no I/O, no actors.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocols/error.hpp"

namespace boost::json {
class object;
}

namespace relay {

/// Bounds on a room message (from config; ws_limits carries the same three for `send`).
struct room_limits {
  std::size_t max_text_bytes = 16384;         // `text`, UTF-8 bytes
  std::size_t max_data_bytes = 65536;         // `data`, as compact JSON text
  std::size_t max_client_msg_id_bytes = 128;  // dedup key: short by design
};

/// `[A-Za-z0-9._:-]{1,128}` (room ids are chosen by clients).
bool valid_room_id(std::string_view id) noexcept;

/// A validated room message: at least one of text and data.
struct room_message_input {
  std::string text;  // meaningful when has_text ("" is a valid, empty text)
  bool has_text = false;
  std::string data;           // compact JSON text; empty when absent
  std::string client_msg_id;  // empty when absent
};

/// Parses a POST /v1/rooms/{room}/messages body `{"text"?: str, "data"?: any,
/// "client_msg_id"?: str}`. A null field counts as absent; unknown fields are ignored.
/// Errors: bad_request (invalid JSON, not an object, wrong types, neither text nor data,
/// client_msg_id empty or over its bound), too_large (text or data over its bound).
result<room_message_input> parse_room_message(std::string_view body, const room_limits& limits);

/// The same validation on an already parsed object (the WebSocket `send` op shares it).
result<room_message_input> room_message_from(const boost::json::object& o,
                                             const room_limits& limits);

/// The data of a room's `message` event:
/// `{"message_id":..,"user":..,"text"?:..,"data"?:<raw>,"client_msg_id"?:..}`, compact, escaped.
std::string room_message_data(std::string_view message_id, std::string_view user,
                              const room_message_input& msg);

/// GET /v1/rooms/{room}/presence: `{"members":[{"user":..,"sessions":N},...]}` in the given order.
std::string presence_json(const std::vector<std::pair<std::string, unsigned>>& members);

/// A new message id: 96 random bits (OpenSSL RAND_bytes), base64url without padding (16 chars).
std::string new_message_id();

}  // namespace relay
