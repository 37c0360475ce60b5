#pragma once
// CORS origin allow-list (http.cors_origins): parsing the configured list and matching a request's
// `Origin` header against it. Pure: no I/O; net/browser_headers.cpp turns a match into headers.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/error.hpp"

namespace relay {

/// What a request's `Origin` is to the allow-list. Non-negative values are the index of the
/// matching entry of cors_allow_list::origins (so a session keeps 2 bytes, not a string).
using cors_match = int16_t;
inline constexpr cors_match cors_none = -1;     // no Origin header, or CORS is off
inline constexpr cors_match cors_refused = -2;  // an Origin that is not on the list
inline constexpr cors_match cors_any = -3;      // the list is `*`: every origin is allowed

/// Most entries http.cors_origins may hold (a match is a linear scan, and must fit cors_match).
inline constexpr std::size_t max_cors_origins = 64;

struct cors_allow_list {
  std::vector<std::string> origins;  // serialized origins, lower case: "https://app.example:8443"
  bool any = false;                  // `*`

  bool enabled() const noexcept { return any || !origins.empty(); }
};

/// Parses http.cors_origins: empty (CORS off), `*`, or origins separated by commas and/or spaces,
/// each `http://host` or `https://host[:port]` exactly as browsers send it (no path, no trailing
/// slash, no user info). Scheme and host are compared case-insensitively. `*` cannot be combined
/// with entries. Errors are bad_request naming the entry at fault.
result<cors_allow_list> parse_cors_origins(std::string_view text);

/// Matches a request's `Origin` header value (`present`: the header was sent at all).
/// Case-insensitive, exact otherwise: `https://app.example` does not match
/// `https://app.example:443` or `https://evil.app.example`. The opaque origin `null` matches only
/// `*`.
cors_match match_origin(const cors_allow_list& list, bool present,
                        std::string_view origin) noexcept;

}  // namespace relay
