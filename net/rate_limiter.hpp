#pragma once
// Token buckets (issue 5, rate limits): one bucket per key (a user or a client address) in a
// sharded table whose size is bounded, so an attacker rotating keys cannot grow it without bound.
// The clock is a parameter everywhere: tests drive it by hand.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace relay::net {

using limiter_clock = std::chrono::steady_clock;

/// A bucket's refill rate and depth. `per_s == 0` switches the bucket off (everything passes).
struct rate_spec {
  double per_s = 0;
  double burst = 0;  // tokens a full bucket holds (at least 1 when on)

  bool enabled() const noexcept { return per_s > 0; }
};

/// What try_take answers: taken, or the wait until `n` tokens will be there.
struct take_result {
  bool ok = true;
  std::chrono::milliseconds retry_after{0};  // when !ok: the wait for the missing tokens
  bool never = false;  // when !ok: more tokens than the bucket can hold (burst < n)

  /// Retry-After in whole seconds, rounded up, at least 1 (HTTP's unit).
  int64_t retry_after_s() const noexcept {
    return std::max<int64_t>(1, (retry_after.count() + 999) / 1000);
  }
};

/// One token bucket. Not thread-safe: keyed_limiter locks around it.
class token_bucket {
 public:
  /// A full bucket at `now`.
  token_bucket(const rate_spec& spec, limiter_clock::time_point now) noexcept
      : tokens_(spec.burst), last_(now) {}

  /// Takes `n` tokens at once, or none (a refused request never half-applies).
  take_result try_take(const rate_spec& spec, double n, limiter_clock::time_point now) noexcept;

  /// True when the bucket has refilled to `burst` by `now`: forgetting it changes nothing.
  bool full(const rate_spec& spec, limiter_clock::time_point now) const noexcept;

  limiter_clock::time_point last_used() const noexcept { return last_; }

 private:
  void refill(const rate_spec& spec, limiter_clock::time_point now) noexcept;

  double tokens_;
  limiter_clock::time_point last_;
};

/// Buckets by key, one spec for all of them. Thread-safe: the key's hash picks one of
/// `shard_count` shards, each with its own mutex, so threads rarely meet (one short lock per
/// request, never per event of a batch). At most `max_keys` buckets are kept: a new key in a full
/// shard first drops the buckets that have refilled (forgetting them changes nothing), then the
/// least recently used one (which hands that key a fresh burst: the price of a bound).
class keyed_limiter {
 public:
  static constexpr std::size_t shard_count = 16;

  keyed_limiter(rate_spec spec, std::size_t max_keys) noexcept;

  bool enabled() const noexcept { return spec_.enabled(); }
  const rate_spec& spec() const noexcept { return spec_; }

  /// Takes `n` tokens from `key`'s bucket (all or none). Always ok when the spec is off.
  take_result try_take(std::string_view key, double n, limiter_clock::time_point now);

  /// Buckets currently kept (for tests and metrics).
  std::size_t size() const;

 private:
  struct shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, token_bucket> buckets;
  };
  void make_room(shard& s, limiter_clock::time_point now);

  rate_spec spec_;
  std::size_t max_per_shard_;
  std::array<shard, shard_count> shards_;
};

}  // namespace relay::net
