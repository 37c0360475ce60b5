#include "net/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace relay::net {

void token_bucket::refill(const rate_spec& spec, limiter_clock::time_point now) noexcept {
  if (now <= last_) return;  // a clock read on another thread may lag: never refill backwards
  const double dt = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(spec.burst, tokens_ + dt * spec.per_s);
  last_ = now;
}

take_result token_bucket::try_take(const rate_spec& spec, double n,
                                   limiter_clock::time_point now) noexcept {
  refill(spec, now);
  if (n <= tokens_) {
    tokens_ -= n;
    return {};
  }
  take_result r;
  r.ok = false;
  r.never = n > spec.burst;
  const double missing = (r.never ? spec.burst : n) - tokens_;
  r.retry_after = std::chrono::milliseconds(
      static_cast<int64_t>(std::ceil(std::max(0.0, missing) / spec.per_s * 1000.0)));
  return r;
}

bool token_bucket::full(const rate_spec& spec, limiter_clock::time_point now) const noexcept {
  const double dt = now > last_ ? std::chrono::duration<double>(now - last_).count() : 0.0;
  return tokens_ + dt * spec.per_s >= spec.burst;
}

keyed_limiter::keyed_limiter(rate_spec spec, std::size_t max_keys) noexcept
    : spec_(spec), max_per_shard_(std::max<std::size_t>(1, max_keys / shard_count)) {
  if (spec_.enabled() && spec_.burst < 1) spec_.burst = 1;
}

take_result keyed_limiter::try_take(std::string_view key, double n, limiter_clock::time_point now) {
  if (!spec_.enabled()) return {};
  auto& s = shards_[std::hash<std::string_view>{}(key) % shard_count];
  std::lock_guard lock{s.mutex};
  auto it = s.buckets.find(std::string{key});
  if (it == s.buckets.end()) {
    if (s.buckets.size() >= max_per_shard_) make_room(s, now);
    it = s.buckets.emplace(std::string{key}, token_bucket{spec_, now}).first;
  }
  return it->second.try_take(spec_, n, now);
}

// Called with the shard locked and full: O(keys in the shard), which only an attacker rotating
// keys (or a very busy node) pays, once per new key.
void keyed_limiter::make_room(shard& s, limiter_clock::time_point now) {
  std::erase_if(s.buckets, [&](const auto& kv) { return kv.second.full(spec_, now); });
  if (s.buckets.size() < max_per_shard_) return;
  auto oldest = std::min_element(
      s.buckets.begin(), s.buckets.end(),
      [](const auto& a, const auto& b) { return a.second.last_used() < b.second.last_used(); });
  s.buckets.erase(oldest);
}

std::size_t keyed_limiter::size() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock{s.mutex};
    n += s.buckets.size();
  }
  return n;
}

}  // namespace relay::net
