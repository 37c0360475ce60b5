#pragma once
// The outbound queue of an SSE or WebSocket session, owned by its Asio thread: deduplication by
// seq, the gather list of the next write, and what a partial write leaves behind. Pure: no sockets.

#include <boost/asio/buffer.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "actors/frame.hpp"

namespace relay::net {

class frame_queue {
 public:
  /// `last_seq`: the client's position; events up to it are never sent again.
  explicit frame_queue(uint64_t last_seq = 0) noexcept : last_seq_(last_seq) {}

  /// Queues a frame of the topic. Refused (false: the caller releases its bytes) when it is an
  /// event with seq <= the last one queued (a replay overlap or a topic restart), a gap that
  /// ends at or before that position, or anything after a terminal frame.
  bool push(const frame_ptr& f);

  /// Queues a counted frame without the seq check (a WebSocket session follows many topics and
  /// deduplicates per subscription before pushing).
  void push_counted(frame_ptr f);

  /// Queues bytes that are not a frame of the topic (response header, retry, heartbeat): never
  /// deduplicated, not counted against the outbound limit, not counted as frames out.
  void push_control(frame_ptr f);

  /// Appends to `out` the buffers of the next write: from the unwritten part of the head, at most
  /// `max_buffers` entries, ending with a terminal frame if one is queued. References the queued
  /// frames: valid until the next consume()/clear().
  void gather(std::vector<boost::asio::const_buffer>& out, std::size_t max_buffers) const;

  struct progress {
    std::size_t frames = 0;         // topic frames completely written
    std::size_t counted_bytes = 0;  // their bytes (to release from the outbox's count)
    bool terminal = false;          // the terminal frame was completely written
  };
  /// Marks `n` bytes of the gathered head as written; a partly written entry stays at the head.
  progress consume(std::size_t n);

  /// Drops everything queued; answers the counted bytes dropped.
  std::size_t clear() noexcept;

  /// Drops everything except a partly written head (so the stream stays well-framed and a final
  /// frame can follow); answers the counted bytes dropped.
  std::size_t drop_unstarted() noexcept;

  bool empty() const noexcept { return entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }
  uint64_t last_seq() const noexcept { return last_seq_; }
  /// True once a terminal frame was accepted (it may still be waiting to be written).
  bool terminal_queued() const noexcept { return terminal_queued_; }

 private:
  struct entry {
    frame_ptr f;
    bool counted;  // a topic frame (false: control bytes)
  };
  std::deque<entry> entries_;
  std::size_t head_offset_ = 0;  // bytes of entries_.front() already written
  uint64_t last_seq_;
  bool terminal_queued_ = false;
};

}  // namespace relay::net
