#pragma once
// The receiving half of a WebSocket session's queue: what the edge hands over for every
// subscription of the session (answers, frames, presence changes, ends), in order. The edge (a CAF
// thread) pushes, the session's Asio thread drains. No sockets here, so it is unit-testable.
//
// The same bound as the SSE outbox: a push that would take the session's held bytes (this inbox
// plus the frames of its write queue) past `limit` is refused, the inbox closes and reports
// `overflowed` (the session closes with 4001). A batch pushed while nothing is held is taken
// whole, so a resume bigger than the limit still makes progress.

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "actors/frame.hpp"

namespace relay::net {

class ws_inbox {
 public:
  explicit ws_inbox(std::size_t limit_bytes) noexcept : limit_(limit_bytes) {}

  /// The rare, larger items (everything but frames) travel behind one pointer, so a frame item
  /// stays 32 bytes on the hot path.
  struct note {
    std::optional<result<subscribe_ok>> subscribed;
    std::optional<error> closed;
    presence_ptr presence;
  };
  struct item {
    uint64_t sub_id = 0;
    frame_ptr frame;              // a counted frame, or null for a note
    std::unique_ptr<note> other;  // set when frame is null
  };
  struct batch {
    std::vector<item> items;
    bool overflowed = false;
    std::size_t overflow_bytes = 0;  // what the session would have held with the refused push
  };

  /// Any thread. Each answers true when the caller must schedule one drain (the first signal
  /// since the last drain); false when coalesced or refused.
  bool push(uint64_t sub_id, const frame_ptr* frames, std::size_t count);
  bool set_subscribed(uint64_t sub_id, result<subscribe_ok> answer);
  bool set_closed(uint64_t sub_id, error why);
  bool push_presence(uint64_t sub_id, presence_ptr change);

  /// Session thread. Moves everything pending into `out` (its items vector should be empty: the
  /// vectors swap, so capacity is reused) and re-arms the signal.
  void drain(batch& out);

  /// Session thread. Adds bytes the session holds outside the inbox (answers it queued itself),
  /// so they count against the same limit. False when that takes it past the limit.
  bool hold(std::size_t bytes) noexcept;
  /// Session thread. Gives back bytes that left the session (written or dropped).
  void release(std::size_t bytes) noexcept { held_.fetch_sub(bytes, std::memory_order_relaxed); }

  /// Refuses all further input and drops what is pending (its bytes are released).
  void close();

  std::size_t held_bytes() const noexcept { return held_.load(std::memory_order_relaxed); }
  std::size_t limit() const noexcept { return limit_; }

 private:
  bool admit_locked(std::size_t bytes);  // the bound; closes and flags on overflow
  bool signal_locked() noexcept;
  std::size_t drop_pending_locked() noexcept;

  const std::size_t limit_;
  std::atomic<std::size_t> held_{0};
  std::mutex mutex_;
  batch pending_;                 // guarded by mutex_
  bool drain_scheduled_ = false;  // guarded by mutex_
  bool closed_ = false;           // guarded by mutex_
};

/// The bytes an item counts against the limit.
std::size_t counted_bytes(const ws_inbox::item& it) noexcept;

}  // namespace relay::net
