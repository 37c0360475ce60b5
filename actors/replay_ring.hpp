#pragma once
// The replay ring of a topic: the last `capacity` events, contiguous in seq. Owned by exactly one
// topic actor (invariant 1), so it has no lock. No CAF here: unit-testable on its own.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocols/event.hpp"

namespace relay {

class replay_ring {
 public:
  /// What a subscriber at position `after` is owed: a gap [gap_from, gap_to] when its next event is
  /// no longer retained, then the retained events after its position, in seq order.
  struct replay {
    bool gap = false;
    uint64_t gap_from = 0;
    uint64_t gap_to = 0;
    std::vector<event> events;
  };

  explicit replay_ring(std::size_t capacity) : capacity_(capacity ? capacity : 1) {
    slots_.reserve(capacity_ < 64 ? capacity_ : 64);
  }

  /// Appends the next event; its seq must be last_seq() + 1 (the owner assigns it).
  void push(event e) {
    last_seq_ = e.seq;
    if (slots_.size() < capacity_) {
      slots_.push_back(std::move(e));
      return;
    }
    slots_[head_] = std::move(e);
    head_ = (head_ + 1) % capacity_;
  }

  /// Forgets the contents but keeps the numbering: the next push is `last_seq + 1`. Used when a
  /// topic restarts without a log to reload from.
  void reset(uint64_t last_seq) {
    slots_.clear();
    head_ = 0;
    last_seq_ = last_seq;
  }

  /// Refills the ring from a stored tail (oldest first) and makes `at_least` its last seq if it is
  /// ahead of the tail (then the events in between were never stored: resumers get a gap).
  void reload(std::vector<event>&& tail, uint64_t at_least) {
    if (!tail.empty()) {
      reset(tail.front().seq - 1);
      for (auto& e : tail)
        if (e.seq == last_seq_ + 1) push(std::move(e));
    }
    if (at_least > last_seq_) reset(at_least);
  }

  uint64_t last_seq() const noexcept { return last_seq_; }
  /// The oldest retained seq; last_seq() + 1 when empty.
  uint64_t first_seq() const noexcept { return last_seq_ + 1 - slots_.size(); }
  std::size_t size() const noexcept { return slots_.size(); }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return slots_.empty(); }

  /// The event with `seq`; requires first_seq() <= seq <= last_seq().
  const event& at(uint64_t seq) const noexcept {
    std::size_t offset = static_cast<std::size_t>(seq - first_seq());
    return slots_[(head_ + offset) % slots_.size()];
  }

  /// Everything owed to a subscriber whose last seen seq is `after` (0: from the beginning).
  replay after(uint64_t after) const {
    replay r;
    // At or past the end, nothing is owed (and after + 1 below cannot wrap at UINT64_MAX).
    if (after >= last_seq_) return r;
    uint64_t first = first_seq();
    uint64_t next = after + 1;
    if (next < first) {
      r.gap = true;
      r.gap_from = next;
      r.gap_to = first - 1;
      next = first;
    }
    if (next <= last_seq_) {
      r.events.reserve(static_cast<std::size_t>(last_seq_ - next + 1));
      for (uint64_t s = next; s <= last_seq_; ++s) r.events.push_back(at(s));
    }
    return r;
  }

 private:
  std::size_t capacity_;
  std::vector<event> slots_;
  std::size_t head_ = 0;  // index of the oldest event once the ring is full
  uint64_t last_seq_ = 0;
};

}  // namespace relay
