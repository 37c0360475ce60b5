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

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
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

  // A listening socket on `host` that the shunner filters (closed with the fixture): its fd.
  int listen(const ip::address& host, uint16_t& port) {
    listeners.push_back(listen_on(host, port));
    if (listeners.back().fd >= 0) shun.watch(listeners.back().fd);
    return listeners.back().fd;
  }
  std::vector<fd_guard> listeners;

  // Refusals of `addr` until it is shunned (after + 1: the bucket holds `after`).
  void offend(const ip::address& addr, uint32_t after = 3) {
    const auto now = limiter_clock::now();
    for (uint32_t i = 0; i <= after; ++i) shun.refused(addr, addr.to_string(), now);
  }
};

const auto loopback = ip::make_address("127.0.0.1");
const auto attacker = ip::make_address("127.0.0.3");

TEST(shunner, drops_the_connection_attempts_of_an_address_past_its_refusals_and_no_other) {
  fixture f{10s};
  uint16_t port = 0;
  const int l = f.listen(loopback, port);
  ASSERT_GE(l, 0);

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
  fixture f{10s};
  uint16_t port = 0;
  const int l = f.listen(loopback, port);
  ASSERT_GE(l, 0);
  EXPECT_EQ(filter_length(l), 0);
  f.offend(attacker);
  ASSERT_TRUE(f.shun.filtering());
  EXPECT_GT(filter_length(l), 0);

  auto c = connect_from(loopback, loopback, port);
  ASSERT_TRUE(connected_within(c, answered));
  fd_guard accepted{::accept(l, nullptr, nullptr)};
  ASSERT_GE(accepted.fd, 0);
  EXPECT_EQ(filter_length(accepted.fd), filter_length(l)) << "the kernel copies it";
  f.shun.clear_inherited(accepted.fd);
  EXPECT_EQ(filter_length(accepted.fd), 0);
  EXPECT_GT(filter_length(l), 0) << "the listener keeps its filter";
}

TEST(shunner, the_shun_ends_after_its_time_and_the_filter_goes) {
  fixture f{1s};
  uint16_t port = 0;
  const int l = f.listen(loopback, port);
  ASSERT_GE(l, 0);
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
  EXPECT_EQ(filter_length(l), 0);
  auto c = connect_from(attacker, loopback, port);
  EXPECT_TRUE(connected_within(c, answered));
}

TEST(shunner, one_expiry_lifts_only_the_addresses_whose_time_is_up) {
  fixture f{10s};
  uint16_t port = 0;
  const int l = f.listen(loopback, port);
  ASSERT_GE(l, 0);
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

TEST(shunner, a_repeat_offender_is_shunned_twice_as_long_each_time_up_to_the_most) {
  boost::asio::io_context ioc;
  net::refusals r;
  std::atomic<int64_t> gauge{0};
  shunner shun{ioc, shunner::options{10s, 3, 1000, 64, 35s}, r, gauge};
  auto t = limiter_clock::now();
  // Shunned at t for d, then again right after the shun ends (within its probation of d).
  auto shun_and_wait = [&](std::chrono::seconds expected) {
    for (int i = 0; i < 4; ++i) shun.refused(attacker, "127.0.0.3", t);
    EXPECT_TRUE(shun.shunned(attacker));
    EXPECT_EQ(shun.last_duration(attacker), expected);
    shun.expire(t + expected - 1s);
    EXPECT_TRUE(shun.shunned(attacker)) << "still within " << expected.count() << " s";
    t += expected;
    shun.expire(t);
    EXPECT_FALSE(shun.shunned(attacker)) << "over after " << expected.count() << " s";
    t += 1s;  // back at once: the bucket has refilled by a few refusals only
  };
  shun_and_wait(10s);
  shun_and_wait(20s);
  shun_and_wait(35s);  // 40 s, capped
  shun_and_wait(35s);
  EXPECT_EQ(r.count(refusal::shunned), 4u);

  // Quiet through a whole probation: forgiven, back to the first duration.
  t += 36s;
  shun.expire(t);
  EXPECT_EQ(shun.last_duration(attacker), 0s);
  for (int i = 0; i < 4; ++i) shun.refused(attacker, "127.0.0.3", t);
  EXPECT_EQ(shun.last_duration(attacker), 10s);
  // Another client starts at the first duration whatever this one did.
  const auto other = ip::make_address("127.0.0.4");
  for (int i = 0; i < 4; ++i) shun.refused(other, "127.0.0.4", t);
  EXPECT_EQ(shun.last_duration(other), 10s);
}

TEST(shunner, refusals_spread_out_below_the_refill_never_shun) {
  fixture f{10s, 10};  // 10 deep, refilled at 1 a second
  const auto t0 = limiter_clock::now();
  for (int i = 0; i < 100; ++i) f.shun.refused(attacker, "127.0.0.3", t0 + i * 1100ms);
  EXPECT_FALSE(f.shun.shunned(attacker));
  EXPECT_EQ(f.refusals.count(refusal::shunned), 0u);
}

// Attaches `program` to `fd`: 0, or the errno.
int attach_program(int fd, std::vector<bpf_op> program) {
  sock_fprog prog{static_cast<unsigned short>(program.size()),
                  reinterpret_cast<sock_filter*>(program.data())};
  return ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0 ? 0 : errno;
}

// The most clients whose program fits bpf_max_ops.
std::size_t most_clients(bool v6, unsigned prefix) {
  std::size_t n = 0;
  while (shun_program_size(v6 ? 0 : n + 1, v6 ? n + 1 : 0, prefix) <= bpf_max_ops) ++n;
  return n;
}

// Quiet for a test that shuns thousands (one warning per shunned client).
struct quiet_log {
  spdlog::level::level_enum level = spdlog::get_level();
  quiet_log() { spdlog::set_level(spdlog::level::err); }
  ~quiet_log() { spdlog::set_level(level); }
};

TEST(shunner, a_program_past_the_kernels_bound_is_refused_and_the_shunner_stays_below_it) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  const std::size_t most_v4 = most_clients(false, 128);
  std::vector<uint32_t> v4;
  for (std::size_t i = 0; i <= most_v4; ++i) v4.push_back(0x7f010000u + static_cast<uint32_t>(i));
  EXPECT_EQ(shun_program(std::span{v4}.first(most_v4), {}).size(),
            shun_program_size(most_v4, 0, 128));
  // The longest program: taken, unless the socket's option memory is smaller on this machine.
  const int longest = attach_program(l.fd, shun_program(std::span{v4}.first(most_v4), {}));
  EXPECT_TRUE(longest == 0 || longest == ENOMEM) << std::strerror(longest);
  EXPECT_EQ(attach_program(l.fd, shun_program(v4, {})), EINVAL)
      << "bpf_max_ops is the kernel's bound";

  // The shunner stops at the bound: past it, offenders are refused in user space.
  quiet_log quiet;
  fd_guard l2 = listen_on(loopback, port);
  fixture f{10s, 1};
  f.shun.watch(l2.fd);
  for (std::size_t i = 0; i < most_v4 + 10; ++i)
    f.offend(ip::make_address_v4(0x7f010000u + static_cast<uint32_t>(i)), 1);
  EXPECT_GT(f.shun.size(), most_v4 / 2);
  EXPECT_LE(f.shun.size(), most_clients(false, 64));  // the fixture's prefix
  EXPECT_EQ(f.refusals.count(refusal::shunned), f.shun.size());
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

TEST(client_key, an_ipv6_client_is_its_prefix_and_an_ipv4_one_its_address) {
  auto key = [](std::string_view a, unsigned prefix) {
    return client_key(ip::make_address(a), prefix);
  };
  EXPECT_EQ(key("192.0.2.7", 64), "192.0.2.7");
  EXPECT_EQ(key("::ffff:192.0.2.7", 64), "192.0.2.7") << "IPv4 on a dual-stack socket";
  EXPECT_EQ(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::/64");
  EXPECT_EQ(key("2001:db8:1:2:ffff::1", 64), "2001:db8:1:2::/64") << "the same subscriber";
  EXPECT_EQ(key("2001:db8:1:3::1", 64), "2001:db8:1:3::/64");
  EXPECT_EQ(key("2001:db8:1:2ff::1", 56), "2001:db8:1:200::/56");
  EXPECT_EQ(key("2001:db8:1:2ff::1", 60), "2001:db8:1:2f0::/60") << "a prefix inside a byte";
  EXPECT_EQ(key("2001:db8::1", 128), "2001:db8::1");
  EXPECT_EQ(key("::1", 64), "::/64");
}

TEST(shunner, an_ipv6_client_is_shunned_by_its_prefix) {
  uint16_t port = 0;
  auto l = listen_on(ip::make_address("::1"), port);
  if (l.fd < 0) GTEST_SKIP() << "no IPv6 here";
  const auto v6_loopback = ip::make_address("::1");
  {
    auto probe = connect_from(v6_loopback, v6_loopback, port);
    if (!connected_within(probe, answered)) GTEST_SKIP() << "no IPv6 loopback here";
  }
  {
    // Per address (/128): another address's shun leaves ::1 alone.
    boost::asio::io_context ioc;
    net::refusals r;
    std::atomic<int64_t> gauge{0};
    shunner per_address{ioc, shunner::options{10s, 3, 1000, 128}, r, gauge};
    per_address.watch(l.fd);
    for (int i = 0; i < 4; ++i) per_address.refused(ip::make_address("::2"), "::2");
    ASSERT_TRUE(per_address.filtering());
    auto c = connect_from(v6_loopback, v6_loopback, port);
    EXPECT_TRUE(connected_within(c, answered));
    per_address.stop();
  }
  // Per /64 (the default): ::2 and ::1 are one client, ::/64; 2001:db8::/64 is another.
  fixture f{10s};
  f.shun.watch(l.fd);
  f.offend(ip::make_address("2001:db8::1"));
  {
    auto c = connect_from(v6_loopback, v6_loopback, port);
    EXPECT_TRUE(connected_within(c, answered)) << "another /64";
  }
  f.offend(ip::make_address("::2"));
  EXPECT_TRUE(f.shun.shunned(v6_loopback));
  auto c = connect_from(v6_loopback, v6_loopback, port);
  EXPECT_FALSE(connected_within(c, dropped)) << "the same /64";
}

TEST(shunner, ipv6_programs_of_every_prefix_length_are_valid_and_a_long_list_stays_filtering) {
  uint16_t port = 0;
  auto l = listen_on(loopback, port);
  ASSERT_GE(l.fd, 0);
  std::vector<std::array<uint8_t, 16>> v6(1000);
  for (std::size_t i = 0; i < v6.size(); ++i) {
    v6[i][0] = 0x20;
    v6[i][1] = 0x01;
    v6[i][6] = static_cast<uint8_t>(i >> 8);
    v6[i][7] = static_cast<uint8_t>(i);
  }
  for (unsigned prefix : {16u, 48u, 56u, 60u, 64u, 96u, 100u, 128u}) {
    const std::size_t most = std::min(v6.size(), most_clients(true, prefix));
    const auto program = shun_program({}, std::span{v6}.first(most), prefix);
    EXPECT_EQ(program.size(), shun_program_size(0, most, prefix)) << "/" << prefix;
    uint16_t fresh_port = 0;
    fd_guard fresh = listen_on(loopback, fresh_port);
    const int err = attach_program(fresh.fd, program);
    EXPECT_TRUE(err == 0 || err == ENOMEM) << "/" << prefix << ": " << std::strerror(err);
    EXPECT_EQ(attach_program(fresh.fd, shun_program({}, std::span{v6}.first(10), prefix)), 0)
        << "/" << prefix;
  }
  EXPECT_EQ(shun_program_per_v6(128), 9u);
  EXPECT_EQ(shun_program_per_v6(64), 5u);
  EXPECT_EQ(shun_program_per_v6(56), 5u);

  // Fed more IPv6 offenders than fit, the shunner keeps the longest list the socket takes and
  // stays on (the kernel's ENOMEM is "full", not "broken").
  quiet_log quiet;
  fixture f{10s, 1};
  f.shun.watch(l.fd);
  for (std::size_t i = 0; i < v6.size(); ++i) f.offend(ip::address_v6(v6[i]), 1);
  EXPECT_GT(f.shun.size(), 100u);
  EXPECT_LE(f.shun.size(), most_clients(true, 64));
  RecordProperty("ipv6_clients_shunned", static_cast<int>(f.shun.size()));
  EXPECT_TRUE(f.shun.filtering());
  EXPECT_EQ(f.gauge.load(), static_cast<int64_t>(f.shun.size()));
  f.offend(attacker, 1);  // an IPv4 client costs two instructions: it may still fit, or not
  auto c = connect_from(loopback, loopback, port);
  EXPECT_TRUE(connected_within(c, answered)) << "the filter works for everyone else";
}

// A classic BPF interpreter for what shun_program emits, over an IP header: the program's
// verdict (0: drop) for a packet from `source`. Anything else it meets fails the test.
uint32_t run_filter(const std::vector<bpf_op>& program, const ip::address& source) {
  std::array<uint8_t, 40> header{};
  if (source.is_v4()) {
    header[0] = 0x45;
    const auto b = source.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), header.begin() + 12);
  } else {
    header[0] = 0x60;
    const auto b = source.to_v6().to_bytes();
    std::copy(b.begin(), b.end(), header.begin() + 8);
  }
  const auto net = static_cast<uint32_t>(SKF_NET_OFF);
  auto load = [&](uint32_t k, std::size_t size) -> uint32_t {
    EXPECT_GE(k, net);
    const std::size_t off = k - net;
    EXPECT_LE(off + size, header.size());
    uint32_t v = 0;
    for (std::size_t i = 0; i < size && off + i < header.size(); ++i)
      v = (v << 8) | header[off + i];
    return v;
  };
  uint32_t a = 0;
  std::array<uint32_t, BPF_MEMWORDS> mem{};
  for (std::size_t pc = 0; pc < program.size(); ++pc) {
    const auto& op = program[pc];
    switch (op.code) {
      case BPF_LD | BPF_B | BPF_ABS:
        a = load(op.k, 1);
        break;
      case BPF_LD | BPF_W | BPF_ABS:
        a = load(op.k, 4);
        break;
      case BPF_LD | BPF_MEM:
        a = mem.at(op.k);
        break;
      case BPF_ST:
        mem.at(op.k) = a;
        break;
      case BPF_ALU | BPF_RSH | BPF_K:
        a >>= op.k;
        break;
      case BPF_ALU | BPF_AND | BPF_K:
        a &= op.k;
        break;
      case BPF_JMP | BPF_JA:
        pc += op.k;
        break;
      case BPF_JMP | BPF_JEQ | BPF_K:
        pc += a == op.k ? op.jt : op.jf;
        break;
      case BPF_RET | BPF_K:
        return op.k;
      default:
        ADD_FAILURE() << "unexpected instruction " << op.code << " at " << pc;
        return 0;
    }
  }
  ADD_FAILURE() << "ran off the end of the program";
  return 0;
}

TEST(shun_program, drops_exactly_the_listed_clients_for_every_prefix_length) {
  std::mt19937_64 rng{20261202};
  auto random_v6 = [&] {
    std::array<uint8_t, 16> b{};
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    b[0] = 0x20;  // never ::ffff:a.b.c.d (an IPv4 client)
    return ip::address_v6(b);
  };
  auto flip_bit = [](ip::address_v6 a, unsigned bit) {
    auto b = a.to_bytes();
    b[bit / 8] ^= static_cast<uint8_t>(0x80u >> (bit % 8));
    return ip::address_v6(b);
  };
  for (unsigned prefix : {1u, 16u, 31u, 32u, 33u, 48u, 56u, 60u, 64u, 96u, 100u, 127u, 128u}) {
    std::vector<uint32_t> v4;
    std::vector<std::array<uint8_t, 16>> v6;
    std::vector<ip::address> listed;
    for (int i = 0; i < 40; ++i) {
      const auto c = client_of(random_v6(), prefix);
      v6.push_back(c.to_v6().to_bytes());
      listed.push_back(c);
      const auto a4 = ip::make_address_v4(static_cast<uint32_t>(rng()));
      v4.push_back(a4.to_uint());
      listed.push_back(a4);
    }
    const auto program = shun_program(v4, v6, prefix);
    ASSERT_EQ(program.size(), shun_program_size(v4.size(), v6.size(), prefix));
    auto expect = [&](const ip::address& source, bool dropped) {
      EXPECT_EQ(run_filter(program, source) == 0, dropped)
          << "/" << prefix << " " << source.to_string();
    };
    for (std::size_t i = 0; i < v6.size(); ++i) {
      const ip::address_v6 c{v6[i]};
      expect(c, true);
      // Any address inside the prefix is the same client; a bit flipped inside it is another.
      auto inside = random_v6().to_bytes();
      const auto cb = c.to_bytes();
      for (unsigned bit = 0; bit < prefix; ++bit) {
        const uint8_t mask = static_cast<uint8_t>(0x80u >> (bit % 8));
        inside[bit / 8] = static_cast<uint8_t>((inside[bit / 8] & ~mask) | (cb[bit / 8] & mask));
      }
      expect(ip::address_v6(inside), true);
      const auto outside = flip_bit(c, static_cast<unsigned>(rng() % prefix));
      const bool also_listed =
          std::find(listed.begin(), listed.end(), client_of(outside, prefix)) != listed.end();
      expect(outside, also_listed);
    }
    for (const auto a : v4) {
      expect(ip::make_address_v4(a), true);
      const auto other = ip::make_address_v4(a ^ (1u << (rng() % 32)));
      const bool also_listed = std::find(v4.begin(), v4.end(), other.to_uint()) != v4.end();
      expect(other, also_listed);
    }
    for (int i = 0; i < 200; ++i) {
      const auto a6 = random_v6();
      const bool listed6 =
          std::find(listed.begin(), listed.end(), client_of(a6, prefix)) != listed.end();
      expect(a6, listed6);
      const auto a4 = ip::make_address_v4(static_cast<uint32_t>(rng()));
      expect(a4, std::find(v4.begin(), v4.end(), a4.to_uint()) != v4.end());
    }
  }
  // Empty lists keep everything.
  EXPECT_NE(run_filter(shun_program({}, {}, 64), attacker), 0u);
  EXPECT_NE(run_filter(shun_program({}, {}, 64), ip::make_address("2001:db8::1")), 0u);
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
