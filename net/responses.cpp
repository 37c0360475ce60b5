#include "net/responses.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <string>

namespace relay::net {

response json_response(http::status status, std::string body) {
  response res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.body() = std::move(body);
  return res;
}

response error_response(const error& e) {
  auto res = json_response(http::int_to_status(http_status(e.code)), error_body(e));
  if (e.code == errc::unauthorized) res.set(http::field::www_authenticate, "Bearer");
  if (e.code == errc::rate_limited) res.set(http::field::retry_after, "1");
  return res;
}

response error_response(errc code, std::string message) {
  return error_response(error{code, std::move(message)});
}

response rate_limited_response(std::string message, int64_t retry_after_s) {
  auto res = error_response(errc::rate_limited, std::move(message));
  res.set(http::field::retry_after, std::to_string(retry_after_s));
  return res;
}

response method_not_allowed(std::string_view allow) {
  auto res = json_response(http::status::method_not_allowed,
                           error_body(error{errc::bad_request, "method not allowed"}));
  res.set(http::field::allow, allow);
  return res;
}

void finalize(response& res, unsigned version, bool keep_alive) {
  res.version(version);
  res.keep_alive(keep_alive);
  res.prepare_payload();
}

}  // namespace relay::net
