#include "protocols/cors.hpp"

#include <gtest/gtest.h>

namespace relay {
namespace {

cors_allow_list parse(std::string_view text) {
  auto r = parse_cors_origins(text);
  EXPECT_TRUE(r) << text << ": " << (r ? "" : r.err().message);
  return r ? *r : cors_allow_list{};
}

TEST(cors, an_empty_list_turns_cors_off) {
  for (auto text : {"", "  ", " , ,"}) {
    auto list = parse(text);
    EXPECT_FALSE(list.enabled()) << '"' << text << '"';
    EXPECT_EQ(match_origin(list, true, "https://app.example"), cors_none);
  }
}

TEST(cors, origins_are_separated_by_commas_or_spaces_and_kept_in_lower_case) {
  auto list = parse("https://App.Example, http://localhost:3000\thttps://[::1]:8443 ");
  ASSERT_EQ(list.origins.size(), 3u);
  EXPECT_EQ(list.origins[0], "https://app.example");
  EXPECT_EQ(list.origins[1], "http://localhost:3000");
  EXPECT_EQ(list.origins[2], "https://[::1]:8443");
  EXPECT_FALSE(list.any);
  EXPECT_EQ(parse("https://a.example https://a.example").origins.size(), 1u);  // duplicates
}

TEST(cors, match_is_exact_apart_from_case_and_gives_the_entry) {
  auto list = parse("https://app.example http://localhost:3000");
  EXPECT_EQ(match_origin(list, true, "https://app.example"), 0);
  EXPECT_EQ(match_origin(list, true, "HTTPS://APP.EXAMPLE"), 0);
  EXPECT_EQ(match_origin(list, true, "http://localhost:3000"), 1);
  // Everything that merely resembles an entry is refused.
  for (auto other : {"http://app.example", "https://app.example:443", "https://app.example/",
                     "https://evil.app.example", "https://app.example.evil", "http://localhost",
                     "http://localhost:30000", "null", "", "https://app.examplE\r\nX: y"})
    EXPECT_EQ(match_origin(list, true, other), cors_refused) << other;
  EXPECT_EQ(match_origin(list, false, ""), cors_none);  // no Origin header: not a browser page
}

TEST(cors, a_star_allows_every_origin_including_null) {
  auto list = parse("*");
  EXPECT_TRUE(list.any);
  EXPECT_TRUE(list.enabled());
  EXPECT_EQ(match_origin(list, true, "https://anything.example"), cors_any);
  EXPECT_EQ(match_origin(list, true, "null"), cors_any);
  EXPECT_EQ(match_origin(list, false, ""), cors_none);
}

TEST(cors, bad_entries_are_refused_with_the_entry_named) {
  for (auto bad : {"app.example", "ftp://app.example", "https://", "https://app.example/",
                   "https://app.example/path", "https://user@app.example",
                   "https://app.example:", "https://app.example:99999x", "https://app_example",
                   "https://:80", "https://app.example *"}) {
    auto r = parse_cors_origins(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.err().code, errc::bad_request);
  }
  auto r = parse_cors_origins("https://ok.example https://bad.example/x");
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("https://bad.example/x"), std::string::npos) << r.err().message;
}

TEST(cors, the_list_is_bounded) {
  std::string text;
  for (std::size_t i = 0; i <= max_cors_origins; ++i)
    text += "https://h" + std::to_string(i) + ".example ";
  EXPECT_FALSE(parse_cors_origins(text));
}

}  // namespace
}  // namespace relay
