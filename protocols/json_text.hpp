#pragma once
// JSON text in and out for the pure layer: bounded parsing of untrusted input, compact JSON of
// validated values, and string escaping for encoders that build JSON by appending (hot paths).
// Shared by run.cpp, room.cpp and ws.cpp so that every parse path has the same bounds.

#include <array>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocols/error.hpp"

namespace relay {

/// Nesting bound for untrusted JSON: deep enough for any real payload, far too shallow for a
/// stack-exhaustion attack ("[[[[..." ten thousand deep fails fast with "too deep").
inline constexpr std::size_t max_json_depth = 64;

/// Parses a whole text as JSON: depth-bounded, UTF-8 validated (Boost.JSON's default), no comments
/// or trailing commas. Errors are bad_request ("invalid JSON: <reason>").
result<boost::json::value> parse_json(std::string_view text);

/// parse_json plus "must be a JSON object" (bad_request, message "body must be a JSON object").
result<boost::json::object> parse_json_object(std::string_view text);

/// The field `name`, or nullptr when it is absent or explicitly null (both mean "not given").
const boost::json::value* optional_field(const boost::json::object& o, std::string_view name);

/// A JSON integer >= 0. Doubles (10.0, 1e3) and values beyond uint64 (which Boost.JSON parses as
/// doubles) are refused: nullopt.
std::optional<uint64_t> as_non_negative_integer(const boost::json::value& v) noexcept;

/// False when a number somewhere in `v` is ±inf (Boost.JSON's result for numbers beyond double's
/// range), which would serialise as non-JSON `Infinity`.
bool all_numbers_finite(const boost::json::value& v) noexcept;

/// Compact JSON text of `v`, at most max_bytes (too_large past it); bad_request for a non-finite
/// number. Everything stored and later spliced into events goes through here.
result<std::string> bounded_json_text(const boost::json::value& v, std::string_view name,
                                      std::size_t max_bytes);

/// Appends `s` as a JSON string literal (quotes included): `"` `\` and control characters are
/// escaped, every other byte is copied (the input is assumed valid UTF-8). No allocation beyond
/// out's growth.
void append_json_string(std::string& out, std::string_view s);

/// Appends the decimal form of an integer without allocating a temporary (hot path: per event).
template <class Int>
void append_number(std::string& out, Int value) {
  std::array<char, 24> buf;  // enough for any 64-bit integer with sign
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
  (void)ec;  // cannot fail: the buffer fits every 64-bit value
  out.append(buf.data(), static_cast<std::size_t>(end - buf.data()));
}

}  // namespace relay
