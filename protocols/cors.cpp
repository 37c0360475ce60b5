#include "protocols/cors.hpp"

#include <algorithm>
#include <optional>

namespace relay {

namespace {

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

bool host_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '[' || c == ']' || c == ':';  // brackets and colons: IPv6 literals
}

// An origin as a browser serializes it: scheme "://" host [":" port], nothing else.
std::optional<std::string> check_origin(std::string_view o) {
  std::string_view rest;
  if (o.starts_with("http://"))
    rest = o.substr(7);
  else if (o.starts_with("https://"))
    rest = o.substr(8);
  else
    return "must start with http:// or https://";
  if (rest.empty()) return "has no host";
  if (rest.find('/') != std::string_view::npos) return "must not have a path (not even '/')";
  if (rest.find('@') != std::string_view::npos) return "must not have user info";
  if (!std::all_of(rest.begin(), rest.end(), host_char))
    return "may only contain letters, digits, '-', '.', ':' and IPv6 brackets after the scheme";
  // A port, if any, follows the last ':' outside brackets: 1..5 digits.
  const auto bracket = rest.rfind(']');
  const auto colon = rest.rfind(':');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    const auto port = rest.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return "has a bad port";
    if (colon == 0) return "has no host";
  }
  return std::nullopt;
}

}  // namespace

result<cors_allow_list> parse_cors_origins(std::string_view text) {
  cors_allow_list list;
  std::size_t i = 0;
  while (i < text.size()) {
    const auto start = text.find_first_not_of(", \t", i);
    if (start == std::string_view::npos) break;
    auto end = text.find_first_of(", \t", start);
    if (end == std::string_view::npos) end = text.size();
    const auto entry = text.substr(start, end - start);
    i = end;
    if (entry == "*") {
      list.any = true;
      continue;
    }
    if (auto why = check_origin(entry))
      return error{errc::bad_request, "origin '" + std::string{entry} + "' " + *why};
    std::string normalized{entry};
    std::transform(normalized.begin(), normalized.end(), normalized.begin(), lower);
    if (std::find(list.origins.begin(), list.origins.end(), normalized) == list.origins.end())
      list.origins.push_back(std::move(normalized));
    if (list.origins.size() > max_cors_origins)
      return error{errc::bad_request, "more than " + std::to_string(max_cors_origins) + " origins"};
  }
  if (list.any && !list.origins.empty())
    return error{errc::bad_request, "'*' allows every origin: list origins or '*', not both"};
  return list;
}

cors_match match_origin(const cors_allow_list& list, bool present,
                        std::string_view origin) noexcept {
  if (!present || !list.enabled()) return cors_none;
  if (list.any) return cors_any;
  for (std::size_t i = 0; i < list.origins.size(); ++i)
    if (iequals(list.origins[i], origin)) return static_cast<cors_match>(i);
  return cors_refused;
}

}  // namespace relay
