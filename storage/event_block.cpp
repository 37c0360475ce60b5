#include "storage/event_block.hpp"

#include <algorithm>
#include <charconv>

namespace relay::storage {

namespace {

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

std::size_t encoded_size(const event& e) noexcept {
  return e.type.size() + e.data.size() + 48;  // a bound: two 20-digit numbers, a length, separators
}

/// Parses a decimal integer ending at `sep` and advances `in` past the separator.
template <class Int>
bool take_int(std::string_view& in, char sep, Int& out) {
  auto r = std::from_chars(in.data(), in.data() + in.size(), out);
  if (r.ec != std::errc{} || r.ptr == in.data() + in.size() || *r.ptr != sep) return false;
  in.remove_prefix(static_cast<std::size_t>(r.ptr - in.data()) + 1);
  return true;
}

error damaged(std::string_view what) {
  return error{errc::internal, "damaged event block: " + std::string{what}};
}

}  // namespace

std::vector<block_span> plan_blocks(const std::vector<topic_event>& events) {
  std::vector<block_span> out;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    const std::size_t size = encoded_size(e.e);
    if (!out.empty()) {
      auto& open = out.back();
      const auto& prev = events[i - 1];
      if (prev.topic == e.topic && prev.e.seq + 1 == e.e.seq && open.size() < max_block_events &&
          bytes + size <= max_block_bytes) {
        open.end = i + 1;
        bytes += size;
        continue;
      }
    }
    out.push_back({i, i + 1});
    bytes = size;
  }
  return out;
}

std::vector<block_span> uncovered(const std::vector<topic_event>& events, block_span span,
                                  const std::vector<seq_range>& stored) {
  std::vector<block_span> out;
  for (std::size_t i = span.begin; i < span.end; ++i) {
    const uint64_t seq = events[i].e.seq;
    const bool covered = std::any_of(stored.begin(), stored.end(), [seq](const seq_range& r) {
      return r.first <= seq && seq <= r.last;
    });
    if (covered) continue;
    if (!out.empty() && out.back().end == i)
      out.back().end = i + 1;
    else
      out.push_back({i, i + 1});
  }
  return out;
}

void append_block_event(std::string& out, const event& e) {
  append_int(out, e.seq);
  out += ' ';
  append_int(out, e.ts);
  out += ' ';
  out += e.type;
  out += ' ';
  append_int(out, e.data.size());
  out += '\n';
  out += e.data;
}

std::string encode_block(const std::vector<topic_event>& events, block_span span) {
  std::size_t size = 0;
  for (std::size_t i = span.begin; i < span.end; ++i) size += encoded_size(events[i].e);
  std::string out;
  out.reserve(size);
  for (std::size_t i = span.begin; i < span.end; ++i) append_block_event(out, events[i].e);
  return out;
}

result<bool> next_block_event(std::string_view& body, event& out) {
  if (body.empty()) return false;
  std::string_view in = body;
  std::size_t length = 0;
  if (!take_int(in, ' ', out.seq)) return damaged("seq");
  if (!take_int(in, ' ', out.ts)) return damaged("ts");
  const auto type_end = in.find(' ');
  if (type_end == std::string_view::npos || type_end == 0) return damaged("type");
  out.type.assign(in.data(), type_end);
  in.remove_prefix(type_end + 1);
  if (!take_int(in, '\n', length)) return damaged("data length");
  if (length > in.size()) return damaged("data past the end");
  out.data.assign(in.data(), length);
  in.remove_prefix(length);
  body = in;
  return true;
}

bool take_after(std::vector<event>& block, uint64_t& last, std::vector<event>& out,
                std::size_t limit) {
  for (auto& e : block) {
    if (e.seq <= last) continue;
    last = e.seq;
    out.push_back(std::move(e));
    if (out.size() == limit) return false;
  }
  return true;
}

bool take_before(std::vector<event>& block, uint64_t& lowest, std::vector<event>& newest_first,
                 std::size_t limit) {
  for (auto it = block.rbegin(); it != block.rend(); ++it) {
    if (it->seq >= lowest) continue;
    lowest = it->seq;
    newest_first.push_back(std::move(*it));
    if (newest_first.size() == limit) return false;
  }
  return true;
}

}  // namespace relay::storage
