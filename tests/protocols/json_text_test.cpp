#include "protocols/json_text.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace relay {
namespace {

std::string json_quoted(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST(json_text, append_json_string_escapes_exactly_what_json_requires) {
  EXPECT_EQ(json_quoted(""), R"("")");
  EXPECT_EQ(json_quoted("plain / text"), R"("plain / text")");
  EXPECT_EQ(json_quoted("\"\\\b\f\n\r\t"), R"("\"\\\b\f\n\r\t")");
  EXPECT_EQ(json_quoted(std::string_view{"\x00\x1f\x7f", 3}), "\"\\u0000\\u001f\x7f\"");
  EXPECT_EQ(json_quoted("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  std::string out = "x";
  append_json_string(out, "y");
  EXPECT_EQ(out, R"(x"y")");
}

TEST(json_text, append_json_string_round_trips_every_ascii_byte) {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  auto v = boost::json::parse(json_quoted(all));
  EXPECT_EQ(v.as_string(), boost::json::string_view(all));
}

TEST(json_text, parse_json_bounds_depth_and_validates_utf8) {
  EXPECT_TRUE(parse_json(std::string(64, '[') + std::string(64, ']')));
  auto deep = parse_json(std::string(65, '[') + std::string(65, ']'));
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.err().code, errc::bad_request);
  EXPECT_FALSE(parse_json("\"\xff\""));
  EXPECT_FALSE(parse_json_object("[]"));
  EXPECT_TRUE(parse_json_object(R"({"a":1})"));
}

TEST(json_text, non_negative_integers_only) {
  EXPECT_EQ(as_non_negative_integer(boost::json::parse("0")), 0u);
  EXPECT_EQ(as_non_negative_integer(boost::json::parse("18446744073709551615")), UINT64_MAX);
  EXPECT_FALSE(as_non_negative_integer(boost::json::parse("-1")));
  EXPECT_FALSE(as_non_negative_integer(boost::json::parse("1.0")));
  EXPECT_FALSE(as_non_negative_integer(boost::json::parse("18446744073709551616")));
  EXPECT_FALSE(as_non_negative_integer(boost::json::parse("\"1\"")));
}

TEST(json_text, bounded_json_text_compacts_and_bounds) {
  EXPECT_EQ(*bounded_json_text(boost::json::parse(R"({ "a" : [ 1 ] })"), "data", 9),
            R"({"a":[1]})");
  auto big = bounded_json_text(boost::json::parse(R"({ "a" : [ 1 ] })"), "data", 8);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.err().code, errc::too_large);
  EXPECT_EQ(big.err().message, "data exceeds 8 bytes");
  auto inf = bounded_json_text(boost::json::parse("[1e400]"), "data", 100);
  ASSERT_FALSE(inf);
  EXPECT_EQ(inf.err().code, errc::bad_request);
}

}  // namespace
}  // namespace relay
