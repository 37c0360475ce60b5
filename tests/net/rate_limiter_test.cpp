// Token buckets and the bounded table of them (net/rate_limiter.hpp), on a clock driven by hand.

#include "net/rate_limiter.hpp"

#include <gtest/gtest.h>

#include <string>

namespace relay::net {
namespace {

using namespace std::chrono_literals;

const limiter_clock::time_point t0{};

// "k<i>" (built without `"k" + std::to_string(i)`, which g++ 12 -O2 flags with a -Wrestrict
// false positive).
std::string key(int i) {
  std::string k = std::to_string(i);
  k.insert(k.begin(), 'k');
  return k;
}

TEST(token_bucket, a_full_bucket_gives_its_burst_then_refuses_with_the_wait) {
  const rate_spec spec{10, 5};  // 10 per second, 5 at once
  token_bucket b{spec, t0};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.try_take(spec, 1, t0).ok) << i;
  auto r = b.try_take(spec, 1, t0);
  ASSERT_FALSE(r.ok);
  EXPECT_FALSE(r.never);
  EXPECT_EQ(r.retry_after, 100ms);  // one token at 10/s
  EXPECT_EQ(r.retry_after_s(), 1);  // rounded up to whole seconds, at least 1
}

TEST(token_bucket, refills_at_its_rate_and_never_past_its_burst) {
  const rate_spec spec{10, 5};
  token_bucket b{spec, t0};
  EXPECT_TRUE(b.try_take(spec, 5, t0).ok);
  EXPECT_FALSE(b.try_take(spec, 1, t0 + 50ms).ok);
  EXPECT_TRUE(b.try_take(spec, 1, t0 + 100ms).ok);
  // An hour later it holds its burst, not 36 000 tokens.
  EXPECT_TRUE(b.full(spec, t0 + 1h));
  EXPECT_TRUE(b.try_take(spec, 5, t0 + 1h).ok);
  EXPECT_FALSE(b.try_take(spec, 1, t0 + 1h).ok);
}

TEST(token_bucket, takes_all_or_nothing) {
  const rate_spec spec{1, 16};
  token_bucket b{spec, t0};
  EXPECT_TRUE(b.try_take(spec, 10, t0).ok);
  auto r = b.try_take(spec, 16, t0);  // 6 left: a batch of 16 takes none of them
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.retry_after, 10s);
  EXPECT_EQ(r.retry_after_s(), 10);
  EXPECT_TRUE(b.try_take(spec, 6, t0).ok);  // the 6 are still there
}

TEST(token_bucket, more_than_the_burst_can_never_pass) {
  const rate_spec spec{100, 8};
  token_bucket b{spec, t0};
  auto r = b.try_take(spec, 9, t0);
  ASSERT_FALSE(r.ok);
  EXPECT_TRUE(r.never);
}

TEST(token_bucket, a_clock_that_goes_back_does_not_refill) {
  const rate_spec spec{10, 1};
  token_bucket b{spec, t0 + 1s};
  EXPECT_TRUE(b.try_take(spec, 1, t0 + 1s).ok);
  EXPECT_FALSE(b.try_take(spec, 1, t0).ok);
  EXPECT_FALSE(b.try_take(spec, 1, t0 + 1s).ok);
  EXPECT_TRUE(b.try_take(spec, 1, t0 + 1100ms).ok);
}

TEST(retry_after, rounds_up_to_whole_seconds) {
  take_result r;
  r.ok = false;
  r.retry_after = 1001ms;
  EXPECT_EQ(r.retry_after_s(), 2);
  r.retry_after = 2000ms;
  EXPECT_EQ(r.retry_after_s(), 2);
  r.retry_after = 0ms;
  EXPECT_EQ(r.retry_after_s(), 1);
}

TEST(keyed_limiter, keys_have_their_own_buckets) {
  keyed_limiter l{rate_spec{1, 2}, 1000};
  EXPECT_TRUE(l.try_take("alice", 2, t0).ok);
  EXPECT_FALSE(l.try_take("alice", 1, t0).ok);
  EXPECT_TRUE(l.try_take("bob", 2, t0).ok);
  EXPECT_TRUE(l.try_take("alice", 1, t0 + 1s).ok);
  EXPECT_EQ(l.size(), 2u);
}

TEST(keyed_limiter, off_lets_everything_pass_and_keeps_nothing) {
  keyed_limiter l{rate_spec{0, 0}, 1000};
  EXPECT_FALSE(l.enabled());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(l.try_take(key(i), 1e9, t0).ok);
  EXPECT_EQ(l.size(), 0u);
}

TEST(keyed_limiter, rotating_keys_stay_within_the_bound) {
  const std::size_t max_keys = 160;  // 10 per shard
  keyed_limiter l{rate_spec{1, 10}, max_keys};
  for (int i = 0; i < 100'000; ++i) {
    EXPECT_TRUE(
        l.try_take("attacker-" + std::to_string(i), 5, t0 + std::chrono::milliseconds(i)).ok);
    ASSERT_LE(l.size(), max_keys) << i;
  }
}

TEST(keyed_limiter, a_full_table_forgets_refilled_buckets_before_busy_ones) {
  // One key per shard at most: a second key in the same shard must evict.
  keyed_limiter l{rate_spec{1, 3}, keyed_limiter::shard_count};
  EXPECT_TRUE(l.try_take("busy", 3, t0).ok);  // empty bucket, refills only after 3 s
  // Find another key in busy's shard by trying keys until the table does not grow.
  for (int i = 0; i < 1000; ++i) {
    const std::string k = "other-" + std::to_string(i);
    const auto before = l.size();
    EXPECT_TRUE(l.try_take(k, 0, t0 + 10s).ok);
    if (l.size() == before) {
      // `k` took busy's place, which had refilled by t0 + 10 s (forgetting it changed nothing):
      // busy starts again from a full bucket.
      EXPECT_TRUE(l.try_take("busy", 3, t0 + 10s).ok);
      return;
    }
  }
  FAIL() << "no key shared busy's shard";
}

TEST(keyed_limiter, an_evicted_busy_bucket_is_the_least_recently_used) {
  keyed_limiter l{rate_spec{1, 3}, keyed_limiter::shard_count};
  // Fill every shard with an emptied bucket (none refills within the test's 1 s).
  for (int i = 0; l.size() < keyed_limiter::shard_count && i < 10'000; ++i)
    l.try_take(key(i), 3, t0 + std::chrono::microseconds(i));
  ASSERT_EQ(l.size(), keyed_limiter::shard_count);
  for (int i = 0; i < 1000; ++i)
    l.try_take("new" + std::to_string(i), 1, t0 + 1s + std::chrono::microseconds(i));
  EXPECT_EQ(l.size(), keyed_limiter::shard_count);
}

}  // namespace
}  // namespace relay::net
