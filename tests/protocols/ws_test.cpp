#include "protocols/ws.hpp"

#include <gtest/gtest.h>

#include <string>

namespace relay::ws {
namespace {

const ws_limits limits;

decoded_op expect_op(std::string_view text) {
  auto r = decode_client_op(text, limits);
  if (const auto* f = std::get_if<decode_failure>(&r)) {
    ADD_FAILURE() << text << ": " << f->err.message;
    return {};
  }
  return std::get<decoded_op>(std::move(r));
}

decode_failure expect_failure(std::string_view text, errc code = errc::bad_request,
                              const ws_limits& l = limits) {
  auto r = decode_client_op(text, l);
  if (r.index() != 1) {
    ADD_FAILURE() << "decoded: " << text;
    return {};
  }
  auto f = std::get<decode_failure>(std::move(r));
  EXPECT_EQ(f.err.code, code) << text << ": " << f.err.message;
  EXPECT_FALSE(f.err.message.empty());
  return f;
}

template <class Op>
Op expect_kind(std::string_view text, std::string_view ref = {}) {
  decoded_op d = expect_op(text);
  EXPECT_EQ(d.ref, ref) << text;
  const Op* op = std::get_if<Op>(&d.op);
  if (op == nullptr) {
    ADD_FAILURE() << "wrong op kind for " << text;
    return {};
  }
  return *op;
}

// ---- topics ----------------------------------------------------------------------------------

TEST(ws_topic, parses_runs_and_rooms) {
  auto run = parse_topic("run:AbC_d-9");
  ASSERT_TRUE(run);
  EXPECT_EQ(run->kind, topic_kind::run);
  EXPECT_EQ(run->id, "AbC_d-9");
  auto room = parse_topic("room:lobby.1:a-b_c");
  ASSERT_TRUE(room);
  EXPECT_EQ(room->kind, topic_kind::room);
  EXPECT_EQ(room->id, "lobby.1:a-b_c");
  EXPECT_TRUE(parse_topic("room:" + std::string(128, 'r')));
  EXPECT_TRUE(parse_topic("run:" + std::string(64, 'r')));
}

TEST(ws_topic, refuses_anything_else) {
  for (std::string bad :
       {std::string{""}, std::string{"run:"}, std::string{"room:"}, std::string{"run"},
        std::string{"lobby"}, std::string{"RUN:abc"}, std::string{"run:a.b"},
        std::string{"run:a:b"}, std::string{"room:a b"}, std::string{"room:caf\xc3\xa9"},
        std::string{"chan:abc"}, std::string{" run:abc"}, "room:" + std::string(129, 'r'),
        "run:" + std::string(65, 'r'), std::string{"room:a\"b"}}) {
    EXPECT_FALSE(parse_topic(bad)) << bad;
  }
}

// ---- every op, valid -------------------------------------------------------------------------

TEST(ws_decode, subscribe) {
  auto s =
      expect_kind<subscribe>(R"({"op":"subscribe","topic":"run:abc","after":17,"ref":"r1"})", "r1");
  EXPECT_EQ(s.topic, "run:abc");
  ASSERT_TRUE(s.after);
  EXPECT_EQ(*s.after, 17u);

  s = expect_kind<subscribe>(R"({"op":"subscribe","topic":"room:lobby"})");
  EXPECT_EQ(s.topic, "room:lobby");
  EXPECT_FALSE(s.after);

  s = expect_kind<subscribe>(R"({"op":"subscribe","topic":"room:lobby","after":null})");
  EXPECT_FALSE(s.after);
  s = expect_kind<subscribe>(R"({"op":"subscribe","topic":"run:x","after":0})");
  EXPECT_EQ(s.after, 0u);
  s = expect_kind<subscribe>(R"({"op":"subscribe","topic":"run:x","after":18446744073709551615})");
  EXPECT_EQ(s.after, UINT64_MAX);
}

TEST(ws_decode, unsubscribe) {
  auto u = expect_kind<unsubscribe>(R"({"ref":"7","op":"unsubscribe","topic":"run:abc"})", "7");
  EXPECT_EQ(u.topic, "run:abc");
}

TEST(ws_decode, join_and_leave) {
  auto j = expect_kind<join>(R"({"op":"join","room":"lobby","after":3})");
  EXPECT_EQ(j.room, "lobby");
  EXPECT_EQ(j.after, 3u);
  j = expect_kind<join>(R"({"op":"join","room":"a.b:c-d_e"})");
  EXPECT_EQ(j.room, "a.b:c-d_e");
  EXPECT_FALSE(j.after);  // absent: "now"
  auto l = expect_kind<leave>(R"({"op":"leave","room":"lobby","ref":"x"})", "x");
  EXPECT_EQ(l.room, "lobby");
}

TEST(ws_decode, send) {
  auto s =
      expect_kind<send>(R"({"op":"send","room":"lobby","text":"hi \"you\"","ref":"s1"})", "s1");
  EXPECT_EQ(s.room, "lobby");
  EXPECT_TRUE(s.message.has_text);
  EXPECT_EQ(s.message.text, "hi \"you\"");
  EXPECT_EQ(s.message.data, "");
  EXPECT_EQ(s.message.client_msg_id, "");

  s = expect_kind<send>(
      R"({"op":"send","room":"lobby","data":{ "a" : [1, 2.5, true] },"client_msg_id":"c-1"})");
  EXPECT_FALSE(s.message.has_text);
  EXPECT_EQ(s.message.data, R"({"a":[1,2.5E0,true]})");
  EXPECT_EQ(s.message.client_msg_id, "c-1");

  s = expect_kind<send>(R"({"op":"send","room":"lobby","text":"","data":false})");
  EXPECT_TRUE(s.message.has_text);
  EXPECT_EQ(s.message.text, "");
  EXPECT_EQ(s.message.data, "false");
}

TEST(ws_decode, publish) {
  auto p =
      expect_kind<publish>(R"({"op":"publish","topic":"run:abc","type":"delta","data":{"t":"x"}})");
  EXPECT_EQ(p.topic, "run:abc");
  EXPECT_EQ(p.type, "delta");
  EXPECT_EQ(p.data, R"({"t":"x"})");
  p = expect_kind<publish>(R"({"op":"publish","topic":"run:abc","type":"tool.call-1_x"})");
  EXPECT_EQ(p.data, "null");
  p = expect_kind<publish>(R"({"op":"publish","topic":"run:abc","type":"t","data":null})");
  EXPECT_EQ(p.data, "null");
}

TEST(ws_decode, ping_and_auth) {
  expect_kind<ping>(R"({"op":"ping"})");
  expect_kind<ping>(R"({"op":"ping","ref":"p"})", "p");
  expect_kind<ping>(R"(  {"op":"ping","extra":[1,{"x":null}]}  )");  // unknown fields ignored
  auto a = expect_kind<auth>(R"({"op":"auth","token":"a.b.c"})");
  EXPECT_EQ(a.token, "a.b.c");
}

TEST(ws_decode, ref_may_be_null_empty_or_unicode) {
  expect_kind<ping>(R"({"op":"ping","ref":null})", "");
  expect_kind<ping>(R"({"op":"ping","ref":""})", "");
  expect_kind<ping>(R"({"op":"ping","ref":"\u00e9\n"})", "\xc3\xa9\n");
  expect_kind<ping>(R"({"op":"ping","ref":")" + std::string(128, 'r') + R"("})",
                    std::string(128, 'r'));
}

// ---- malformed shapes ------------------------------------------------------------------------

TEST(ws_decode, invalid_json_is_bad_request_without_ref) {
  for (std::string_view bad : {"", " ", "{", "{\"op\":\"ping\"", "{\"op\":\"ping\",}", "nope",
                               "{'op':'ping'}", "{\"op\":\"ping\"} x", "{\"op\":\"ping\"}{}",
                               "{\"op\":\"ping\" /* c */}", "\xef\xbb\xbf{\"op\":\"ping\"}"}) {
    EXPECT_EQ(expect_failure(bad).ref, "") << bad;
  }
}

TEST(ws_decode, non_objects_are_bad_request) {
  for (std::string_view bad : {"null", "1", "\"ping\"", "[]", R"([{"op":"ping"}])", "true"}) {
    auto f = expect_failure(bad);
    EXPECT_EQ(f.ref, "");
    EXPECT_EQ(f.err.message, "message must be a JSON object");
  }
}

TEST(ws_decode, invalid_utf8_is_refused) {
  expect_failure("{\"op\":\"send\",\"room\":\"lobby\",\"text\":\"\xff\",\"ref\":\"r\"}");
  expect_failure("{\"op\":\"ping\",\"ref\":\"\xc3\"}");                      // truncated sequence
  expect_failure("{\"op\":\"ping\",\"ref\":\"\xed\xa0\x80\"}");              // encoded surrogate
  expect_failure("{\"op\":\"ping\",\"ref\":\"\xc0\xaf\"}");                  // overlong
  expect_failure("{\"op\":\"send\",\"room\":\"l\",\"data\":{\"\xfe\":1}}");  // in a key
}

TEST(ws_decode, deep_nesting_is_refused) {
  std::string deep = R"({"op":"send","room":"lobby","data":)";
  deep += std::string(100, '[') + std::string(100, ']') + "}";
  expect_failure(deep);
  std::string very_deep = std::string(60000, '[');  // under the message bound
  expect_failure(very_deep);
  // Just inside the bound: the object itself is depth 1.
  std::string ok = R"({"op":"send","room":"lobby","data":)";
  ok += std::string(62, '[') + std::string(62, ']') + "}";
  expect_kind<send>(ok);
}

TEST(ws_decode, oversized_message_is_too_large) {
  ws_limits small;
  small.max_message_bytes = 20;
  auto f = expect_failure(R"({"op":"ping","ref":"abcdef"})", errc::too_large, small);
  EXPECT_EQ(f.ref, "");  // not parsed at all
  auto ok = decode_client_op(R"({"op":"ping"})", small);
  EXPECT_EQ(ok.index(), 0u);
}

TEST(ws_decode, bad_ref_is_refused_without_echo) {
  for (std::string_view bad : {R"({"op":"ping","ref":1})", R"({"op":"ping","ref":["r"]})",
                               R"({"op":"ping","ref":{"r":1}})", R"({"op":"ping","ref":true})"}) {
    EXPECT_EQ(expect_failure(bad).ref, "") << bad;
  }
  auto f = expect_failure(R"({"op":"ping","ref":")" + std::string(129, 'r') + R"("})");
  EXPECT_EQ(f.ref, "");
}

TEST(ws_decode, missing_or_unknown_op_echoes_ref) {
  struct {
    std::string_view text;
    std::string_view message;
  } cases[] = {
      {R"({"ref":"a"})", "op is required"},
      {R"({"ref":"a","op":null})", "op is required"},
      {R"({"ref":"a","op":1})", "op must be a string"},
      {R"({"ref":"a","op":["ping"]})", "op must be a string"},
      {R"({"ref":"a","op":"Ping"})", "unknown op"},
      {R"({"ref":"a","op":"pong"})", "unknown op"},
      {R"({"ref":"a","op":""})", "unknown op"},
      {R"({"ref":"a","op":"ping\u0000"})", "unknown op"},
  };
  for (const auto& c : cases) {
    auto f = expect_failure(c.text);
    EXPECT_EQ(f.ref, "a") << c.text;
    EXPECT_EQ(f.err.message, c.message) << c.text;
  }
}

TEST(ws_decode, field_errors_echo_ref) {
  for (std::string_view bad : {
           // subscribe / unsubscribe
           R"({"op":"subscribe"})",
           R"({"op":"subscribe","topic":null})",
           R"({"op":"subscribe","topic":1})",
           R"({"op":"subscribe","topic":"lobby"})",
           R"({"op":"subscribe","topic":"run:a b"})",
           R"({"op":"subscribe","topic":"room:"})",
           R"({"op":"subscribe","topic":"run:x","after":-1})",
           R"({"op":"subscribe","topic":"run:x","after":1.5})",
           R"({"op":"subscribe","topic":"run:x","after":1.0})",
           R"({"op":"subscribe","topic":"run:x","after":1e3})",
           R"({"op":"subscribe","topic":"run:x","after":"5"})",
           R"({"op":"subscribe","topic":"run:x","after":true})",
           R"({"op":"subscribe","topic":"run:x","after":18446744073709551616})",
           R"({"op":"subscribe","topic":"run:x","after":1e400})",
           R"({"op":"unsubscribe"})",
           R"({"op":"unsubscribe","topic":"x:y"})",
           R"({"op":"unsubscribe","topic":{}})",
           // join / leave
           R"({"op":"join"})",
           R"({"op":"join","room":""})",
           R"({"op":"join","room":"a b"})",
           R"({"op":"join","room":"a/b"})",
           R"({"op":"join","room":7})",
           R"({"op":"join","room":"lobby","after":-5})",
           R"({"op":"join","room":"lobby","after":"now"})",
           R"({"op":"leave"})",
           R"({"op":"leave","room":["lobby"]})",
           R"({"op":"leave","room":"caf\u00e9"})",
           // send
           R"({"op":"send","room":"lobby"})",
           R"({"op":"send","room":"lobby","text":null,"data":null})",
           R"({"op":"send","text":"hi"})",
           R"({"op":"send","room":"lo by","text":"hi"})",
           R"({"op":"send","room":"lobby","text":5})",
           R"({"op":"send","room":"lobby","text":["hi"]})",
           R"({"op":"send","room":"lobby","text":"hi","client_msg_id":5})",
           R"({"op":"send","room":"lobby","text":"hi","client_msg_id":""})",
           R"({"op":"send","room":"lobby","data":1e400})",
           R"({"op":"send","room":"lobby","data":[-1e999]})",
           // publish
           R"({"op":"publish","topic":"run:abc"})",
           R"({"op":"publish","type":"delta"})",
           R"({"op":"publish","topic":"room:lobby","type":"delta"})",
           R"({"op":"publish","topic":"run:abc","type":"Delta"})",
           R"({"op":"publish","topic":"run:abc","type":""})",
           R"({"op":"publish","topic":"run:abc","type":3})",
           R"({"op":"publish","topic":"run:abc","type":"message"})",
           R"({"op":"publish","topic":"run:abc","type":"complete"})",
           R"({"op":"publish","topic":"run:abc","type":"gap"})",
           R"({"op":"publish","topic":"run:abc","type":"delta","data":1e400})",
           // auth
           R"({"op":"auth"})",
           R"({"op":"auth","token":""})",
           R"({"op":"auth","token":123})",
       }) {
    std::string text{bad};
    text.insert(1, R"("ref":"R",)");
    auto f = expect_failure(text);
    EXPECT_EQ(f.ref, "R") << text;
  }
}

TEST(ws_decode, too_long_strings) {
  expect_failure(R"({"op":"join","room":")" + std::string(129, 'r') + R"("})");
  expect_failure(R"({"op":"subscribe","topic":"room:)" + std::string(129, 'r') + R"("})");
  expect_failure(R"({"op":"subscribe","topic":"run:)" + std::string(65, 'r') + R"("})");
  expect_failure(R"({"op":"publish","topic":"run:a","type":")" + std::string(65, 't') + R"("})");
  expect_failure(R"({"op":"send","room":"l","text":"x","client_msg_id":")" + std::string(129, 'c') +
                 R"("})");
  expect_kind<send>(R"({"op":"send","room":"l","text":"x","client_msg_id":")" +
                    std::string(128, 'c') + R"("})");
  expect_failure(R"({"op":"auth","token":")" + std::string(8193, 't') + R"("})");
}

TEST(ws_decode, oversized_text_and_data_are_too_large) {
  ws_limits small;
  small.max_text_bytes = 4;
  small.max_data_bytes = 8;
  auto f = expect_failure(R"({"op":"send","ref":"q","room":"l","text":"12345"})", errc::too_large,
                          small);
  EXPECT_EQ(f.ref, "q");
  expect_failure(R"({"op":"send","room":"l","data":"1234567"})", errc::too_large, small);
  expect_failure(R"({"op":"publish","topic":"run:a","type":"t","data":[1,2,3,4,5]})",
                 errc::too_large, small);
  // At the bounds: 4 bytes of text, 8 bytes of compact data ("123456" with quotes).
  EXPECT_EQ(
      decode_client_op(R"({"op":"send","room":"l","text":"1234","data":"123456"})", small).index(),
      0u);
  // Data is measured compact, not as sent.
  EXPECT_EQ(decode_client_op(R"({"op":"send","room":"l","data":[ 1 , 2 , 3 ]})", small).index(),
            0u);
}

TEST(ws_decode, error_messages_name_the_field) {
  EXPECT_EQ(expect_failure(R"({"op":"subscribe"})").err.message, "topic is required");
  EXPECT_EQ(expect_failure(R"({"op":"join","room":1})").err.message, "room must be a string");
  EXPECT_EQ(expect_failure(R"({"op":"send","room":"l"})").err.message, "text or data is required");
  EXPECT_EQ(expect_failure(R"({"op":"subscribe","topic":"run:x","after":-1})").err.message,
            "after must be a non-negative integer");
  EXPECT_EQ(expect_failure(R"({"op":"publish","topic":"run:x","type":"error"})").err.message,
            R"(type "error" is reserved)");
}

// ---- encoders --------------------------------------------------------------------------------

TEST(ws_encode, hello) {
  EXPECT_EQ(encode_hello("s1", "node-a", 25000),
            R"({"op":"hello","session_id":"s1","node":"node-a","heartbeat_ms":25000})");
  EXPECT_EQ(encode_hello("s", "n\"\\\n", 0),
            R"({"op":"hello","session_id":"s","node":"n\"\\\n","heartbeat_ms":0})");
}

TEST(ws_encode, event) {
  event e{17, "delta", R"({"t":"x"})", 1763769600123};
  EXPECT_EQ(
      encode_event("run:abc", e),
      R"({"op":"event","topic":"run:abc","seq":17,"type":"delta","data":{"t":"x"},"ts":1763769600123})");
  e.data.clear();
  EXPECT_EQ(
      encode_event("room:l", e),
      R"({"op":"event","topic":"room:l","seq":17,"type":"delta","data":null,"ts":1763769600123})");
  // An unvalidated topic still yields JSON.
  EXPECT_EQ(encode_event("a\"b", event{1, "t", "1", 2}),
            R"({"op":"event","topic":"a\"b","seq":1,"type":"t","data":1,"ts":2})");
  std::string out = "prefix";
  append_event(out, "run:x", event{UINT64_MAX, "t", "[]", -1});
  EXPECT_EQ(
      out,
      R"(prefix{"op":"event","topic":"run:x","seq":18446744073709551615,"type":"t","data":[],"ts":-1})");
}

TEST(ws_encode, gap_and_presence) {
  EXPECT_EQ(encode_gap("run:abc", 3, 9), R"({"op":"gap","topic":"run:abc","from":3,"to":9})");
  EXPECT_EQ(encode_presence("lobby", presence_change::joined, "alice", "s1"),
            R"({"op":"presence","room":"lobby","joined":{"user":"alice","session_id":"s1"}})");
  EXPECT_EQ(encode_presence("lobby", presence_change::left, "b\"ob", "s2"),
            R"({"op":"presence","room":"lobby","left":{"user":"b\"ob","session_id":"s2"}})");
}

TEST(ws_encode, acks) {
  EXPECT_EQ(encode_ack_plain("r1"), R"({"op":"ack","ref":"r1"})");
  EXPECT_EQ(encode_ack_plain(""), R"({"op":"ack"})");
  EXPECT_EQ(encode_ack("r", R"("x":1)"), R"({"op":"ack","ref":"r","x":1})");
  EXPECT_EQ(encode_ack("", R"("x":1)"), R"({"op":"ack","x":1})");
  EXPECT_EQ(encode_ack_subscribe("r", "run:x", 5, true),
            R"({"op":"ack","ref":"r","topic":"run:x","last_seq":5,"recovered":true})");
  EXPECT_EQ(encode_ack_subscribe("", "room:l", 0, false),
            R"({"op":"ack","topic":"room:l","last_seq":0,"recovered":false})");
  EXPECT_EQ(encode_ack_send("s", "MsgId_-1", 42),
            R"({"op":"ack","ref":"s","message_id":"MsgId_-1","seq":42})");
  EXPECT_EQ(encode_ack_publish("p", 7), R"({"op":"ack","ref":"p","seq":7})");
  EXPECT_EQ(encode_ack_publish("", 7), R"({"op":"ack","seq":7})");
}

TEST(ws_encode, error_and_pong) {
  EXPECT_EQ(encode_error("r", errc::bad_request, "unknown op"),
            R"({"op":"error","ref":"r","code":"bad_request","message":"unknown op"})");
  EXPECT_EQ(encode_error("", error{errc::too_large, "text \"x\"\tbig\x01"}),
            R"({"op":"error","code":"too_large","message":"text \"x\"\tbig\u0001"})");
  EXPECT_EQ(encode_pong("p"), R"({"op":"pong","ref":"p"})");
  EXPECT_EQ(encode_pong(""), R"({"op":"pong"})");
}

TEST(ws_encode, refs_are_escaped) {
  EXPECT_EQ(encode_pong("a\"\\\r\b\f\x1f/\xc3\xa9"), R"({"op":"pong","ref":"a\"\\\r\b\f\u001f/)"
                                                     "\xc3\xa9"
                                                     R"("})");
}

TEST(ws_encode, decode_failure_round_trips_into_error) {
  auto r = decode_client_op(R"({"op":"nope","ref":"x\"y"})", limits);
  ASSERT_EQ(r.index(), 1u);
  const auto& f = std::get<decode_failure>(r);
  EXPECT_EQ(encode_error(f.ref, f.err),
            R"({"op":"error","ref":"x\"y","code":"bad_request","message":"unknown op"})");
}

}  // namespace
}  // namespace relay::ws
