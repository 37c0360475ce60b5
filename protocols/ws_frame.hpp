#pragma once
// RFC 6455 framing, independent of any socket: server frames are encoded once (header included)
// and shared by every session that sends them; client frames are decoded by an incremental reader
// that treats every byte as hostile. No extension is ever negotiated, so RSV bits are always 0.
// The JSON ops carried inside text frames live in protocols/ws.hpp. Pure: no I/O.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace relay::ws {

enum class opcode : uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA
};

/// Close codes we send (RFC 6455 7.4 + PROTOCOL.md).
namespace close_code {
constexpr uint16_t normal = 1000, going_away = 1001, protocol_error = 1002, unsupported = 1003,
                   invalid_payload = 1007, policy = 1008, too_big = 1009, internal = 1011,
                   overloaded = 1013, slow_consumer = 4001;
/// Not sent on the wire: what a close frame without a payload means (RFC 6455 7.1.5).
constexpr uint16_t no_status = 1005;
}  // namespace close_code

/// Header size of a server frame for a payload of n bytes (2, 4 or 10).
std::size_t frame_header_size(std::size_t payload_bytes) noexcept;

/// Appends the header of an unmasked server frame with FIN set (2, 4 or 10 bytes, minimal length
/// encoding). A control opcode (close, ping, pong) requires payload_bytes <= 125.
void append_frame_header(std::string& out, opcode op, std::size_t payload_bytes);

/// Appends a whole unmasked server frame: header + payload.
void append_frame(std::string& out, opcode op, std::string_view payload);

/// A close frame: 2-byte big-endian code + reason. The reason is truncated to keep the payload
/// <= 125 bytes, never cutting a UTF-8 sequence in half; a reason that is not valid UTF-8 is
/// dropped (the peer would fail the connection on it). code must be valid on the wire, except
/// close_code::no_status, which gives a close frame with an empty payload (the echo of a peer's
/// empty close).
std::string close_frame(uint16_t code, std::string_view reason);

/// True when s is valid UTF-8 (RFC 3629: no overlongs, no surrogates D800-DFFF, nothing above
/// U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

/// Sec-WebSocket-Key check: base64 (standard alphabet, with padding) decoding to exactly 16
/// bytes, so 24 characters ending in "==". The 4 unused bits of the last data character are not
/// checked: the key is only hashed, and refusing a sloppy encoder would gain nothing.
bool valid_client_key(std::string_view key) noexcept;

/// Sec-WebSocket-Accept: base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). Empty on an
/// OpenSSL failure.
std::string accept_key(std::string_view key);

/// Incremental reader of client → server frames (masked, RSV 0, known opcodes, control frames
/// unfragmented and <= 125 bytes, messages <= max_message_bytes, text and close reasons valid
/// UTF-8). Memory stays bounded by about max_message_bytes + the bytes of one feed() call, and an
/// idle reader (everything consumed) holds no heap.
class frame_reader {
 public:
  explicit frame_reader(std::size_t max_message_bytes) noexcept;

  /// Appends received bytes (copied into an internal buffer). Ignored after a fail.
  void feed(std::string_view bytes);

  struct event {
    enum class kind : uint8_t { need_more, text, binary, ping, pong, close, fail };
    kind what = kind::need_more;
    // text/binary: the whole message (unmasked, fragments joined); ping/pong: their payload;
    // close: the reason; fail: a short human-readable reason.
    std::string_view payload;
    // close: the peer's code (1005 when the close frame had no payload); fail: the close code WE
    // must send (1002 protocol error, 1007 invalid UTF-8, 1009 too big).
    uint16_t code = 0;
  };

  /// Extracts the next event from the buffered bytes. need_more: wait for more bytes. Control
  /// frames between the fragments of a message are returned without disturbing it. After a fail,
  /// every call answers the same fail (the connection must be closed). A message too big fails
  /// (1009) as soon as its frame header arrives, before its payload is buffered. Views stay valid
  /// until the next next()/feed() call.
  event next();

  /// Bytes currently held (unconsumed input + a partly assembled fragmented message), for
  /// accounting.
  std::size_t buffered_bytes() const noexcept;

 private:
  event fail(uint16_t code, std::string_view reason);
  event need_more();

  std::size_t max_message_bytes_;
  std::string in_;       // received bytes; [0, pos_) already consumed, erased lazily
  std::size_t pos_ = 0;  // compacting only in feed() and on need_more keeps next() O(frame)
  std::string message_;  // fragments of the data message in progress
  opcode message_op_ = opcode::text;
  bool in_message_ = false;
  bool message_delivered_ = false;  // message_ was returned by the last next(): drop it next time
  bool failed_ = false;
  uint16_t fail_code_ = 0;
  std::string_view fail_reason_;  // always a string literal
};

}  // namespace relay::ws
