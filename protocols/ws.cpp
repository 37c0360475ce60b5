#include "protocols/ws.hpp"

#include <array>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <charconv>

#include "protocols/json_text.hpp"
#include "protocols/run.hpp"  // valid_run_id

namespace relay {

namespace json = boost::json;

std::optional<topic_name> parse_topic(std::string_view topic) noexcept {
  constexpr std::string_view run_prefix = "run:";
  constexpr std::string_view room_prefix = "room:";
  if (topic.starts_with(run_prefix)) {
    std::string_view id = topic.substr(run_prefix.size());
    if (valid_run_id(id)) return topic_name{topic_kind::run, id};
  } else if (topic.starts_with(room_prefix)) {
    std::string_view id = topic.substr(room_prefix.size());
    if (valid_room_id(id)) return topic_name{topic_kind::room, id};
  }
  return std::nullopt;
}

namespace ws {

namespace {

error bad_request(std::string message) { return {errc::bad_request, std::move(message)}; }

std::string_view view(const json::string& s) noexcept { return {s.data(), s.size()}; }

/// A required string field, 1..max_bytes bytes.
result<std::string> required_string(const json::object& o, std::string_view name,
                                    std::size_t max_bytes) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || v->is_null()) return bad_request(std::string{name} + " is required");
  if (!v->is_string()) return bad_request(std::string{name} + " must be a string");
  const json::string& s = v->get_string();
  if (s.empty() || s.size() > max_bytes) {
    std::string msg{name};
    msg += " must be 1..";
    msg += std::to_string(max_bytes);
    msg += " bytes";
    return bad_request(std::move(msg));
  }
  return std::string{view(s)};
}

result<std::string> required_topic(const json::object& o) {
  const json::value* v = o.if_contains("topic");
  if (v == nullptr || v->is_null()) return bad_request("topic is required");
  if (!v->is_string()) return bad_request("topic must be a string");
  // parse_topic bounds the length through the id rules.
  if (!parse_topic(view(v->get_string())))
    return bad_request("topic must be run:<id> or room:<id>");
  return std::string{view(v->get_string())};
}

result<std::string> required_room(const json::object& o) {
  const json::value* v = o.if_contains("room");
  if (v == nullptr || v->is_null()) return bad_request("room is required");
  if (!v->is_string()) return bad_request("room must be a string");
  if (!valid_room_id(view(v->get_string()))) {
    return bad_request("room must match [A-Za-z0-9._:-]{1,128}");
  }
  return std::string{view(v->get_string())};
}

result<std::optional<uint64_t>> optional_after(const json::object& o) {
  const json::value* v = optional_field(o, "after");
  if (v == nullptr) return std::optional<uint64_t>{};
  auto n = as_non_negative_integer(*v);
  if (!n) return bad_request("after must be a non-negative integer");
  return std::optional<uint64_t>{*n};
}

result<client_op> decode_subscribe(const json::object& o) {
  auto topic = required_topic(o);
  if (!topic) return topic.err();
  auto after = optional_after(o);
  if (!after) return after.err();
  return client_op{subscribe{std::move(*topic), *after}};
}

result<client_op> decode_unsubscribe(const json::object& o) {
  auto topic = required_topic(o);
  if (!topic) return topic.err();
  return client_op{unsubscribe{std::move(*topic)}};
}

result<client_op> decode_join(const json::object& o) {
  auto room = required_room(o);
  if (!room) return room.err();
  auto after = optional_after(o);
  if (!after) return after.err();
  return client_op{join{std::move(*room), *after}};
}

result<client_op> decode_leave(const json::object& o) {
  auto room = required_room(o);
  if (!room) return room.err();
  return client_op{leave{std::move(*room)}};
}

result<client_op> decode_send(const json::object& o, const ws_limits& limits) {
  auto room = required_room(o);
  if (!room) return room.err();
  auto msg = room_message_from(o, limits.room());
  if (!msg) return msg.err();
  return client_op{send{std::move(*room), std::move(*msg)}};
}

result<client_op> decode_publish(const json::object& o, const ws_limits& limits) {
  auto topic = required_topic(o);
  if (!topic) return topic.err();
  if (parse_topic(*topic)->kind != topic_kind::run) {
    return bad_request("publish topic must be a run (rooms take send)");
  }
  const json::value* type = o.if_contains("type");
  if (type == nullptr || type->is_null()) return bad_request("type is required");
  if (!type->is_string()) return bad_request("type must be a string");
  std::string_view t = view(type->get_string());
  if (!valid_event_type(t)) return bad_request("type must match [a-z0-9_.-]{1,64}");
  if (reserved_event_type(t)) return bad_request("type \"" + std::string{t} + "\" is reserved");
  publish p{std::move(*topic), std::string{t}};
  // Like POST /v1/runs/{id}/events: an absent data is JSON null.
  if (const json::value* data = o.if_contains("data")) {
    auto text = bounded_json_text(*data, "data", limits.max_data_bytes);
    if (!text) return text.err();
    p.data = std::move(*text);
  }
  return client_op{std::move(p)};
}

result<client_op> decode_auth(const json::object& o, const ws_limits& limits) {
  auto token = required_string(o, "token", limits.max_token_bytes);
  if (!token) return token.err();
  return client_op{auth{std::move(*token)}};
}

result<client_op> decode_op(std::string_view op, const json::object& o, const ws_limits& limits) {
  if (op == "subscribe") return decode_subscribe(o);
  if (op == "unsubscribe") return decode_unsubscribe(o);
  if (op == "join") return decode_join(o);
  if (op == "leave") return decode_leave(o);
  if (op == "send") return decode_send(o, limits);
  if (op == "publish") return decode_publish(o, limits);
  if (op == "ping") return client_op{ping{}};
  if (op == "auth") return decode_auth(o, limits);
  return bad_request("unknown op");
}

/// `{"op":"<op>"` plus `,"ref":..` when ref is not empty; the caller closes the object.
std::string open_message(std::string_view op, std::string_view ref) {
  std::string out = R"({"op":")";
  out.append(op);
  out.push_back('"');
  if (!ref.empty()) {
    out.append(R"(,"ref":)");
    append_json_string(out, ref);
  }
  return out;
}

}  // namespace

decode_result decode_client_op(std::string_view text, const ws_limits& limits) {
  if (text.size() > limits.max_message_bytes) {
    std::string msg = "message exceeds ";
    msg += std::to_string(limits.max_message_bytes);
    msg += " bytes";
    return decode_failure{{errc::too_large, std::move(msg)}, {}};
  }
  auto parsed = parse_json(text);
  if (!parsed) return decode_failure{parsed.err(), {}};
  if (!parsed->is_object()) return decode_failure{bad_request("message must be a JSON object"), {}};
  const json::object& o = parsed->get_object();

  // The ref first, so that every later error can echo it.
  std::string ref;
  if (const json::value* r = optional_field(o, "ref")) {
    if (!r->is_string()) return decode_failure{bad_request("ref must be a string"), {}};
    const json::string& s = r->get_string();
    if (s.size() > limits.max_ref_bytes) {
      std::string msg = "ref exceeds ";
      msg += std::to_string(limits.max_ref_bytes);
      msg += " bytes";
      return decode_failure{bad_request(std::move(msg)), {}};
    }
    ref.assign(s.data(), s.size());
  }

  const json::value* op = o.if_contains("op");
  if (op == nullptr || op->is_null()) return decode_failure{bad_request("op is required"), ref};
  if (!op->is_string()) return decode_failure{bad_request("op must be a string"), ref};
  auto decoded = decode_op(view(op->get_string()), o, limits);
  if (!decoded) return decode_failure{decoded.err(), std::move(ref)};
  return decoded_op{std::move(*decoded), std::move(ref)};
}

std::string encode_hello(std::string_view session_id, std::string_view node,
                         uint64_t heartbeat_ms) {
  std::string out = open_message("hello", {});
  out.append(R"(,"session_id":)");
  append_json_string(out, session_id);
  out.append(R"(,"node":)");
  append_json_string(out, node);
  out.append(R"(,"heartbeat_ms":)");
  append_number(out, heartbeat_ms);
  out.push_back('}');
  return out;
}

// Hot path: once per event per topic, shared by every subscriber. The topic was validated
// (run:/room: ids need no escaping) and event data is compact JSON, so this is appends only;
// append_json_string scans the topic anyway, which costs little and keeps the output JSON even
// if a caller passes an unvalidated topic.
void append_event(std::string& out, std::string_view topic, const event& e) {
  std::string_view data = e.data.empty() ? std::string_view{"null"} : std::string_view{e.data};
  out.reserve(out.size() + 64 + 2 * 20 + topic.size() + e.type.size() + data.size());
  out.append(R"({"op":"event","topic":)");
  append_json_string(out, topic);
  out.append(R"(,"seq":)");
  append_number(out, e.seq);
  out.append(R"(,"type":)");
  append_json_string(out, e.type);
  out.append(R"(,"data":)");
  out.append(data);
  out.append(R"(,"ts":)");
  append_number(out, e.ts);
  out.push_back('}');
}

std::string encode_event(std::string_view topic, const event& e) {
  std::string out;
  append_event(out, topic, e);
  return out;
}

std::string encode_gap(std::string_view topic, uint64_t from, uint64_t to) {
  std::string out = open_message("gap", {});
  out.append(R"(,"topic":)");
  append_json_string(out, topic);
  out.append(R"(,"from":)");
  append_number(out, from);
  out.append(R"(,"to":)");
  append_number(out, to);
  out.push_back('}');
  return out;
}

std::string encode_presence(std::string_view room, presence_change change, std::string_view user,
                            std::string_view session_id) {
  std::string out = open_message("presence", {});
  out.append(R"(,"room":)");
  append_json_string(out, room);
  out.append(change == presence_change::joined ? R"(,"joined":{"user":)" : R"(,"left":{"user":)");
  append_json_string(out, user);
  out.append(R"(,"session_id":)");
  append_json_string(out, session_id);
  out.append("}}");
  return out;
}

std::string encode_ack(std::string_view ref, std::string_view members) {
  std::string out = open_message("ack", ref);
  if (!members.empty()) {
    out.push_back(',');
    out.append(members);
  }
  out.push_back('}');
  return out;
}

std::string encode_ack_plain(std::string_view ref) { return encode_ack(ref, {}); }

std::string encode_ack_subscribe(std::string_view ref, std::string_view topic, uint64_t last_seq,
                                 bool recovered) {
  std::string members = R"("topic":)";
  append_json_string(members, topic);
  members.append(R"(,"last_seq":)");
  append_number(members, last_seq);
  members.append(recovered ? R"(,"recovered":true)" : R"(,"recovered":false)");
  return encode_ack(ref, members);
}

std::string encode_ack_send(std::string_view ref, std::string_view message_id, uint64_t seq) {
  std::string members = R"("message_id":)";
  append_json_string(members, message_id);
  members.append(R"(,"seq":)");
  append_number(members, seq);
  return encode_ack(ref, members);
}

std::string encode_ack_publish(std::string_view ref, uint64_t seq) {
  std::string members = R"("seq":)";
  append_number(members, seq);
  return encode_ack(ref, members);
}

std::string encode_error(std::string_view ref, errc code, std::string_view message) {
  return encode_topic_error(ref, {}, code, message);
}

std::string encode_topic_error(std::string_view ref, std::string_view topic, errc code,
                               std::string_view message) {
  std::string out = open_message("error", ref);
  if (!topic.empty()) {
    out.append(R"(,"topic":)");
    append_json_string(out, topic);
  }
  out.append(R"(,"code":")");
  out.append(to_string(code));
  out.append(R"(","message":)");
  append_json_string(out, message);
  out.push_back('}');
  return out;
}

std::string encode_pong(std::string_view ref) {
  std::string out = open_message("pong", ref);
  out.push_back('}');
  return out;
}

}  // namespace ws

}  // namespace relay
