#include "protocols/room_access.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "protocols/jwt.hpp"

namespace relay {
namespace {

TEST(room_access, glob_matches_whole_ids) {
  EXPECT_TRUE(glob_match("lobby", "lobby"));
  EXPECT_FALSE(glob_match("lobby", "lobby2"));
  EXPECT_FALSE(glob_match("lobby", "lobb"));
  EXPECT_TRUE(glob_match("team-*", "team-"));
  EXPECT_TRUE(glob_match("team-*", "team-red"));
  EXPECT_FALSE(glob_match("team-*", "teams"));
  EXPECT_TRUE(glob_match("*", "anything"));
  EXPECT_TRUE(glob_match("a?c", "abc"));
  EXPECT_FALSE(glob_match("a?c", "ac"));
  EXPECT_TRUE(glob_match("*:chat", "org.1:chat"));
  EXPECT_FALSE(glob_match("*:chat", "org.1:chat2"));
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_TRUE(glob_match("a*b*c", "abcbc"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyy"));
  EXPECT_TRUE(glob_match("**x", "x"));
  EXPECT_FALSE(glob_match("x", ""));
}

TEST(room_access, pathological_pattern_is_fast) {
  // A recursive matcher takes exponential time on this; the bounded one answers at once.
  std::string pattern;
  for (int i = 0; i < 40; ++i) pattern += "a*";
  pattern += "b";
  ASSERT_TRUE(valid_room_pattern(pattern.substr(0, max_room_pattern_bytes)));
  const std::string room(128, 'a');
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) ASSERT_FALSE(glob_match(pattern, room));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(2));  // ~1000 × 128 × 81 steps; seconds would be a bug
  EXPECT_TRUE(glob_match(pattern, room + "b"));
}

TEST(room_access, patterns_use_the_room_alphabet_and_wildcards_only) {
  EXPECT_TRUE(valid_room_pattern("org.1:team-*_?"));
  EXPECT_FALSE(valid_room_pattern(""));
  EXPECT_FALSE(valid_room_pattern("a/b"));
  EXPECT_FALSE(valid_room_pattern("[ab]"));
  EXPECT_FALSE(valid_room_pattern("a\\*"));
  EXPECT_FALSE(valid_room_pattern(std::string(max_room_pattern_bytes + 1, 'a')));
}

TEST(room_access, no_claim_allows_every_room_and_an_empty_one_none) {
  EXPECT_TRUE(room_allowed(std::nullopt, "x"));
  EXPECT_FALSE(room_allowed(std::vector<std::string>{}, "x"));
  std::optional<std::vector<std::string>> rules = std::vector<std::string>{"team-*", "lobby"};
  EXPECT_TRUE(room_allowed(rules, "lobby"));
  EXPECT_TRUE(room_allowed(rules, "team-a"));
  EXPECT_FALSE(room_allowed(rules, "secret"));
}

}  // namespace
}  // namespace relay
