// Room actor, its activation and supervision by the shard, and room topics at the edge, on CAF's
// deterministic test coordinator in virtual time.

#include "actors/room_actor.hpp"

#include "tests/actors/node_fixture.hpp"

namespace relay {
namespace {

using namespace std::chrono_literals;

/// A session stand-in: records what the edge hands it, presence included.
class room_sink : public sink {
 public:
  explicit room_sink(wire_format f = wire_format::sse) : format_(f) {}
  wire_format format() const noexcept override { return format_; }
  void on_subscribed(uint64_t, const result<subscribe_ok>& answer) override {
    if (answer)
      ok = *answer;
    else
      err = answer.err();
  }
  void on_frame(uint64_t, const frame_ptr& f) override { frames.push_back(f); }
  void on_closed(uint64_t, const error& why) override { closed = why; }
  void on_presence(uint64_t, const presence_ptr& p) override { presence.push_back(*p); }

  std::vector<uint64_t> event_seqs() const {
    std::vector<uint64_t> out;
    for (auto& f : frames)
      if (f->what == frame::kind::event) out.push_back(f->seq);
    return out;
  }
  bool has_gap() const {
    return std::any_of(frames.begin(), frames.end(),
                       [](const frame_ptr& f) { return f->what == frame::kind::gap; });
  }

  std::optional<subscribe_ok> ok;
  std::optional<error> err;
  std::optional<error> closed;
  std::vector<frame_ptr> frames;
  std::vector<presence_note> presence;

 private:
  wire_format format_;
};

/// The JSON text of a server WebSocket frame (asserting it is one whole unmasked text frame).
std::string ws_payload(const std::string& bytes) {
  EXPECT_GE(bytes.size(), 2u);
  if (bytes.size() < 2) return {};
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0x81u);  // FIN + text
  std::size_t len = static_cast<unsigned char>(bytes[1]);
  std::size_t header = 2;
  EXPECT_EQ(len & 0x80u, 0u);  // server frames are not masked
  if (len == 126) {
    len = (std::size_t{static_cast<unsigned char>(bytes[2])} << 8) |
          static_cast<unsigned char>(bytes[3]);
    header = 4;
  }
  EXPECT_EQ(bytes.size(), header + len);
  return bytes.substr(header);
}

node_settings room_settings() {
  auto s = test::small_node();
  s.room_idle_s = 300;
  s.room_dedup_window = 3;
  return s;
}

class room_test : public test::node_fixture {
 protected:
  room_test() : node_fixture(room_settings()) {}

  result<room_post_reply> post(const std::string& text, const std::string& client_msg_id = "",
                               caller who = alice, const std::string& room = "lobby") {
    room_message_input in;
    in.text = text;
    in.has_text = true;
    in.client_msg_id = client_msg_id;
    return ask<room_post_reply>(room_post_atom::value, room, who, std::move(in));
  }

  result<uint32_t> join(const std::string& session, caller who = alice) {
    return ask<uint32_t>(room_join_atom::value, std::string{"lobby"}, who, session);
  }
  result<uint32_t> leave(const std::string& session, caller who = alice) {
    return ask<uint32_t>(room_leave_atom::value, std::string{"lobby"}, who, session);
  }
  std::vector<presence_member> members() {
    auto r = ask<std::vector<presence_member>>(presence_atom::value, std::string{"lobby"}, alice);
    EXPECT_TRUE(r.ok());
    return r ? *r : std::vector<presence_member>{};
  }

  std::shared_ptr<room_sink> subscribe(uint64_t after, bool from_now, uint64_t sub_id = 0,
                                       const std::string& topic = "room:lobby",
                                       wire_format format = wire_format::sse) {
    auto s = std::make_shared<room_sink>(format);
    caf::anon_send(edge, caf::subscribe_atom::value, sub_id ? sub_id : next_sub++, alice, topic,
                   after, from_now, std::weak_ptr<sink>{s});
    fx.sched.run();
    return s;
  }

  void unsubscribe(uint64_t sub_id) {
    caf::anon_send(edge, unsubscribe_atom::value, sub_id);
    fx.sched.run();
  }

  caf::actor room_handle(const std::string& id = "lobby") {
    auto& st = caf::actor_cast<shard_actor_type*>(shard)->state;
    auto it = st.rooms.find(id);
    return it == st.rooms.end() ? caf::actor{} : it->second.handle;
  }

  static inline const caller alice{"alice", role::user};
  static inline const caller bob{"bob", role::user};
};

TEST_F(room_test, a_room_is_activated_on_first_use_and_assigns_seq_in_order) {
  EXPECT_FALSE(room_handle());
  auto a = post("hello");
  ASSERT_TRUE(a.ok()) << a.err().message;
  EXPECT_EQ(a->seq, 1u);
  EXPECT_FALSE(a->message_id.empty());
  EXPECT_TRUE(room_handle());
  EXPECT_EQ(counters.rooms_active.load(), 1);
  auto b = post("world", "", bob);
  EXPECT_EQ(b->seq, 2u);
  EXPECT_NE(a->message_id, b->message_id);
  EXPECT_EQ(counters.room_messages.load(), 2u);
  // The event carries the contract's message shape.
  auto s = subscribe(0, false);
  ASSERT_EQ(s->event_seqs(), (std::vector<uint64_t>{1, 2}));
  auto& bytes = s->frames[0]->bytes;
  EXPECT_NE(bytes.find("event: message"), std::string::npos) << bytes;
  EXPECT_NE(bytes.find(R"("message_id":")" + a->message_id + "\""), std::string::npos) << bytes;
  EXPECT_NE(bytes.find(R"("user":"alice","text":"hello")"), std::string::npos) << bytes;
}

TEST_F(room_test, invalid_room_ids_and_empty_messages_are_bad_requests) {
  EXPECT_EQ(post("x", "", alice, "no spaces").err().code, errc::bad_request);
  EXPECT_EQ(post("x", "", alice, std::string(129, 'a')).err().code, errc::bad_request);
  auto r = ask<room_post_reply>(room_post_atom::value, std::string{"lobby"}, alice,
                                room_message_input{});
  EXPECT_EQ(r.err().code, errc::bad_request);
  auto s = subscribe(0, false, 0, "room:bad room");
  ASSERT_TRUE(s->err);
  EXPECT_EQ(s->err->code, errc::not_found);
}

TEST_F(room_test, a_retried_client_msg_id_gets_the_same_answer_and_appends_no_event) {
  auto s = subscribe(0, false);
  auto first = post("hi", "c-1");
  auto again = post("hi", "c-1");
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->message_id, again->message_id);
  EXPECT_EQ(first->seq, again->seq);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(counters.room_messages.load(), 1u);
  // Another user with the same client_msg_id is another message.
  EXPECT_EQ(post("hi", "c-1", bob)->seq, 2u);
  // The window is bounded (3 here): once c-1 of alice is evicted, it is a new message.
  post("a", "c-2");
  post("b", "c-3");
  EXPECT_EQ(post("hi", "c-1")->seq, 5u);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

TEST_F(room_test, presence_counts_sessions_and_announces_a_user_once) {
  auto s = subscribe(0, true);
  ASSERT_TRUE(s->ok);
  EXPECT_EQ(join("s1").value(), 1u);
  EXPECT_EQ(join("s2").value(), 2u);
  EXPECT_EQ(join("s2").value(), 2u);  // idempotent per session
  EXPECT_EQ(join("b1", bob).value(), 1u);
  auto m = members();
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].user, "alice");
  EXPECT_EQ(m[0].sessions, 2u);
  EXPECT_EQ(m[1].user, "bob");
  EXPECT_EQ(counters.presence_members.load(), 2);
  ASSERT_EQ(s->presence.size(), 2u);  // alice joined once, bob joined
  EXPECT_TRUE(s->presence[0].joined);
  EXPECT_EQ(s->presence[0].user, "alice");
  EXPECT_EQ(s->presence[0].session_id, "s1");
  EXPECT_EQ(s->presence[0].room, "lobby");
  EXPECT_EQ(leave("s1").value(), 1u);
  EXPECT_EQ(s->presence.size(), 2u);  // alice still has s2: no `left`
  EXPECT_EQ(leave("s2").value(), 0u);
  ASSERT_EQ(s->presence.size(), 3u);
  EXPECT_FALSE(s->presence[2].joined);
  EXPECT_EQ(s->presence[2].user, "alice");
  EXPECT_EQ(s->presence[2].session_id, "s2");
  EXPECT_EQ(leave("s2").value(), 0u);  // leaving twice is harmless
  EXPECT_EQ(s->presence.size(), 3u);
  m = members();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].user, "bob");
  EXPECT_EQ(counters.presence_members.load(), 1);
  // Presence is ephemeral: not in the ring, so a replaying subscriber sees no events.
  auto late = subscribe(0, false);
  EXPECT_TRUE(late->frames.empty());
  EXPECT_TRUE(late->presence.empty());
}

TEST_F(room_test, passivates_exactly_room_idle_s_after_the_last_member_and_subscriber_left) {
  ASSERT_TRUE(join("s1").ok());  // t = 0
  auto s = subscribe(0, true);
  advance(400s);  // a member and a subscriber: never idle
  EXPECT_TRUE(room_handle());
  ASSERT_TRUE(leave("s1").ok());  // t = 400 s: still a subscriber
  advance(400s);
  EXPECT_TRUE(room_handle());
  unsubscribe(1);  // t = 800 s: empty from now on
  advance(299s);
  EXPECT_TRUE(room_handle());
  EXPECT_EQ(counters.passivations.load(), 0u);
  advance(1s);  // t = 1100 s
  EXPECT_FALSE(room_handle());
  EXPECT_EQ(counters.passivations.load(), 1u);
  EXPECT_EQ(counters.rooms_active.load(), 0);
}

TEST_F(room_test, activity_while_empty_postpones_passivation) {
  ASSERT_TRUE(post("a").ok());  // t = 0: activated with nobody in it
  advance(200s);
  ASSERT_TRUE(post("b").ok());  // t = 200 s
  advance(299s);                // t = 499 s: the check at 300 s re-armed for the remainder
  EXPECT_TRUE(room_handle());
  advance(1s);
  EXPECT_FALSE(room_handle());
  EXPECT_EQ(counters.passivations.load(), 1u);
}

TEST_F(room_test, a_reactivated_room_continues_its_seq_and_resumers_get_a_gap) {
  ASSERT_EQ(post("a")->seq, 1u);
  ASSERT_EQ(post("b")->seq, 2u);
  advance(300s);
  ASSERT_FALSE(room_handle());
  ASSERT_EQ(post("c")->seq, 3u);  // re-activated on demand
  EXPECT_EQ(counters.rooms_active.load(), 1);
  auto s = subscribe(1, false);
  ASSERT_TRUE(s->ok);
  EXPECT_FALSE(s->ok->recovered);
  EXPECT_TRUE(s->has_gap());  // seq 2 was only in the passivated ring
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{3}));
}

TEST_F(room_test, a_subscriber_from_now_gets_only_new_messages_and_one_with_after_the_replay) {
  post("a");
  post("b");
  post("c");
  auto now = subscribe(0, true);
  auto after = subscribe(1, false);
  ASSERT_TRUE(now->ok && after->ok);
  EXPECT_EQ(now->ok->last_seq, 3u);
  EXPECT_TRUE(now->ok->recovered);
  EXPECT_TRUE(now->frames.empty());
  EXPECT_EQ(after->event_seqs(), (std::vector<uint64_t>{2, 3}));
  post("d");
  EXPECT_EQ(now->event_seqs(), (std::vector<uint64_t>{4}));
  EXPECT_EQ(after->event_seqs(), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(counters.frames_encoded.load(), 1u);  // the live message, encoded once for both
}

TEST_F(room_test, each_event_is_encoded_once_per_wire_format_and_shared_by_its_sessions) {
  post("before");
  auto sse = subscribe(0, true);
  auto ws1 = subscribe(0, true, 0, "room:lobby", wire_format::ws);
  auto ws2 = subscribe(0, true, 0, "room:lobby", wire_format::ws);
  ASSERT_TRUE(sse->ok && ws1->ok && ws2->ok);
  auto a = post("hello \"you\"");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(counters.frames_encoded.load(), 2u);  // one SSE frame, one WebSocket frame
  ASSERT_EQ(ws1->frames.size(), 1u);
  ASSERT_EQ(ws2->frames.size(), 1u);
  ASSERT_EQ(sse->frames.size(), 1u);
  EXPECT_EQ(ws1->frames[0], ws2->frames[0]);  // the same shared buffer
  EXPECT_EQ(sse->frames[0]->bytes.rfind("id: 2\n", 0), 0u) << sse->frames[0]->bytes;
  const auto json = ws_payload(ws1->frames[0]->bytes);
  EXPECT_EQ(
      json.rfind(R"({"op":"event","topic":"room:lobby","seq":2,"type":"message","data":{)", 0), 0u)
      << json;
  EXPECT_NE(json.find(R"("text":"hello \"you\"")"), std::string::npos) << json;
  // A WebSocket replay (and its gap) are WebSocket frames too.
  auto replay = subscribe(0, false, 0, "room:lobby", wire_format::ws);
  ASSERT_EQ(replay->event_seqs(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(replay->frames[1], ws1->frames[0]);  // served from the edge's recent frames
  EXPECT_NE(ws_payload(replay->frames[0]->bytes).find(R"("text":"before")"), std::string::npos);
  // Presence carries its WebSocket frame, built once, when WebSocket sessions follow the room.
  ASSERT_TRUE(join("s1", bob).ok());
  ASSERT_EQ(ws1->presence.size(), 1u);
  ASSERT_TRUE(ws1->presence[0].ws_frame);
  EXPECT_EQ(ws_payload(ws1->presence[0].ws_frame->bytes),
            R"({"op":"presence","room":"lobby","joined":{"user":"bob","session_id":"s1"}})");
}

TEST_F(room_test, a_websocket_resume_from_before_the_ring_gets_a_websocket_gap) {
  ASSERT_EQ(post("a")->seq, 1u);
  ASSERT_EQ(post("b")->seq, 2u);
  advance(300s);  // passivated: seq 2 leaves with the ring
  ASSERT_EQ(post("c")->seq, 3u);
  auto s = subscribe(1, false, 0, "room:lobby", wire_format::ws);
  ASSERT_TRUE(s->ok);
  EXPECT_FALSE(s->ok->recovered);
  ASSERT_EQ(s->frames.size(), 2u);
  EXPECT_EQ(s->frames[0]->what, frame::kind::gap);
  EXPECT_EQ(ws_payload(s->frames[0]->bytes),
            R"({"op":"gap","topic":"room:lobby","from":2,"to":2})");
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{3}));
}

TEST_F(room_test, a_crashed_room_restarts_with_seq_members_and_dedup_kept) {
  auto s = subscribe(0, false);
  ASSERT_TRUE(join("s1").ok());
  auto first = post("a", "c-1");
  caf::anon_send_exit(room_handle(), caf::exit_reason::kill);
  fx.sched.run();
  EXPECT_EQ(counters.restarts.load(), 1u);
  EXPECT_TRUE(room_handle());
  auto again = post("a", "c-1");  // a retry across the crash is still recognised
  EXPECT_EQ(again->seq, first->seq);
  EXPECT_EQ(post("b")->seq, 2u);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{1, 2}));  // followed the restart
  EXPECT_FALSE(s->closed);
  ASSERT_EQ(members().size(), 1u);
}

TEST_F(room_test, a_room_crashing_past_its_budget_is_unavailable_until_the_window_passes) {
  ASSERT_TRUE(post("a").ok());
  for (int i = 0; i < 3; ++i) {
    caf::anon_send_exit(room_handle(), caf::exit_reason::kill);
    fx.sched.run();
  }
  EXPECT_EQ(counters.restarts.load(), 2u);
  EXPECT_EQ(counters.crashes_final.load(), 1u);
  EXPECT_EQ(post("b").err().code, errc::unavailable);
  advance(10s);
  EXPECT_EQ(post("b")->seq, 2u);
}

}  // namespace
}  // namespace relay
