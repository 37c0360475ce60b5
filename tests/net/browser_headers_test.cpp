// The headers browsers are told (net/browser_headers): what apply(), preflight() and raw_lines()
// add for each kind of Origin match and connection. The black-box side (every answer kind of a
// running server carries them) is tests/integration/cors.test.mjs.

#include "net/browser_headers.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace relay::net {
namespace {

server_settings with_origins(std::string origins) {
  server_settings s;
  s.cors_origins = std::move(origins);
  s.cors_max_age_s = 77;
  return s;
}

request preflight_request(std::string_view origin) {
  request req{http::verb::options, "/v1/runs", 11};
  req.set(http::field::origin, origin);
  req.set(http::field::access_control_request_method, "POST");
  return req;
}

TEST(browser_headers, every_answer_gets_the_security_headers_and_hsts_only_on_tls) {
  browser_headers b{server_settings{}};
  auto res = json_response(http::status::ok, "{}");
  b.apply(res, cors_none, false);
  EXPECT_EQ(res["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ(res[http::field::x_frame_options], "DENY");
  EXPECT_EQ(res["Referrer-Policy"], "no-referrer");
  EXPECT_NE(res["Content-Security-Policy"].find("frame-ancestors 'none'"), std::string::npos);
  EXPECT_EQ(res[http::field::cache_control], "no-store");
  EXPECT_EQ(res.count(http::field::strict_transport_security), 0u);
  EXPECT_EQ(res.count(http::field::vary), 0u);  // CORS off: answers do not vary by Origin
  EXPECT_EQ(res.count(http::field::access_control_allow_origin), 0u);

  auto tls = json_response(http::status::ok, "{}");
  b.apply(tls, cors_none, true);
  EXPECT_EQ(tls[http::field::strict_transport_security], "max-age=31536000");

  server_settings no_hsts;
  no_hsts.hsts_max_age_s = 0;
  auto off = json_response(http::status::ok, "{}");
  browser_headers{no_hsts}.apply(off, cors_none, true);
  EXPECT_EQ(off.count(http::field::strict_transport_security), 0u);
}

TEST(browser_headers, an_answer_keeps_its_own_cache_control) {
  browser_headers b{server_settings{}};
  auto res = json_response(http::status::ok, "{}");
  res.set(http::field::cache_control, "no-cache");
  b.apply(res, cors_none, false);
  EXPECT_EQ(res[http::field::cache_control], "no-cache");
  EXPECT_EQ(res.count(http::field::cache_control), 1u);
}

TEST(browser_headers, a_listed_origin_is_echoed_and_others_are_not) {
  browser_headers b{with_origins("https://a.example http://localhost:3000")};
  request req{http::verb::get, "/health", 11};
  req.set(http::field::origin, "http://localhost:3000");
  const auto m = b.match(req);
  EXPECT_EQ(m, 1);
  auto res = json_response(http::status::ok, "{}");
  b.apply(res, m, false);
  EXPECT_EQ(res[http::field::access_control_allow_origin], "http://localhost:3000");
  EXPECT_EQ(res[http::field::vary], "Origin");
  EXPECT_EQ(res.count(http::field::access_control_allow_credentials), 0u);

  req.set(http::field::origin, "https://evil.example");
  EXPECT_EQ(b.match(req), cors_refused);
  auto other = json_response(http::status::ok, "{}");
  b.apply(other, cors_refused, false);
  EXPECT_EQ(other.count(http::field::access_control_allow_origin), 0u);
  EXPECT_EQ(other[http::field::vary], "Origin");

  request none{http::verb::get, "/health", 11};
  EXPECT_EQ(b.match(none), cors_none);
}

TEST(browser_headers, preflights_are_answered_only_with_cors_on_and_for_preflights) {
  browser_headers b{with_origins("https://a.example")};
  auto ok = b.preflight(preflight_request("https://a.example"), 0);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->result(), http::status::no_content);
  EXPECT_EQ((*ok)[http::field::access_control_max_age], "77");
  EXPECT_NE((*ok)[http::field::access_control_allow_headers].find("Last-Event-ID"),
            std::string::npos);

  auto refused = b.preflight(preflight_request("https://evil.example"), cors_refused);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result(), http::status::forbidden);
  EXPECT_NE(refused->body().find("\"forbidden\""), std::string::npos);

  request get{http::verb::get, "/v1/runs", 11};
  get.set(http::field::origin, "https://a.example");
  EXPECT_FALSE(b.preflight(get, 0));  // not OPTIONS
  request plain_options{http::verb::options, "/v1/runs", 11};
  plain_options.set(http::field::origin, "https://a.example");
  EXPECT_FALSE(b.preflight(plain_options, 0));  // no Access-Control-Request-Method
  browser_headers off{server_settings{}};
  EXPECT_FALSE(off.preflight(preflight_request("https://a.example"), cors_none));
}

TEST(browser_headers, star_answers_star_and_raw_lines_match_apply) {
  browser_headers b{with_origins("*")};
  auto res = json_response(http::status::ok, "{}");
  b.apply(res, cors_any, true);
  EXPECT_EQ(res[http::field::access_control_allow_origin], "*");
  EXPECT_EQ(res.count(http::field::vary), 0u);
  const auto lines = b.raw_lines(cors_any, true);
  EXPECT_NE(lines.find("Access-Control-Allow-Origin: *\r\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("Strict-Transport-Security: max-age=31536000\r\n"), std::string::npos);
  EXPECT_NE(lines.find("X-Content-Type-Options: nosniff\r\n"), std::string::npos);
  EXPECT_EQ(lines.find("Cache-Control"), std::string::npos);  // the SSE head sets its own
  EXPECT_EQ(b.raw_lines(cors_none, false).find("Strict-Transport-Security"), std::string::npos);
}

TEST(browser_headers, a_bad_origin_list_is_refused_at_construction) {
  EXPECT_THROW(browser_headers{with_origins("https://a.example/path")}, std::invalid_argument);
}

}  // namespace
}  // namespace relay::net
