#pragma once
// The `rooms` claim of a token: glob patterns naming the rooms its subject may join, send to,
// read the history of and subscribe to. Pure functions; bounded and linear in practice.
//
// Pattern syntax (documented in README "Authentication"): the room id alphabet
// [A-Za-z0-9._:-] matches itself, `?` matches any one character, `*` any run of characters
// (also none). Nothing else: no classes, no escapes (room ids never contain `*` or `?`).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relay {

/// True for 1..max_room_pattern_bytes characters of the room id alphabet, `*` and `?`.
bool valid_room_pattern(std::string_view pattern) noexcept;

/// Glob match of a whole room id. No recursion and no backtracking past the last `*`: at most
/// |pattern| × |room| steps, so a hostile pattern (`a*a*a*…b`) costs microseconds, not years.
bool glob_match(std::string_view pattern, std::string_view room) noexcept;

/// The access rule: no `rooms` claim allows every room; otherwise a room must match one pattern.
bool room_allowed(const std::optional<std::vector<std::string>>& patterns,
                  std::string_view room) noexcept;

}  // namespace relay
