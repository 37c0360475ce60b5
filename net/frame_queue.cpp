#include "net/frame_queue.hpp"

namespace relay::net {

bool frame_queue::push(const frame_ptr& f) {
  if (!f || terminal_queued_) return false;
  // A gap's seq is the last position it covers (`to`): a gap wholly behind us is stale.
  if (f->seq <= last_seq_) return false;
  last_seq_ = f->seq;
  terminal_queued_ = f->terminal;
  entries_.push_back(entry{f, true});
  return true;
}

void frame_queue::push_counted(frame_ptr f) {
  if (f && !f->bytes.empty()) entries_.push_back(entry{std::move(f), true});
}

void frame_queue::push_control(frame_ptr f) {
  if (f && !f->bytes.empty()) entries_.push_back(entry{std::move(f), false});
}

void frame_queue::gather(std::vector<boost::asio::const_buffer>& out,
                         std::size_t max_buffers) const {
  std::size_t offset = head_offset_;
  std::size_t n = 0;
  for (const auto& e : entries_) {
    if (n == max_buffers) break;
    const auto& bytes = e.f->bytes;
    out.emplace_back(bytes.data() + offset, bytes.size() - offset);
    offset = 0;
    ++n;
    // Nothing after a terminal frame is written: the stream closes there.
    if (e.counted && e.f->terminal) break;
  }
}

frame_queue::progress frame_queue::consume(std::size_t n) {
  progress p;
  while (!entries_.empty()) {
    const auto& e = entries_.front();
    const auto left = e.f->bytes.size() - head_offset_;
    if (n < left) {
      head_offset_ += n;
      break;
    }
    n -= left;
    head_offset_ = 0;
    if (e.counted) {
      ++p.frames;
      p.counted_bytes += e.f->bytes.size();
      p.terminal = p.terminal || e.f->terminal;
    }
    entries_.pop_front();
  }
  return p;
}

std::size_t frame_queue::clear() noexcept {
  std::size_t bytes = 0;
  for (const auto& e : entries_)
    if (e.counted) bytes += e.f->bytes.size();
  entries_.clear();
  head_offset_ = 0;
  return bytes;
}

std::size_t frame_queue::drop_unstarted() noexcept {
  const bool keep_head = head_offset_ > 0 && !entries_.empty();
  std::size_t bytes = 0;
  for (std::size_t i = keep_head ? 1 : 0; i < entries_.size(); ++i)
    if (entries_[i].counted) bytes += entries_[i].f->bytes.size();
  entries_.erase(entries_.begin() + (keep_head ? 1 : 0), entries_.end());
  return bytes;
}

}  // namespace relay::net
