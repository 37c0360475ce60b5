// libFuzzer target for the WebSocket op decoder (build: fuzz/README.md). Every input must decode
// to an op or to an error of the contract, never crash; a decoded op must respect the bounds.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "protocols/ws.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text{reinterpret_cast<const char*>(data), size};
  relay::ws_limits limits;
  limits.max_message_bytes = 2048;
  limits.max_data_bytes = 512;
  limits.max_text_bytes = 256;
  auto r = relay::ws::decode_client_op(text, limits);
  if (auto* ok = std::get_if<relay::ws::decoded_op>(&r)) {
    if (ok->ref.size() > limits.max_ref_bytes) __builtin_trap();
    if (auto* s = std::get_if<relay::ws::send>(&ok->op)) {
      if (s->message.text.size() > limits.max_text_bytes) __builtin_trap();
      if (s->message.data.size() > limits.max_data_bytes) __builtin_trap();
    }
    if (auto* p = std::get_if<relay::ws::publish>(&ok->op))
      if (p->data.size() > limits.max_data_bytes) __builtin_trap();
    // Encoding answers to what was decoded must work too.
    (void)relay::ws::encode_pong(ok->ref);
  } else {
    auto& failure = std::get<relay::ws::decode_failure>(r);
    if (failure.ref.size() > limits.max_ref_bytes) __builtin_trap();
    (void)relay::ws::encode_error(failure.ref, failure.err);
  }
  return 0;
}
