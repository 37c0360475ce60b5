#include "protocols/error.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace relay {
namespace {

TEST(error, to_string_spells_every_code_as_the_contract_does) {
  EXPECT_EQ(to_string(errc::bad_request), "bad_request");
  EXPECT_EQ(to_string(errc::unauthorized), "unauthorized");
  EXPECT_EQ(to_string(errc::forbidden), "forbidden");
  EXPECT_EQ(to_string(errc::not_found), "not_found");
  EXPECT_EQ(to_string(errc::conflict), "conflict");
  EXPECT_EQ(to_string(errc::too_large), "too_large");
  EXPECT_EQ(to_string(errc::rate_limited), "rate_limited");
  EXPECT_EQ(to_string(errc::unavailable), "unavailable");
  EXPECT_EQ(to_string(errc::internal), "internal");
}

TEST(error, http_status_maps_every_code) {
  EXPECT_EQ(http_status(errc::bad_request), 400u);
  EXPECT_EQ(http_status(errc::unauthorized), 401u);
  EXPECT_EQ(http_status(errc::forbidden), 403u);
  EXPECT_EQ(http_status(errc::not_found), 404u);
  EXPECT_EQ(http_status(errc::conflict), 409u);
  EXPECT_EQ(http_status(errc::too_large), 413u);
  EXPECT_EQ(http_status(errc::rate_limited), 429u);
  EXPECT_EQ(http_status(errc::unavailable), 503u);
  EXPECT_EQ(http_status(errc::internal), 500u);
}

TEST(error, an_out_of_range_code_is_reported_as_internal) {
  // A corrupt byte from another node must not crash or produce garbage.
  auto bogus = static_cast<errc>(200);
  EXPECT_EQ(to_string(bogus), "internal");
  EXPECT_EQ(http_status(bogus), 500u);
}

TEST(error, error_body_has_the_contract_shape) {
  EXPECT_EQ(error_body({errc::not_found, "no such run"}),
            R"({"error":{"code":"not_found","message":"no such run"}})");
}

TEST(error, error_body_escapes_the_message) {
  std::string body = error_body({errc::bad_request, "bad \"x\"\n\\ \x01"});
  EXPECT_EQ(body, R"({"error":{"code":"bad_request","message":"bad \"x\"\n\\ \u0001"}})");
  // And it round-trips through a JSON parser.
  auto v = boost::json::parse(body);
  EXPECT_EQ(v.at("error").at("message").as_string(), "bad \"x\"\n\\ \x01");
}

TEST(error, result_holds_a_value_or_an_error) {
  result<int> ok = 42;
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 42);

  result<int> bad{errc::conflict, "run ended"};
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::conflict);
  EXPECT_EQ(bad.err().message, "run ended");

  result<std::string> moved = std::string{"abc"};
  std::string taken = std::move(moved).value();
  EXPECT_EQ(taken, "abc");
  result<std::string> arrow = std::string{"hello"};
  EXPECT_EQ(arrow->size(), 5u);
}

}  // namespace
}  // namespace relay
