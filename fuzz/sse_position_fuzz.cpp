// libFuzzer target for SSE resume positions (build: fuzz/README.md): the Last-Event-ID header and
// the `after=` query parameter. parse_position is checked against a plain reference: blanks
// around at most 20 decimal digits whose value fits in 64 bits, nothing else.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocols/http_api.hpp"
#include "protocols/sse.hpp"

namespace {

std::optional<uint64_t> reference(std::string_view s) {
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  if (s.empty() || s.size() > 20) return std::nullopt;
  unsigned __int128 v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > UINT64_MAX) return std::nullopt;
  return static_cast<uint64_t>(v);
}

void compare(std::string_view text) {
  auto got = relay::parse_position(text);
  auto want = reference(text);
  if (got.ok() != want.has_value()) __builtin_trap();
  if (got && *got != *want) __builtin_trap();
  if (!got && got.err().code != relay::errc::bad_request) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input{reinterpret_cast<const char*>(data), size};
  compare(input);  // as a Last-Event-ID header value
  // As a request target: /v1/runs/ID/events?...after=...
  const std::string target = "/v1/runs/AAAAAAAAAAAAAAAAAAAAAAAA/events?" + std::string{input};
  if (auto after = relay::query_param(target, "after")) {
    if (after->size() > input.size()) __builtin_trap();  // decoding never grows a value
    compare(*after);
  }
  (void)relay::match_route("GET", target);
  return 0;
}
