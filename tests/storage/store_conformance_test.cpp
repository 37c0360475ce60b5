// The storage contract (storage/store.hpp), run against every backend (see store_conformance.hpp).

#include "tests/storage/store_conformance.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace relay::storage::test {
namespace {

event ev(uint64_t seq, int64_t ts = 1000, std::string data = "") {
  if (data.empty()) data = "{\"n\":" + std::to_string(seq) + "}";
  return event{seq, "delta", std::move(data), ts};
}

batch events_of(const std::string& topic, uint64_t from, uint64_t to, int64_t ts = 1000) {
  batch b;
  for (uint64_t s = from; s <= to; ++s) b.events.push_back({topic, ev(s, ts)});
  return b;
}

std::vector<uint64_t> seqs(const std::vector<event>& events) {
  std::vector<uint64_t> out;
  for (auto& e : events) out.push_back(e.seq);
  return out;
}

run_row run(const std::string& id, run_status status = run_status::running, int64_t created = 1,
            int64_t ended = 0) {
  run_row r;
  r.info.id = id;
  r.info.kind = run_kind::synthetic;
  r.info.status = status;
  r.info.owner = "alice";
  r.info.created_at = created;
  r.info.ended_at = ended;
  r.input = R"({"count":5,"interval_ms":10})";
  r.idempotency_key = "key-" + id;
  r.inactivity_s = 30;
  r.ttl_s = 900;
  return r;
}

TEST_P(store_conformance, migrate_is_idempotent_and_reports_the_version) {
  auto first = db().migrate();
  ASSERT_TRUE(first.ok()) << first.err().message;
  EXPECT_GE(*first, 1);
  auto again = db().migrate();
  ASSERT_TRUE(again.ok()) << again.err().message;
  EXPECT_EQ(*again, *first);
  EXPECT_TRUE(db().ping().ok());
}

TEST_P(store_conformance, events_come_back_in_seq_order_per_topic_with_their_fields) {
  auto b = events_of("run:a", 1, 5);
  auto more = events_of("room:lobby", 1, 3);
  b.events.insert(b.events.end(), more.events.begin(), more.events.end());
  auto w = db().write(b);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 8u);
  auto all = db().events_after("run:a", 0, 100);
  ASSERT_TRUE(all.ok()) << all.err().message;
  EXPECT_EQ(seqs(*all), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ((*all)[2].type, "delta");
  EXPECT_EQ((*all)[2].data, R"({"n":3})");
  EXPECT_EQ((*all)[2].ts, 1000);
  EXPECT_EQ(seqs(*db().events_after("run:a", 2, 2)), (std::vector<uint64_t>{3, 4}));
  EXPECT_TRUE(db().events_after("run:a", 5, 100)->empty());
  EXPECT_EQ(seqs(*db().events_after("room:lobby", 0, 100)), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(db().events_after("run:none", 0, 100)->empty());
  EXPECT_EQ(*db().last_seq("run:a"), 5u);
  EXPECT_EQ(*db().first_seq("run:a"), 1u);
  EXPECT_EQ(*db().last_seq("run:none"), 0u);
  EXPECT_EQ(*db().first_seq("run:none"), 0u);
}

TEST_P(store_conformance, retrying_a_batch_inserts_nothing_twice_and_keeps_the_first_data) {
  ASSERT_TRUE(db().write(events_of("run:a", 1, 3)).ok());
  auto retry = events_of("run:a", 1, 4);
  retry.events[0].e.data = R"({"changed":true})";
  auto w = db().write(retry);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 1u);  // only seq 4 was new
  auto all = *db().events_after("run:a", 0, 100);
  EXPECT_EQ(seqs(all), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(all[0].data, R"({"n":1})");
}

TEST_P(store_conformance, last_seq_is_the_highest_written_whatever_the_batch_order) {
  ASSERT_TRUE(db().write(events_of("room:r", 5, 6)).ok());
  ASSERT_TRUE(db().write(events_of("room:r", 1, 4)).ok());
  EXPECT_EQ(*db().last_seq("room:r"), 6u);
  EXPECT_EQ(seqs(*db().events_after("room:r", 0, 100)), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
}

TEST_P(store_conformance, data_and_types_are_stored_byte_exact) {
  const std::string unicode =
      R"({"text":"h\u00e9llo \"w\" \\ \n","emoji":"😀","nested":[1,{"a":null}]})";
  const std::string big = "{\"blob\":\"" + std::string(64 * 1024, 'x') + "\"}";
  batch b;
  b.events.push_back({"run:a", event{1, "tool.call-1", unicode, 42}});
  b.events.push_back({"run:a", event{2, "delta", big, 43}});
  b.events.push_back({"run:a", event{3, "complete", "null", 44}});
  ASSERT_TRUE(db().write(b).ok());
  auto all = *db().events_after("run:a", 0, 10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].type, "tool.call-1");
  EXPECT_EQ(all[0].data, unicode);
  EXPECT_EQ(all[1].data, big);
  EXPECT_EQ(all[2].data, "null");
  EXPECT_EQ(all[2].ts, 44);
}

TEST_P(store_conformance, a_large_batch_is_one_write) {
  auto b = events_of("run:flood", 1, 5000);
  // append, not "r" + to_string: g++ 12 -O2 warns falsely on the latter (-Wrestrict, PR105329)
  for (int i = 0; i < 50; ++i) b.runs.push_back(run(std::string{"r"}.append(std::to_string(i))));
  auto w = db().write(b);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 5000u);
  EXPECT_EQ(db().events_after("run:flood", 4990, 100)->size(), 10u);
  EXPECT_EQ(db().running_runs()->size(), 50u);
}

TEST_P(store_conformance, run_rows_are_upserted_and_loaded_with_every_field) {
  ASSERT_TRUE(db().write(batch{{run("a", run_status::running, 100)}, {}}).ok());
  auto loaded = db().load_run("a");
  ASSERT_TRUE(loaded.ok()) << loaded.err().message;
  EXPECT_EQ(loaded->info.status, run_status::running);
  EXPECT_EQ(loaded->info.kind, run_kind::synthetic);
  EXPECT_EQ(loaded->info.owner, "alice");
  EXPECT_EQ(loaded->info.created_at, 100);
  EXPECT_EQ(loaded->info.ended_at, 0);
  EXPECT_EQ(loaded->input, R"({"count":5,"interval_ms":10})");
  EXPECT_EQ(loaded->idempotency_key, "key-a");
  EXPECT_EQ(loaded->inactivity_s, 30u);
  EXPECT_EQ(loaded->ttl_s, 900u);
  auto done = run("a", run_status::timed_out, 100, 200);
  done.info.reason = "inactivity";
  done.info.last_seq = 17;
  ASSERT_TRUE(db().write(batch{{done}, {}}).ok());
  loaded = db().load_run("a");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->info.status, run_status::timed_out);
  EXPECT_EQ(loaded->info.reason, "inactivity");
  EXPECT_EQ(loaded->info.ended_at, 200);
  EXPECT_EQ(loaded->info.last_seq, 17u);
  auto missing = db().load_run("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.err().code, errc::not_found);
}

TEST_P(store_conformance, running_runs_lists_only_running_ones_oldest_first) {
  batch b;
  b.runs = {run("late", run_status::running, 300), run("done", run_status::completed, 100, 150),
            run("early", run_status::running, 200)};
  ASSERT_TRUE(db().write(b).ok());
  auto r = db().running_runs();
  ASSERT_TRUE(r.ok()) << r.err().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].info.id, "early");
  EXPECT_EQ((*r)[1].info.id, "late");
}

TEST_P(store_conformance, history_pages_walk_backwards_and_each_page_is_oldest_first) {
  ASSERT_TRUE(db().write(events_of("room:lobby", 1, 10)).ok());
  EXPECT_EQ(seqs(*db().events_before("room:lobby", 0, 3)), (std::vector<uint64_t>{8, 9, 10}));
  EXPECT_EQ(seqs(*db().events_before("room:lobby", 8, 3)), (std::vector<uint64_t>{5, 6, 7}));
  EXPECT_EQ(seqs(*db().events_before("room:lobby", 3, 5)), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(db().events_before("room:lobby", 1, 5)->empty());
  EXPECT_TRUE(db().events_before("room:other", 0, 5)->empty());
}

TEST_P(store_conformance, retention_deletes_old_events_but_keeps_the_numbering) {
  ASSERT_TRUE(db().write(events_of("room:r", 1, 5, 1000)).ok());
  ASSERT_TRUE(db().write(events_of("room:r", 6, 8, 5000)).ok());
  auto deleted = db().delete_older_than(2000, 0);
  ASSERT_TRUE(deleted.ok()) << deleted.err().message;
  EXPECT_EQ(*deleted, 5u);
  EXPECT_EQ(seqs(*db().events_after("room:r", 0, 100)), (std::vector<uint64_t>{6, 7, 8}));
  EXPECT_EQ(*db().first_seq("room:r"), 6u);
  ASSERT_TRUE(db().delete_older_than(9000, 0).ok());
  EXPECT_EQ(*db().first_seq("room:r"), 0u);
  EXPECT_EQ(*db().last_seq("room:r"), 8u);  // a re-activated room continues at 9
}

TEST_P(store_conformance, retention_deletes_finished_runs_with_their_events_only) {
  batch b;
  b.runs = {run("old", run_status::completed, 10, 100), run("new", run_status::completed, 10, 900),
            run("live", run_status::running, 10)};
  for (const char* id : {"old", "new", "live"}) {
    auto e = events_of(std::string{"run:"} + id, 1, 2, 50);
    b.events.insert(b.events.end(), e.events.begin(), e.events.end());
  }
  ASSERT_TRUE(db().write(b).ok());
  ASSERT_TRUE(db().delete_older_than(0, 500).ok());
  EXPECT_EQ(db().load_run("old").err().code, errc::not_found);
  EXPECT_TRUE(db().events_after("run:old", 0, 10)->empty());
  EXPECT_TRUE(db().load_run("new").ok());
  EXPECT_EQ(db().events_after("run:new", 0, 10)->size(), 2u);
  EXPECT_TRUE(db().load_run("live").ok());
  EXPECT_EQ(db().events_after("run:live", 0, 10)->size(), 2u);
}

TEST_P(store_conformance, readers_running_beside_the_writer_see_contiguous_prefixes) {
  constexpr uint64_t batches = 40, per_batch = 50;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<int> reads{0};
  auto reader = [&] {
    while (!done.load()) {
      auto r = db().events_after("run:c", 0, batches * per_batch);
      if (!r.ok()) {
        ++bad;
        continue;
      }
      // All or nothing per batch, in order: what is visible is 1..k·per_batch without a hole.
      for (std::size_t i = 0; i < r->size(); ++i)
        if ((*r)[i].seq != i + 1) ++bad;
      if (r->size() % per_batch != 0) ++bad;
      ++reads;
    }
  };
  // The writer goes on only once a read has finished since its last batch (bounded wait), so the
  // reads interleave with the writes however the threads are scheduled: on a busy machine the
  // writer could otherwise be done before a reader ran at all.
  auto await_a_read = [&] {
    const int seen = reads.load();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (reads.load() == seen && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
  };
  std::thread r1{reader}, r2{reader};
  await_a_read();
  for (uint64_t k = 0; k < batches; ++k) {
    auto w = db().write(events_of("run:c", k * per_batch + 1, (k + 1) * per_batch));
    if (!w.ok()) {
      ADD_FAILURE() << w.err().message;  // not ASSERT: the readers must be joined first
      break;
    }
    await_a_read();
  }
  done = true;
  r1.join();
  r2.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), static_cast<int>(batches));  // at least one read after each batch
  EXPECT_EQ(db().events_after("run:c", 0, 10000)->size(), batches * per_batch);
}

TEST_P(store_conformance, an_empty_batch_writes_nothing_and_answers_zero) {
  auto w = db().write(batch{});
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 0u);
  auto d = db().delete_older_than(0, 0);
  ASSERT_TRUE(d.ok()) << d.err().message;
  EXPECT_EQ(*d, 0u);
}

TEST_P(store_conformance, positions_and_limits_at_the_edges_are_honoured) {
  ASSERT_TRUE(db().write(events_of("room:e", 1, 10)).ok());
  const uint64_t top = ~uint64_t{0};  // a replay position past everything (2^64-1)
  EXPECT_TRUE(db().events_after("room:e", top, 10)->empty());
  EXPECT_TRUE(db().events_after("room:e", max_stored_seq, 10)->empty());
  EXPECT_TRUE(db().events_after("room:e", 0, 0)->empty());
  EXPECT_EQ(seqs(*db().events_after("room:e", 0, top)).size(), 10u);
  EXPECT_EQ(seqs(*db().events_before("room:e", top, 2)), (std::vector<uint64_t>{9, 10}));
  EXPECT_EQ(seqs(*db().events_before("room:e", 11, 2)), (std::vector<uint64_t>{9, 10}));
  EXPECT_TRUE(db().events_before("room:e", 0, 0)->empty());
  EXPECT_EQ(db().events_before("room:e", 0, top)->size(), 10u);
}

TEST_P(store_conformance, a_batch_with_a_seq_out_of_range_is_refused_whole) {
  for (uint64_t bad : {uint64_t{0}, max_stored_seq + 1, ~uint64_t{0}}) {
    auto b = events_of("run:a", 1, 3);
    b.runs.push_back(run("a"));
    b.events.push_back({"run:b", ev(bad)});
    auto w = db().write(b);
    ASSERT_FALSE(w.ok()) << "seq " << bad << " was accepted";
    EXPECT_EQ(w.err().code, errc::internal);
    EXPECT_TRUE(db().events_after("run:a", 0, 10)->empty());
    EXPECT_EQ(*db().last_seq("run:a"), 0u);
    EXPECT_EQ(db().load_run("a").err().code, errc::not_found);
  }
  auto top = events_of("run:a", max_stored_seq, max_stored_seq);  // the highest is fine
  ASSERT_TRUE(db().write(top).ok());
  EXPECT_EQ(*db().last_seq("run:a"), max_stored_seq);
}

TEST_P(store_conformance, interleaved_topics_in_one_batch_each_get_their_last_seq) {
  batch b;
  for (uint64_t s = 1; s <= 6; ++s) {
    b.events.push_back({"run:x", ev(s)});
    b.events.push_back({"room:y", ev(10 * s)});
  }
  b.events.push_back({"run:x", ev(3)});  // a duplicate inside the batch is inserted once
  auto w = db().write(b);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 12u);
  EXPECT_EQ(*db().last_seq("run:x"), 6u);
  EXPECT_EQ(*db().last_seq("room:y"), 60u);
  EXPECT_EQ(*db().first_seq("room:y"), 10u);
}

TEST_P(store_conformance, the_last_row_of_a_run_in_a_batch_wins) {
  batch b;
  b.runs = {run("a", run_status::running, 100), run("a", run_status::completed, 100, 300)};
  ASSERT_TRUE(db().write(b).ok());
  auto loaded = db().load_run("a");
  ASSERT_TRUE(loaded.ok()) << loaded.err().message;
  EXPECT_EQ(loaded->info.status, run_status::completed);
  EXPECT_EQ(loaded->info.ended_at, 300);
  EXPECT_TRUE(db().running_runs()->empty());
}

TEST_P(store_conformance, running_runs_carry_every_field) {
  auto r = run("a", run_status::running, 100);
  r.info.kind = run_kind::external;
  r.info.last_seq = 12;
  r.idempotency_key.clear();
  ASSERT_TRUE(db().write(batch{{r}, {}}).ok());
  auto all = db().running_runs();
  ASSERT_TRUE(all.ok()) << all.err().message;
  ASSERT_EQ(all->size(), 1u);
  const run_row& got = all->front();
  EXPECT_EQ(got.info.id, "a");
  EXPECT_EQ(got.info.kind, run_kind::external);
  EXPECT_EQ(got.info.owner, "alice");
  EXPECT_EQ(got.info.last_seq, 12u);
  EXPECT_EQ(got.info.created_at, 100);
  EXPECT_EQ(got.input, r.input);
  EXPECT_EQ(got.idempotency_key, "");
  EXPECT_EQ(got.inactivity_s, 30u);
  EXPECT_EQ(got.ttl_s, 900u);
}

TEST_P(store_conformance, retention_of_a_finished_run_counts_its_events_and_its_row) {
  batch b = events_of("run:old", 1, 4, 50);
  b.runs = {run("old", run_status::failed, 10, 100)};
  ASSERT_TRUE(db().write(b).ok());
  auto deleted = db().delete_older_than(0, 500);
  ASSERT_TRUE(deleted.ok()) << deleted.err().message;
  EXPECT_EQ(*deleted, 5u);                   // 4 events + 1 run; the topic row is not counted
  EXPECT_EQ(*db().last_seq("run:old"), 0u);  // its topic row went with it
  EXPECT_EQ(*db().first_seq("run:old"), 0u);
  EXPECT_EQ(*db().delete_older_than(0, 500), 0u);
}

TEST_P(store_conformance, two_writers_at_once_both_land) {
  std::atomic<int> failed{0};
  auto writer = [&](const std::string& topic) {
    for (uint64_t k = 0; k < 20; ++k)
      if (!db().write(events_of(topic, k * 25 + 1, (k + 1) * 25)).ok()) ++failed;
  };
  std::thread w1{writer, "run:w1"}, w2{writer, "run:w2"};
  w1.join();
  w2.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(db().events_after("run:w1", 0, 1000)->size(), 500u);
  EXPECT_EQ(*db().last_seq("run:w2"), 500u);
}

}  // namespace
}  // namespace relay::storage::test
