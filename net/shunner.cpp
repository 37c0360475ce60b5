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

// The mask of the `bits` high bits of a 32-bit word (0 < bits <= 32).
uint32_t high_bits(unsigned bits) { return bits >= 32 ? 0xffffffffu : ~(0xffffffffu >> bits); }

}  // namespace

boost::asio::ip::address client_of(const boost::asio::ip::address& a, unsigned v6_prefix) {
  namespace ip = boost::asio::ip;
  if (a.is_v4()) return a;
  const auto v6 = a.to_v6();
  // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d; its packets carry IPv4
  // headers.
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6);
  auto bytes = v6.to_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const auto bit = static_cast<unsigned>(i * 8);
    if (bit >= v6_prefix)
      bytes[i] = 0;
    else if (bit + 8 > v6_prefix)
      bytes[i] &= static_cast<uint8_t>(0xff00u >> (v6_prefix - bit));
  }
  return ip::address_v6(bytes);
}

std::string client_key(const boost::asio::ip::address& a, unsigned v6_prefix) {
  const auto c = client_of(a, v6_prefix);
  if (c.is_v4() || v6_prefix >= 128) return c.to_string();
  return c.to_string() + "/" + std::to_string(v6_prefix);
}

namespace {

unsigned prefix_bits(unsigned v6_prefix) { return std::clamp(v6_prefix, 1u, 128u); }
unsigned prefix_words(unsigned v6_prefix) { return (prefix_bits(v6_prefix) + 31) / 32; }

}  // namespace

std::size_t shun_program_per_v6(unsigned v6_prefix) noexcept {
  return 2 * prefix_words(v6_prefix) + 1;
}

std::size_t shun_program_size(std::size_t v4, std::size_t v6, unsigned v6_prefix) noexcept {
  const unsigned words = prefix_words(v6_prefix);
  const unsigned partial = prefix_bits(v6_prefix) % 32 != 0 ? 1 : 0;
  return 4 + (2 * words + partial) + v6 * shun_program_per_v6(v6_prefix) + 1 + 1 +
         v4 * shun_program_per_v4 + 1;
}

// Layout: the version check; the IPv6 part (its prefix words loaded once into the scratch
// memory, M[0..3], masked; then the list), keep; the IPv4 part (the address loaded once; then the
// list), keep. Loads from the packet are few on purpose: the kernel turns each into several
// instructions of its own, and a filter's size is charged to the socket's option memory
// (net.core.optmem_max). Every jump but one is short (a conditional jump reaches at most 255
// ahead): a client is "compare, else skip the rest of it", so the lists can be as long as the
// kernel allows; the IPv4 branch jumps over the IPv6 part with an unconditional jump, whose reach
// is 32 bits.
std::vector<bpf_op> shun_program(std::span<const uint32_t> v4,
                                 std::span<const std::array<uint8_t, 16>> v6, unsigned v6_prefix) {
  const unsigned bits = prefix_bits(v6_prefix);
  const unsigned words = prefix_words(bits);
  std::vector<bpf_op> p;
  p.reserve(shun_program_size(v4.size(), v6.size(), bits));
  p.push_back(stmt(BPF_LD | BPF_B | BPF_ABS, net_off(0)));
  p.push_back(stmt(BPF_ALU | BPF_RSH | BPF_K, 4));
  p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0));  // IPv6: on to its part
  const std::size_t ja = p.size();
  p.push_back(stmt(BPF_JMP | BPF_JA, 0));  // otherwise past it, to the IPv4 part (set below)
  for (unsigned w = 0; w < words; ++w) {
    const unsigned word_bits = std::min(32u, bits - w * 32);
    p.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, net_off(8 + 4 * w)));
    if (word_bits < 32) p.push_back(stmt(BPF_ALU | BPF_AND | BPF_K, high_bits(word_bits)));
    p.push_back(stmt(BPF_ST, w));
  }
  for (const auto& a : v6) {
    // Word by word: a mismatch jumps to the next client (at most 8 ahead), past this one's drop.
    for (unsigned w = 0; w < words; ++w) {
      const unsigned word_bits = std::min(32u, bits - w * 32);
      p.push_back(stmt(BPF_LD | BPF_MEM, w));
      p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, word_of(a, 4 * w) & high_bits(word_bits), 0,
                       static_cast<uint8_t>(2 * (words - 1 - w) + 1)));
    }
    p.push_back(stmt(BPF_RET | BPF_K, drop));
  }
  p.push_back(stmt(BPF_RET | BPF_K, keep));
  p[ja].k = static_cast<uint32_t>(p.size() - ja - 1);
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
  std::size_t v4 = 0;
  for (const auto& [client, until] : until_) v4 += client.is_v4() ? 1 : 0;
  return shun_program_size(v4, until_.size() - v4, opts_.v6_prefix);
}

bool shunner::shunned(const boost::asio::ip::address& addr) const {
  return until_.count(client_of(addr, opts_.v6_prefix)) != 0;
}

void shunner::refused(const boost::asio::ip::address& addr, std::string_view key,
                      limiter_clock::time_point now) {
  if (!enabled() || broken_ || stopped_) return;
  if (buckets_.try_take(key, 1, now).ok) return;
  const auto a = client_of(addr, opts_.v6_prefix);
  if (until_.count(a)) return;  // accepted before the filter had it: its SYN came in earlier
  const auto need = a.is_v4() ? shun_program_per_v4 : shun_program_per_v6(opts_.v6_prefix);
  auto full = [&](std::string_view why) {
    if (once_a_minute(full_logged_s_))
      spdlog::warn(
          "shun list full clients={} offender={} bound={} (refused in user space instead; "
          "logged once a minute)",
          until_.size(), key, why);
  };
  const auto ops = cost() + need;
  if (ops > bpf_max_ops) return full("4096 instructions");
  if (ops >= refused_ops_) return full("net.core.optmem_max");  // no rebuild per refusal
  const auto duration = next_duration(a, now);
  const auto it = until_.emplace(a, now + duration).first;
  if (const int err = apply(); err != 0) {
    // The listeners keep the filter they had (a refused attach changes nothing): too big for the
    // socket's option memory, most likely. Then the list is as long as it gets here.
    until_.erase(it);
    if (!until_.empty() && (err == ENOMEM || err == EINVAL) && apply() == 0) {
      refused_ops_ = ops;
      return full(err == ENOMEM ? "net.core.optmem_max" : "the kernel's");
    }
    give_up(err);
    return;
  }
  remember(a, duration, now);
  refusals_.refuse(
      refusal::shunned, key,
      "its connection attempts are dropped for " + std::to_string(duration.count()) + " s");
  arm_timer();
}

// Twice the last shun while the client is on probation (up to max_duration), else the first.
std::chrono::seconds shunner::next_duration(const boost::asio::ip::address& client,
                                            limiter_clock::time_point now) const {
  const auto most = std::max(opts_.duration, opts_.max_duration);
  const auto it = past_.find(client);
  if (it == past_.end() || it->second.forget_at <= now) return opts_.duration;
  return std::min(most, it->second.duration * 2);
}

void shunner::remember(const boost::asio::ip::address& client, std::chrono::seconds duration,
                       limiter_clock::time_point now) {
  if (past_.size() >= max_remembered && !past_.count(client)) {
    std::erase_if(past_, [now](const auto& e) { return e.second.forget_at <= now; });
    if (past_.size() >= max_remembered) past_.clear();  // a flood of clients: forget in bulk
  }
  // Its probation lasts as long as this shun, from the shun's end.
  past_[client] = past{duration, now + 2 * duration};
}

std::chrono::seconds shunner::last_duration(const boost::asio::ip::address& addr) const {
  const auto it = past_.find(client_of(addr, opts_.v6_prefix));
  return it == past_.end() ? std::chrono::seconds{0} : it->second.duration;
}

void shunner::expire(limiter_clock::time_point now) {
  const auto before = until_.size();
  std::erase_if(until_, [now](const auto& e) { return e.second <= now; });
  std::erase_if(past_, [now](const auto& e) { return e.second.forget_at <= now; });
  if (until_.size() != before) {
    if (const int err = apply(); err != 0) give_up(err);
  }
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
// once (SO_ATTACH_FILTER), or the filter goes when nothing is shunned. Answers 0, or the errno of
// the first socket that refused it (the sockets before it have the new program, it and the ones
// after it the old).
int shunner::apply() {
  gauge_.store(static_cast<int64_t>(until_.size()), std::memory_order_relaxed);
  if (until_.empty()) {
    if (!attached_) return 0;
    int unused = 0;
    for (const int fd : fds_)
      ::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
    attached_ = false;
    return 0;
  }
  std::vector<uint32_t> v4;
  std::vector<std::array<uint8_t, 16>> v6;
  for (const auto& [addr, until] : until_) {
    if (addr.is_v4())
      v4.push_back(addr.to_v4().to_uint());
    else
      v6.push_back(addr.to_v6().to_bytes());
  }
  auto program = shun_program(v4, v6, opts_.v6_prefix);
  sock_fprog fprog{static_cast<unsigned short>(program.size()),
                   reinterpret_cast<sock_filter*>(program.data())};
  for (const int fd : fds_) {
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) return errno;
    attached_ = true;
    ever_attached_ = true;
  }
  return 0;
}

// The kernel takes no filter at all (or not even the list it took before): shunning switches
// itself off, and every listener goes back to no filter.
void shunner::give_up(int err) {
  spdlog::error(
      "shun filter not attached error={} (shunning is off; floods are refused in user space)",
      std::strerror(err));
  broken_ = true;
  int unused = 0;
  for (const int fd : fds_) ::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
  until_.clear();
  gauge_.store(0, std::memory_order_relaxed);
  attached_ = false;
  timer_.cancel();
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
