#include "protocols/json_text.hpp"

#include <array>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <stdexcept>

namespace relay {

namespace json = boost::json;

result<json::value> parse_json(std::string_view text) {
  json::parse_options options;
  options.max_depth = max_json_depth;
  json::error_code ec;
  json::value v;
  try {
    v = json::parse(text, ec, json::storage_ptr{}, options);
  } catch (const std::length_error&) {
    // A string or container beyond Boost.JSON's own limits; unreachable under the body limit.
    return error{errc::too_large, "JSON value too large"};
  }
  if (ec) return error{errc::bad_request, "invalid JSON: " + ec.message()};
  return v;
}

result<json::object> parse_json_object(std::string_view text) {
  auto v = parse_json(text);
  if (!v) return v.err();
  if (!v->is_object()) return error{errc::bad_request, "body must be a JSON object"};
  return std::move(v->get_object());
}

const json::value* optional_field(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  return (v != nullptr && v->is_null()) ? nullptr : v;
}

std::optional<uint64_t> as_non_negative_integer(const json::value& v) noexcept {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return static_cast<uint64_t>(v.get_int64());
  return std::nullopt;
}

// Recursion is bounded by max_json_depth (every value passed here was parsed with it).
bool all_numbers_finite(const json::value& v) noexcept {
  switch (v.kind()) {
    case json::kind::double_:
      return std::isfinite(v.get_double());
    case json::kind::array:
      for (const auto& item : v.get_array()) {
        if (!all_numbers_finite(item)) return false;
      }
      return true;
    case json::kind::object:
      for (const auto& kv : v.get_object()) {
        if (!all_numbers_finite(kv.value())) return false;
      }
      return true;
    default:
      return true;
  }
}

result<std::string> bounded_json_text(const json::value& v, std::string_view name,
                                      std::size_t max_bytes) {
  if (!all_numbers_finite(v)) {
    return error{errc::bad_request, std::string{name} + ": number out of range"};
  }
  std::string text = json::serialize(v);
  if (text.size() > max_bytes) {
    std::string msg{name};
    msg += " exceeds ";
    msg += std::to_string(max_bytes);
    msg += " bytes";
    return error{errc::too_large, std::move(msg)};
  }
  return text;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run = 0;  // start of the pending run of bytes that need no escape
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    out.push_back('\\');
    switch (c) {
      case '"':
        out.push_back('"');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '\b':
        out.push_back('b');
        break;
      case '\f':
        out.push_back('f');
        break;
      case '\n':
        out.push_back('n');
        break;
      case '\r':
        out.push_back('r');
        break;
      case '\t':
        out.push_back('t');
        break;
      default:
        out.append("u00");
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xf]);
    }
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

}  // namespace relay
