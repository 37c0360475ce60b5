#include "protocols/room_access.hpp"

#include "protocols/jwt.hpp"

namespace relay {

namespace {

bool room_char(char ch) noexcept {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

}  // namespace

bool valid_room_pattern(std::string_view pattern) noexcept {
  if (pattern.empty() || pattern.size() > max_room_pattern_bytes) return false;
  for (char ch : pattern)
    if (!room_char(ch) && ch != '*' && ch != '?') return false;
  return true;
}

// The classic two-cursor matcher: on a mismatch, only the most recent `*` is retried one
// character further. An earlier `*` never needs a retry (the later one absorbs whatever it would
// have), which is what keeps this polynomial where a recursive matcher is exponential.
bool glob_match(std::string_view pattern, std::string_view room) noexcept {
  std::size_t p = 0;
  std::size_t r = 0;
  std::size_t star = std::string_view::npos;  // position of the last `*` in the pattern
  std::size_t resume = 0;                     // where in `room` that `*` currently ends
  while (r < room.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == room[r])) {
      ++p;
      ++r;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = r;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      r = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool room_allowed(const std::optional<std::vector<std::string>>& patterns,
                  std::string_view room) noexcept {
  if (!patterns) return true;
  for (const auto& p : *patterns)
    if (glob_match(p, room)) return true;
  return false;
}

}  // namespace relay
