// The inbox between the edge and an SSE session: signal coalescing, byte accounting, the
// slow-consumer bound.

#include "net/outbox.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace relay::net {
namespace {

frame_ptr make_frame(uint64_t seq, std::size_t size, bool terminal = false) {
  auto f = std::make_shared<frame>();
  f->seq = seq;
  f->terminal = terminal;
  f->bytes.assign(size, 'x');
  return f;
}

TEST(outbox, only_the_first_signal_after_a_drain_asks_for_a_drain) {
  outbox box{1000};
  EXPECT_TRUE(box.set_subscribed(subscribe_ok{}));
  EXPECT_FALSE(box.push(make_frame(1, 10)));
  EXPECT_FALSE(box.push(make_frame(2, 10)));
  outbox::batch b;
  box.drain(b);
  ASSERT_TRUE(b.subscribed.has_value());
  EXPECT_TRUE(b.subscribed->ok());
  ASSERT_EQ(b.frames.size(), 2u);
  EXPECT_EQ(b.frames[0]->seq, 1u);
  EXPECT_EQ(b.frames[1]->seq, 2u);
  b.frames.clear();
  b.subscribed.reset();
  EXPECT_TRUE(box.push(make_frame(3, 10)));  // first after the drain
  EXPECT_FALSE(box.push(make_frame(4, 10)));
}

TEST(outbox, bytes_stay_counted_until_released) {
  outbox box{1000};
  box.push(make_frame(1, 100));
  box.push(make_frame(2, 50));
  EXPECT_EQ(box.queued_bytes(), 150u);
  outbox::batch b;
  box.drain(b);
  EXPECT_EQ(box.queued_bytes(), 150u);  // now in the session's queue, still counted
  box.release(100);
  EXPECT_EQ(box.queued_bytes(), 50u);
}

TEST(outbox, crossing_the_limit_closes_it_and_drops_the_inbox) {
  outbox box{250};
  EXPECT_TRUE(box.push(make_frame(1, 100)));
  EXPECT_FALSE(box.push(make_frame(2, 100)));
  EXPECT_EQ(box.queued_bytes(), 200u);
  EXPECT_FALSE(box.push(make_frame(3, 100)));  // would be 300 > 250
  EXPECT_TRUE(box.closed());
  EXPECT_EQ(box.queued_bytes(), 0u);  // the pending frames were dropped, memory released
  EXPECT_FALSE(box.push(make_frame(4, 1)));
  EXPECT_EQ(box.queued_bytes(), 0u);
  outbox::batch b;
  box.drain(b);
  EXPECT_TRUE(b.overflowed);
  EXPECT_EQ(b.overflow_bytes, 300u);
  EXPECT_TRUE(b.frames.empty());
}

TEST(outbox, the_limit_counts_what_the_session_still_holds) {
  outbox box{250};
  box.push(make_frame(1, 200));
  outbox::batch b;
  box.drain(b);                               // the session holds 200 bytes it has not written yet
  EXPECT_TRUE(box.push(make_frame(2, 100)));  // signals a drain, which reports the overflow
  EXPECT_TRUE(box.closed());
  outbox::batch b2;
  box.drain(b2);
  EXPECT_TRUE(b2.overflowed);
  box.release(200);
  EXPECT_EQ(box.queued_bytes(), 0u);
}

TEST(outbox, exactly_at_the_limit_is_allowed) {
  outbox box{200};
  box.push(make_frame(1, 100));
  box.push(make_frame(2, 100));
  EXPECT_FALSE(box.closed());
  EXPECT_EQ(box.queued_bytes(), 200u);
}

TEST(outbox, an_empty_outbox_takes_one_batch_larger_than_the_limit) {
  // A replay larger than the limit must not lock a resuming client out: it always makes progress.
  outbox box{100};
  std::vector<frame_ptr> replay{make_frame(1, 80), make_frame(2, 80), make_frame(3, 80)};
  EXPECT_TRUE(box.push(replay.data(), replay.size()));
  EXPECT_FALSE(box.closed());
  EXPECT_EQ(box.queued_bytes(), 240u);
  // Anything more while that is still held crosses the limit: slow consumer.
  EXPECT_FALSE(box.push(make_frame(4, 10)));
  EXPECT_TRUE(box.closed());
  outbox::batch b;
  box.drain(b);
  EXPECT_TRUE(b.overflowed);
}

TEST(outbox, closed_by_the_edge_accepts_nothing_more) {
  outbox box{1000};
  box.push(make_frame(1, 10));
  EXPECT_FALSE(box.set_closed(error{errc::unavailable, "node stopping"}));  // drain pending
  EXPECT_FALSE(box.push(make_frame(2, 10)));
  outbox::batch b;
  box.drain(b);
  ASSERT_EQ(b.frames.size(), 1u);
  ASSERT_TRUE(b.closed.has_value());
  EXPECT_EQ(b.closed->code, errc::unavailable);
  EXPECT_FALSE(b.overflowed);
}

TEST(outbox, close_drops_pending_frames_and_refuses_input) {
  outbox box{1000};
  box.push(make_frame(1, 10));
  box.push(make_frame(2, 10));
  box.close();
  EXPECT_EQ(box.queued_bytes(), 0u);
  EXPECT_FALSE(box.push(make_frame(3, 10)));
  EXPECT_FALSE(box.set_subscribed(subscribe_ok{}));
  outbox::batch b;
  box.drain(b);
  EXPECT_TRUE(b.empty());
}

TEST(outbox, subscribe_error_is_delivered) {
  outbox box{1000};
  EXPECT_TRUE(box.set_subscribed(error{errc::not_found, "no such run"}));
  outbox::batch b;
  box.drain(b);
  ASSERT_TRUE(b.subscribed.has_value());
  ASSERT_FALSE(b.subscribed->ok());
  EXPECT_EQ(b.subscribed->err().code, errc::not_found);
}

TEST(outbox, drain_keeps_frames_already_in_the_batch) {
  outbox box{1000};
  box.push(make_frame(1, 1));
  outbox::batch b;
  box.drain(b);
  box.push(make_frame(2, 1));
  box.drain(b);
  ASSERT_EQ(b.frames.size(), 2u);
  EXPECT_EQ(b.frames[1]->seq, 2u);
}

// A producer thread against a draining thread: every frame is delivered once, in order, the
// number of drain signals is at most the number of drains, and the count returns to zero.
TEST(outbox, concurrent_push_and_drain_keep_order_and_accounting) {
  constexpr uint64_t n = 20000;
  outbox box{1 << 30};
  std::atomic<int> signals{0};
  std::thread producer{[&] {
    for (uint64_t i = 1; i <= n; ++i)
      if (box.push(make_frame(i, 8))) signals.fetch_add(1);
  }};
  uint64_t next = 1;
  int drains = 0;
  outbox::batch b;
  while (next <= n) {
    box.drain(b);
    ++drains;
    for (const auto& f : b.frames) {
      ASSERT_EQ(f->seq, next);
      ++next;
      box.release(f->bytes.size());
    }
    b.frames.clear();
  }
  producer.join();
  EXPECT_LE(signals.load(), drains);
  EXPECT_EQ(box.queued_bytes(), 0u);
}

}  // namespace
}  // namespace relay::net
