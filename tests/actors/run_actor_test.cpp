// Run actor, shard and edge on CAF's deterministic test coordinator, in virtual time.

#include "actors/run_actor.hpp"

#include "tests/actors/node_fixture.hpp"

namespace relay {
namespace {

using namespace std::chrono_literals;

/// A session stand-in: records what the edge hands it.
class recording_sink : public sink {
 public:
  struct entry {
    uint64_t seq;
    frame::kind what;
    bool terminal;
    std::string type;  // from the SSE `event:` line
    std::string bytes;
  };

  wire_format format() const noexcept override { return wire_format::sse; }
  void on_subscribed(uint64_t, const result<subscribe_ok>& answer) override {
    ++answers;
    if (answer)
      ok = *answer;
    else
      err = answer.err();
  }
  void on_frame(uint64_t, const frame_ptr& f) override {
    entry e{f->seq, f->what, f->terminal, "", f->bytes};
    auto pos = f->bytes.find("event: ");
    if (pos != std::string::npos)
      e.type = f->bytes.substr(pos + 7, f->bytes.find('\n', pos) - pos - 7);
    frames.push_back(std::move(e));
  }
  void on_closed(uint64_t, const error& why) override {
    closed = true;
    close_reason = why;
  }

  std::vector<uint64_t> event_seqs() const {
    std::vector<uint64_t> out;
    for (auto& f : frames)
      if (f.what == frame::kind::event) out.push_back(f.seq);
    return out;
  }
  std::size_t count_type(const std::string& type) const {
    std::size_t n = 0;
    for (auto& f : frames) n += f.type == type ? 1 : 0;
    return n;
  }

  int answers = 0;
  std::optional<subscribe_ok> ok;
  std::optional<error> err;
  std::vector<entry> frames;
  bool closed = false;
  error close_reason;
};

class actors_test : public test::node_fixture {
 protected:
  run_info create(create_run_request req, caller who = alice) {
    auto r = ask<create_run_reply>(create_atom::value, who, std::move(req));
    EXPECT_TRUE(r.ok()) << (r ? "" : r.err().message);
    return r ? r->info : run_info{};
  }

  result<run_info> get(const std::string& id, caller who = alice) {
    return ask<run_info>(caf::get_atom::value, id, who);
  }

  result<uint64_t> append(const std::string& id, std::vector<event_input> events) {
    return ask<uint64_t>(append_atom::value, id, worker, std::move(events));
  }

  std::shared_ptr<recording_sink> subscribe(const std::string& id, uint64_t after,
                                            caller who = alice) {
    auto s = std::make_shared<recording_sink>();
    caf::anon_send(edge, caf::subscribe_atom::value, next_sub++, who, "run:" + id, after,
                   std::weak_ptr<sink>{s});
    fx.sched.run();
    return s;
  }

  caf::actor run_handle(const std::string& id) {
    // The shard is the only one that knows it; ask it through the test hook of the fixture.
    auto& st = caf::actor_cast<shard_actor_type*>(shard)->state;
    return st.runs.at(id).handle;
  }

  static create_run_request external(uint32_t inactivity_s = 60, uint32_t ttl_s = 600) {
    create_run_request req;
    req.kind = run_kind::external;
    req.inactivity_s = inactivity_s;
    req.ttl_s = ttl_s;
    return req;
  }

  static std::vector<event_input> deltas(int n) {
    std::vector<event_input> out;
    for (int i = 0; i < n; ++i) out.push_back({"delta", "{\"i\":" + std::to_string(i) + "}"});
    return out;
  }

  static inline const caller alice{"alice", role::user};
  static inline const caller bob{"bob", role::user};
  static inline const caller worker{"worker", role::service};
};

TEST_F(actors_test, seq_is_assigned_in_order_and_replayed_to_a_late_subscriber) {
  auto run = create(external());
  ASSERT_EQ(append(run.id, deltas(3)).value(), 3u);
  ASSERT_EQ(append(run.id, deltas(2)).value(), 5u);
  auto s = subscribe(run.id, 2);
  ASSERT_TRUE(s->ok);
  EXPECT_EQ(s->ok->last_seq, 5u);
  EXPECT_TRUE(s->ok->recovered);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{3, 4, 5}));
  ASSERT_EQ(append(run.id, deltas(1)).value(), 6u);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{3, 4, 5, 6}));
  EXPECT_EQ(counters.frames_encoded.load(), 1u);  // the live event, encoded once
}

TEST_F(actors_test, other_users_cannot_see_or_stream_a_run) {
  auto run = create(external());
  EXPECT_EQ(get(run.id, bob).err().code, errc::not_found);
  EXPECT_TRUE(get(run.id, worker).ok());
  auto s = subscribe(run.id, 0, bob);
  ASSERT_TRUE(s->err);
  EXPECT_EQ(s->err->code, errc::not_found);
  auto r = ask<uint64_t>(append_atom::value, run.id, alice, deltas(1));
  EXPECT_EQ(r.err().code, errc::forbidden);  // owners read; producing needs the service role
}

TEST_F(actors_test, inactivity_timeout_fires_exactly_once_at_its_deadline_and_is_reset_by_events) {
  auto run = create(external(60));
  auto s = subscribe(run.id, 0);
  advance(59s);
  EXPECT_EQ(get(run.id)->status, run_status::running);
  ASSERT_TRUE(append(run.id, deltas(1)).ok());  // t = 59 s: resets the timer to t = 119 s
  advance(1s);                                  // the first check fires at 60 s and re-arms
  EXPECT_EQ(get(run.id)->status, run_status::running);
  advance(58s);  // t = 118 s
  EXPECT_EQ(get(run.id)->status, run_status::running);
  EXPECT_EQ(counters.timeouts.load(), 0u);
  advance(1s);  // t = 119 s: 60 s after the last event
  auto info = get(run.id);
  EXPECT_EQ(info->status, run_status::timed_out);
  EXPECT_EQ(info->reason, "inactivity");
  EXPECT_EQ(counters.timeouts.load(), 1u);
  advance(600s - 1s);  // still within the TTL: nothing fires again
  EXPECT_EQ(counters.timeouts.load(), 1u);
  EXPECT_EQ(s->count_type("error"), 1u);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{1, 2}));
  ASSERT_FALSE(s->frames.empty());
  EXPECT_TRUE(s->frames.back().terminal);
  EXPECT_NE(s->frames.back().bytes.find("timed_out"), std::string::npos);
}

TEST_F(actors_test, a_terminal_run_rejects_events_and_passivates_after_its_ttl) {
  auto run = create(external(60, 30));
  ASSERT_TRUE(append(run.id, deltas(2)).ok());
  auto done = ask<run_info>(finish_atom::value, run.id, worker, finish_kind::complete,
                            std::string{"{\"ok\":true}"});
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->status, run_status::completed);
  EXPECT_EQ(done->last_seq, 3u);
  EXPECT_EQ(append(run.id, deltas(1)).err().code, errc::conflict);
  // A late client replays the whole run within the TTL and its stream ends with `complete`.
  auto late = subscribe(run.id, 0);
  EXPECT_EQ(late->event_seqs(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(late->count_type("complete"), 1u);
  advance(29s);
  EXPECT_TRUE(get(run.id).ok());
  EXPECT_EQ(counters.runs_active.load(), 1);
  advance(1s);
  EXPECT_EQ(get(run.id).err().code, errc::not_found);
  EXPECT_EQ(counters.passivations.load(), 1u);
  EXPECT_EQ(counters.runs_active.load(), 0);
}

TEST_F(actors_test, idempotency_key_returns_the_active_run_of_the_same_owner) {
  auto req = external();
  req.idempotency_key = "click-1";
  auto first = ask<create_run_reply>(create_atom::value, alice, req);
  auto again = ask<create_run_reply>(create_atom::value, alice, req);
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(first->info.id, again->info.id);
  // Another owner with the same key gets its own run.
  auto bobs = ask<create_run_reply>(create_atom::value, bob, req);
  EXPECT_NE(bobs->info.id, first->info.id);
  // Once the first run ended, the key starts a new run.
  ASSERT_TRUE(ask<run_info>(finish_atom::value, first->info.id, alice, finish_kind::cancel,
                            std::string{"null"})
                  .ok());
  auto after_end = ask<create_run_reply>(create_atom::value, alice, req);
  EXPECT_TRUE(after_end->created);
  EXPECT_NE(after_end->info.id, first->info.id);
}

TEST_F(actors_test, cancelled_event_names_the_canceller_as_valid_json) {
  auto run = create(external());
  auto s = subscribe(run.id, 0);
  const caller odd{"we\"ird\\sub", role::service};  // a token's sub may hold any characters
  ASSERT_TRUE(
      ask<run_info>(finish_atom::value, run.id, odd, finish_kind::cancel, std::string{"null"})
          .ok());
  ASSERT_EQ(s->count_type("cancelled"), 1u);
  EXPECT_NE(s->frames.back().bytes.find(R"("data":{"by":"we\"ird\\sub"})"), std::string::npos)
      << s->frames.back().bytes;
}

TEST_F(actors_test, a_user_cannot_create_runs_for_someone_else) {
  auto req = external();
  req.owner = "bob";
  auto r = ask<create_run_reply>(create_atom::value, alice, req);
  EXPECT_EQ(r.err().code, errc::forbidden);
  auto by_service = ask<create_run_reply>(create_atom::value, worker, req);
  ASSERT_TRUE(by_service.ok());
  EXPECT_EQ(by_service->info.owner, "bob");
}

TEST_F(actors_test, a_crashed_run_is_restarted_with_seq_continuing_and_a_gap_for_what_was_lost) {
  auto run = create(external());
  auto live = subscribe(run.id, 0);
  ASSERT_EQ(append(run.id, deltas(3)).value(), 3u);
  caf::anon_send_exit(run_handle(run.id), caf::exit_reason::kill);
  fx.sched.run();
  EXPECT_EQ(counters.restarts.load(), 1u);
  EXPECT_EQ(get(run.id)->status, run_status::running);
  EXPECT_EQ(append(run.id, deltas(1)).value(), 4u);
  // The live subscriber followed the restart without a gap or a duplicate.
  EXPECT_EQ(live->event_seqs(), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_FALSE(live->closed);
  // A client resuming from before the crash is told what was lost.
  auto resumed = subscribe(run.id, 1);
  ASSERT_TRUE(resumed->ok);
  EXPECT_FALSE(resumed->ok->recovered);
  ASSERT_GE(resumed->frames.size(), 2u);
  EXPECT_EQ(resumed->frames[0].what, frame::kind::gap);
  EXPECT_EQ(resumed->event_seqs(), (std::vector<uint64_t>{4}));
}

TEST_F(actors_test, restart_budget_exhausted_ends_the_run_as_failed_crashed) {
  auto run = create(external());
  auto live = subscribe(run.id, 0);
  ASSERT_TRUE(append(run.id, deltas(2)).ok());
  for (int i = 0; i < 2; ++i) {
    caf::anon_send_exit(run_handle(run.id), caf::exit_reason::kill);
    fx.sched.run();
    EXPECT_EQ(get(run.id)->status, run_status::running) << "restart " << i;
  }
  EXPECT_EQ(counters.restarts.load(), 2u);
  caf::anon_send_exit(run_handle(run.id), caf::exit_reason::kill);  // third within 10 s
  fx.sched.run();
  EXPECT_EQ(counters.crashes_final.load(), 1u);
  auto info = get(run.id);
  EXPECT_EQ(info->status, run_status::failed);
  EXPECT_EQ(info->reason, "crashed");
  EXPECT_EQ(info->last_seq, 3u);
  EXPECT_EQ(live->event_seqs(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(live->count_type("error"), 1u);
  EXPECT_NE(live->frames.back().bytes.find("crashed"), std::string::npos);
}

TEST_F(actors_test, restart_budget_is_a_sliding_window) {
  auto run = create(external(3600));
  for (int i = 0; i < 2; ++i) {
    caf::anon_send_exit(run_handle(run.id), caf::exit_reason::kill);
    fx.sched.run();
  }
  advance(11s);  // both restarts fall out of the 10 s window
  caf::anon_send_exit(run_handle(run.id), caf::exit_reason::kill);
  fx.sched.run();
  EXPECT_EQ(counters.restarts.load(), 3u);
  EXPECT_EQ(counters.crashes_final.load(), 0u);
  EXPECT_EQ(get(run.id)->status, run_status::running);
}

TEST_F(actors_test, synthetic_run_emits_count_deltas_then_completes) {
  create_run_request req;
  req.kind = run_kind::synthetic;
  req.synthetic = {5, 8, 100};
  auto run = create(req);
  auto s = subscribe(run.id, 0);
  for (int i = 0; i < 5; ++i) advance(100ms);  // one delta per interval
  EXPECT_EQ(s->count_type("delta"), 5u);
  EXPECT_EQ(s->count_type("complete"), 1u);
  EXPECT_EQ(s->event_seqs(), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(get(run.id)->status, run_status::completed);
}

TEST_F(actors_test,
       a_subscription_in_flight_while_events_arrive_gets_replay_then_live_exactly_once) {
  auto run = create(external());
  auto early = subscribe(run.id, 0);
  ASSERT_TRUE(append(run.id, deltas(3)).ok());
  // The second subscription reaches the shard before the next append: the run answers its
  // replay (1..3) first, then the append's events flow live to both sessions through the edge.
  auto late = std::make_shared<recording_sink>();
  caf::anon_send(edge, caf::subscribe_atom::value, next_sub++, alice, "run:" + run.id, uint64_t{0},
                 std::weak_ptr<sink>{late});
  ASSERT_TRUE(fx.sched.try_run_once());  // the edge forwards the subscribe to the shard
  ASSERT_EQ(append(run.id, deltas(3)).value(), 6u);
  fx.sched.run();
  EXPECT_EQ(late->event_seqs(), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(early->event_seqs(), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(counters.frames_encoded.load(), 6u);  // each live event encoded once for both
}

TEST_F(actors_test, a_flood_synthetic_run_delivers_every_event_in_order) {
  create_run_request req;
  req.kind = run_kind::synthetic;
  req.synthetic = {500, 4, 0};  // flood: batches of synthetic_batch per message
  auto run = create(req);
  auto s = subscribe(run.id, 401);  // ring of 100: 402..501 (the last 99 deltas + complete)
  auto seqs = s->event_seqs();
  ASSERT_EQ(seqs.size(), 100u);
  for (std::size_t i = 0; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], 402 + i);
  EXPECT_EQ(s->count_type("delta"), 99u);
  EXPECT_EQ(s->count_type("complete"), 1u);
  EXPECT_TRUE(s->ok && s->ok->recovered);
}

TEST_F(actors_test, unknown_runs_and_topics_are_not_found) {
  EXPECT_EQ(get("nope").err().code, errc::not_found);
  EXPECT_EQ(append("nope", deltas(1)).err().code, errc::not_found);
  auto s = subscribe("nope", 0);
  ASSERT_TRUE(s->err);
  EXPECT_EQ(s->err->code, errc::not_found);
}

}  // namespace
}  // namespace relay
