#include "net/browser_headers.hpp"

#include <boost/beast/http/field.hpp>
#include <stdexcept>

namespace relay::net {

namespace {

// Headers every answer carries (README "Browsers: CORS and security headers"): an API answer is
// never a document, so it may not be sniffed into one, framed, or leak the page's URL to anyone.
constexpr std::string_view nosniff = "nosniff";
constexpr std::string_view frame_options = "DENY";
constexpr std::string_view csp = "default-src 'none'; frame-ancestors 'none'";
constexpr std::string_view referrer_policy = "no-referrer";
constexpr std::string_view no_store = "no-store";

// CORS: what a page may send (preflight answer) and read (actual answers).
constexpr std::string_view allow_methods = "GET, POST, OPTIONS";
constexpr std::string_view allow_headers = "Authorization, Content-Type, Last-Event-ID";
constexpr std::string_view expose_headers = "Retry-After, WWW-Authenticate";

}  // namespace

browser_headers::browser_headers(const server_settings& s)
    : max_age_(std::to_string(s.cors_max_age_s)) {
  auto list = parse_cors_origins(s.cors_origins);
  if (!list) throw std::invalid_argument("http.cors_origins: " + list.err().message);
  cors_ = std::move(*list);
  if (s.hsts_max_age_s > 0) hsts_ = "max-age=" + std::to_string(s.hsts_max_age_s);
}

cors_match browser_headers::match(const request& req) const noexcept {
  auto it = req.find(http::field::origin);
  if (it == req.end()) return cors_none;
  return match_origin(cors_, true, it->value());
}

std::string_view browser_headers::allow_origin(cors_match m) const noexcept {
  if (m == cors_any) return "*";
  if (m >= 0 && static_cast<std::size_t>(m) < cors_.origins.size()) return cors_.origins[m];
  return {};
}

std::optional<response> browser_headers::preflight(const request& req, cors_match m) const {
  if (!cors_.enabled() || req.method() != http::verb::options || m == cors_none ||
      req.find(http::field::access_control_request_method) == req.end())
    return std::nullopt;
  if (m == cors_refused) return error_response(errc::forbidden, "origin not allowed");
  response res{http::status::no_content, 11};
  res.set(http::field::access_control_allow_methods, allow_methods);
  res.set(http::field::access_control_allow_headers, allow_headers);
  res.set(http::field::access_control_max_age, max_age_);
  return res;
}

void browser_headers::apply(response& res, cors_match m, bool tls) const {
  res.set("X-Content-Type-Options", nosniff);
  res.set(http::field::x_frame_options, frame_options);
  res.set("Content-Security-Policy", csp);
  res.set("Referrer-Policy", referrer_policy);
  if (res.find(http::field::cache_control) == res.end())
    res.set(http::field::cache_control, no_store);
  if (tls && !hsts_.empty()) res.set(http::field::strict_transport_security, hsts_);
  // Listed origins get their own echo: caches must keep answers apart by Origin.
  if (cors_.enabled() && !cors_.any) res.set(http::field::vary, "Origin");
  if (const auto origin = allow_origin(m); !origin.empty()) {
    res.set(http::field::access_control_allow_origin, origin);
    res.set(http::field::access_control_expose_headers, expose_headers);
  }
}

std::string browser_headers::raw_lines(cors_match m, bool tls) const {
  std::string out;
  auto line = [&out](std::string_view name, std::string_view value) {
    out.append(name).append(": ").append(value).append("\r\n");
  };
  line("X-Content-Type-Options", nosniff);
  line("X-Frame-Options", frame_options);
  line("Content-Security-Policy", csp);
  line("Referrer-Policy", referrer_policy);
  if (tls && !hsts_.empty()) line("Strict-Transport-Security", hsts_);
  if (cors_.enabled() && !cors_.any) line("Vary", "Origin");
  if (const auto origin = allow_origin(m); !origin.empty()) {
    line("Access-Control-Allow-Origin", origin);
    line("Access-Control-Expose-Headers", expose_headers);
  }
  return out;
}

}  // namespace relay::net
