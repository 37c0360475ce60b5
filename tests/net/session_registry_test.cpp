// The registry of live sessions behind server::stop(), and the connection gauge.

#include "net/session_registry.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string_view>

#include "net/net_counters.hpp"

namespace relay::net {
namespace {

struct fake_session final : stoppable {
  int graceful = 0;
  int forced = 0;
  void stop(bool force) override { (force ? forced : graceful) += 1; }
};

TEST(session_registry, stop_all_reaches_live_sessions_and_refuses_new_ones) {
  session_registry reg;
  auto a = std::make_shared<fake_session>();
  auto b = std::make_shared<fake_session>();
  ASSERT_TRUE(reg.add(a.get(), a));
  ASSERT_TRUE(reg.add(b.get(), b));
  EXPECT_EQ(reg.size(), 2u);
  reg.stop_all(false);
  EXPECT_EQ(a->graceful, 1);
  EXPECT_EQ(b->graceful, 1);
  reg.stop_all(true);
  EXPECT_EQ(a->forced, 1);
  auto c = std::make_shared<fake_session>();
  EXPECT_FALSE(reg.add(c.get(), c));
}

TEST(session_registry, wait_empty_returns_once_the_last_session_is_removed) {
  session_registry reg;
  auto a = std::make_shared<fake_session>();
  reg.add(a.get(), a);
  EXPECT_FALSE(reg.wait_empty(std::chrono::milliseconds(1)));
  reg.remove(a.get());
  EXPECT_TRUE(reg.wait_empty(std::chrono::milliseconds(0)));
}

TEST(session_registry, expired_sessions_are_skipped) {
  session_registry reg;
  auto a = std::make_shared<fake_session>();
  const void* key = a.get();
  reg.add(key, a);
  a.reset();
  reg.stop_all(true);  // must not touch the dead session
  reg.remove(key);
  EXPECT_EQ(reg.size(), 0u);
}

TEST(connection_slot, counts_while_alive_and_moves_with_the_socket) {
  std::atomic<int64_t> gauge{0};
  {
    connection_slot a{gauge};
    EXPECT_EQ(a.count_at_open(), 1);
    connection_slot b{gauge};
    EXPECT_EQ(b.count_at_open(), 2);
    connection_slot moved{std::move(a)};
    EXPECT_EQ(gauge.load(), 2);
    connection_slot assigned;
    assigned = std::move(b);
    EXPECT_EQ(gauge.load(), 2);
  }
  EXPECT_EQ(gauge.load(), 0);
}

TEST(net_counters, every_counter_is_exported) {
  net_counters c;
  c.writes = 3;
  c.frames_out = 12;
  c.ws_sessions = 2;
  c.cors_refusals = 4;
  c.tls_handshake_failures = 5;
  c.auth_failures = 4;
  c.shunned_clients = 2;
  std::vector<metric_sample> out;
  c.append_to(out);
  ASSERT_EQ(out.size(), 18u);
  auto value_of = [&](std::string_view name, std::string_view type) -> std::optional<double> {
    for (const auto& s : out)
      if (s.name == name) {
        EXPECT_EQ(s.type, type) << name;
        return s.value;
      }
    return std::nullopt;
  };
  EXPECT_EQ(value_of("relay_writes_total", "counter"), 3.0);
  EXPECT_EQ(value_of("relay_ws_sessions", "gauge"), 2.0);
  EXPECT_EQ(value_of("relay_shunned_clients", "gauge"), 2.0);
  EXPECT_EQ(value_of("relay_ws_messages_in_total", "counter"), 0.0);
  EXPECT_EQ(value_of("relay_ws_errors_total", "counter"), 0.0);
  EXPECT_EQ(value_of("relay_cors_refusals_total", "counter"), 4.0);
  EXPECT_EQ(value_of("relay_tls_handshakes_total", "counter"), 0.0);
  EXPECT_EQ(value_of("relay_tls_handshake_failures_total", "counter"), 5.0);
  EXPECT_EQ(value_of("relay_auth_failures_total", "counter"), 4.0);
  EXPECT_EQ(value_of("relay_auth_forbidden_total", "counter"), 0.0);
  EXPECT_EQ(value_of("relay_token_expiries_total", "counter"), 0.0);
  EXPECT_EQ(value_of("relay_token_verifications_total", "counter"), 0.0);
}

}  // namespace
}  // namespace relay::net
