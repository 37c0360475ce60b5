#include "protocols/ws_frame.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace relay::ws {
namespace {

using kind = frame_reader::event::kind;

constexpr uint8_t fin = 0x80;
constexpr std::array<unsigned char, 4> rfc_key{0x37, 0xfa, 0x21, 0x3d};

constexpr uint8_t op(opcode o) { return static_cast<uint8_t>(o); }

/// Client-side framing, as a browser does it: first byte (FIN | RSV | opcode) given whole so
/// tests can set any bit. length_bytes 0 picks the minimal encoding; 2 or 8 forces that one.
std::string client_frame(uint8_t first_byte, std::string_view payload,
                         std::array<unsigned char, 4> key = rfc_key, int length_bytes = 0,
                         bool masked = true) {
  std::string out;
  out.push_back(static_cast<char>(first_byte));
  const uint8_t mask_bit = masked ? 0x80 : 0;
  const uint64_t n = payload.size();
  if (length_bytes == 0) length_bytes = n <= 125 ? 0 : n <= 0xFFFF ? 2 : 8;
  if (length_bytes == 0) {
    out.push_back(static_cast<char>(mask_bit | n));
  } else {
    out.push_back(static_cast<char>(mask_bit | (length_bytes == 2 ? 126 : 127)));
    for (int i = length_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(n >> (8 * i)));
  }
  if (masked) out.append(reinterpret_cast<const char*>(key.data()), 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    out.push_back(
        static_cast<char>(static_cast<unsigned char>(payload[i]) ^ (masked ? key[i % 4] : 0)));
  }
  return out;
}

/// A header alone announcing n payload bytes (the payload never follows).
std::string client_header(uint8_t first_byte, uint64_t n, int length_bytes) {
  std::string out;
  out.push_back(static_cast<char>(first_byte));
  out.push_back(static_cast<char>(0x80 | (length_bytes == 2 ? 126 : 127)));
  for (int i = length_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(n >> (8 * i)));
  out.append(reinterpret_cast<const char*>(rfc_key.data()), 4);
  return out;
}

/// Turns a server frame into what a client would send for it: mask bit set, key inserted,
/// payload masked.
std::string masked_copy(std::string_view server_frame, std::array<unsigned char, 4> key) {
  const auto len7 = static_cast<unsigned char>(server_frame[1]) & 0x7F;
  const std::size_t header = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
  std::string out{server_frame.substr(0, header)};
  out[1] = static_cast<char>(out[1] | 0x80);
  out.append(reinterpret_cast<const char*>(key.data()), 4);
  for (std::size_t i = header; i < server_frame.size(); ++i) {
    out.push_back(
        static_cast<char>(static_cast<unsigned char>(server_frame[i]) ^ key[(i - header) % 4]));
  }
  return out;
}

struct recorded {
  kind what;
  std::string payload;
  uint16_t code;
  bool operator==(const recorded&) const = default;
};

std::ostream& operator<<(std::ostream& os, const recorded& r) {
  return os << "{kind " << static_cast<int>(r.what) << ", \"" << r.payload << "\", " << r.code
            << "}";
}

/// Calls next() until need_more or fail (included), copying each event.
std::vector<recorded> drain(frame_reader& reader) {
  std::vector<recorded> out;
  for (;;) {
    auto e = reader.next();
    if (e.what == kind::need_more) return out;
    out.push_back({e.what, std::string{e.payload}, e.code});
    if (e.what == kind::fail) return out;
  }
}

std::vector<recorded> read_all(std::string_view bytes, std::size_t max = 1 << 20) {
  frame_reader reader{max};
  reader.feed(bytes);
  return drain(reader);
}

/// The fail code a single buffer of input ends in (0: no fail).
uint16_t fail_code(std::string_view bytes, std::size_t max = 1 << 20) {
  auto events = read_all(bytes, max);
  if (events.empty() || events.back().what != kind::fail) return 0;
  return events.back().code;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + 3);
  return s;
}

// --- server frames ---------------------------------------------------------------------------

TEST(ws_frame, header_sizes_round_trip_through_a_client_reader) {
  const std::pair<std::size_t, std::size_t> cases[] = {
      {0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}};
  for (auto [n, header] : cases) {
    SCOPED_TRACE(n);
    EXPECT_EQ(frame_header_size(n), header);
    std::string frame;
    const std::string payload = pattern(n);
    append_frame(frame, opcode::binary, payload);
    ASSERT_EQ(frame.size(), header + n);
    EXPECT_EQ(static_cast<unsigned char>(frame[0]), 0x82);
    EXPECT_EQ(frame.substr(header), payload);

    std::string header_only;
    append_frame_header(header_only, opcode::binary, n);
    EXPECT_EQ(header_only, frame.substr(0, header));

    auto events = read_all(masked_copy(frame, {1, 2, 3, 4}));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0], (recorded{kind::binary, payload, 0}));
  }
}

TEST(ws_frame, headers_use_the_minimal_big_endian_length) {
  std::string out;
  append_frame_header(out, opcode::text, 126);
  EXPECT_EQ(out, std::string("\x81\x7E\x00\x7E", 4));
  out.clear();
  append_frame_header(out, opcode::text, 0x12345);
  EXPECT_EQ(out, std::string("\x81\x7F\x00\x00\x00\x00\x00\x01\x23\x45", 10));
  out.clear();
  append_frame(out, opcode::text, "Hello");  // RFC 6455 5.7, unmasked
  EXPECT_EQ(out, "\x81\x05Hello");
  out = "prefix";
  append_frame(out, opcode::pong, "");
  EXPECT_EQ(out, std::string("prefix\x8A\x00", 8));
}

// --- reader: well-formed input ---------------------------------------------------------------

TEST(ws_frame_reader, rfc_masked_hello) {
  const std::string bytes("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  EXPECT_EQ(bytes, client_frame(fin | op(opcode::text), "Hello"));
  auto events = read_all(bytes);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (recorded{kind::text, "Hello", 0}));
}

TEST(ws_frame_reader, single_frames_of_every_kind) {
  std::string bytes = client_frame(fin | op(opcode::text), "{\"op\":\"ping\"}") +
                      client_frame(fin | op(opcode::binary), std::string("\0\xff\x01", 3)) +
                      client_frame(fin | op(opcode::ping), "p") +
                      client_frame(fin | op(opcode::pong), "") +
                      client_frame(fin | op(opcode::text), "");
  auto events = read_all(bytes);
  const std::vector<recorded> expected{{kind::text, "{\"op\":\"ping\"}", 0},
                                       {kind::binary, std::string("\0\xff\x01", 3), 0},
                                       {kind::ping, "p", 0},
                                       {kind::pong, "", 0},
                                       {kind::text, "", 0}};
  EXPECT_EQ(events, expected);
}

TEST(ws_frame_reader, unmasks_payloads_of_every_length_and_alignment) {
  for (std::size_t n : {1u, 3u, 7u, 8u, 9u, 15u, 16u, 17u, 1003u}) {
    SCOPED_TRACE(n);
    const std::string payload = pattern(n);
    auto events =
        read_all(client_frame(fin | op(opcode::binary), payload, {0xde, 0xad, 0xbe, 0xef}));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].payload, payload);
  }
}

TEST(ws_frame_reader, accepts_non_minimal_length_encodings) {
  auto events = read_all(client_frame(fin | op(opcode::text), "Hello", rfc_key, 2) +
                         client_frame(fin | op(opcode::text), "world", rfc_key, 8));
  const std::vector<recorded> expected{{kind::text, "Hello", 0}, {kind::text, "world", 0}};
  EXPECT_EQ(events, expected);
}

TEST(ws_frame_reader, fragmented_text_with_an_interleaved_ping) {
  frame_reader reader{1024};
  reader.feed(client_frame(op(opcode::text), "Hel"));
  reader.feed(client_frame(fin | op(opcode::ping), "are you there"));
  auto e = reader.next();
  EXPECT_EQ(e.what, kind::ping);
  EXPECT_EQ(e.payload, "are you there");
  // The first fragment is held while the message is incomplete.
  EXPECT_EQ(reader.next().what, kind::need_more);
  EXPECT_EQ(reader.buffered_bytes(), 3u);

  reader.feed(client_frame(op(opcode::continuation), ""));
  reader.feed(client_frame(fin | op(opcode::pong), ""));
  reader.feed(client_frame(fin | op(opcode::continuation), "lo"));
  auto events = drain(reader);
  const std::vector<recorded> expected{{kind::pong, "", 0}, {kind::text, "Hello", 0}};
  EXPECT_EQ(events, expected);
  EXPECT_EQ(reader.buffered_bytes(), 0u);
}

TEST(ws_frame_reader, utf8_sequence_split_across_fragments_is_valid) {
  auto events = read_all(client_frame(op(opcode::text), "smile \xF0\x9F") +
                         client_frame(fin | op(opcode::ping), "x") +
                         client_frame(fin | op(opcode::continuation), "\x98\x80!"));
  const std::vector<recorded> expected{{kind::ping, "x", 0},
                                       {kind::text, "smile \xF0\x9F\x98\x80!", 0}};
  EXPECT_EQ(events, expected);
}

TEST(ws_frame_reader, fragmented_binary_then_a_new_message) {
  auto events = read_all(client_frame(op(opcode::binary), "ab") +
                         client_frame(op(opcode::continuation), "cd") +
                         client_frame(fin | op(opcode::continuation), "ef") +
                         client_frame(fin | op(opcode::text), "next"));
  const std::vector<recorded> expected{{kind::binary, "abcdef", 0}, {kind::text, "next", 0}};
  EXPECT_EQ(events, expected);
}

TEST(ws_frame_reader, byte_at_a_time_gives_the_same_events) {
  const std::string bytes = client_frame(fin | op(opcode::text), "first") +
                            client_frame(op(opcode::binary), pattern(200), {9, 8, 7, 6}) +
                            client_frame(fin | op(opcode::pong), "pong!") +
                            client_frame(fin | op(opcode::continuation), pattern(70000)) +
                            client_frame(fin | op(opcode::ping), "") +
                            client_frame(fin | op(opcode::text), "caf\xC3\xA9", rfc_key, 8) +
                            client_frame(fin | op(opcode::close), std::string("\x03\xe8"
                                                                              "bye",
                                                                              5));
  const auto whole = read_all(bytes);
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_EQ(whole[2].payload, pattern(200) + pattern(70000));
  EXPECT_EQ(whole[5], (recorded{kind::close, "bye", 1000}));

  frame_reader reader{1 << 20};
  std::vector<recorded> trickled;
  for (char c : bytes) {
    reader.feed(std::string_view{&c, 1});
    for (auto& r : drain(reader)) trickled.push_back(std::move(r));
  }
  EXPECT_EQ(trickled, whole);
  EXPECT_EQ(reader.buffered_bytes(), 0u);
}

TEST(ws_frame_reader, buffered_bytes_counts_partial_input_and_returns_to_zero) {
  frame_reader reader{1 << 16};
  EXPECT_EQ(reader.buffered_bytes(), 0u);
  const std::string a = client_frame(fin | op(opcode::text), "hello");
  const std::string b = client_frame(op(opcode::binary), pattern(300));
  const std::string c = client_frame(fin | op(opcode::continuation), pattern(10));
  reader.feed(a + b + c.substr(0, 4));
  EXPECT_EQ(reader.buffered_bytes(), a.size() + b.size() + 4);
  EXPECT_EQ(reader.next().what, kind::text);
  EXPECT_EQ(reader.buffered_bytes(), b.size() + 4);
  EXPECT_EQ(reader.next().what, kind::need_more);
  // The first fragment moved into the message; the start of the continuation waits.
  EXPECT_EQ(reader.buffered_bytes(), 300u + 4);
  reader.feed(c.substr(4));
  auto e = reader.next();
  EXPECT_EQ(e.what, kind::binary);
  EXPECT_EQ(e.payload.size(), 310u);
  EXPECT_EQ(reader.next().what, kind::need_more);
  EXPECT_EQ(reader.buffered_bytes(), 0u);
}

TEST(ws_frame_reader, views_of_one_call_survive_until_the_next) {
  frame_reader reader{1024};
  reader.feed(client_frame(fin | op(opcode::text), "one") +
              client_frame(fin | op(opcode::text), "two"));
  auto first = reader.next();
  EXPECT_EQ(first.payload, "one");
  auto second = reader.next();
  EXPECT_EQ(second.payload, "two");
  EXPECT_EQ(reader.next().what, kind::need_more);
}

// --- reader: protocol errors -----------------------------------------------------------------

TEST(ws_frame_reader, unmasked_client_frame_is_a_protocol_error) {
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::text), "hi", rfc_key, 0, false)), 1002);
  std::string server;
  append_frame(server, opcode::ping, "");
  EXPECT_EQ(fail_code(server), 1002);
}

TEST(ws_frame_reader, reserved_bits_are_a_protocol_error) {
  for (uint8_t rsv : {0x40, 0x20, 0x10, 0x70}) {
    SCOPED_TRACE(static_cast<int>(rsv));
    EXPECT_EQ(fail_code(client_frame(fin | rsv | op(opcode::text), "hi")), 1002);
    EXPECT_EQ(fail_code(client_frame(fin | rsv | op(opcode::ping), "")), 1002);
  }
}

TEST(ws_frame_reader, unknown_opcodes_are_a_protocol_error) {
  for (uint8_t code : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
    SCOPED_TRACE(static_cast<int>(code));
    EXPECT_EQ(fail_code(client_frame(fin | code, "")), 1002);
  }
}

TEST(ws_frame_reader, control_frames_must_be_final_and_short) {
  EXPECT_EQ(fail_code(client_frame(op(opcode::ping), "x")), 1002);
  EXPECT_EQ(fail_code(client_frame(op(opcode::close), "")), 1002);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::ping), pattern(126))), 1002);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::pong), pattern(200))), 1002);
  // 125 bytes is the limit, even in a non-minimal encoding.
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::ping), pattern(125))), 0);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::ping), "x", rfc_key, 2)), 1002);
}

TEST(ws_frame_reader, fragmentation_errors) {
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::continuation), "x")), 1002);
  EXPECT_EQ(fail_code(client_frame(op(opcode::continuation), "x")), 1002);
  EXPECT_EQ(
      fail_code(client_frame(op(opcode::text), "a") + client_frame(fin | op(opcode::text), "b")),
      1002);
  EXPECT_EQ(fail_code(client_frame(op(opcode::text), "a") + client_frame(op(opcode::binary), "b")),
            1002);
  // A finished message does not leave one in progress.
  EXPECT_EQ(fail_code(client_frame(op(opcode::text), "a") +
                      client_frame(fin | op(opcode::continuation), "b") +
                      client_frame(fin | op(opcode::continuation), "c")),
            1002);
}

TEST(ws_frame_reader, sixty_four_bit_length_with_the_high_bit_is_a_protocol_error) {
  EXPECT_EQ(fail_code(client_header(fin | op(opcode::binary), uint64_t{1} << 63, 8)), 1002);
  EXPECT_EQ(fail_code(client_header(fin | op(opcode::binary), ~uint64_t{0}, 8)), 1002);
}

TEST(ws_frame_reader, fail_is_sticky_and_later_input_is_ignored) {
  frame_reader reader{1024};
  reader.feed(client_frame(fin | op(opcode::text), "ok") +
              client_frame(fin | 0x40 | op(opcode::text), "bad") +
              client_frame(fin | op(opcode::text), "never"));
  EXPECT_EQ(reader.next().what, kind::text);
  auto e = reader.next();
  EXPECT_EQ(e.what, kind::fail);
  EXPECT_EQ(e.code, 1002);
  EXPECT_EQ(e.payload, "reserved bits set");
  reader.feed(client_frame(fin | op(opcode::text), "more"));
  EXPECT_EQ(reader.buffered_bytes(), 0u);
  for (int i = 0; i < 3; ++i) {
    auto again = reader.next();
    EXPECT_EQ(again.what, kind::fail);
    EXPECT_EQ(again.code, 1002);
    EXPECT_EQ(again.payload, "reserved bits set");
  }
}

// --- reader: message size --------------------------------------------------------------------

TEST(ws_frame_reader, message_at_the_limit_passes_and_one_byte_more_is_too_big) {
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::binary), pattern(4096)), 4096), 0);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::binary), pattern(4097)), 4096), 1009);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::text), "x"), 0), 1009);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::text), ""), 0), 0);
}

TEST(ws_frame_reader, too_big_fails_on_the_header_before_the_payload_arrives) {
  for (int length_bytes : {2, 8}) {
    SCOPED_TRACE(length_bytes);
    frame_reader reader{4096};
    const std::string header = client_header(fin | op(opcode::binary), 4097, length_bytes);
    // Only the length is needed: the fail comes even before the masking key.
    reader.feed(std::string_view{header}.substr(0, 2 + length_bytes));
    auto e = reader.next();
    EXPECT_EQ(e.what, kind::fail);
    EXPECT_EQ(e.code, 1009);
    EXPECT_EQ(reader.buffered_bytes(), 0u);
  }
  // A huge announced length never makes the reader wait for it.
  EXPECT_EQ(fail_code(client_header(fin | op(opcode::binary), uint64_t{1} << 40, 8), 4096), 1009);
}

TEST(ws_frame_reader, too_big_counts_the_fragments_so_far) {
  frame_reader reader{4096};
  reader.feed(client_frame(op(opcode::text), pattern(3000)));
  reader.feed(client_frame(fin | op(opcode::ping), ""));
  EXPECT_EQ(reader.next().what, kind::ping);
  reader.feed(client_frame(op(opcode::continuation), pattern(1096)));  // exactly at the limit
  EXPECT_EQ(reader.next().what, kind::need_more);
  reader.feed(client_header(fin | op(opcode::continuation), 1, 2));
  auto e = reader.next();
  EXPECT_EQ(e.what, kind::fail);
  EXPECT_EQ(e.code, 1009);
}

// --- reader: UTF-8 ---------------------------------------------------------------------------

TEST(ws_frame, valid_utf8_cases) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ascii, long enough to take the eight-byte path twice"));
  EXPECT_TRUE(valid_utf8(std::string("nul \0 inside", 12)));
  EXPECT_TRUE(valid_utf8("caf\xC3\xA9"));
  EXPECT_TRUE(valid_utf8("\xE2\x82\xAC euro"));
  EXPECT_TRUE(valid_utf8("emoji \xF0\x9F\x98\x80"));
  EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_TRUE(valid_utf8("\xED\x9F\xBF"));      // U+D7FF, just below the surrogates
  EXPECT_TRUE(valid_utf8("\xEE\x80\x80"));      // U+E000, just above them

  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xC1\xBF"));          // overlong
  EXPECT_FALSE(valid_utf8("\xE0\x80\xAF"));      // overlong, 3 bytes
  EXPECT_FALSE(valid_utf8("\xF0\x80\x80\xAF"));  // overlong, 4 bytes
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(valid_utf8("\xED\xBF\xBF"));      // surrogate U+DFFF
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(valid_utf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(valid_utf8("\xFF"));
  EXPECT_FALSE(valid_utf8("\x80"));             // lone continuation
  EXPECT_FALSE(valid_utf8("abc\xF0\x9F\x98"));  // truncated at the end
  EXPECT_FALSE(valid_utf8("\xC3"));
  EXPECT_FALSE(
      valid_utf8("\xE2\x82"
                 "x"));  // truncated in the middle
  EXPECT_FALSE(valid_utf8("12345678\xC3\xA9\x80 tail after"));
}

TEST(ws_frame_reader, text_must_be_valid_utf8_binary_need_not) {
  for (std::string_view bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok\xF0\x9F\x98"}) {
    SCOPED_TRACE(std::string{bad});
    EXPECT_EQ(fail_code(client_frame(fin | op(opcode::text), bad)), 1007);
    EXPECT_EQ(fail_code(client_frame(op(opcode::text), "ok ") +
                        client_frame(fin | op(opcode::continuation), bad)),
              1007);
    EXPECT_EQ(fail_code(client_frame(fin | op(opcode::binary), bad)), 0);
  }
  auto events = read_all(client_frame(fin | op(opcode::text), "\xF0\x9F\x98\x80"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (recorded{kind::text, "\xF0\x9F\x98\x80", 0}));
}

// --- reader: close ---------------------------------------------------------------------------

TEST(ws_frame_reader, close_frames) {
  auto events = read_all(client_frame(fin | op(opcode::close), ""));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (recorded{kind::close, "", 1005}));

  events = read_all(client_frame(fin | op(opcode::close), "\x03\xe9going \xE2\x86\x92 away"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (recorded{kind::close, "going \xE2\x86\x92 away", 1001}));

  events = read_all(client_frame(fin | op(opcode::close), std::string("\x03\xe8", 2)));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (recorded{kind::close, "", 1000}));
}

TEST(ws_frame_reader, close_codes_valid_to_receive) {
  auto close_with = [](uint16_t code) {
    std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    return fail_code(client_frame(fin | op(opcode::close), payload));
  };
  for (uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                        3000, 3999, 4000, 4001, 4999}) {
    EXPECT_EQ(close_with(code), 0) << code;
  }
  for (uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
    EXPECT_EQ(close_with(code), 1002) << code;
  }
}

TEST(ws_frame_reader, malformed_close_payloads) {
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::close), "\x03")), 1002);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::close), "\x03\xe8\xC0\xAF")), 1007);
  EXPECT_EQ(fail_code(client_frame(fin | op(opcode::close), "\x03\xe8\xED\xA0\x80")), 1007);
}

// --- handshake -------------------------------------------------------------------------------

TEST(ws_frame, accept_key_rfc_example) {
  // RFC 6455 1.3 (also what Python's hashlib + base64 give).
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(ws_frame, client_key_must_be_base64_of_16_bytes) {
  EXPECT_TRUE(valid_client_key("dGhlIHNhbXBsZSBub25jZQ=="));
  EXPECT_TRUE(valid_client_key("AAAAAAAAAAAAAAAAAAAAAA=="));
  EXPECT_TRUE(valid_client_key("+/+/+/+/+/+/+/+/+/+/+w=="));

  EXPECT_FALSE(valid_client_key(""));
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25jZQ="));    // 23 chars
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25jZQ==="));  // 25 chars
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25jZQAA"));   // no padding
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25jZ==="));   // 15 bytes
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25j=Q=="));   // '=' inside
  EXPECT_FALSE(valid_client_key("-_hlIHNhbXBsZSBub25jZQ=="));   // base64url alphabet
  EXPECT_FALSE(valid_client_key("dGhlIHNhbXBsZSBub25jZQ= "));
  EXPECT_FALSE(valid_client_key(" dGhlIHNhbXBsZSBub25jZQ=="));
  EXPECT_FALSE(valid_client_key(std::string("dGhlIHNhbXBsZSBu\0b25jZQ==", 24)));
}

// --- close frames we send --------------------------------------------------------------------

TEST(ws_frame, close_frame_bytes) {
  EXPECT_EQ(close_frame(close_code::normal, ""), std::string("\x88\x02\x03\xe8", 4));
  EXPECT_EQ(close_frame(close_code::slow_consumer, "slow"), std::string("\x88\x06\x0f\xa1slow", 8));
  EXPECT_EQ(close_frame(close_code::no_status, "ignored"), std::string("\x88\x00", 2));
  // A reason that is not UTF-8 is dropped, keeping the code.
  EXPECT_EQ(close_frame(close_code::policy, "\xC0\xAF"), std::string("\x88\x02\x03\xf0", 4));
}

TEST(ws_frame, close_frame_truncates_on_a_utf8_boundary) {
  const std::string reasons[] = {
      std::string(200, 'a'),
      [] {
        std::string s;
        for (int i = 0; i < 100; ++i) s += "\xC3\xA9";
        return s;
      }(),
      [] {
        std::string s;
        for (int i = 0; i < 60; ++i) s += "\xE2\x82\xAC";
        return s;
      }(),
      [] {
        std::string s = "x";
        for (int i = 0; i < 40; ++i) s += "\xF0\x9F\x98\x80";
        return s;
      }(),
      "ab" +
          [] {
            std::string s;
            for (int i = 0; i < 40; ++i) s += "\xF0\x9F\x98\x80";
            return s;
          }(),
  };
  for (const auto& reason : reasons) {
    SCOPED_TRACE(reason);
    const std::string frame = close_frame(close_code::going_away, reason);
    ASSERT_GE(frame.size(), 4u);
    const std::size_t payload = static_cast<unsigned char>(frame[1]);
    EXPECT_LE(payload, 125u);
    EXPECT_EQ(frame.size(), 2 + payload);
    EXPECT_GE(payload, 125u - 3);  // at most one cut sequence is lost
    const std::string kept = frame.substr(4);
    EXPECT_TRUE(valid_utf8(kept));
    EXPECT_EQ(reason.compare(0, kept.size(), kept), 0);

    // What the client reads back.
    auto events = read_all(masked_copy(frame, {5, 6, 7, 8}));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0], (recorded{kind::close, kept, close_code::going_away}));
  }
}

// --- hostile input ---------------------------------------------------------------------------

TEST(ws_frame_reader, random_bytes_never_crash_and_stay_bounded) {
  std::mt19937 rng{20240611};
  for (int round = 0; round < 2000; ++round) {
    frame_reader reader{512};
    std::string bytes(rng() % 300, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    // Bias towards plausible frames: masked, small lengths.
    if (bytes.size() >= 2 && round % 2 == 0) {
      bytes[0] = static_cast<char>((bytes[0] & 0x8F));
      bytes[1] = static_cast<char>(0x80 | (bytes[1] & 0x3F));
    }
    std::size_t at = 0;
    while (at < bytes.size()) {
      const std::size_t chunk = std::min<std::size_t>(1 + rng() % 17, bytes.size() - at);
      reader.feed(std::string_view{bytes}.substr(at, chunk));
      at += chunk;
      for (int guard = 0; guard < 1000; ++guard) {
        auto e = reader.next();
        if (e.what == kind::need_more || e.what == kind::fail) break;
      }
      EXPECT_LE(reader.buffered_bytes(), bytes.size());
    }
  }
}

}  // namespace
}  // namespace relay::ws
