#include "protocols/room.hpp"

#include <openssl/rand.h>

#include <boost/json/object.hpp>
#include <stdexcept>

#include "protocols/json_text.hpp"
#include "protocols/jwt.hpp"  // base64url_encode

namespace relay {

namespace json = boost::json;

namespace {

error bad_request(std::string message) { return {errc::bad_request, std::move(message)}; }

std::string exceeds(std::string_view name, std::size_t max_bytes) {
  std::string msg{name};
  msg += " exceeds ";
  msg += std::to_string(max_bytes);
  msg += " bytes";
  return msg;
}

}  // namespace

bool valid_room_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

result<room_message_input> room_message_from(const json::object& o, const room_limits& limits) {
  room_message_input msg;
  if (const json::value* text = optional_field(o, "text")) {
    if (!text->is_string()) return bad_request("text must be a string");
    const json::string& s = text->get_string();
    if (s.size() > limits.max_text_bytes) {
      return error{errc::too_large, exceeds("text", limits.max_text_bytes)};
    }
    msg.text.assign(s.data(), s.size());
    msg.has_text = true;
  }
  if (const json::value* data = optional_field(o, "data")) {
    auto text = bounded_json_text(*data, "data", limits.max_data_bytes);
    if (!text) return text.err();
    msg.data = std::move(*text);
  }
  if (!msg.has_text && msg.data.empty()) return bad_request("text or data is required");
  if (const json::value* id = optional_field(o, "client_msg_id")) {
    if (!id->is_string()) return bad_request("client_msg_id must be a string");
    const json::string& s = id->get_string();
    if (s.empty() || s.size() > limits.max_client_msg_id_bytes) {
      std::string m = "client_msg_id must be 1..";
      m += std::to_string(limits.max_client_msg_id_bytes);
      m += " bytes";
      return bad_request(std::move(m));
    }
    msg.client_msg_id.assign(s.data(), s.size());
  }
  return msg;
}

result<room_message_input> parse_room_message(std::string_view body, const room_limits& limits) {
  auto o = parse_json_object(body);
  if (!o) return o.err();
  return room_message_from(*o, limits);
}

// Once per message (not per delivery): the event data is built here and then spliced verbatim
// into every frame, so escaping happens exactly once.
std::string room_message_data(std::string_view message_id, std::string_view user,
                              const room_message_input& msg) {
  std::string out;
  out.reserve(48 + message_id.size() + user.size() + msg.text.size() + msg.data.size() +
              msg.client_msg_id.size());
  out.append(R"({"message_id":)");
  append_json_string(out, message_id);
  out.append(R"(,"user":)");
  append_json_string(out, user);
  if (msg.has_text) {
    out.append(R"(,"text":)");
    append_json_string(out, msg.text);
  }
  if (!msg.data.empty()) {
    out.append(R"(,"data":)");
    out.append(msg.data);
  }
  if (!msg.client_msg_id.empty()) {
    out.append(R"(,"client_msg_id":)");
    append_json_string(out, msg.client_msg_id);
  }
  out.push_back('}');
  return out;
}

std::string presence_json(const std::vector<std::pair<std::string, unsigned>>& members) {
  std::string out = R"({"members":[)";
  bool first = true;
  for (const auto& [user, sessions] : members) {
    if (!first) out.push_back(',');
    first = false;
    out.append(R"({"user":)");
    append_json_string(out, user);
    out.append(R"(,"sessions":)");
    out.append(std::to_string(sessions));
    out.push_back('}');
  }
  out.append("]}");
  return out;
}

std::string new_message_id() {
  unsigned char bytes[12];
  // Unguessable like run ids, though a message id is not a capability: 96 bits make collisions
  // across all rooms negligible without any coordination.
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  return base64url_encode(std::string_view{reinterpret_cast<const char*>(bytes), sizeof bytes});
}

}  // namespace relay
