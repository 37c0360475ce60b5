#include "actors/replay_ring.hpp"

#include <gtest/gtest.h>

namespace relay {
namespace {

event ev(uint64_t seq) { return event{seq, "delta", "{\"n\":" + std::to_string(seq) + "}", 0}; }

std::vector<uint64_t> seqs(const replay_ring::replay& r) {
  std::vector<uint64_t> out;
  for (auto& e : r.events) out.push_back(e.seq);
  return out;
}

TEST(replay_ring, empty_ring_owes_nothing) {
  replay_ring ring{4};
  EXPECT_EQ(ring.last_seq(), 0u);
  EXPECT_EQ(ring.first_seq(), 1u);
  auto r = ring.after(0);
  EXPECT_FALSE(r.gap);
  EXPECT_TRUE(r.events.empty());
}

TEST(replay_ring, replays_everything_after_a_position) {
  replay_ring ring{4};
  for (uint64_t s = 1; s <= 3; ++s) ring.push(ev(s));
  EXPECT_EQ(seqs(ring.after(0)), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(ring.after(1)), (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE(ring.after(3).events.empty());
  EXPECT_TRUE(ring.after(99).events.empty());  // a position from the future owes nothing
  EXPECT_FALSE(ring.after(0).gap);
}

TEST(replay_ring, wraps_around_and_keeps_the_newest) {
  replay_ring ring{4};
  for (uint64_t s = 1; s <= 11; ++s) ring.push(ev(s));
  EXPECT_EQ(ring.size(), 4u);
  EXPECT_EQ(ring.first_seq(), 8u);
  EXPECT_EQ(ring.last_seq(), 11u);
  EXPECT_EQ(seqs(ring.after(7)), (std::vector<uint64_t>{8, 9, 10, 11}));
  EXPECT_EQ(seqs(ring.after(9)), (std::vector<uint64_t>{10, 11}));
  EXPECT_EQ(ring.at(10).data, "{\"n\":10}");
  EXPECT_FALSE(ring.after(7).gap);
}

TEST(replay_ring, detects_a_gap_when_the_position_is_older_than_the_ring) {
  replay_ring ring{4};
  for (uint64_t s = 1; s <= 10; ++s) ring.push(ev(s));
  auto r = ring.after(2);
  EXPECT_TRUE(r.gap);
  EXPECT_EQ(r.gap_from, 3u);
  EXPECT_EQ(r.gap_to, 6u);
  EXPECT_EQ(seqs(r), (std::vector<uint64_t>{7, 8, 9, 10}));
  auto from_start = ring.after(0);
  EXPECT_TRUE(from_start.gap);
  EXPECT_EQ(from_start.gap_from, 1u);
  EXPECT_EQ(from_start.gap_to, 6u);
}

TEST(replay_ring, reset_keeps_numbering_and_reports_the_lost_part_as_a_gap) {
  replay_ring ring{4};
  for (uint64_t s = 1; s <= 3; ++s) ring.push(ev(s));
  ring.reset(3);
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.last_seq(), 3u);
  auto r = ring.after(1);
  EXPECT_TRUE(r.gap);
  EXPECT_EQ(r.gap_from, 2u);
  EXPECT_EQ(r.gap_to, 3u);
  EXPECT_TRUE(r.events.empty());
  ring.push(ev(4));
  EXPECT_EQ(seqs(ring.after(3)), (std::vector<uint64_t>{4}));
  EXPECT_FALSE(ring.after(3).gap);
}

TEST(replay_ring, a_position_at_or_past_the_end_owes_nothing_even_at_the_largest_seq) {
  replay_ring ring(4);
  for (uint64_t s = 1; s <= 6; ++s) ring.push(ev(s));
  for (uint64_t after : {uint64_t{6}, uint64_t{7}, UINT64_MAX - 1, UINT64_MAX}) {
    auto r = ring.after(after);
    EXPECT_FALSE(r.gap) << after;
    EXPECT_TRUE(r.events.empty()) << after;
  }
}

TEST(replay_ring, reload_refills_from_a_stored_tail_and_numbering_continues) {
  replay_ring ring(4);
  std::vector<event> tail{ev(7), ev(8), ev(9)};
  ring.reload(std::move(tail), 9);
  EXPECT_EQ(ring.last_seq(), 9u);
  EXPECT_EQ(seqs(ring.after(6)), (std::vector<uint64_t>{7, 8, 9}));
  EXPECT_FALSE(ring.after(6).gap);
  EXPECT_TRUE(ring.after(5).gap);  // what is older than the tail is not in memory
  ring.push(ev(10));
  EXPECT_EQ(seqs(ring.after(8)), (std::vector<uint64_t>{9, 10}));
  // A position ahead of the tail (never stored) wins: the ring restarts there, resumers get a gap.
  replay_ring ahead(4);
  ahead.reload({ev(1), ev(2)}, 5);
  EXPECT_EQ(ahead.last_seq(), 5u);
  EXPECT_TRUE(ahead.after(2).gap);
  // Nothing stored: numbering continues from the checkpoint.
  replay_ring empty(4);
  empty.reload({}, 3);
  EXPECT_EQ(empty.last_seq(), 3u);
  EXPECT_TRUE(empty.empty());
}

TEST(replay_ring, capacity_one_still_works) {
  replay_ring ring{1};
  ring.push(ev(1));
  ring.push(ev(2));
  EXPECT_EQ(seqs(ring.after(1)), (std::vector<uint64_t>{2}));
  EXPECT_TRUE(ring.after(0).gap);
}

}  // namespace
}  // namespace relay
