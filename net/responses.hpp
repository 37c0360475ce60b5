#pragma once
// Building the HTTP answers of the contract: JSON bodies, error bodies, 405 with Allow.
// Version and keep-alive are set by the session that sends them.

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>

#include "protocols/error.hpp"

namespace relay::net {

namespace http = boost::beast::http;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

/// `status` with a JSON body (Content-Type: application/json).
response json_response(http::status status, std::string body);

/// The contract's error shape with the status of its code (401 adds `WWW-Authenticate: Bearer`).
response error_response(const error& e);
response error_response(errc code, std::string message);

/// 429 rate_limited with `Retry-After: <retry_after_s>` (whole seconds).
response rate_limited_response(std::string message, int64_t retry_after_s);

/// 405 with `Allow: <allow>` and a bad_request error body.
response method_not_allowed(std::string_view allow);

/// Sets version and keep-alive and computes Content-Length.
void finalize(response& res, unsigned version, bool keep_alive);

}  // namespace relay::net
