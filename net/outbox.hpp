#pragma once
// The receiving half of an SSE session's queue: the edge (a CAF thread) pushes into it, the
// session's Asio thread drains it. No sockets and no Asio here, so the accounting is unit-testable.

#include <atomic>
#include <cstddef>
#include <mutex>
#include <optional>
#include <vector>

#include "actors/frame.hpp"

namespace relay::net {

/// A mutex-protected inbox plus the byte count of everything the session holds (inbox and its
/// outbound queue). Signals coalesce: only the first one after a drain asks the caller to schedule
/// a drain, so under load one posted handler moves many frames.
///
/// Bound: a push that would take the queued bytes past `limit` is refused, the outbox closes and
/// reports `overflowed` at the next drain (the session then closes as a slow consumer). The one
/// exception is a batch pushed while nothing is queued (a large replay): it is taken whole, so a
/// resuming client always makes progress. Memory held by a session therefore never exceeds the
/// limit or one replay batch, whichever is larger.
class outbox {
 public:
  explicit outbox(std::size_t limit_bytes) noexcept : limit_(limit_bytes) {}

  /// What a drain hands to the session, in the order the edge sent it.
  struct batch {
    std::optional<result<subscribe_ok>> subscribed;  // the subscribe answer, once
    std::vector<frame_ptr> frames;                   // their bytes stay counted until release()
    std::optional<error> closed;                     // the edge ended the subscription
    bool overflowed = false;                         // the limit was hit: close as slow consumer
    std::size_t overflow_bytes = 0;  // what the session would have held with the refused frame

    bool empty() const noexcept { return !subscribed && frames.empty() && !closed && !overflowed; }
  };

  /// Any thread. Queues a frame; true when the caller must schedule one drain.
  bool push(frame_ptr f);
  /// Any thread. Queues several frames under one lock; true when the caller must schedule one
  /// drain.
  bool push(const frame_ptr* frames, std::size_t count);
  /// Any thread. Records the subscribe answer; true when the caller must schedule one drain.
  bool set_subscribed(result<subscribe_ok> answer);
  /// Any thread. Records the end of the subscription; true when the caller must schedule one drain.
  bool set_closed(error why);

  /// Session thread. Moves everything pending into `out` (whose `frames` should be empty; the two
  /// vectors swap, so their capacity is reused) and re-arms the drain signal.
  void drain(batch& out);

  /// Session thread. Gives back the bytes of frames that left the session (written or dropped).
  void release(std::size_t bytes) noexcept { queued_.fetch_sub(bytes, std::memory_order_relaxed); }

  /// Refuses all further input and drops what is pending (its bytes are released).
  void close();

  std::size_t queued_bytes() const noexcept { return queued_.load(std::memory_order_relaxed); }
  std::size_t limit() const noexcept { return limit_; }
  bool closed() const;

 private:
  bool signal_locked() noexcept;  // true for the first signal since the last drain

  const std::size_t limit_;
  std::atomic<std::size_t> queued_{0};
  mutable std::mutex mutex_;
  batch pending_;                 // guarded by mutex_
  bool drain_scheduled_ = false;  // guarded by mutex_
  bool closed_ = false;           // guarded by mutex_
};

}  // namespace relay::net
