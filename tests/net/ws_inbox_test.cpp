// The inbox between the edge and a WebSocket session: per-subscription items in order, signal
// coalescing, and one byte bound over events, presence and the session's own answers.

#include "net/ws_inbox.hpp"

#include <gtest/gtest.h>

namespace relay::net {
namespace {

frame_ptr make_frame(uint64_t seq, std::size_t size) {
  auto f = std::make_shared<frame>();
  f->seq = seq;
  f->bytes.assign(size, 'x');
  return f;
}

presence_ptr make_presence(std::size_t size) {
  auto p = std::make_shared<presence_note>();
  p->room = "lobby";
  p->user = "bob";
  p->ws_frame = make_frame(0, size);
  return p;
}

TEST(ws_inbox, keeps_the_order_of_answers_frames_presence_and_ends_across_subscriptions) {
  ws_inbox box{1000};
  EXPECT_TRUE(box.set_subscribed(1, subscribe_ok{5, true}));
  auto f = make_frame(6, 10);
  EXPECT_FALSE(box.push(1, &f, 1));
  EXPECT_FALSE(box.set_subscribed(2, error{errc::not_found, "no such run"}));
  EXPECT_FALSE(box.push_presence(1, make_presence(20)));
  EXPECT_FALSE(box.set_closed(1, error{errc::unavailable, "the topic was closed"}));
  ws_inbox::batch b;
  box.drain(b);
  ASSERT_EQ(b.items.size(), 5u);
  EXPECT_EQ(b.items[0].sub_id, 1u);
  ASSERT_TRUE(b.items[0].other && b.items[0].other->subscribed);
  EXPECT_EQ((*b.items[0].other->subscribed)->last_seq, 5u);
  EXPECT_EQ(b.items[1].frame, f);
  EXPECT_EQ(b.items[2].sub_id, 2u);
  EXPECT_EQ(b.items[2].other->subscribed->err().code, errc::not_found);
  ASSERT_TRUE(b.items[3].other && b.items[3].other->presence);
  ASSERT_TRUE(b.items[4].other && b.items[4].other->closed);
  EXPECT_EQ(box.held_bytes(), 30u);  // the frame and the presence frame
  b.items.clear();
  EXPECT_TRUE(box.push(1, &f, 1));  // the first signal after a drain asks for one
}

TEST(ws_inbox, bytes_stay_held_until_released) {
  ws_inbox box{1000};
  std::vector<frame_ptr> frames{make_frame(1, 100), make_frame(2, 200)};
  box.push(7, frames.data(), frames.size());
  ws_inbox::batch b;
  box.drain(b);
  EXPECT_EQ(box.held_bytes(), 300u);
  std::size_t counted = 0;
  for (auto& it : b.items) counted += counted_bytes(it);
  EXPECT_EQ(counted, 300u);
  box.release(100);
  EXPECT_EQ(box.held_bytes(), 200u);
}

TEST(ws_inbox, past_the_limit_it_closes_drops_what_is_pending_and_reports_overflow) {
  ws_inbox box{1000};
  auto a = make_frame(1, 600);
  auto b = make_frame(2, 600);
  box.push(1, &a, 1);
  box.push(1, &b, 1);               // 1200 > 1000
  EXPECT_EQ(box.held_bytes(), 0u);  // the pending frame was dropped with its bytes
  ws_inbox::batch out;
  box.drain(out);
  EXPECT_TRUE(out.overflowed);
  EXPECT_EQ(out.overflow_bytes, 1200u);
  EXPECT_TRUE(out.items.empty());
  // Closed: nothing more is taken, whatever it is.
  EXPECT_FALSE(box.push(1, &a, 1));
  EXPECT_FALSE(box.set_subscribed(2, subscribe_ok{}));
  EXPECT_FALSE(box.push_presence(1, make_presence(1)));
}

TEST(ws_inbox, an_empty_session_takes_one_batch_larger_than_the_limit) {
  ws_inbox box{1000};
  std::vector<frame_ptr> replay;
  for (uint64_t i = 1; i <= 30; ++i) replay.push_back(make_frame(i, 100));
  EXPECT_TRUE(box.push(1, replay.data(), replay.size()));  // 3000 bytes, nothing held before
  EXPECT_EQ(box.held_bytes(), 3000u);
  auto more = make_frame(31, 1);
  box.push(1, &more, 1);  // now the limit applies
  ws_inbox::batch out;
  box.drain(out);
  EXPECT_TRUE(out.overflowed);
}

TEST(ws_inbox, the_sessions_own_answers_count_against_the_same_limit) {
  ws_inbox box{1000};
  EXPECT_TRUE(box.hold(900));
  auto f = make_frame(1, 200);
  box.push(1, &f, 1);  // 1100 > 1000: presence and events cannot pile up behind unread answers
  ws_inbox::batch out;
  box.drain(out);
  EXPECT_TRUE(out.overflowed);
  EXPECT_EQ(box.held_bytes(), 900u);
  EXPECT_FALSE(box.hold(200));  // and answers cannot pile up either
  box.release(1100);
  EXPECT_EQ(box.held_bytes(), 0u);
  EXPECT_TRUE(box.hold(5000));  // the first hold of an empty session is always taken
}

TEST(ws_inbox, presence_without_a_websocket_frame_is_not_queued) {
  ws_inbox box{1000};
  auto p = std::make_shared<presence_note>();
  EXPECT_FALSE(box.push_presence(1, p));
  ws_inbox::batch out;
  box.drain(out);
  EXPECT_TRUE(out.items.empty());
}

TEST(ws_inbox, close_drops_pending_items_and_their_bytes) {
  ws_inbox box{1000};
  auto f = make_frame(1, 100);
  box.push(1, &f, 1);
  box.push_presence(1, make_presence(50));
  box.close();
  EXPECT_EQ(box.held_bytes(), 0u);
  ws_inbox::batch out;
  box.drain(out);
  EXPECT_TRUE(out.items.empty());
  EXPECT_FALSE(out.overflowed);
}

}  // namespace
}  // namespace relay::net
