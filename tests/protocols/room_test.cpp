#include "protocols/room.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>

namespace relay {
namespace {

const room_limits limits;

room_message_input expect_message(std::string_view body, const room_limits& l = limits) {
  auto r = parse_room_message(body, l);
  EXPECT_TRUE(r) << body << ": " << (r ? "" : r.err().message);
  return r ? *r : room_message_input{};
}

void expect_error(std::string_view body, errc code, const room_limits& l = limits) {
  auto r = parse_room_message(body, l);
  ASSERT_FALSE(r) << body;
  EXPECT_EQ(r.err().code, code) << body << ": " << r.err().message;
}

// ---- room ids --------------------------------------------------------------------------------

TEST(room, valid_room_ids) {
  for (std::string id :
       {std::string{"a"}, std::string{"lobby"}, std::string{"A.b_c:d-9"},
        std::string{"org:acme:general"}, std::string{".."}, std::string(128, 'x')}) {
    EXPECT_TRUE(valid_room_id(id)) << id;
  }
}

TEST(room, invalid_room_ids) {
  for (std::string id :
       {std::string{""}, std::string(129, 'x'), std::string{"a b"}, std::string{"a/b"},
        std::string{"a%2Fb"}, std::string{"a+b"}, std::string{"caf\xc3\xa9"}, std::string{"a\"b"},
        std::string{"a\0b", 3}, std::string{"a?b"}, std::string{"a#b"}, std::string{"~"}}) {
    EXPECT_FALSE(valid_room_id(id)) << id;
  }
}

// ---- message bodies --------------------------------------------------------------------------

TEST(room, parses_text_data_and_client_msg_id) {
  auto m = expect_message(R"({"text":"hello","data":{"k": [1, null]},"client_msg_id":"c1"})");
  EXPECT_TRUE(m.has_text);
  EXPECT_EQ(m.text, "hello");
  EXPECT_EQ(m.data, R"({"k":[1,null]})");
  EXPECT_EQ(m.client_msg_id, "c1");

  m = expect_message(R"({"text":"only"})");
  EXPECT_EQ(m.text, "only");
  EXPECT_EQ(m.data, "");
  EXPECT_EQ(m.client_msg_id, "");

  m = expect_message(R"({"data":0,"text":null,"client_msg_id":null,"unknown":1})");
  EXPECT_FALSE(m.has_text);
  EXPECT_EQ(m.data, "0");

  m = expect_message(R"({"text":""})");
  EXPECT_TRUE(m.has_text);
  EXPECT_EQ(m.text, "");

  m = expect_message(R"({"text":"\u00e9\n\"q\""})");
  EXPECT_EQ(m.text, "\xc3\xa9\n\"q\"");
}

TEST(room, refuses_malformed_bodies) {
  for (std::string_view bad : {"",
                               "{",
                               "[]",
                               "null",
                               "\"text\"",
                               "1",
                               R"({})",
                               R"({"text":null})",
                               R"({"data":null})",
                               R"({"client_msg_id":"c"})",
                               R"({"text":1})",
                               R"({"text":["a"]})",
                               R"({"text":{}})",
                               R"({"text":"a","client_msg_id":1})",
                               R"({"text":"a","client_msg_id":""})",
                               R"({"text":"a","client_msg_id":")"
                               "\xff"
                               R"("})",
                               "{\"text\":\"\xc3\"}",
                               R"({"data":1e400})",
                               R"({"text":"a",})",
                               R"({"text":"a"} {})"}) {
    expect_error(bad, errc::bad_request);
  }
  std::string deep = R"({"data":)" + std::string(70, '[') + std::string(70, ']') + "}";
  expect_error(deep, errc::bad_request);
  expect_error(R"({"text":"a","client_msg_id":")" + std::string(129, 'c') + R"("})",
               errc::bad_request);
}

TEST(room, oversized_text_and_data_are_too_large) {
  room_limits small{4, 6, 3};
  expect_message(R"({"text":"1234","data":"1234","client_msg_id":"abc"})", small);
  expect_error(R"({"text":"12345"})", errc::too_large, small);
  expect_error(R"({"data":"12345"})", errc::too_large, small);
  expect_error(R"({"text":"a","client_msg_id":"abcd"})", errc::bad_request, small);
  // Text is measured in UTF-8 bytes: two two-byte characters fill it, a third overflows.
  expect_message(R"({"text":"\u00e9\u00e9"})", small);
  expect_error(R"({"text":"\u00e9\u00e9\u00e9"})", errc::too_large, small);
}

// ---- encoders --------------------------------------------------------------------------------

TEST(room, message_data_exact) {
  room_message_input m;
  m.text = "hi";
  m.has_text = true;
  EXPECT_EQ(room_message_data("M1", "alice", m),
            R"({"message_id":"M1","user":"alice","text":"hi"})");
  m.data = R"({"a":1})";
  m.client_msg_id = "c-9";
  EXPECT_EQ(
      room_message_data("M1", "alice", m),
      R"({"message_id":"M1","user":"alice","text":"hi","data":{"a":1},"client_msg_id":"c-9"})");
  m.has_text = false;
  m.text.clear();
  m.client_msg_id.clear();
  EXPECT_EQ(room_message_data("M1", "alice", m),
            R"({"message_id":"M1","user":"alice","data":{"a":1}})");
}

TEST(room, message_data_escapes_and_round_trips) {
  room_message_input m;
  m.text = std::string{"q\"\\/\n\t\x01\0end \xc3\xa9", 14};
  m.has_text = true;
  m.client_msg_id = "id\"";
  std::string out = room_message_data("M", "u\"ser\\", m);
  auto v = boost::json::parse(out);
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("text").as_string(), boost::json::string_view(m.text));
  EXPECT_EQ(o.at("user").as_string(), "u\"ser\\");
  EXPECT_EQ(o.at("client_msg_id").as_string(), "id\"");
  EXPECT_EQ(out.find('\n'), std::string::npos);  // one line, as SSE framing needs
}

TEST(room, parse_then_encode_round_trips) {
  auto m = expect_message(R"({"text":"a\"b","data":[1,"x"],"client_msg_id":"k"})");
  EXPECT_EQ(room_message_data("id", "bob", m),
            R"({"message_id":"id","user":"bob","text":"a\"b","data":[1,"x"],"client_msg_id":"k"})");
}

TEST(room, presence_json_exact) {
  EXPECT_EQ(presence_json({}), R"({"members":[]})");
  EXPECT_EQ(presence_json({{"alice", 2}, {"b\"ob", 1}}),
            R"({"members":[{"user":"alice","sessions":2},{"user":"b\"ob","sessions":1}]})");
}

TEST(room, message_ids_are_unique_and_url_safe) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = new_message_id();
    ASSERT_EQ(id.size(), 16u);
    for (char c : id) {
      bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-';
      EXPECT_TRUE(ok) << id;
    }
    EXPECT_TRUE(seen.insert(id).second);
  }
}

}  // namespace
}  // namespace relay
