#pragma once
// The audit log: privileged actions and repeated auth failures as one JSON object per line, on a
// spdlog logger of its own (a file sink, flushed per line) beside the console log.
//
// What is written (README "Audit log"): runs created by a service on behalf of another owner,
// the first append of each (service or admin, run) pair and every complete/fail/cancel by one,
// admin actions and refused admin attempts, and per client IP one line when its auth failures in
// a minute reach the threshold (then nothing more from that IP until the next minute). Actions
// are written with their outcome, when the node answers (net/audited.hpp).
//
// Threads: called from every Asio thread and from node callbacks; the spdlog logger is thread-safe,
// the counters sit behind one mutex held for a map lookup only (never while writing).

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace spdlog {
class logger;
}

namespace relay::net {

class audit_log {
 public:
  using field = std::pair<std::string_view, std::string_view>;
  using owned_fields = std::vector<std::pair<std::string, std::string>>;

  /// Bounds on what the log remembers (memory, not correctness: past them it forgets in bulk).
  static constexpr std::size_t max_tracked_ips = 10'000;
  static constexpr std::size_t max_tracked_appends = 4'096;

  /// `path` empty: off (every call returns at once). Throws std::runtime_error when the file
  /// cannot be opened (at start-up).
  audit_log(const std::string& path, unsigned auth_failures_per_min);
  ~audit_log();
  audit_log(const audit_log&) = delete;
  audit_log& operator=(const audit_log&) = delete;

  bool enabled() const noexcept { return logger_ != nullptr; }

  /// Writes `{"ts":"<UTC ISO 8601>","event":"<event>","k":"v",...}`.
  void record(std::string_view event, std::initializer_list<field> fields);
  void record(std::string_view event, const owned_fields& fields);

  /// Counts an auth failure of `ip` (no port) in the current minute; writes one `auth.failures`
  /// line when the count reaches the threshold.
  void auth_failure(std::string_view ip, std::string_view reason);

  /// True the first time `sub` appends to `run` (then the append is worth a line).
  bool first_append(std::string_view sub, std::string_view run);

 private:
  struct window {
    int64_t minute = 0;
    uint32_t count = 0;
  };

  std::shared_ptr<spdlog::logger> logger_;
  const unsigned threshold_;
  std::mutex mu_;
  std::unordered_map<std::string, window> failures_;
  std::unordered_set<std::string> appends_;
};

/// The address part of a peer string "ip:port" (as http_session writes it; "::1:5000" too).
std::string_view peer_ip(std::string_view peer) noexcept;

}  // namespace relay::net
