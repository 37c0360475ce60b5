#include "protocols/ws_frame.hpp"

#include <openssl/evp.h>

#include <array>
#include <cassert>
#include <cstring>

namespace relay::ws {

namespace {

constexpr std::size_t max_control_payload = 125;
// A buffer left holding a small partial frame gives back capacity past this (and 4x its size).
constexpr std::size_t keep_capacity = 16 * 1024;

constexpr bool is_control(uint8_t op) noexcept { return (op & 0x8) != 0; }

constexpr bool known_opcode(uint8_t op) noexcept { return op <= 0x2 || (op >= 0x8 && op <= 0xA); }

/// Codes a peer may put in a close frame: RFC 6455 7.4.1 defined ones (minus 1004-1006, 1015,
/// which never go on the wire), the IANA-registered 1012-1014 (we send 1013 ourselves), and the
/// ranges for libraries and applications.
constexpr bool valid_received_close_code(uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/// XORs payload with the 4-byte masking key in place (RFC 6455 5.3), 8 bytes at a time.
void unmask(char* p, std::size_t n, const unsigned char (&key)[4]) noexcept {
  unsigned char key8[8];
  std::memcpy(key8, key, 4);
  std::memcpy(key8 + 4, key, 4);
  uint64_t key_word;
  std::memcpy(&key_word, key8, 8);
  std::size_t i = 0;
  // Each 8-byte block starts at a multiple of 4, so the key lines up with it unrotated.
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= key_word;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(static_cast<unsigned char>(p[i]) ^ key[i & 3]);
}

/// Releases a string's heap block (clear() and shrink_to_fit() may keep it).
void release(std::string& s) noexcept { std::string{}.swap(s); }

constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<bool, 256> make_b64_table() {
  std::array<bool, 256> t{};
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(b64_alphabet[i])] = true;
  return t;
}
constexpr auto b64_table = make_b64_table();

}  // namespace

std::size_t frame_header_size(std::size_t payload_bytes) noexcept {
  if (payload_bytes <= 125) return 2;
  if (payload_bytes <= 0xFFFF) return 4;
  return 10;
}

void append_frame_header(std::string& out, opcode op, std::size_t payload_bytes) {
  assert(!is_control(static_cast<uint8_t>(op)) || payload_bytes <= max_control_payload);
  char header[10];
  header[0] = static_cast<char>(0x80 | static_cast<uint8_t>(op));
  std::size_t size = 2;
  if (payload_bytes <= 125) {
    header[1] = static_cast<char>(payload_bytes);
  } else if (payload_bytes <= 0xFFFF) {
    header[1] = 126;
    header[2] = static_cast<char>(payload_bytes >> 8);
    header[3] = static_cast<char>(payload_bytes);
    size = 4;
  } else {
    header[1] = 127;
    const auto n = static_cast<uint64_t>(payload_bytes);
    for (int i = 0; i < 8; ++i) header[2 + i] = static_cast<char>(n >> (56 - 8 * i));
    size = 10;
  }
  out.append(header, size);
}

void append_frame(std::string& out, opcode op, std::string_view payload) {
  out.reserve(out.size() + frame_header_size(payload.size()) + payload.size());
  append_frame_header(out, op, payload.size());
  out.append(payload);
}

std::string close_frame(uint16_t code, std::string_view reason) {
  std::string out;
  if (code == close_code::no_status) {
    append_frame_header(out, opcode::close, 0);
    return out;
  }
  constexpr std::size_t max_reason = max_control_payload - 2;
  if (reason.size() > max_reason) {
    // Back up to the first byte of the sequence that would be cut (continuations are 10xxxxxx).
    std::size_t cut = max_reason;
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  if (!valid_utf8(reason)) reason = {};
  out.reserve(2 + 2 + reason.size());
  append_frame_header(out, opcode::close, 2 + reason.size());
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason);
  return out;
}

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    // Most text is ASCII: skip it 8 bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Table 3-7 of the Unicode standard: the allowed range of the second byte depends on the
    // first, which rules out overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;  // 80-C1 (continuation or overlong lead), F5-FF
    }
    if (n - i < len) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

bool valid_client_key(std::string_view key) noexcept {
  if (key.size() != 24 || key[22] != '=' || key[23] != '=') return false;
  for (std::size_t i = 0; i < 22; ++i) {
    if (!b64_table[static_cast<unsigned char>(key[i])]) return false;
  }
  return true;
}

std::string accept_key(std::string_view key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(key.size() + guid.size());
  input.append(key).append(guid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1 ||
      digest_len != 20) {
    return {};
  }
  // 20 bytes → 28 base64 characters, plus the NUL EVP_EncodeBlock writes.
  unsigned char encoded[29];
  const int encoded_len = EVP_EncodeBlock(encoded, digest, 20);
  if (encoded_len != 28) return {};
  return std::string{reinterpret_cast<const char*>(encoded), 28};
}

frame_reader::frame_reader(std::size_t max_message_bytes) noexcept
    : max_message_bytes_(max_message_bytes) {}

void frame_reader::feed(std::string_view bytes) {
  if (failed_ || bytes.empty()) return;
  // Views from the last next() die here anyway, so this is the cheap moment to compact.
  if (pos_ > 0) {
    in_.erase(0, pos_);
    pos_ = 0;
  }
  in_.append(bytes);
}

std::size_t frame_reader::buffered_bytes() const noexcept {
  return (in_.size() - pos_) + (message_delivered_ ? 0 : message_.size());
}

frame_reader::event frame_reader::fail(uint16_t code, std::string_view reason) {
  failed_ = true;
  fail_code_ = code;
  fail_reason_ = reason;
  // The connection is going away: hold nothing more.
  release(in_);
  pos_ = 0;
  release(message_);
  in_message_ = false;
  message_delivered_ = false;
  return {event::kind::fail, fail_reason_, fail_code_};
}

frame_reader::event frame_reader::need_more() {
  // No view is returned, so compacting is safe; an idle reader keeps no heap at all, which costs
  // one allocation per read on a busy connection.
  if (pos_ == in_.size()) {
    release(in_);
  } else if (pos_ > 0) {
    in_.erase(0, pos_);
    if (in_.capacity() > keep_capacity && in_.size() < in_.capacity() / 4) in_.shrink_to_fit();
  }
  pos_ = 0;
  return {};
}

frame_reader::event frame_reader::next() {
  if (failed_) return {event::kind::fail, fail_reason_, fail_code_};
  if (message_delivered_) {
    release(message_);
    message_delivered_ = false;
  }
  // Each turn consumes one frame; only a non-final data fragment loops without an event.
  for (;;) {
    const std::size_t avail = in_.size() - pos_;
    if (avail < 2) return need_more();
    const auto* p = reinterpret_cast<const unsigned char*>(in_.data()) + pos_;
    const bool fin = (p[0] & 0x80) != 0;
    const uint8_t op = p[0] & 0x0F;
    const bool masked = (p[1] & 0x80) != 0;
    const uint8_t len7 = p[1] & 0x7F;

    if ((p[0] & 0x70) != 0) return fail(close_code::protocol_error, "reserved bits set");
    if (!known_opcode(op)) return fail(close_code::protocol_error, "unknown opcode");
    if (!masked) return fail(close_code::protocol_error, "unmasked client frame");
    if (is_control(op)) {
      if (!fin) return fail(close_code::protocol_error, "fragmented control frame");
      if (len7 > max_control_payload) {
        return fail(close_code::protocol_error, "control frame over 125 bytes");
      }
    } else if (op == static_cast<uint8_t>(opcode::continuation)) {
      if (!in_message_) return fail(close_code::protocol_error, "continuation without a message");
    } else if (in_message_) {
      return fail(close_code::protocol_error, "new message inside a fragmented one");
    }

    const std::size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (avail < 2 + ext) return need_more();
    uint64_t len = len7;
    if (ext != 0) {
      len = 0;
      for (std::size_t i = 0; i < ext; ++i) len = (len << 8) | p[2 + i];
      if ((len >> 63) != 0) return fail(close_code::protocol_error, "64-bit length high bit set");
    }
    // Checked on the header alone, so a hostile length never makes us buffer its payload.
    if (!is_control(op)) {
      const std::size_t so_far = in_message_ ? message_.size() : 0;
      if (len > max_message_bytes_ - so_far) return fail(close_code::too_big, "message too big");
    }

    const std::size_t header = 2 + ext + 4;
    if (avail < header || avail - header < len) return need_more();
    unsigned char key[4];
    std::memcpy(key, p + 2 + ext, 4);
    char* payload_ptr = in_.data() + pos_ + header;
    const auto n = static_cast<std::size_t>(len);
    unmask(payload_ptr, n, key);
    const std::string_view payload{payload_ptr, n};
    pos_ += header + n;

    switch (static_cast<opcode>(op)) {
      case opcode::ping:
        return {event::kind::ping, payload, 0};
      case opcode::pong:
        return {event::kind::pong, payload, 0};
      case opcode::close: {
        if (n == 0) return {event::kind::close, {}, close_code::no_status};
        if (n == 1) return fail(close_code::protocol_error, "close payload of 1 byte");
        const auto code = static_cast<uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                                static_cast<unsigned char>(payload[1]));
        if (!valid_received_close_code(code)) {
          return fail(close_code::protocol_error, "invalid close code");
        }
        const std::string_view reason = payload.substr(2);
        if (!valid_utf8(reason)) {
          return fail(close_code::invalid_payload, "close reason not UTF-8");
        }
        return {event::kind::close, reason, code};
      }
      case opcode::text:
      case opcode::binary:
        if (!fin) {
          in_message_ = true;
          message_op_ = static_cast<opcode>(op);
          message_.assign(payload);
          continue;
        }
        // The common case, a whole message in one frame, is returned in place: no copy.
        if (op == static_cast<uint8_t>(opcode::text) && !valid_utf8(payload)) {
          return fail(close_code::invalid_payload, "text message not UTF-8");
        }
        return {op == static_cast<uint8_t>(opcode::text) ? event::kind::text : event::kind::binary,
                payload, 0};
      case opcode::continuation:
        message_.append(payload);
        if (!fin) continue;
        in_message_ = false;
        if (message_op_ == opcode::text && !valid_utf8(message_)) {
          return fail(close_code::invalid_payload, "text message not UTF-8");
        }
        message_delivered_ = true;
        return {message_op_ == opcode::text ? event::kind::text : event::kind::binary, message_, 0};
    }
    return fail(close_code::protocol_error, "unknown opcode");  // unreachable: checked above
  }
}

}  // namespace relay::ws
