#include "net/ws_inbox.hpp"

namespace relay::net {

std::size_t counted_bytes(const ws_inbox::item& it) noexcept {
  if (it.frame) return it.frame->bytes.size();
  if (it.other && it.other->presence && it.other->presence->ws_frame)
    return it.other->presence->ws_frame->bytes.size();
  return 0;
}

bool ws_inbox::signal_locked() noexcept {
  if (drain_scheduled_) return false;
  drain_scheduled_ = true;
  return true;
}

std::size_t ws_inbox::drop_pending_locked() noexcept {
  std::size_t dropped = 0;
  for (const auto& it : pending_.items) dropped += counted_bytes(it);
  pending_.items.clear();
  held_.fetch_sub(dropped, std::memory_order_relaxed);
  return dropped;
}

// Only pushes add under the mutex, so check-then-add cannot race with another push; release()
// may run concurrently and only makes room.
bool ws_inbox::admit_locked(std::size_t bytes) {
  const auto held = held_.load(std::memory_order_relaxed);
  if (held > 0 && held + bytes > limit_) {
    closed_ = true;
    pending_.overflowed = true;
    pending_.overflow_bytes = held + bytes;
    drop_pending_locked();
    return false;
  }
  held_.fetch_add(bytes, std::memory_order_relaxed);
  return true;
}

bool ws_inbox::push(uint64_t sub_id, const frame_ptr* frames, std::size_t count) {
  std::size_t size = 0;
  for (std::size_t i = 0; i < count; ++i) size += frames[i]->bytes.size();
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_ || count == 0) return false;
  if (!admit_locked(size)) return signal_locked();
  for (std::size_t i = 0; i < count; ++i) pending_.items.push_back(item{sub_id, frames[i], {}});
  return signal_locked();
}

bool ws_inbox::set_subscribed(uint64_t sub_id, result<subscribe_ok> answer) {
  auto n = std::make_unique<note>();
  n->subscribed.emplace(std::move(answer));
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_) return false;
  pending_.items.push_back(item{sub_id, nullptr, std::move(n)});
  return signal_locked();
}

bool ws_inbox::set_closed(uint64_t sub_id, error why) {
  auto n = std::make_unique<note>();
  n->closed.emplace(std::move(why));
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_) return false;
  pending_.items.push_back(item{sub_id, nullptr, std::move(n)});
  return signal_locked();
}

bool ws_inbox::push_presence(uint64_t sub_id, presence_ptr change) {
  if (!change || !change->ws_frame) return false;
  auto n = std::make_unique<note>();
  const auto size = change->ws_frame->bytes.size();
  n->presence = std::move(change);
  std::lock_guard<std::mutex> guard{mutex_};
  if (closed_) return false;
  if (!admit_locked(size)) return signal_locked();
  pending_.items.push_back(item{sub_id, nullptr, std::move(n)});
  return signal_locked();
}

void ws_inbox::drain(batch& out) {
  std::lock_guard<std::mutex> guard{mutex_};
  drain_scheduled_ = false;
  if (out.items.empty()) {
    out.items.swap(pending_.items);
  } else {
    for (auto& it : pending_.items) out.items.push_back(std::move(it));
    pending_.items.clear();
  }
  if (pending_.overflowed) {
    out.overflowed = true;
    out.overflow_bytes = pending_.overflow_bytes;
    pending_.overflowed = false;
  }
}

bool ws_inbox::hold(std::size_t bytes) noexcept {
  const auto now = held_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  return now <= limit_ || now == bytes;
}

void ws_inbox::close() {
  std::lock_guard<std::mutex> guard{mutex_};
  closed_ = true;
  drop_pending_locked();
}

}  // namespace relay::net
