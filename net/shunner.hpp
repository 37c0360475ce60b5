#pragma once
// Repeat offenders are dropped by the kernel (limits.shun_s). An address refused at accept again
// and again (rate.connections_*, limits.max_connections_per_ip) is a client that ignores its 429s
// and their Retry-After: answering each attempt still costs a handshake, an accept, a write and a
// close, thousands a second from one address. Past limits.shun_after such refusals, the client
// (the address; an IPv6 one's /64) is shunned for limits.shun_s seconds, twice as long each time
// it comes back within its probation (up to limits.shun_max_s): a classic BPF socket filter on the
// listening sockets drops its SYNs before any socket exists, and its client waits out TCP's own
// retries (after 1, 2, 3, 4, 6, 10 s, ... on Linux 6). Connections it already has are left alone:
// an accepted socket sheds the copy of the filter it inherits from its listener. Linux only; where
// the filter cannot be attached, refusals go on as before (logged once).

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/rate_limiter.hpp"
#include "net/refusals.hpp"

namespace relay::net {

/// One instruction of a classic BPF program (the layout of Linux's struct sock_filter).
struct bpf_op {
  uint16_t code;
  uint8_t jt;
  uint8_t jf;
  uint32_t k;
};

/// The client a per-address limit counts (rate.connections_*, limits.max_connections_per_ip, the
/// shun): an IPv4 address (an IPv4-mapped IPv6 one as its IPv4 address), or the first
/// `v6_prefix` bits of an IPv6 address, the rest zeroed. One IPv6 subscriber gets a whole /64,
/// so counting per address would let it rotate past every limit.
boost::asio::ip::address client_of(const boost::asio::ip::address& a, unsigned v6_prefix);
/// client_of as the limits' key: "192.0.2.7", "2001:db8:1:2::/64" ("::1" when v6_prefix is 128).
std::string client_key(const boost::asio::ip::address& a, unsigned v6_prefix);

/// A socket filter that drops every packet from one of `v4` (addresses as numbers, 127.0.0.1 =
/// 0x7f000001) or from an IPv6 address whose first `v6_prefix` bits are one of `v6`'s, and keeps
/// every other packet.
std::vector<bpf_op> shun_program(std::span<const uint32_t> v4,
                                 std::span<const std::array<uint8_t, 16>> v6,
                                 unsigned v6_prefix = 128);

/// What shun_program spends per shunned client: IPv4, a compare and the drop; IPv6, a load and
/// a compare per 32-bit word of the prefix, then the drop (9 for a /128, 5 for a /64).
inline constexpr std::size_t shun_program_per_v4 = 2;
std::size_t shun_program_per_v6(unsigned v6_prefix) noexcept;
/// shun_program's length for `v4` and `v6` clients.
std::size_t shun_program_size(std::size_t v4, std::size_t v6, unsigned v6_prefix) noexcept;
/// The kernel's bound on a classic BPF program (BPF_MAXINSNS): about 2 000 IPv4 clients or 800
/// IPv6 /64s at once. The socket's option memory (net.core.optmem_max, which the old and the new
/// filter share while one replaces the other) may bound it lower; past either bound, a new
/// offender is refused in user space as before.
inline constexpr std::size_t bpf_max_ops = 4096;

class shunner {
 public:
  struct options {
    std::chrono::seconds duration{60};     // limits.shun_s (0: off): a first shun
    uint32_t after = 1000;                 // limits.shun_after: refusals, in about 10 s
    std::size_t max_keys = 100000;         // rate.max_keys: refusal buckets kept at most
    unsigned v6_prefix = 64;               // limits.ipv6_prefix: an IPv6 client is this prefix
    std::chrono::seconds max_duration{0};  // limits.shun_max_s: the longest (below duration: it)
  };

  /// Clients remembered after their shun ended, for escalation (bounded like the buckets).
  static constexpr std::size_t max_remembered = 10000;

  /// Runs on `ioc`, the listeners' thread: every member is called there (or before it runs).
  shunner(boost::asio::io_context& ioc, options opts, net::refusals& refusals,
          std::atomic<int64_t>& shunned_gauge);
  shunner(const shunner&) = delete;
  shunner& operator=(const shunner&) = delete;

  bool enabled() const noexcept { return opts_.duration.count() > 0; }

  /// A listening socket whose incoming connections the shun applies to.
  void watch(int listen_fd);
  /// Notes one refusal at accept of a connection from `addr` (`key`: client_key of it); shuns its
  /// client (client_of) when its refusals have emptied its bucket (`after` deep, refilled at
  /// `after` per 10 s). A client shunned again within its probation (as long as its last shun,
  /// from its end) is shunned twice as long as last time, up to max_duration.
  void refused(const boost::asio::ip::address& addr, std::string_view key,
               limiter_clock::time_point now = limiter_clock::now());
  /// Drops the filter an accepted socket inherited from its listener (a no-op until something
  /// was shunned), so established connections never pay for the list, nor are cut off by it.
  void clear_inherited(int fd) const noexcept;
  /// Lifts every shun whose time is up at `now` (the timer does this on its own).
  void expire(limiter_clock::time_point now);
  /// Forgets the listening sockets and cancels the expiry timer; refusals are no longer noted
  /// (server stop, before the listeners close).
  void stop();

  /// True when connections from `addr` are dropped (its client is shunned).
  bool shunned(const boost::asio::ip::address& addr) const;
  std::size_t size() const noexcept { return until_.size(); }
  /// How long `addr`'s client is shunned for (its current shun, or its last one while it is
  /// remembered for its probation); zero when neither.
  std::chrono::seconds last_duration(const boost::asio::ip::address& addr) const;
  /// True while the kernel filters: something is shunned and the filter is attached.
  bool filtering() const noexcept { return attached_; }

 private:
  int apply();
  void give_up(int err);
  void arm_timer();
  std::size_t cost() const noexcept;
  std::chrono::seconds next_duration(const boost::asio::ip::address& client,
                                     limiter_clock::time_point now) const;
  void remember(const boost::asio::ip::address& client, std::chrono::seconds duration,
                limiter_clock::time_point now);

  options opts_;
  net::refusals& refusals_;
  std::atomic<int64_t>& gauge_;
  keyed_limiter buckets_;
  boost::asio::steady_timer timer_;
  struct past {
    std::chrono::seconds duration;        // of its last shun
    limiter_clock::time_point forget_at;  // the end of its probation
  };
  std::map<boost::asio::ip::address, limiter_clock::time_point> until_;
  std::map<boost::asio::ip::address, past> past_;  // shunned now or on probation
  std::vector<int> fds_;
  bool attached_ = false;               // the listeners have a filter now
  bool ever_attached_ = false;          // ... or had one: accepted sockets may carry a copy
  std::size_t refused_ops_ = SIZE_MAX;  // the shortest program the kernel refused (too big)
  bool broken_ = false;                 // the kernel refused the filter: shunning is off
  bool stopped_ = false;
  std::atomic<int64_t> full_logged_s_{0};
};

}  // namespace relay::net
