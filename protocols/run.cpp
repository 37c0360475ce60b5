#include "protocols/run.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <boost/json.hpp>
#include <optional>
#include <stdexcept>

#include "protocols/event.hpp"
#include "protocols/json_text.hpp"
#include "protocols/jwt.hpp"  // base64url_encode

namespace relay {

namespace json = boost::json;

namespace {

constexpr uint32_t max_interval_ms = 60'000;

error bad_request(std::string message) { return {errc::bad_request, std::move(message)}; }

/// An optional integer field within [min, max]; `fallback` when absent.
result<uint32_t> bounded_integer(const json::object& o, std::string_view name,
                                 std::string_view display_name, uint32_t min, uint32_t max,
                                 uint32_t fallback) {
  const json::value* v = optional_field(o, name);
  if (v == nullptr) return fallback;
  auto n = as_non_negative_integer(*v);
  if (!n || *n < min || *n > max) {
    return bad_request(std::string{display_name} + " must be an integer in " + std::to_string(min) +
                       ".." + std::to_string(max));
  }
  return static_cast<uint32_t>(*n);
}

/// An optional string field of 1..max_bytes bytes; empty when absent.
result<std::string> bounded_string(const json::object& o, std::string_view name,
                                   std::size_t max_bytes) {
  const json::value* v = optional_field(o, name);
  if (v == nullptr) return std::string{};
  if (!v->is_string()) return bad_request(std::string{name} + " must be a string");
  const json::string& s = v->get_string();
  if (s.empty() || s.size() > max_bytes) {
    return bad_request(std::string{name} + " must be 1.." + std::to_string(max_bytes) + " bytes");
  }
  return std::string{s.data(), s.size()};
}

result<synthetic_params> parse_synthetic(const json::object& input, const run_limits& limits) {
  synthetic_params p;
  // Defaults never exceed a smaller configured maximum.
  auto count = bounded_integer(input, "count", "input.count", 1, limits.max_synthetic_count,
                               std::min(p.count, limits.max_synthetic_count));
  if (!count) return count.err();
  auto size = bounded_integer(input, "size", "input.size", 0, limits.max_synthetic_size,
                              std::min(p.size, limits.max_synthetic_size));
  if (!size) return size.err();
  auto interval = bounded_integer(input, "interval_ms", "input.interval_ms", 0, max_interval_ms,
                                  p.interval_ms);
  if (!interval) return interval.err();
  p.count = *count;
  p.size = *size;
  p.interval_ms = *interval;
  return p;
}

/// One element of an events body. `where` is "" for a single object, "events[i]" in an array, so
/// a producer sees which element was refused.
result<event_input> parse_event(const json::value& v, const std::string& where,
                                const run_limits& limits) {
  auto name = [&](std::string_view field) {
    return where.empty() ? std::string{field} : where + "." + std::string{field};
  };
  if (!v.is_object()) return bad_request((where.empty() ? "event" : where) + " must be an object");
  const json::object& o = v.get_object();
  const json::value* type = o.if_contains("type");
  if (type == nullptr) return bad_request(name("type") + " is required");
  if (!type->is_string()) return bad_request(name("type") + " must be a string");
  std::string_view t{type->get_string().data(), type->get_string().size()};
  if (!valid_event_type(t)) return bad_request(name("type") + " must match [a-z0-9_.-]{1,64}");
  if (reserved_event_type(t)) {
    return bad_request(name("type") + " \"" + std::string{t} + "\" is reserved");
  }
  event_input ev;
  ev.type = std::string{t};
  if (const json::value* data = o.if_contains("data")) {
    auto text = bounded_json_text(*data, name("data"), limits.max_data_bytes);
    if (!text) return text.err();
    ev.data = std::move(*text);
  }
  return ev;
}

// JSON whitespace only: an empty or blank body means "no body".
bool blank(std::string_view body) noexcept {
  for (char c : body) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return false;
  }
  return true;
}

}  // namespace

std::string_view to_string(run_status s) noexcept {
  switch (s) {
    case run_status::running: return "running";
    case run_status::completed: return "completed";
    case run_status::failed: return "failed";
    case run_status::cancelled: return "cancelled";
    case run_status::timed_out: return "timed_out";
  }
  return "failed";
}

std::string_view to_string(run_kind k) noexcept {
  switch (k) {
    case run_kind::external: return "external";
    case run_kind::synthetic: return "synthetic";
  }
  return "external";
}

result<create_run_request> parse_create_run(std::string_view body, const run_limits& limits) {
  auto doc = parse_json_object(body);
  if (!doc) return doc.err();
  const json::object& o = *doc;
  create_run_request req;

  const json::value* kind = o.if_contains("kind");
  if (kind == nullptr) return bad_request("kind is required");
  if (!kind->is_string()) return bad_request("kind must be a string");
  if (kind->get_string() == "external") {
    req.kind = run_kind::external;
  } else if (kind->get_string() == "synthetic") {
    req.kind = run_kind::synthetic;
  } else {
    return bad_request(R"(kind must be "external" or "synthetic")");
  }

  static const json::object empty_input;
  const json::object* input = &empty_input;
  if (const json::value* v = optional_field(o, "input")) {
    if (!v->is_object()) return bad_request("input must be an object");
    input = &v->get_object();
    auto text = bounded_json_text(*v, "input", limits.max_data_bytes);
    if (!text) return text.err();
    req.input = std::move(*text);
  }
  if (req.kind == run_kind::synthetic) {
    auto p = parse_synthetic(*input, limits);
    if (!p) return p.err();
    req.synthetic = *p;
  }

  auto key = bounded_string(o, "idempotency_key", limits.max_key_bytes);
  if (!key) return key.err();
  req.idempotency_key = std::move(*key);
  auto owner = bounded_string(o, "owner", limits.max_key_bytes);
  if (!owner) return owner.err();
  req.owner = std::move(*owner);

  auto inactivity = bounded_integer(o, "inactivity_s", "inactivity_s", 1, limits.max_inactivity_s,
                                    limits.default_inactivity_s);
  if (!inactivity) return inactivity.err();
  req.inactivity_s = *inactivity;
  auto ttl = bounded_integer(o, "ttl_s", "ttl_s", 1, limits.max_ttl_s, limits.default_ttl_s);
  if (!ttl) return ttl.err();
  req.ttl_s = *ttl;
  return req;
}

result<std::vector<event_input>> parse_events(std::string_view body, const run_limits& limits) {
  auto doc = parse_json(body);
  if (!doc) return doc.err();
  std::vector<event_input> events;
  if (doc->is_object()) {
    auto ev = parse_event(*doc, "", limits);
    if (!ev) return ev.err();
    events.push_back(std::move(*ev));
    return events;
  }
  if (!doc->is_array()) return bad_request("body must be an event object or an array of them");
  const json::array& items = doc->get_array();
  if (items.empty()) return bad_request("events array is empty");
  if (items.size() > limits.max_events_per_post) {
    return error{errc::too_large,
                 "at most " + std::to_string(limits.max_events_per_post) + " events per request"};
  }
  events.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    auto ev = parse_event(items[i], "events[" + std::to_string(i) + "]", limits);
    if (!ev) return ev.err();
    events.push_back(std::move(*ev));
  }
  return events;
}

result<std::string> parse_complete(std::string_view body, const run_limits& limits) {
  if (blank(body)) return std::string{"null"};
  auto doc = parse_json_object(body);
  if (!doc) return doc.err();
  const json::value* data = doc->if_contains("data");
  if (data == nullptr) return std::string{"null"};
  return bounded_json_text(*data, "data", limits.max_data_bytes);
}

result<std::string> parse_fail(std::string_view body, const run_limits& limits) {
  if (blank(body)) return std::string{R"({"code":"failed"})"};
  auto doc = parse_json_object(body);
  if (!doc) return doc.err();
  const json::value* err = doc->if_contains("error");
  if (err == nullptr) return bad_request("error is required");
  if (!err->is_object()) return bad_request("error must be an object");
  return bounded_json_text(*err, "error", limits.max_data_bytes);
}

namespace {

// Not a hot path (one per GET or create), so Boost.JSON does the escaping of owner/reason/id.
json::object run_info_object(const run_info& info) {
  json::object o;
  o["id"] = info.id;
  o["kind"] = to_string(info.kind);
  o["status"] = to_string(info.status);
  o["owner"] = info.owner;
  o["last_seq"] = info.last_seq;
  o["created_at"] = info.created_at;
  if (info.ended_at != 0) o["ended_at"] = info.ended_at;
  if (!info.reason.empty()) o["reason"] = info.reason;
  return o;
}

}  // namespace

std::string run_info_json(const run_info& info) { return json::serialize(run_info_object(info)); }

std::string run_created_json(const run_info& info) {
  json::object o;
  o["id"] = info.id;
  o["status"] = to_string(info.status);
  o["created_at"] = info.created_at;
  o["events_url"] = "/v1/runs/" + info.id + "/events";
  return json::serialize(o);
}

std::string run_list_json(const std::vector<run_info>& runs) {
  json::array items;
  items.reserve(runs.size());
  for (const auto& r : runs) items.emplace_back(run_info_object(r));
  json::object o;
  o["runs"] = std::move(items);
  return json::serialize(o);
}

std::string new_run_id() {
  unsigned char bytes[16];
  // A run id is a capability (knowing it lets a client try to stream the run), so it must come
  // from the CSPRNG. There is no safe fallback if that fails.
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  return base64url_encode(std::string_view{reinterpret_cast<const char*>(bytes), sizeof bytes});
}

bool valid_run_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace relay
