#include "protocols/error.hpp"

#include <boost/json.hpp>

namespace relay {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::bad_request: return "bad_request";
    case errc::unauthorized: return "unauthorized";
    case errc::forbidden: return "forbidden";
    case errc::not_found: return "not_found";
    case errc::conflict: return "conflict";
    case errc::too_large: return "too_large";
    case errc::rate_limited: return "rate_limited";
    case errc::unavailable: return "unavailable";
    case errc::internal: return "internal";
  }
  // A value outside the enum (e.g. a corrupt uint8 from another node) is reported as internal.
  return "internal";
}

unsigned http_status(errc code) noexcept {
  switch (code) {
    case errc::bad_request: return 400;
    case errc::unauthorized: return 401;
    case errc::forbidden: return 403;
    case errc::not_found: return 404;
    case errc::conflict: return 409;
    case errc::too_large: return 413;
    case errc::rate_limited: return 429;
    case errc::unavailable: return 503;
    case errc::internal: return 500;
  }
  return 500;
}

std::string error_body(const error& e) {
  // Messages may quote client input, so they go through the JSON serialiser for escaping.
  boost::json::object inner;
  inner["code"] = to_string(e.code);
  inner["message"] = e.message;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return boost::json::serialize(outer);
}

}  // namespace relay
