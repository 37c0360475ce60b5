#pragma once
// Counters of the actor layer, shared by the actors of one node and read by /metrics.
// Relaxed atomics: they are statistics, never used to decide anything.

#include <atomic>
#include <cstdint>

namespace relay {

struct node_counters {
  std::atomic<int64_t> runs_active{0};  // run actors alive (running or in their TTL)
  std::atomic<uint64_t> runs_created{0};
  std::atomic<uint64_t> events_in{0};       // events appended to topics (all kinds)
  std::atomic<uint64_t> events_out{0};      // event deliveries handed to sessions
  std::atomic<uint64_t> frames_encoded{0};  // frames encoded by the edge (once per event)
  std::atomic<uint64_t> replay_hits{0};     // subscriptions served from the ring
  std::atomic<uint64_t> gaps{0};            // subscriptions that started with a gap
  std::atomic<uint64_t> restarts{0};        // supervised restarts
  std::atomic<uint64_t> crashes_final{0};   // entities failed past their restart budget
  std::atomic<uint64_t> timeouts{0};        // runs ended by inactivity
  std::atomic<uint64_t> passivations{0};
  std::atomic<int64_t> subscriptions{0};     // live subscriptions at the edge
  std::atomic<int64_t> rooms_active{0};      // room actors alive
  std::atomic<uint64_t> room_messages{0};    // messages appended to rooms (dedup hits excluded)
  std::atomic<int64_t> presence_members{0};  // (room, user) pairs with at least one session
  // storage (all zero with durability none)
  std::atomic<int64_t> storage_up{1};        // 0 while writes fail
  std::atomic<int64_t> storage_pending{0};   // events received, not yet committed
  std::atomic<uint64_t> storage_commits{0};  // transactions committed
  std::atomic<uint64_t> storage_events_written{0};
  std::atomic<uint64_t> storage_errors{0};         // failed transactions (retried)
  std::atomic<uint64_t> storage_commit_us{0};      // sum of commit durations
  std::atomic<int64_t> storage_last_commit_us{0};  // the latest commit's duration
  std::atomic<uint64_t> storage_retained{0};       // rows deleted by retention

  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
  static void add(std::atomic<int64_t>& c, int64_t n) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
};

}  // namespace relay
