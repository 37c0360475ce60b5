#include "protocols/http_api.hpp"

#include <array>

#include "protocols/room.hpp"  // valid_room_id
#include "protocols/run.hpp"   // valid_run_id

namespace relay {

namespace {

constexpr std::size_t max_target_bytes = 8 * 1024;
constexpr std::string_view method_not_allowed = "method not allowed";

error not_found() { return {errc::not_found, "no such endpoint"}; }

/// The endpoint for `method` on a path that serves GET and/or POST; method-not-allowed otherwise.
result<route> pick(std::string_view method, std::optional<endpoint> on_get,
                   std::optional<endpoint> on_post, std::string_view id = {}) {
  std::optional<endpoint> what;
  if (method == "GET") what = on_get;
  else if (method == "POST") what = on_post;
  if (!what) return error{errc::bad_request, std::string{method_not_allowed}};
  return route{*what, std::string{id}};
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// application/x-www-form-urlencoded decoding: '+' is a space, %XX a byte; nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (in.size() - i < 3) return std::nullopt;  // needs two hex digits after '%'
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

std::string_view target_path(std::string_view target) noexcept {
  return target.substr(0, target.find('?'));
}

result<route> match_route(std::string_view method, std::string_view target) {
  if (target.size() > max_target_bytes) return error{errc::bad_request, "request target too long"};
  std::string_view path = target_path(target);
  if (path.empty() || path.front() != '/') return not_found();

  // Split "/a/b/c" into its segments; at most four are meaningful, so a fifth ends the match.
  // Empty segments ("//", a trailing '/') never equal a route's segment, so they fall to not_found.
  std::array<std::string_view, 5> seg;
  std::size_t n = 0;
  std::string_view rest = path.substr(1);
  while (true) {
    if (n == seg.size()) return not_found();
    std::size_t slash = rest.find('/');
    seg[n++] = rest.substr(0, slash);
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }

  if (n == 1) {
    if (seg[0] == "health") return pick(method, endpoint::health, std::nullopt);
    if (seg[0] == "metrics") return pick(method, endpoint::metrics, std::nullopt);
    return not_found();
  }
  if (seg[0] != "v1") return not_found();
  if (seg[1] == "ws") {
    if (n == 2) return pick(method, endpoint::websocket, std::nullopt);
    return not_found();
  }
  if (seg[1] == "rooms") {
    // Like run ids: an invalid room id is not_found whatever the method.
    if (n != 4 || !valid_room_id(seg[2])) return not_found();
    std::string_view what = seg[3];
    if (what == "messages") {
      return pick(method, endpoint::room_history, endpoint::room_post_message, seg[2]);
    }
    if (what == "events") return pick(method, endpoint::room_stream, std::nullopt, seg[2]);
    if (what == "presence") return pick(method, endpoint::room_presence, std::nullopt, seg[2]);
    return not_found();
  }
  if (seg[1] != "runs") return not_found();
  if (n == 2) return pick(method, endpoint::runs_list, endpoint::runs_create);
  // Checked before the method so a probe with a junk id learns nothing but "not found".
  if (!valid_run_id(seg[2])) return not_found();
  if (n == 3) return pick(method, endpoint::run_get, std::nullopt, seg[2]);
  if (n == 4) {
    std::string_view action = seg[3];
    if (action == "events") return pick(method, endpoint::run_stream, endpoint::run_append, seg[2]);
    if (action == "complete") return pick(method, std::nullopt, endpoint::run_complete, seg[2]);
    if (action == "fail") return pick(method, std::nullopt, endpoint::run_fail, seg[2]);
    if (action == "cancel") return pick(method, std::nullopt, endpoint::run_cancel, seg[2]);
  }
  return not_found();
}

bool is_method_not_allowed(const error& e) noexcept {
  return e.code == errc::bad_request && e.message == method_not_allowed;
}

std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  std::size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    std::size_t eq = pair.find('=');
    std::string_view raw_name = pair.substr(0, eq);
    std::string_view raw_value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    // Names are compared decoded ("access%5Ftoken" is "access_token"); a name that does not
    // decode cannot be the one asked for.
    auto decoded_name = percent_decode(raw_name);
    if (!decoded_name || *decoded_name != name) continue;
    return percent_decode(raw_value);  // first occurrence wins, even when malformed
  }
  return std::nullopt;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) noexcept {
  constexpr std::string_view scheme = "bearer";
  std::string_view s = authorization;
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  if (s.size() <= scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (lower(s[i]) != scheme[i]) return std::nullopt;
  }
  s.remove_prefix(scheme.size());
  if (!is_blank(s.front())) return std::nullopt;  // "Bearerxyz" is another scheme
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  // A token68 has no inner blanks; "Bearer a b" is malformed rather than token "a b".
  for (char c : s) {
    if (is_blank(c)) return std::nullopt;
  }
  return s;
}

}  // namespace relay
