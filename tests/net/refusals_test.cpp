// Refusal counters, the once-per-offender-per-minute log throttle and per-address connection
// counts (net/refusals.hpp).

#include "net/refusals.hpp"

#include <gtest/gtest.h>

#include <string>

#include "net/net_counters.hpp"

namespace relay::net {
namespace {

using namespace std::chrono_literals;

const std::chrono::steady_clock::time_point t0{};

TEST(refusals, logs_once_per_offender_and_reason_per_minute) {
  refusals r;
  EXPECT_TRUE(r.should_log(refusal::rate_events, "alice", t0));
  EXPECT_FALSE(r.should_log(refusal::rate_events, "alice", t0 + 59s));
  EXPECT_TRUE(r.should_log(refusal::rate_runs, "alice", t0 + 1s));  // another reason
  EXPECT_TRUE(r.should_log(refusal::rate_events, "bob", t0 + 1s));  // another offender
  EXPECT_TRUE(r.should_log(refusal::rate_events, "alice", t0 + 60s));
  EXPECT_FALSE(r.should_log(refusal::rate_events, "alice", t0 + 61s));
}

TEST(refusals, the_log_throttle_stays_bounded_under_rotating_offenders) {
  refusals r;
  for (int i = 0; i < 3 * static_cast<int>(refusals::max_remembered); ++i)
    EXPECT_TRUE(r.should_log(refusal::connections_per_ip, "10.0.0." + std::to_string(i), t0));
  // Bounded: old offenders were forgotten (they may be logged again), nothing grew past the cap.
  EXPECT_TRUE(r.should_log(refusal::connections_per_ip, "10.0.0.0", t0 + 1s));
}

TEST(refusals, counts_each_reason_and_exports_one_labelled_sample_per_reason) {
  refusals r;
  r.refuse(refusal::rate_messages, "alice");
  r.refuse(refusal::rate_messages, "alice");
  r.refuse(refusal::header_timeout, "127.0.0.1");
  EXPECT_EQ(r.count(refusal::rate_messages), 2u);
  EXPECT_EQ(r.count(refusal::header_timeout), 1u);
  EXPECT_EQ(r.count(refusal::rooms), 0u);
  std::vector<metric_sample> out;
  r.append_to(out);
  ASSERT_EQ(out.size(), static_cast<std::size_t>(refusal::count_));
  bool seen = false;
  for (const auto& s : out) {
    EXPECT_EQ(s.name, "relay_refused_total");
    if (s.labels == R"(reason="rate_messages")") {
      seen = true;
      EXPECT_EQ(s.value, 2);
    }
  }
  EXPECT_TRUE(seen);
}

TEST(ip_connections, counts_per_address_and_forgets_an_address_at_zero) {
  ip_connections t;
  {
    ip_slot a{t, "127.0.0.1"};
    ip_slot b{t, "127.0.0.1"};
    ip_slot c{t, "10.1.2.3"};
    EXPECT_EQ(a.count_at_open(), 1u);
    EXPECT_EQ(b.count_at_open(), 2u);
    EXPECT_EQ(c.count_at_open(), 1u);
    EXPECT_EQ(t.addresses(), 2u);
    ip_slot moved = std::move(b);  // moves with the socket: still counted once
    EXPECT_EQ(t.addresses(), 2u);
  }
  EXPECT_EQ(t.addresses(), 0u);
  ip_slot again{t, "127.0.0.1"};
  EXPECT_EQ(again.count_at_open(), 1u);
}

TEST(ip_connections, a_connection_slot_releases_its_address_with_it) {
  std::atomic<int64_t> gauge{0};
  ip_connections t;
  {
    connection_slot s{gauge};
    s.attach(ip_slot{t, "::1"});
    connection_slot moved{std::move(s)};
    EXPECT_EQ(t.addresses(), 1u);
    EXPECT_EQ(gauge.load(), 1);
  }
  EXPECT_EQ(t.addresses(), 0u);
  EXPECT_EQ(gauge.load(), 0);
}

TEST(address_of, drops_the_port) {
  EXPECT_EQ(address_of("127.0.0.1:5555"), "127.0.0.1");
  EXPECT_EQ(address_of("::1:5555"), "::1");
  EXPECT_EQ(address_of("?"), "?");
}

}  // namespace
}  // namespace relay::net
