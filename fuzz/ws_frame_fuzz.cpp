// libFuzzer target for the client frame reader and the UTF-8 check (build: fuzz/README.md).
// The first input byte picks the chunk size, so the fuzzer explores frames split at every point.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocols/ws_frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input{reinterpret_cast<const char*>(data), size};
  (void)relay::ws::valid_utf8(input);
  if (input.empty()) return 0;

  constexpr std::size_t max_message = 4096;
  const std::size_t chunk = 1 + static_cast<uint8_t>(input[0]) % 64;
  const std::string_view frames = input.substr(1);
  relay::ws::frame_reader reader{max_message};
  using kind = relay::ws::frame_reader::event::kind;
  for (std::size_t at = 0; at < frames.size(); at += chunk) {
    reader.feed(frames.substr(at, chunk));
    for (;;) {
      const auto e = reader.next();
      if (e.what == kind::need_more) break;
      if (e.what == kind::fail) return 0;
      // Touch every payload byte so ASan sees a view that outlived its buffer.
      volatile char sink = 0;
      for (char c : e.payload) sink = static_cast<char>(sink ^ c);
      if ((e.what == kind::text || e.what == kind::binary) && e.payload.size() > max_message) {
        __builtin_trap();
      }
      if (e.what == kind::text && !relay::ws::valid_utf8(e.payload)) __builtin_trap();
    }
    // Drained, so what is held is a message in progress plus one partial frame, at worst a
    // control frame (6-byte header + 125) after a message at the limit.
    if (reader.buffered_bytes() > max_message + 6 + 125) __builtin_trap();
  }
  return 0;
}
