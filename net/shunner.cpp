#include "net/shunner.hpp"

#include <linux/filter.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace relay::net {

static_assert(sizeof(bpf_op) == sizeof(sock_filter) &&
              offsetof(bpf_op, k) == offsetof(sock_filter, k));

namespace {

// A socket filter of a TCP socket sees the packet from its TCP header on; the IP header is read
// at SKF_NET_OFF-relative offsets. IPv4: version in the first byte's high nibble, source address
// at 12. IPv6: source address at 8..23.
constexpr uint32_t net_off(uint32_t offset) { return static_cast<uint32_t>(SKF_NET_OFF) + offset; }
constexpr uint32_t keep = 0xffffffffu;  // the whole packet
constexpr uint32_t drop = 0;

bpf_op stmt(uint16_t code, uint32_t k) { return bpf_op{code, 0, 0, k}; }
bpf_op jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { return bpf_op{code, jt, jf, k}; }

uint32_t word_of(const std::array<uint8_t, 16>& a, std::size_t i) {
  return (uint32_t{a[i]} << 24) | (uint32_t{a[i + 1]} << 16) | (uint32_t{a[i + 2]} << 8) |
         uint32_t{a[i + 3]};
}

// An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d: its packets carry IPv4 headers.
boost::asio::ip::address plain(const boost::asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  return a;
}

}  // namespace

// Layout: version check; the IPv6 list, keep; the IPv4 list, keep. Every jump but one is short
// (a conditional jump reaches at most 255 ahead): an address is "compare, else skip the drop",
// so the lists can be as long as the kernel allows; the IPv6 branch jumps over the IPv6 list with
// an unconditional jump, whose reach is 32 bits.
std::vector<bpf_op> shun_program(std::span<const uint32_t> v4,
                                 std::span<const std::array<uint8_t, 16>> v6) {
  std::vector<bpf_op> p;
  p.reserve(shun_program_base + v4.size() * shun_program_per_v4 + v6.size() * shun_program_per_v6);
  p.push_back(stmt(BPF_LD | BPF_B | BPF_ABS, net_off(0)));
  p.push_back(stmt(BPF_ALU | BPF_RSH | BPF_K, 4));
  p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0));  // IPv6: on to its list
  const auto v6_ops = static_cast<uint32_t>(v6.size() * shun_program_per_v6 + 1);
  p.push_back(stmt(BPF_JMP | BPF_JA, v6_ops));  // otherwise past it, to the IPv4 list
  for (const auto& a : v6) {
    for (std::size_t w = 0; w < 4; ++w) {
      p.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, net_off(8 + 4 * static_cast<uint32_t>(w))));
      // A mismatch skips the rest of this address: (3 - w) more load+compare pairs and the drop.
      p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, word_of(a, 4 * w), 0,
                       static_cast<uint8_t>(2 * (3 - w) + 1)));
    }
    p.push_back(stmt(BPF_RET | BPF_K, drop));
  }
  p.push_back(stmt(BPF_RET | BPF_K, keep));
  p.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, net_off(12)));
  for (const auto a : v4) {
    p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, a, 0, 1));
    p.push_back(stmt(BPF_RET | BPF_K, drop));
  }
  p.push_back(stmt(BPF_RET | BPF_K, keep));
  return p;
}

shunner::shunner(boost::asio::io_context& ioc, options opts, net::refusals& refusals,
                 std::atomic<int64_t>& shunned_gauge)
    : opts_(opts),
      refusals_(refusals),
      gauge_(shunned_gauge),
      buckets_(rate_spec{opts.after / 10.0, static_cast<double>(std::max<uint32_t>(1, opts.after))},
               opts.max_keys),
      timer_(ioc) {}

void shunner::watch(int listen_fd) { fds_.push_back(listen_fd); }

std::size_t shunner::cost() const noexcept {
  std::size_t ops = shun_program_base;
  for (const auto& [addr, until] : until_)
    ops += addr.is_v4() ? shun_program_per_v4 : shun_program_per_v6;
  return ops;
}

bool shunner::shunned(const boost::asio::ip::address& addr) const {
  return until_.count(plain(addr)) != 0;
}

void shunner::refused(const boost::asio::ip::address& addr, std::string_view ip,
                      limiter_clock::time_point now) {
  if (!enabled() || broken_ || stopped_) return;
  if (buckets_.try_take(ip, 1, now).ok) return;
  const auto a = plain(addr);
  if (until_.count(a)) return;  // accepted before the filter had it: its SYN came in earlier
  const auto need = a.is_v4() ? shun_program_per_v4 : shun_program_per_v6;
  if (cost() + need > bpf_max_ops) {
    if (once_a_minute(full_logged_s_))
      spdlog::warn(
          "shun list full addresses={} offender={} (refused in user space instead; "
          "logged once a minute)",
          until_.size(), ip);
    return;
  }
  until_.emplace(a, now + opts_.duration);
  refusals_.refuse(
      refusal::shunned, ip,
      "its connection attempts are dropped for " + std::to_string(opts_.duration.count()) + " s");
  apply();
  arm_timer();
}

void shunner::expire(limiter_clock::time_point now) {
  const auto before = until_.size();
  std::erase_if(until_, [now](const auto& e) { return e.second <= now; });
  if (until_.size() != before) apply();
}

void shunner::clear_inherited(int fd) const noexcept {
  if (!ever_attached_) return;
  int unused = 0;
  ::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);  // ENOENT: had none
}

void shunner::stop() {
  stopped_ = true;
  fds_.clear();
  timer_.cancel();
}

// Writes the current list into every listening socket: one new program replaces the old one at
// once (SO_ATTACH_FILTER), or the filter goes when nothing is shunned.
void shunner::apply() {
  gauge_.store(static_cast<int64_t>(until_.size()), std::memory_order_relaxed);
  if (until_.empty()) {
    if (!attached_) return;
    int unused = 0;
    for (const int fd : fds_)
      ::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
    attached_ = false;
    return;
  }
  std::vector<uint32_t> v4;
  std::vector<std::array<uint8_t, 16>> v6;
  for (const auto& [addr, until] : until_) {
    if (addr.is_v4())
      v4.push_back(addr.to_v4().to_uint());
    else
      v6.push_back(addr.to_v6().to_bytes());
  }
  auto program = shun_program(v4, v6);
  sock_fprog fprog{static_cast<unsigned short>(program.size()),
                   reinterpret_cast<sock_filter*>(program.data())};
  for (const int fd : fds_) {
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
      const int err = errno;
      spdlog::error(
          "shun filter not attached error={} (shunning is off; floods are refused in "
          "user space)",
          std::strerror(err));
      broken_ = true;
      int unused = 0;
      for (const int f : fds_)
        ::setsockopt(f, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
      until_.clear();
      gauge_.store(0, std::memory_order_relaxed);
      attached_ = false;
      return;
    }
  }
  attached_ = true;
  ever_attached_ = true;
}

void shunner::arm_timer() {
  if (until_.empty() || stopped_) return;
  auto next = until_.begin()->second;
  for (const auto& [addr, until] : until_) next = std::min(next, until);
  timer_.expires_at(next);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // re-armed or stopped
    expire(limiter_clock::now());
    arm_timer();
  });
}

}  // namespace relay::net
