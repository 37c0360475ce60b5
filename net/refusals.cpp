#include "net/refusals.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>

namespace relay::net {

std::string_view to_string(refusal r) noexcept {
  switch (r) {
    case refusal::header_too_large:
      return "header_too_large";
    case refusal::body_too_large:
      return "body_too_large";
    case refusal::data_too_large:
      return "data_too_large";
    case refusal::frame_too_large:
      return "frame_too_large";
    case refusal::subscriptions:
      return "subscriptions";
    case refusal::rooms:
      return "rooms";
    case refusal::connections:
      return "connections";
    case refusal::connections_per_ip:
      return "connections_per_ip";
    case refusal::active_runs:
      return "active_runs";
    case refusal::header_timeout:
      return "header_timeout";
    case refusal::body_timeout:
      return "body_timeout";
    case refusal::ws_timeout:
      return "ws_timeout";
    case refusal::rate_connections:
      return "rate_connections";
    case refusal::rate_runs:
      return "rate_runs";
    case refusal::rate_events:
      return "rate_events";
    case refusal::rate_messages:
      return "rate_messages";
    case refusal::shunned:
      return "shunned";
    case refusal::count_:
      break;
  }
  return "unknown";
}

void refusals::refuse(refusal why, std::string_view offender, std::string_view detail) {
  counts_[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
  if (!should_log(why, offender, std::chrono::steady_clock::now())) return;
  spdlog::warn("refused reason={} offender={}{}{} (logged once per offender per minute)",
               to_string(why), offender, detail.empty() ? "" : " ", detail);
}

bool refusals::should_log(refusal why, std::string_view offender,
                          std::chrono::steady_clock::time_point now) {
  std::string key{to_string(why)};
  key += ' ';
  key += offender;
  std::lock_guard lock{mutex_};
  auto it = last_logged_.find(key);
  if (it != last_logged_.end()) {
    if (now - it->second < log_interval) return false;
    it->second = now;
    return true;
  }
  if (last_logged_.size() >= max_remembered) {
    // Forget the lines that are due again anyway; if every one is recent (a flood of distinct
    // offenders), forget them all: a few repeated lines are better than an unbounded table.
    std::erase_if(last_logged_, [&](const auto& kv) { return now - kv.second >= log_interval; });
    if (last_logged_.size() >= max_remembered) last_logged_.clear();
  }
  last_logged_.emplace(std::move(key), now);
  return true;
}

void refusals::append_to(std::vector<metric_sample>& out) const {
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    metric_sample s;
    s.name = "relay_refused_total";
    s.help = "Requests, connections, frames and ops refused by a limit, by reason.";
    s.type = "counter";
    s.value = static_cast<double>(counts_[i].load(std::memory_order_relaxed));
    s.labels = "reason=\"" + std::string{to_string(static_cast<refusal>(i))} + "\"";
    out.push_back(std::move(s));
  }
}

ip_connections::shard& ip_connections::shard_of(const std::string& ip) {
  return shards_[std::hash<std::string>{}(ip) % shard_count];
}

uint32_t ip_connections::open(const std::string& ip) {
  auto& s = shard_of(ip);
  std::lock_guard lock{s.mutex};
  return ++s.open[ip];
}

void ip_connections::close(const std::string& ip) {
  auto& s = shard_of(ip);
  std::lock_guard lock{s.mutex};
  auto it = s.open.find(ip);
  if (it == s.open.end()) return;
  if (--it->second == 0) s.open.erase(it);
}

std::size_t ip_connections::addresses() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock{s.mutex};
    n += s.open.size();
  }
  return n;
}

bool once_a_minute(std::atomic<int64_t>& last_s) noexcept {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count();
  auto last = last_s.load(std::memory_order_relaxed);
  return now - last >= refusals::log_interval.count() &&
         last_s.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

}  // namespace relay::net
