// libFuzzer target for the HTTP request path up to the actors (build: fuzz/README.md): raw bytes
// through Beast's request parser with the server's bounds, then routing, the query parameters,
// the bearer token, the resume position and the body validation of the endpoint routed to — what
// net/http_session.cpp and net/api.cpp run on every request before an actor sees it. Every input
// must end in a parsed value or an error of the contract; values must respect their bounds.

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/http_api.hpp"
#include "protocols/room.hpp"
#include "protocols/run.hpp"
#include "protocols/sse.hpp"

namespace http = boost::beast::http;

namespace {

/// The error codes the contract allows in an HTTP answer (PROTOCOL.md "Errors").
void check_error(const relay::error& e) {
  using relay::errc;
  switch (e.code) {
    case errc::bad_request:
    case errc::unauthorized:
    case errc::forbidden:
    case errc::not_found:
    case errc::conflict:
    case errc::too_large:
      if (e.message.empty()) __builtin_trap();
      return;
    default:
      __builtin_trap();  // validation never answers 5xx or anything outside the contract
  }
}

template <class T>
void check(const relay::result<T>& r) {
  if (!r) check_error(r.err());
}

void validate_body(relay::endpoint what, std::string_view body) {
  relay::run_limits limits;
  limits.max_data_bytes = 1024;
  limits.max_events_per_post = 32;
  limits.max_key_bytes = 64;
  switch (what) {
    case relay::endpoint::runs_create: {
      auto r = relay::parse_create_run(body, limits);
      check(r);
      if (r) {
        if (r->input.size() > limits.max_data_bytes) __builtin_trap();
        if (r->idempotency_key.size() > limits.max_key_bytes) __builtin_trap();
        if (r->owner.size() > limits.max_key_bytes) __builtin_trap();
        if (r->inactivity_s > limits.max_inactivity_s || r->ttl_s > limits.max_ttl_s)
          __builtin_trap();
      }
      break;
    }
    case relay::endpoint::run_append: {
      auto r = relay::parse_events(body, limits);
      check(r);
      if (r) {
        if (r->empty() || r->size() > limits.max_events_per_post) __builtin_trap();
        for (const auto& e : *r) {
          if (!relay::valid_event_type(e.type)) __builtin_trap();
          if (e.data.size() > limits.max_data_bytes) __builtin_trap();
        }
      }
      break;
    }
    case relay::endpoint::run_complete: {
      auto r = relay::parse_complete(body, limits);
      check(r);
      if (r && r->size() > limits.max_data_bytes) __builtin_trap();
      break;
    }
    case relay::endpoint::run_fail: {
      auto r = relay::parse_fail(body, limits);
      check(r);
      if (r && r->size() > limits.max_data_bytes) __builtin_trap();
      break;
    }
    case relay::endpoint::room_post_message: {
      relay::room_limits room;
      room.max_data_bytes = 1024;
      auto r = relay::parse_room_message(body, room);
      check(r);
      if (r && !r->has_text && r->data.empty()) __builtin_trap();
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input{reinterpret_cast<const char*>(data), size};
  http::request_parser<http::string_body> parser;
  parser.header_limit(2048);  // small bounds, so the fuzzer reaches them
  parser.body_limit(4096);
  parser.eager(true);
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (used < input.size() && !parser.is_done()) {
    const std::size_t n =
        parser.put(boost::asio::buffer(input.data() + used, input.size() - used), ec);
    if (ec == http::error::need_more) {
      ec = {};
      if (n == 0) break;
    }
    if (ec) return 0;  // answered 400 / 413 / 431 by the session
    used += n;
  }
  if (!parser.is_done()) {
    parser.put_eof(ec);
    if (ec || !parser.is_done()) return 0;
  }
  const auto& req = parser.get();
  const std::string_view target{req.target().data(), req.target().size()};
  const std::string_view method{req.method_string().data(), req.method_string().size()};

  auto r = relay::match_route(method, target);
  if (!r) {
    check_error(r.err());
    return 0;
  }
  if (r->what == relay::endpoint::room_post_message || r->what == relay::endpoint::room_history ||
      r->what == relay::endpoint::room_stream || r->what == relay::endpoint::room_presence) {
    if (!relay::valid_room_id(r->id)) __builtin_trap();
  } else if (!r->id.empty() && !relay::valid_run_id(r->id)) {
    __builtin_trap();
  }
  for (std::string_view name : {"after", "before_seq", "limit", "status", "access_token"})
    if (auto v = relay::query_param(target, name)) check(relay::parse_position(*v));
  if (auto it = req.find(http::field::authorization); it != req.end()) {
    auto token = relay::bearer_token({it->value().data(), it->value().size()});
    if (token && token->empty()) __builtin_trap();
  }
  if (auto it = req.find("Last-Event-ID"); it != req.end())
    check(relay::parse_position({it->value().data(), it->value().size()}));
  validate_body(r->what, req.body());
  return 0;
}
