#include "net/outbox.hpp"

namespace relay::net {

bool outbox::signal_locked() noexcept {
  if (drain_scheduled_) return false;
  drain_scheduled_ = true;
  return true;
}

bool outbox::push(frame_ptr f) {
  if (!f) return false;
  return push(&f, 1);
}

bool outbox::push(const frame_ptr* frames, std::size_t count) {
  std::size_t size = 0;
  for (std::size_t i = 0; i < count; ++i) size += frames[i]->bytes.size();
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_ || count == 0) return false;
  // Only this function adds, under the mutex, so the check and the add cannot race with another
  // push; release() may run concurrently and only makes room.
  // An empty session always takes one batch, however large: a replay bigger than the limit
  // (ring_capacity events of up to max_data_bytes) must not lock a resuming client out forever.
  // Its memory is bounded by the ring it was copied from; the limit applies from then on.
  const auto queued = queued_.load(std::memory_order_relaxed);
  if (queued > 0 && queued + size > limit_) {
    closed_ = true;
    pending_.overflowed = true;
    pending_.overflow_bytes = queued_.load(std::memory_order_relaxed) + size;
    std::size_t dropped = 0;
    for (const auto& p : pending_.frames) dropped += p->bytes.size();
    pending_.frames.clear();
    queued_.fetch_sub(dropped, std::memory_order_relaxed);
    return signal_locked();
  }
  queued_.fetch_add(size, std::memory_order_relaxed);
  pending_.frames.insert(pending_.frames.end(), frames, frames + count);
  return signal_locked();
}

bool outbox::set_subscribed(result<subscribe_ok> answer) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_) return false;
  pending_.subscribed.emplace(std::move(answer));
  return signal_locked();
}

bool outbox::set_closed(error why) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_) return false;
  closed_ = true;  // nothing follows the end of a subscription
  pending_.closed.emplace(std::move(why));
  return signal_locked();
}

void outbox::drain(batch& out) {
  std::lock_guard<std::mutex> guard{mutex_};
  drain_scheduled_ = false;
  if (pending_.subscribed) {
    out.subscribed = std::move(pending_.subscribed);
    pending_.subscribed.reset();
  }
  if (out.frames.empty())
    out.frames.swap(pending_.frames);
  else {
    out.frames.insert(out.frames.end(), pending_.frames.begin(), pending_.frames.end());
    pending_.frames.clear();
  }
  if (pending_.closed) {
    out.closed = std::move(pending_.closed);
    pending_.closed.reset();
  }
  if (pending_.overflowed) {
    out.overflowed = true;
    out.overflow_bytes = pending_.overflow_bytes;
    pending_.overflowed = false;
  }
}

void outbox::close() {
  std::lock_guard<std::mutex> guard{mutex_};
  closed_ = true;
  std::size_t dropped = 0;
  for (const auto& p : pending_.frames) dropped += p->bytes.size();
  pending_.frames.clear();
  queued_.fetch_sub(dropped, std::memory_order_relaxed);
}

bool outbox::closed() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return closed_;
}

}  // namespace relay::net
