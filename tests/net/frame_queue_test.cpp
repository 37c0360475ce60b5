// The outbound queue of an SSE session: dedup by seq, gather-writes, partial writes, terminal.

#include "net/frame_queue.hpp"

#include <gtest/gtest.h>

#include <string>

namespace relay::net {
namespace {

frame_ptr event_frame(uint64_t seq, std::string bytes, bool terminal = false) {
  auto f = std::make_shared<frame>();
  f->seq = seq;
  f->terminal = terminal;
  f->bytes = std::move(bytes);
  return f;
}

frame_ptr control(std::string bytes) {
  auto f = std::make_shared<frame>();
  f->bytes = std::move(bytes);
  return f;
}

std::string concat(const std::vector<boost::asio::const_buffer>& bufs) {
  std::string out;
  for (const auto& b : bufs) out.append(static_cast<const char*>(b.data()), b.size());
  return out;
}

TEST(frame_queue, drops_events_at_or_before_the_last_seq) {
  frame_queue q{5};
  EXPECT_FALSE(q.push(event_frame(3, "a")));
  EXPECT_FALSE(q.push(event_frame(5, "b")));
  EXPECT_TRUE(q.push(event_frame(6, "c")));
  EXPECT_FALSE(q.push(event_frame(6, "c")));  // duplicate across a topic restart
  EXPECT_TRUE(q.push(event_frame(7, "d")));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.last_seq(), 7u);
}

TEST(frame_queue, gap_moves_the_position_to_its_end) {
  frame_queue q{0};
  auto gap = std::make_shared<frame>();
  gap->what = frame::kind::gap;
  gap->seq = 9;  // {"from":1,"to":9}
  gap->bytes = "gap";
  EXPECT_TRUE(q.push(gap));
  EXPECT_FALSE(q.push(event_frame(9, "x")));
  EXPECT_TRUE(q.push(event_frame(10, "y")));
}

TEST(frame_queue, control_bytes_are_never_deduplicated_or_counted) {
  frame_queue q{10};
  q.push_control(control("HEAD"));
  q.push_control(control(": hb\n\n"));
  EXPECT_EQ(q.size(), 2u);
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  auto p = q.consume(4 + 6);
  EXPECT_EQ(p.frames, 0u);
  EXPECT_EQ(p.counted_bytes, 0u);
  EXPECT_TRUE(q.empty());
}

TEST(frame_queue, one_gather_takes_the_whole_backlog_up_to_the_cap) {
  frame_queue q;
  for (uint64_t i = 1; i <= 100; ++i) {
    // Built step by step: `"f" + std::to_string(i) + ";"` trips g++ 12's -Wrestrict false positive.
    std::string bytes = "f";
    bytes += std::to_string(i);
    bytes += ';';
    q.push(event_frame(i, bytes));
  }
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  EXPECT_EQ(bufs.size(), 64u);
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.size();
  auto p = q.consume(total);
  EXPECT_EQ(p.frames, 64u);
  EXPECT_EQ(p.counted_bytes, total);
  EXPECT_EQ(q.size(), 36u);
  bufs.clear();
  q.gather(bufs, 64);
  EXPECT_EQ(bufs.size(), 36u);
  EXPECT_EQ(concat(bufs).substr(0, 4), "f65;");
}

TEST(frame_queue, a_partial_write_resumes_inside_the_head) {
  frame_queue q;
  q.push(event_frame(1, "abcdef"));
  q.push(event_frame(2, "ghij"));
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "abcdefghij");
  auto p = q.consume(4);
  EXPECT_EQ(p.frames, 0u);
  bufs.clear();
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "efghij");
  p = q.consume(3);  // "ef" + "g"
  EXPECT_EQ(p.frames, 1u);
  EXPECT_EQ(p.counted_bytes, 6u);
  bufs.clear();
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "hij");
  p = q.consume(3);
  EXPECT_EQ(p.frames, 1u);
  EXPECT_EQ(p.counted_bytes, 4u);
  EXPECT_TRUE(q.empty());
}

TEST(frame_queue, nothing_is_written_or_queued_after_a_terminal_frame) {
  frame_queue q;
  q.push(event_frame(1, "a"));
  q.push(event_frame(2, "done", true));
  EXPECT_TRUE(q.terminal_queued());
  EXPECT_FALSE(q.push(event_frame(3, "late")));
  q.push_control(control(": hb\n\n"));  // e.g. a heartbeat queued meanwhile
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "adone");  // the gather stops at the terminal frame
  auto p = q.consume(5);
  EXPECT_TRUE(p.terminal);
  EXPECT_EQ(p.frames, 2u);
}

TEST(frame_queue, clear_answers_the_counted_bytes) {
  frame_queue q;
  q.push_control(control("HEAD"));
  q.push(event_frame(1, "12345"));
  q.push(event_frame(2, "678"));
  EXPECT_EQ(q.clear(), 8u);
  EXPECT_TRUE(q.empty());
}

TEST(frame_queue, push_counted_skips_the_seq_check_of_a_single_topic) {
  frame_queue q{10};
  q.push_counted(event_frame(3, "run-a "));   // another topic's seq, below our position
  q.push_counted(event_frame(3, "room-b "));  // the same seq from a third topic
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "run-a room-b ");
  auto p = q.consume(13);
  EXPECT_EQ(p.frames, 2u);
  EXPECT_EQ(p.counted_bytes, 13u);
}

TEST(frame_queue, drop_unstarted_keeps_a_partly_written_head_so_a_close_frame_can_follow) {
  frame_queue q;
  q.push_counted(event_frame(1, "abcdef"));
  q.push_counted(event_frame(2, "ghij"));
  q.push_control(control("ping"));
  q.consume(2);                       // "ab" of the head is on the wire
  EXPECT_EQ(q.drop_unstarted(), 4u);  // "ghij" (the control bytes were never counted)
  q.push_control(control("CLOSE"));
  std::vector<boost::asio::const_buffer> bufs;
  q.gather(bufs, 64);
  EXPECT_EQ(concat(bufs), "cdefCLOSE");
  // With nothing started, everything goes.
  frame_queue fresh;
  fresh.push_counted(event_frame(1, "abc"));
  EXPECT_EQ(fresh.drop_unstarted(), 3u);
  EXPECT_TRUE(fresh.empty());
}

TEST(frame_queue, frames_share_their_bytes) {
  frame_queue a, b;
  auto f = event_frame(1, std::string(1000, 'z'));
  a.push(f);
  b.push(f);
  std::vector<boost::asio::const_buffer> ba, bb;
  a.gather(ba, 64);
  b.gather(bb, 64);
  // Both sessions write from the same immutable buffer: no copy per client.
  EXPECT_EQ(ba[0].data(), f->bytes.data());
  EXPECT_EQ(bb[0].data(), f->bytes.data());
}

}  // namespace
}  // namespace relay::net
