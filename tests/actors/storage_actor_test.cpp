// The storage actor and the topics' durable path on CAF's test coordinator, in virtual time, with a
// real SQLite store in a temporary directory: group commit, sync acknowledgements, storage faults
// with retry, and topics that continue from storage after a restart.

#include "actors/storage_actor.hpp"

#include <cstdlib>
#include <filesystem>

#include "storage/forwarding_store.hpp"
#include "tests/actors/node_fixture.hpp"

namespace relay {
namespace {

using namespace std::chrono_literals;

/// A store whose writes can be made to fail, as when the database is unreachable.
class flaky_store : public storage::forwarding_store {
 public:
  explicit flaky_store(std::unique_ptr<storage::store> inner)
      : forwarding_store(std::move(inner)) {}
  std::atomic<bool> down{false};
  std::string poison_topic;  // a batch with an event of this topic is refused as `internal`

  result<uint64_t> write(const storage::batch& b) override {
    if (down) return error{errc::unavailable, "connection refused (test)"};
    for (auto& e : b.events)
      if (e.topic == poison_topic) return error{errc::internal, "constraint failed (test)"};
    return forwarding_store::write(b);
  }
};

/// A temporary directory holding the database, removed at the end.
struct temp_dir {
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "relay-storage-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

std::shared_ptr<flaky_store> open_db(const std::string& dir) {
  auto db = storage::open_sqlite(storage::sqlite_options{dir + "/relay.db"});
  EXPECT_TRUE(db.ok()) << (db ? "" : db.err().message);
  if (!db) return nullptr;
  EXPECT_TRUE((*db)->migrate().ok());
  return std::make_shared<flaky_store>(std::move(*db));
}

node_settings durable(durability mode, uint64_t retention_events_s = 0) {
  auto s = test::small_node();
  s.storage.retention_events_s = retention_events_s;
  s.storage.retention_interval_s = 60;
  s.storage.mode = mode;
  s.storage.flush_ms = 20;
  s.storage.flush_events = 100;
  s.storage.max_pending_events = 1000;
  s.room_idle_s = 300;
  return s;
}

const caller alice{"alice", role::user};
const caller worker{"worker", role::service};

/// Records the event seqs and gaps the edge hands to a session.
class seq_sink : public sink {
 public:
  wire_format format() const noexcept override { return wire_format::sse; }
  void on_subscribed(uint64_t, const result<subscribe_ok>& a) override {
    if (a) ok = *a;
  }
  void on_frame(uint64_t, const frame_ptr& f) override {
    if (f->what == frame::kind::gap)
      gaps++;
    else
      seqs.push_back(f->seq);
  }
  void on_closed(uint64_t, const error&) override {}
  std::optional<subscribe_ok> ok;
  std::vector<uint64_t> seqs;
  int gaps = 0;
};

/// One node's actors over one database; a second fixture over the same directory is the same
/// node after a restart of the process.
class durable_node : public test::node_fixture {
 public:
  durable_node(durability mode, std::shared_ptr<flaky_store> db, uint64_t retention_events_s = 0)
      : node_fixture(durable(mode, retention_events_s), db), db_(std::move(db)) {}
  durable_node(node_settings s, std::shared_ptr<flaky_store> db)
      : node_fixture(std::move(s), db), db_(std::move(db)) {}

  result<room_post_reply> post(const std::string& text, const std::string& room = "lobby") {
    room_message_input in;
    in.text = text;
    in.has_text = true;
    return ask<room_post_reply>(room_post_atom::value, room, alice, std::move(in));
  }

  result<create_run_reply> create_external() {
    create_run_request req;
    req.kind = run_kind::external;
    return ask<create_run_reply>(create_atom::value, worker, std::move(req));
  }

  result<uint64_t> append(const std::string& id, int n) {
    std::vector<event_input> in;
    for (int i = 0; i < n; ++i) in.push_back({"delta", "{\"i\":" + std::to_string(i) + "}"});
    return ask<uint64_t>(append_atom::value, id, worker, std::move(in));
  }

  std::shared_ptr<seq_sink> subscribe(const std::string& topic, uint64_t after,
                                      const caller& who = alice) {
    auto s = std::make_shared<seq_sink>();
    caf::anon_send(edge, caf::subscribe_atom::value, next_sub++, who, topic, after, false,
                   std::weak_ptr<sink>{s});
    fx.sched.run();
    return s;
  }

  std::vector<uint64_t> stored(const std::string& topic) {
    std::vector<uint64_t> out;
    auto events = db_->events_after(topic, 0, 100000);
    EXPECT_TRUE(events.ok());
    if (events)
      for (auto& e : *events) out.push_back(e.seq);
    return out;
  }

  std::shared_ptr<flaky_store> db_;
};

class batched_node : public durable_node {
 public:
  batched_node() : durable_node(durability::batched, open_db(dir_.path)) {}
  static inline temp_dir dir_;  // one per test binary run; each test uses its own topics
};

std::vector<uint64_t> iota(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

TEST_F(batched_node, events_are_committed_together_after_flush_ms) {
  const auto commits = counters.storage_commits.load();
  ASSERT_TRUE(post("a", "gc").ok());
  ASSERT_TRUE(post("b", "gc").ok());
  ASSERT_TRUE(post("c", "gc").ok());
  EXPECT_EQ(counters.storage_commits.load(), commits);  // acknowledged, not yet written
  EXPECT_EQ(counters.storage_pending.load(), 3);
  EXPECT_TRUE(stored("room:gc").empty());
  advance(20ms);
  EXPECT_EQ(counters.storage_commits.load(), commits + 1);  // one transaction for all three
  EXPECT_EQ(counters.storage_pending.load(), 0);
  EXPECT_EQ(stored("room:gc"), iota(1, 3));
}

TEST_F(batched_node, a_full_batch_is_committed_without_waiting_for_the_timer) {
  auto run = create_external();
  ASSERT_TRUE(run.ok());
  const auto commits = counters.storage_commits.load();
  ASSERT_EQ(append(run->info.id, 150).value(), 150u);  // past flush_events (100)
  // Committed at once, in transactions of at most flush_events: 100 + 50.
  EXPECT_EQ(counters.storage_commits.load(), commits + 2);
  EXPECT_EQ(counters.storage_pending.load(), 0);
  EXPECT_EQ(stored("run:" + run->info.id), iota(1, 150));
  // The run's row is stored with it.
  auto row = db_->load_run(run->info.id);
  ASSERT_TRUE(row.ok()) << row.err().message;
  EXPECT_EQ(row->info.status, run_status::running);
  EXPECT_EQ(row->info.owner, "worker");
}

TEST_F(batched_node, a_failed_commit_is_retried_until_the_database_is_back_and_nothing_is_lost) {
  db_->down = true;
  ASSERT_TRUE(post("1", "faults").ok());
  ASSERT_TRUE(post("2", "faults").ok());
  advance(20ms);
  EXPECT_EQ(counters.storage_up.load(), 0);
  EXPECT_GE(counters.storage_errors.load(), 1u);
  // Still accepted while below max_pending_events (batched: acks precede commits).
  ASSERT_TRUE(post("3", "faults").ok());
  advance(1s);  // several retries with backoff, all failing
  EXPECT_TRUE(stored("room:faults").empty());
  db_->down = false;
  advance(6s);  // the next retry (backoff is capped at 5 s)
  EXPECT_EQ(counters.storage_up.load(), 1);
  EXPECT_EQ(counters.storage_pending.load(), 0);
  EXPECT_EQ(stored("room:faults"), iota(1, 3));
}

TEST_F(batched_node, a_batch_the_database_refuses_is_split_and_only_the_refused_part_dropped) {
  db_->poison_topic = "room:poison";
  const auto errors = counters.storage_errors.load();
  ASSERT_TRUE(post("a", "fine").ok());
  ASSERT_TRUE(post("b", "poison").ok());
  ASSERT_TRUE(post("c", "fine").ok());
  advance(20ms);
  EXPECT_EQ(stored("room:fine"), iota(1, 2));
  EXPECT_TRUE(stored("room:poison").empty());
  EXPECT_EQ(counters.storage_errors.load(), errors + 1);  // the one event dropped
  EXPECT_EQ(counters.storage_up.load(), 1);               // later commits are not blocked by it
  EXPECT_EQ(counters.storage_pending.load(), 0);
  ASSERT_TRUE(post("d", "fine").ok());
  advance(20ms);
  EXPECT_EQ(stored("room:fine"), iota(1, 3));
}

TEST_F(batched_node, past_max_pending_events_producers_are_refused_instead_of_growing_memory) {
  db_->down = true;
  auto run = create_external();
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE(append(run->info.id, 600).ok());
  ASSERT_TRUE(append(run->info.id, 600).ok());  // 1200 pending > 1000 from now on
  auto refused = append(run->info.id, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err().code, errc::unavailable);
  db_->down = false;
  advance(6s);
  EXPECT_EQ(stored("run:" + run->info.id).size(), 1200u);
  EXPECT_EQ(append(run->info.id, 1).value(), 1201u);
}

TEST(storage_backpressure, past_backpressure_events_batched_acks_wait_for_the_commit) {
  temp_dir dir;
  auto db = open_db(dir.path);
  auto settings = durable(durability::batched);
  settings.storage.flush_events = 1000;  // no commit by size: only the timer or a barrier
  settings.storage.backpressure_events = 100;
  struct node_t : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
  } n{settings, db};
  auto run = n.create_external();
  ASSERT_TRUE(run.ok());
  const std::string topic = "run:" + run->info.id;
  // No virtual time passes in this test: a commit can only come from a waiting ack's barrier.
  ASSERT_EQ(n.append(run->info.id, 150).value(), 150u);  // below the mark: acked before commit
  EXPECT_TRUE(n.stored(topic).empty());
  EXPECT_EQ(n.counters.storage_pending.load(), 150);
  ASSERT_EQ(n.append(run->info.id, 1).value(), 151u);  // 150 behind: this ack waited
  EXPECT_EQ(n.stored(topic), iota(1, 151));
  EXPECT_EQ(n.counters.storage_pending.load(), 0);
  ASSERT_EQ(n.append(run->info.id, 1).value(), 152u);  // caught up: no wait again
  EXPECT_EQ(n.stored(topic), iota(1, 151));
  // Rooms too (the room's activation reads storage, which commits event 152 first): the 101st
  // message finds 100 waiting.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(n.post("m", "bp").ok());
  EXPECT_TRUE(n.stored("room:bp").empty());
  ASSERT_EQ(n.post("m", "bp").value().seq, 101u);
  EXPECT_EQ(n.stored("room:bp"), iota(1, 101));
  EXPECT_EQ(n.stored(topic), iota(1, 152));
  // Storage down while behind: the waiting producer hears `unavailable` (no ack it cannot keep),
  // its events stay pending and land once the database is back.
  db->down = true;
  ASSERT_TRUE(n.append(run->info.id, 120).ok());  // nothing was pending: acked at once
  auto failed = n.append(run->info.id, 1);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.err().code, errc::unavailable);
  db->down = false;
  n.advance(6s);
  EXPECT_EQ(n.stored(topic), iota(1, 273));
  EXPECT_EQ(n.counters.storage_pending.load(), 0);
}

TEST(storage_restart, a_room_continues_its_seq_and_replays_from_storage_after_a_restart) {
  temp_dir dir;
  {
    auto db = open_db(dir.path);
    struct first : durable_node {
      using durable_node::durable_node;
      void TestBody() override {}
    } n{durability::batched, db};
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(n.post("m" + std::to_string(i)).ok());
    // The node stops here (fixture destructor): storage commits what is pending.
  }
  auto db = open_db(dir.path);
  struct second : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
  } n{durability::batched, db};
  auto next = n.post("after restart");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->seq, 6u);  // numbering continues
  auto s = n.subscribe("room:lobby", 0);
  ASSERT_TRUE(s->ok);
  EXPECT_TRUE(s->ok->recovered);
  EXPECT_EQ(s->gaps, 0);
  EXPECT_EQ(s->seqs, iota(1, 6));  // the ring was reloaded from storage: no gap
}

TEST(storage_restart, a_crashed_run_restarts_from_storage_and_a_resumer_sees_no_gap) {
  temp_dir dir;
  auto db = open_db(dir.path);
  struct node_t : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
    caf::actor run_handle(const std::string& id) {
      return caf::actor_cast<shard_actor_type*>(shard)->state.runs.at(id).handle;
    }
  } n{durability::batched, db};
  auto run = n.create_external();
  ASSERT_TRUE(run.ok());
  const auto& id = run->info.id;
  ASSERT_EQ(n.append(id, 3).value(), 3u);
  caf::anon_send_exit(n.run_handle(id), caf::exit_reason::kill);
  n.fx.sched.run();
  EXPECT_EQ(n.counters.restarts.load(), 1u);
  EXPECT_EQ(n.append(id, 1).value(), 4u);
  auto resumed = n.subscribe("run:" + id, 1, worker);  // the run's owner
  ASSERT_TRUE(resumed->ok);
  EXPECT_TRUE(resumed->ok->recovered);
  EXPECT_EQ(resumed->gaps, 0);
  EXPECT_EQ(resumed->seqs, iota(2, 4));
}

TEST(storage_restart, past_the_restart_budget_the_error_event_follows_the_stored_events) {
  temp_dir dir;
  auto db = open_db(dir.path);
  struct node_t : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
    caf::actor run_handle(const std::string& id) {
      return caf::actor_cast<shard_actor_type*>(shard)->state.runs.at(id).handle;
    }
  } n{durability::batched, db};
  auto run = n.create_external();
  ASSERT_TRUE(run.ok());
  const auto& id = run->info.id;
  ASSERT_EQ(n.append(id, 3).value(), 3u);
  auto live = n.subscribe("run:" + id, 0, worker);
  for (int i = 0; i < 10 && n.counters.crashes_final.load() == 0; ++i) {
    caf::anon_send_exit(n.run_handle(id), caf::exit_reason::kill);
    n.fx.sched.run();
  }
  ASSERT_EQ(n.counters.crashes_final.load(), 1u);
  // The crashed incarnation restored 1..3 from storage before it ended: its error event is 4,
  // delivered to the live subscriber and stored, never a second seq 1 or a hole.
  EXPECT_EQ(live->seqs, iota(1, 4));
  EXPECT_EQ(live->gaps, 0);
  n.advance(20ms);  // the group commit
  EXPECT_EQ(n.stored("run:" + id), iota(1, 4));
  auto row = db->load_run(id);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->info.status, run_status::failed);
  EXPECT_EQ(row->info.reason, "crashed");
  EXPECT_EQ(row->info.last_seq, 4u);
}

TEST_F(batched_node, a_resume_older_than_the_ring_is_filled_from_storage_without_a_gap) {
  auto run = create_external();
  ASSERT_TRUE(run.ok());
  const auto& id = run->info.id;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(append(id, 50).ok());  // 250 events, ring of 100
  const auto gaps = counters.gaps.load();
  auto s = subscribe("run:" + id, 10, worker);
  ASSERT_TRUE(s->ok);
  EXPECT_TRUE(s->ok->recovered);
  EXPECT_EQ(s->ok->last_seq, 250u);
  EXPECT_EQ(s->gaps, 0);
  EXPECT_EQ(s->seqs, iota(11, 250));
  EXPECT_EQ(counters.gaps.load(), gaps);
  ASSERT_EQ(append(id, 1).value(), 251u);  // and it is live afterwards
  EXPECT_EQ(s->seqs.back(), 251u);
  EXPECT_EQ(s->seqs.size(), 241u);
}

TEST_F(batched_node, a_fill_spanning_several_chunks_arrives_whole_and_in_order) {
  auto run = create_external();
  ASSERT_TRUE(run.ok());
  const auto& id = run->info.id;
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(append(id, 100).ok());  // 2 500 > 2 chunks of 1 000
  auto s = subscribe("run:" + id, 0, worker);
  ASSERT_TRUE(s->ok);
  EXPECT_TRUE(s->ok->recovered);
  EXPECT_EQ(s->gaps, 0);
  EXPECT_EQ(s->seqs, iota(1, 2500));
}

TEST(storage_restart, runs_are_found_after_a_restart_and_running_ones_are_taken_over) {
  temp_dir dir;
  std::string live_id, done_id;
  {
    auto db = open_db(dir.path);
    struct first : durable_node {
      using durable_node::durable_node;
      void TestBody() override {}
    } n{durability::batched, db};
    auto live = n.create_external();
    auto done = n.create_external();
    ASSERT_TRUE(live.ok() && done.ok());
    live_id = live->info.id;
    done_id = done->info.id;
    ASSERT_EQ(n.append(live_id, 3).value(), 3u);
    ASSERT_EQ(n.append(done_id, 2).value(), 2u);
    auto fin = n.ask<run_info>(finish_atom::value, done_id, worker, finish_kind::complete,
                               std::string{"{\"ok\":true}"});
    ASSERT_TRUE(fin.ok());
  }
  auto db = open_db(dir.path);
  struct second : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
  } n{durability::batched, db};
  // The run left running was taken over at start: same id, same seq, still fed by its producer.
  auto live = n.ask<run_info>(caf::get_atom::value, live_id, worker);
  ASSERT_TRUE(live.ok()) << live.err().message;
  EXPECT_EQ(live->status, run_status::running);
  EXPECT_EQ(live->last_seq, 3u);
  EXPECT_EQ(n.append(live_id, 1).value(), 4u);
  auto s = n.subscribe("run:" + live_id, 0, worker);
  EXPECT_EQ(s->seqs, iota(1, 4));
  EXPECT_EQ(s->gaps, 0);
  // Nobody feeds it any more: it times out like any run.
  n.advance(61s);
  EXPECT_EQ(n.ask<run_info>(caf::get_atom::value, live_id, worker)->status, run_status::timed_out);
  // A finished run is found on demand and replays whole, terminal event included.
  auto done = n.ask<run_info>(caf::get_atom::value, done_id, worker);
  ASSERT_TRUE(done.ok()) << done.err().message;
  EXPECT_EQ(done->status, run_status::completed);
  auto late = n.subscribe("run:" + done_id, 0, worker);
  EXPECT_EQ(late->seqs, iota(1, 3));
  // Unknown ids are still unknown.
  EXPECT_EQ(n.ask<run_info>(caf::get_atom::value, std::string{"nope"}, worker).err().code,
            errc::not_found);
}

TEST(storage_retention, old_events_are_deleted_periodically_and_numbering_continues) {
  temp_dir dir;
  auto db = open_db(dir.path);
  struct node_t : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
  } n{durability::batched, db, 3600};
  storage::batch old;
  for (uint64_t s = 1; s <= 3; ++s)
    old.events.push_back({"room:old", event{s, "message", "{}", now_ms() - 2 * 3600 * 1000}});
  ASSERT_TRUE(db->write(old).ok());
  ASSERT_TRUE(n.post("fresh", "new").ok());
  n.advance(60s);  // the retention interval
  EXPECT_TRUE(n.stored("room:old").empty());
  EXPECT_EQ(n.stored("room:new"), iota(1, 1));
  EXPECT_GE(n.counters.storage_retained.load(), 3u);
  // A room whose events were all deleted still continues its numbering.
  auto next = n.post("again", "old");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->seq, 4u);
}

TEST(storage_sync, the_producer_is_answered_after_the_commit_and_refused_while_storage_is_down) {
  temp_dir dir;
  auto db = open_db(dir.path);
  struct node_t : durable_node {
    using durable_node::durable_node;
    void TestBody() override {}
  } n{durability::sync, db};
  auto run = n.create_external();
  ASSERT_TRUE(run.ok());
  const auto& id = run->info.id;
  // No time passes: the answer could only come because the barrier forced the commit.
  ASSERT_EQ(n.append(id, 2).value(), 2u);
  EXPECT_EQ(n.stored("run:" + id), iota(1, 2));
  db->down = true;
  auto failed = n.append(id, 1);  // appended in memory, the commit fails: not acknowledged
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.err().code, errc::unavailable);
  auto refused = n.append(id, 1);  // storage known down: refused before appending
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err().code, errc::unavailable);
  db->down = false;
  n.advance(6s);
  EXPECT_EQ(n.append(id, 1).value(), 4u);
  EXPECT_EQ(n.stored("run:" + id), iota(1, 4));
}

}  // namespace
}  // namespace relay
