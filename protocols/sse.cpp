#include "protocols/sse.hpp"

#include <array>
#include <charconv>

namespace relay {

namespace {

constexpr std::size_t max_position_digits = 20;  // UINT64_MAX has 20 digits

void append_number(std::string& out, uint64_t value) {
  std::array<char, 24> buf;
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
  (void)ec;  // cannot fail: the buffer fits every uint64
  out.append(buf.data(), static_cast<std::size_t>(end - buf.data()));
}

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

}  // namespace

// Hot path: encoded once per event per edge. The event JSON is one line (data is compact JSON,
// whose strings escape newlines), so a single `data:` line is always enough.
std::string sse_frame(const event& e) {
  std::string out;
  // One allocation: field names, two numbers, the type twice, the data once.
  out.reserve(64 + 2 * 20 + 2 * e.type.size() + e.data.size() + 40);
  out.append("id: ");
  append_number(out, e.seq);
  out.append("\nevent: ");
  out.append(e.type);
  out.append("\ndata: ");
  append_event_json(out, e);
  out.append("\n\n");
  return out;
}

std::string sse_gap_frame(uint64_t from, uint64_t to) {
  std::string out;
  out.reserve(64);
  out.append("event: gap\ndata: {\"from\":");
  append_number(out, from);
  out.append(",\"to\":");
  append_number(out, to);
  out.append("}\n\n");
  return out;
}

std::string sse_retry(unsigned ms) {
  std::string out = "retry: ";
  append_number(out, ms);
  out.append("\n\n");
  return out;
}

std::string_view sse_heartbeat() noexcept { return ": hb\n\n"; }

result<uint64_t> parse_position(std::string_view text) {
  while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
  if (text.empty()) return {errc::bad_request, "position is empty"};
  if (text.size() > max_position_digits) return {errc::bad_request, "position is too long"};
  for (char c : text) {
    // from_chars alone would accept a prefix ("12abc"); require the whole field to be digits.
    if (c < '0' || c > '9') return {errc::bad_request, "position must be a decimal number"};
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) return {errc::bad_request, "position is out of range"};
  if (ec != std::errc{} || end != text.data() + text.size()) {
    return {errc::bad_request, "position must be a decimal number"};
  }
  return value;
}

}  // namespace relay
