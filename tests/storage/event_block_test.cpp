// The event block codec and planner (storage/event_block.hpp): what both backends store.

#include "storage/event_block.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace relay::storage {
namespace {

std::vector<topic_event> stretch(const std::string& topic, uint64_t from, uint64_t to,
                                 std::size_t data_bytes = 10) {
  std::vector<topic_event> out;
  for (uint64_t s = from; s <= to; ++s)
    out.push_back({topic, event{s, "delta", std::string(data_bytes, 'x'), 1000 + int64_t(s)}});
  return out;
}

std::vector<topic_event> concat(std::vector<std::vector<topic_event>> parts) {
  std::vector<topic_event> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<event> decode_all(std::string_view body) {
  std::vector<event> out;
  event e;
  for (;;) {
    auto r = next_block_event(body, e);
    EXPECT_TRUE(r.ok()) << r.err().message;
    if (!r || !*r) break;
    out.push_back(e);
  }
  return out;
}

std::vector<std::pair<std::size_t, std::size_t>> spans(const std::vector<block_span>& v) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  for (auto s : v) out.emplace_back(s.begin, s.end);
  return out;
}

TEST(event_block, events_round_trip_byte_exact) {
  std::vector<topic_event> in;
  in.push_back({"run:a", event{7, "tool.call-1", R"({"t":"a b\nc \"q\" 😀 \u0000"})", -5}});
  in.push_back({"run:a", event{8, "delta", std::string(70000, 'y'), 1700000000123}});
  in.push_back({"run:a", event{9, "complete", "null", 0}});
  in.push_back({"run:a", event{10, "x", "", 1}});  // the codec itself allows empty data
  auto body = encode_block(in, {0, in.size()});
  auto out = decode_all(body);
  ASSERT_EQ(out.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].seq, in[i].e.seq);
    EXPECT_EQ(out[i].type, in[i].e.type);
    EXPECT_EQ(out[i].data, in[i].e.data);
    EXPECT_EQ(out[i].ts, in[i].e.ts);
  }
}

TEST(event_block, the_encoding_is_the_documented_text) {
  auto in = stretch("room:r", 3, 3, 0);
  in[0].e.data = R"({"a":1})";
  EXPECT_EQ(encode_block(in, {0, 1}), "3 1003 delta 7\n{\"a\":1}");
}

TEST(event_block, damaged_bodies_are_errors_never_overreads) {
  const std::string good = encode_block(stretch("run:a", 1, 2), {0, 2});
  for (std::size_t cut = 1; cut < good.size(); ++cut) {
    std::string_view body{good.data(), cut};
    event e;
    bool failed = false;
    for (int i = 0; i < 3; ++i) {
      auto r = next_block_event(body, e);
      if (!r) {
        failed = true;
        break;
      }
      if (!*r) break;
    }
    // A cut exactly between two events is a valid shorter block; anywhere else is an error.
    const bool boundary = cut == good.find("2 1002");
    EXPECT_EQ(failed, !boundary) << "cut at " << cut;
  }
  for (std::string bad : {"x 1 delta 1\na", "1 x delta 1\na", "1 1  1\na", "1 1 delta\na",
                          "1 1 delta 5\nab", "-1 1 delta 1\na", "1 1 delta -1\n", "1 1 delta 1 a",
                          "99999999999999999999999 1 delta 1\na"}) {
    std::string_view body = bad;
    event e;
    EXPECT_FALSE(next_block_event(body, e).ok()) << bad;
  }
}

TEST(event_block, blocks_end_at_a_topic_change_a_seq_jump_and_the_limits) {
  auto events = concat({stretch("run:a", 1, 3), stretch("run:b", 1, 2), stretch("run:a", 4, 4),
                        stretch("run:a", 6, 7)});
  EXPECT_EQ(spans(plan_blocks(events)),
            (std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {3, 5}, {5, 6}, {6, 8}}));

  auto many = stretch("run:a", 1, 2 * max_block_events + 1);
  EXPECT_EQ(spans(plan_blocks(many)), (std::vector<std::pair<std::size_t, std::size_t>>{
                                          {0, max_block_events},
                                          {max_block_events, 2 * max_block_events},
                                          {2 * max_block_events, 2 * max_block_events + 1}}));

  // 20 KB events: three fit in 64 KiB; one bigger than the limit is a block of its own.
  auto big = stretch("run:a", 1, 4, 20000);
  big.push_back({"run:a", event{5, "delta", std::string(100000, 'z'), 1}});
  big.push_back({"run:a", event{6, "delta", "1", 1}});
  EXPECT_EQ(spans(plan_blocks(big)),
            (std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {3, 4}, {4, 5}, {5, 6}}));
  EXPECT_TRUE(plan_blocks({}).empty());
}

TEST(event_block, uncovered_keeps_exactly_the_seqs_no_stored_range_holds) {
  auto events = stretch("run:a", 1, 10);
  const block_span all{0, 10};
  EXPECT_EQ(spans(uncovered(events, all, {})),
            (std::vector<std::pair<std::size_t, std::size_t>>{{0, 10}}));
  EXPECT_TRUE(uncovered(events, all, {{1, 10}}).empty());
  EXPECT_TRUE(uncovered(events, all, {{0, 4}, {3, 7}, {8, 12}}).empty());
  // Stored 2..3 and 6..6: new are 1, 4..5, 7..10 (indices are seq - 1).
  EXPECT_EQ(spans(uncovered(events, all, {{6, 6}, {2, 3}})),
            (std::vector<std::pair<std::size_t, std::size_t>>{{0, 1}, {3, 5}, {6, 10}}));
  EXPECT_EQ(spans(uncovered(events, {4, 6}, {{1, 5}})),
            (std::vector<std::pair<std::size_t, std::size_t>>{{5, 6}}));
}

TEST(event_block_reads, take_before_goes_backwards_below_lowest_and_stops_at_the_limit) {
  std::vector<event> block;
  for (uint64_t s = 5; s <= 9; ++s) block.push_back(event{s, "delta", "null", 1});
  std::vector<event> out;
  uint64_t lowest = 8;  // 8 and 9 were read before
  EXPECT_FALSE(take_before(block, lowest, out, 2));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].seq, 7u);
  EXPECT_EQ(out[1].seq, 6u);
  EXPECT_EQ(lowest, 6u);
}

}  // namespace
}  // namespace relay::storage

namespace relay::storage {
namespace {

TEST(event_block_reads, take_after_keeps_what_follows_last_and_stops_at_the_limit) {
  auto block_of = [](uint64_t from, uint64_t to) {
    std::vector<event> b;
    for (uint64_t s = from; s <= to; ++s) b.push_back(event{s, "delta", "null", 1});
    return b;
  };
  std::vector<event> out;
  uint64_t last = 4;
  auto first = block_of(3, 6);  // 3 and 4 were read before (an overlap a damaged store could have)
  EXPECT_TRUE(take_after(first, last, out, 3));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].seq, 5u);
  EXPECT_EQ(out[1].seq, 6u);
  EXPECT_EQ(last, 6u);
  auto second = block_of(7, 9);
  EXPECT_FALSE(take_after(second, last, out, 3));  // the limit is reached at 7: the reader stops
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].seq, 7u);
  EXPECT_EQ(last, 7u);
}

}  // namespace
}  // namespace relay::storage
