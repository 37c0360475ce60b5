// Shunning repeat offenders (net/shunner.hpp), against the real kernel: listening sockets on
// loopback, clients bound to other loopback addresses, the socket filter attached for real.
// "Not connected" is a connect still pending after a bounded wait: a dropped SYN gets no answer
// (TCP retries it after a second, and that one is dropped too), while an accepted one completes
// in microseconds.

#include "net/shunner.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "net/net_counters.hpp"

namespace relay::net {
namespace {

using namespace std::chrono_literals;
namespace ip = boost::asio::ip;

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(fd_guard&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

sockaddr_storage sockaddr_of(const ip::address& a, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (a.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    s->sin_addr.s_addr = htonl(a.to_v4().to_uint());
    len = sizeof(sockaddr_in);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    const auto b = a.to_v6().to_bytes();
    std::memcpy(&s->sin6_addr, b.data(), b.size());
    len = sizeof(sockaddr_in6);
  }
  return ss;
}

// A listening socket on `host` (port 0); `dual`: an IPv6 socket that takes IPv4 too. Answers
// fd -1 where the address family is not available.
fd_guard listen_on(const ip::address& host, uint16_t& port, bool dual = false) {
  fd_guard l{::socket(host.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM, 0)};
  if (dual) {
    int off = 0;
    ::setsockopt(l.fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  }
  socklen_t len = 0;
  auto ss = sockaddr_of(host, 0, len);
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(l.fd, 64) != 0)
    return fd_guard{-1};
  len = sizeof ss;
  ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &len);
  port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return l;
}

// Starts a non-blocking connect from `source` to `target`:`port`.
fd_guard connect_from(const ip::address& source, const ip::address& target, uint16_t port) {
  fd_guard c{::socket(target.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM, 0)};
  socklen_t len = 0;
  auto src = sockaddr_of(source, 0, len);
  EXPECT_EQ(::bind(c.fd, reinterpret_cast<sockaddr*>(&src), len), 0) << source.to_string();
  ::fcntl(c.fd, F_SETFL, O_NONBLOCK);
  auto dst = sockaddr_of(target, port, len);
  const int rc = ::connect(c.fd, reinterpret_cast<sockaddr*>(&dst), len);
  EXPECT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
  return c;
}

// True when the connect completed (successfully) within `wait`.
bool connected_within(const fd_guard& c, std::chrono::milliseconds wait) {
  pollfd p{c.fd, POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// Instructions of the filter on `fd` (0: none).
int filter_length(int fd) {
  socklen_t len = 0;
  if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &len) != 0) return -1;
  return static_cast<int>(len);
}

constexpr auto answered = 5s;    // a bound on what completes at once
constexpr auto dropped = 300ms;  // long past an answer over loopback, well before TCP's retry

struct fixture {
  boost::asio::io_context ioc;
  net::refusals refusals;
  std::atomic<int64_t> gauge{0};
  shunner shun;

  explicit fixture(std::chrono::seconds duration, uint32_t after = 3)
      : shun(ioc, shunner::options{duration, after, 1000}, refusals, gauge) {}

  // Refusals of `addr` until it is shunned (after + 1: the bucket holds `after`).
  void offend(const ip::address& addr, uint32_t after = 3) {
    const auto now = limiter_clock::now();
    for (uint32_t i = 0; i <= after; ++i) shun.refused(addr, addr.to_string(), now);
  }
};

const auto loopback = ip::make_address("127.0.0.1");
const auto attacker = ip::make_address("127.0.0.3");

TEST(shunner, drops_the_connection_attempts_of_an_address_past_its_refusals_and_no_other) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  fixture f{10s};
  f.shun.watch(l.fd);

  const auto now = limiter_clock::now();
  for (int i = 0; i < 3; ++i) f.shun.refused(attacker, "127.0.0.3", now);
  EXPECT_FALSE(f.shun.shunned(attacker)) << "three refusals fit the bucket";
  {
    auto c = connect_from(attacker, loopback, port);
    EXPECT_TRUE(connected_within(c, answered));
  }
  f.shun.refused(attacker, "127.0.0.3", now);
  EXPECT_TRUE(f.shun.shunned(attacker));
  EXPECT_TRUE(f.shun.filtering());
  EXPECT_EQ(f.gauge.load(), 1);
  EXPECT_EQ(f.refusals.count(refusal::shunned), 1u);

  auto blocked = connect_from(attacker, loopback, port);
  auto normal = connect_from(loopback, loopback, port);
  EXPECT_TRUE(connected_within(normal, answered)) << "another address is not touched";
  EXPECT_FALSE(connected_within(blocked, dropped)) << "the shunned address's SYN is dropped";

  // More refusals while shunned (connections accepted before the filter) shun nothing twice.
  f.shun.refused(attacker, "127.0.0.3", now);
  EXPECT_EQ(f.refusals.count(refusal::shunned), 1u);
  EXPECT_EQ(f.shun.size(), 1u);
}

TEST(shunner, an_accepted_connection_sheds_the_filter_it_inherits) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  fixture f{10s};
  f.shun.watch(l.fd);
  EXPECT_EQ(filter_length(l.fd), 0);
  f.offend(attacker);
  ASSERT_TRUE(f.shun.filtering());
  EXPECT_GT(filter_length(l.fd), 0);

  auto c = connect_from(loopback, loopback, port);
  ASSERT_TRUE(connected_within(c, answered));
  fd_guard accepted{::accept(l.fd, nullptr, nullptr)};
  ASSERT_GE(accepted.fd, 0);
  EXPECT_EQ(filter_length(accepted.fd), filter_length(l.fd)) << "the kernel copies it";
  f.shun.clear_inherited(accepted.fd);
  EXPECT_EQ(filter_length(accepted.fd), 0);
  EXPECT_GT(filter_length(l.fd), 0) << "the listener keeps its filter";
}

TEST(shunner, the_shun_ends_after_its_time_and_the_filter_goes) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  fixture f{1s};
  f.shun.watch(l.fd);
  f.offend(attacker);
  ASSERT_TRUE(f.shun.shunned(attacker));
  {
    auto c = connect_from(attacker, loopback, port);
    EXPECT_FALSE(connected_within(c, dropped));
  }

  // The expiry timer, on the io_context as in the server: one handler, within a bounded wait.
  EXPECT_EQ(f.ioc.run_one_for(5s), 1u);
  EXPECT_FALSE(f.shun.shunned(attacker));
  EXPECT_FALSE(f.shun.filtering());
  EXPECT_EQ(f.gauge.load(), 0);
  EXPECT_EQ(filter_length(l.fd), 0);
  auto c = connect_from(attacker, loopback, port);
  EXPECT_TRUE(connected_within(c, answered));
}

TEST(shunner, one_expiry_lifts_only_the_addresses_whose_time_is_up) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  fixture f{10s};
  f.shun.watch(l.fd);
  const auto first = ip::make_address("127.0.0.4");
  const auto t0 = limiter_clock::now();
  for (int i = 0; i < 4; ++i) f.shun.refused(first, "127.0.0.4", t0);
  for (int i = 0; i < 4; ++i) f.shun.refused(attacker, "127.0.0.3", t0 + 5s);
  ASSERT_EQ(f.shun.size(), 2u);

  f.shun.expire(t0 + 10s);
  EXPECT_FALSE(f.shun.shunned(first));
  EXPECT_TRUE(f.shun.shunned(attacker));
  EXPECT_EQ(f.gauge.load(), 1);
  auto a = connect_from(first, loopback, port);
  auto b = connect_from(attacker, loopback, port);
  EXPECT_TRUE(connected_within(a, answered));
  EXPECT_FALSE(connected_within(b, dropped));
}

TEST(shunner, refusals_spread_out_below_the_refill_never_shun) {
  fixture f{10s, 10};  // 10 deep, refilled at 1 a second
  const auto t0 = limiter_clock::now();
  for (int i = 0; i < 100; ++i) f.shun.refused(attacker, "127.0.0.3", t0 + i * 1100ms);
  EXPECT_FALSE(f.shun.shunned(attacker));
  EXPECT_EQ(f.refusals.count(refusal::shunned), 0u);
}

TEST(shunner, the_kernel_takes_the_longest_list_and_no_longer) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  const std::size_t most_v4 = (bpf_max_ops - shun_program_base) / shun_program_per_v4;
  std::vector<uint32_t> v4;
  for (std::size_t i = 0; i <= most_v4; ++i) v4.push_back(0x7f010000u + static_cast<uint32_t>(i));
  auto attach = [&](std::size_t n) {
    auto p = shun_program(std::span{v4}.first(n), {});
    sock_fprog prog{static_cast<unsigned short>(p.size()),
                    reinterpret_cast<sock_filter*>(p.data())};
    return ::setsockopt(l.fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0;
  };
  EXPECT_TRUE(attach(most_v4));
  EXPECT_FALSE(attach(most_v4 + 1)) << "bpf_max_ops is the kernel's bound";

  // The shunner stops at that bound: past it, offenders are refused in user space. (Quiet: one
  // warning per shunned address.)
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);
  struct restore {
    spdlog::level::level_enum level;
    ~restore() { spdlog::set_level(level); }
  } restore_level{level};
  fd_guard l2 = listen_on(loopback, port);
  fixture f{10s, 1};
  f.shun.watch(l2.fd);
  for (std::size_t i = 0; i < most_v4 + 10; ++i) {
    const auto a = ip::make_address_v4(0x7f010000u + static_cast<uint32_t>(i));
    f.offend(a, 1);
  }
  EXPECT_EQ(f.shun.size(), most_v4);
  EXPECT_TRUE(f.shun.filtering());
  auto shunned = connect_from(ip::make_address("127.1.0.7"), loopback, port);
  auto unlisted = connect_from(ip::make_address_v4(0x7f010000u + most_v4 + 5), loopback, port);
  EXPECT_TRUE(connected_within(unlisted, answered));
  EXPECT_FALSE(connected_within(shunned, dropped));
}

TEST(shunner, filters_ipv6_and_ipv4_clients_of_a_dual_stack_socket) {
  uint16_t port = 0;
  auto l = listen_on(ip::make_address("::"), port, true);
  if (l.fd < 0) GTEST_SKIP() << "no IPv6 here";
  const auto v6_loopback = ip::make_address("::1");
  {
    auto probe = connect_from(v6_loopback, v6_loopback, port);
    if (!connected_within(probe, answered)) GTEST_SKIP() << "no IPv6 loopback here";
  }
  fixture f{10s};
  f.shun.watch(l.fd);
  // An IPv4 client shows as ::ffff:127.0.0.3 on this socket; another IPv6 address is listed
  // too, so the IPv6 list has an entry that does not match before the one that does.
  f.offend(ip::make_address("::ffff:127.0.0.3"));
  f.offend(ip::make_address("2001:db8::1"));
  EXPECT_TRUE(f.shun.shunned(attacker)) << "the mapped address is the IPv4 one";
  {
    auto v4_blocked = connect_from(attacker, loopback, port);
    auto v4_normal = connect_from(loopback, loopback, port);
    auto v6_normal = connect_from(v6_loopback, v6_loopback, port);
    EXPECT_TRUE(connected_within(v4_normal, answered));
    EXPECT_TRUE(connected_within(v6_normal, answered));
    EXPECT_FALSE(connected_within(v4_blocked, dropped));
  }
  f.offend(v6_loopback);
  auto v6_blocked = connect_from(v6_loopback, v6_loopback, port);
  auto v4_normal = connect_from(loopback, loopback, port);
  EXPECT_TRUE(connected_within(v4_normal, answered));
  EXPECT_FALSE(connected_within(v6_blocked, dropped));
}

TEST(shunner, off_when_its_duration_is_zero) {
  fixture f{0s};
  EXPECT_FALSE(f.shun.enabled());
  f.offend(attacker);
  EXPECT_FALSE(f.shun.shunned(attacker));
  EXPECT_EQ(f.refusals.count(refusal::shunned), 0u);
}

}  // namespace
}  // namespace relay::net
