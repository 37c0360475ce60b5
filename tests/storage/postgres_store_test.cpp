// The PostgreSQL backend (storage/postgres_store.cpp): the conformance suite in a fresh schema per
// test, then what only PostgreSQL has — sessions killed under the store, a pool with every
// connection busy, several processes migrating at once, a schema newer than the build, values as
// plain text, event blocks (version 1's events migrated, retries filling gaps, reads paging
// through small blocks, writers of one topic at once, damaged blocks), and servers that refuse or
// never answer.
//
// Needs a server: RELAY_TEST_POSTGRES is a libpq conninfo (`eval "$(scripts/pg-test-cluster
// start)"` starts a throw-away one and sets it). Without it these tests are skipped, or fail when
// CI or RELAY_REQUIRE_POSTGRES=1 says PostgreSQL must be tested. The offline tests (nothing
// listening, a server that never answers, a malformed conninfo) always run.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <random>
#include <thread>

#include "storage/event_block.hpp"
#include "storage/forwarding_store.hpp"
#include "tests/storage/store_conformance.hpp"

namespace relay::storage::test {
namespace {

using steady = std::chrono::steady_clock;

// -- the server under test ----------------------------------------------------------------------

std::string server_conninfo() {
  const char* v = std::getenv("RELAY_TEST_POSTGRES");
  return v != nullptr ? v : "";
}

bool postgres_required() {
  const char* ci = std::getenv("CI");
  const char* required = std::getenv("RELAY_REQUIRE_POSTGRES");
  const std::string_view c = ci != nullptr ? ci : "";
  return (!c.empty() && c != "0" && c != "false") ||
         (required != nullptr && std::string_view{required} == "1");
}

constexpr const char* no_server =
    "RELAY_TEST_POSTGRES is not set (a libpq conninfo; `eval \"$(scripts/pg-test-cluster "
    "start)\"` starts a throw-away PostgreSQL and sets it)";

/// Skips the current test when no server is configured, or fails it when one is required.
void skip_or_fail_without_server() {
  if (postgres_required()) {
    GTEST_FAIL() << no_server << "; CI or RELAY_REQUIRE_POSTGRES=1 requires the PostgreSQL tests";
  }
  GTEST_SKIP() << no_server;
}

void ignore_notice(void*, const char*) {}

/// A plain libpq session on the test server, as an operator's psql or another process would be.
class admin_connection {
 public:
  admin_connection() : c_(PQconnectdb(server_conninfo().c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) {
      ADD_FAILURE() << "cannot connect to " << server_conninfo() << ": " << PQerrorMessage(c_);
    }
    PQsetNoticeProcessor(c_, ignore_notice, nullptr);
  }
  admin_connection(const admin_connection&) = delete;
  admin_connection& operator=(const admin_connection&) = delete;
  ~admin_connection() { PQfinish(c_); }

  /// Runs `sql` with text parameters and fails the test if it fails; answers the first value of
  /// the first row ("" when there is none).
  std::string exec(const std::string& sql, const std::vector<std::string>& params = {}) {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    PGresult* r = PQexecParams(c_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
    std::string out;
    const auto status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
    } else if (PQntuples(r) > 0 && PQnfields(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    }
    PQclear(r);
    return out;
  }

 private:
  PGconn* c_;
};

/// A schema of its own for one test, dropped with everything in it at the end. Sessions opened
/// with conninfo() work in it and carry its name as application_name, so a test can find (and
/// kill) its own store's sessions while other test processes share the server.
class scratch_schema {
 public:
  scratch_schema() {
    static std::atomic<unsigned> counter{0};
    std::random_device random;
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%d_%u_%08x", static_cast<int>(::getpid()), counter++,
                  random());
    name_ = std::string{"relay_test_"} + suffix;
    admin_connection{}.exec("CREATE SCHEMA " + name_);
  }
  scratch_schema(const scratch_schema&) = delete;
  scratch_schema& operator=(const scratch_schema&) = delete;
  ~scratch_schema() { admin_connection{}.exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE"); }

  const std::string& name() const noexcept { return name_; }

  /// The server's conninfo (key=value or URI form) plus this schema's session options.
  std::string conninfo() const {
    const std::string base = server_conninfo();
    if (base.starts_with("postgresql://") || base.starts_with("postgres://")) {
      return base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
             name_ + "&application_name=" + name_;
    }
    return base + " options='-c search_path=" + name_ + "' application_name=" + name_;
  }

 private:
  std::string name_;
};

/// A store that owns the schema it works in: the conformance suite's stores, so that no test
/// leaves anything in the database.
class store_in_schema final : public forwarding_store {
 public:
  /// `schema` null: no server (a skipped test, whose body never runs).
  explicit store_in_schema(std::unique_ptr<scratch_schema> schema) : schema_(std::move(schema)) {}
  ~store_in_schema() override { close_inner(); }  // the store closes before its schema is dropped
  const scratch_schema* schema() const noexcept { return schema_.get(); }
  std::string_view backend() const noexcept override { return "postgres"; }

 private:
  std::unique_ptr<scratch_schema> schema_;
};

std::unique_ptr<store> make_postgres() {
  if (server_conninfo().empty()) {
    skip_or_fail_without_server();
    if (postgres_required()) return nullptr;
    return std::make_unique<store_in_schema>(nullptr);  // SetUp passes, the skipped body never runs
  }
  auto s = std::make_unique<store_in_schema>(std::make_unique<scratch_schema>());
  auto db = open_postgres({.conninfo = s->schema()->conninfo()});
  return adopt_migrated(std::move(s), std::move(db));
}

INSTANTIATE_TEST_SUITE_P(postgres, store_conformance,
                         ::testing::Values(store_factory{"postgres", make_postgres}),
                         [](const auto& info) { return info.param.name; });

// -- PostgreSQL only ----------------------------------------------------------------------------

batch events_of(const std::string& topic, uint64_t from, uint64_t to, std::string data = "") {
  batch b;
  for (uint64_t s = from; s <= to; ++s) {
    b.events.push_back(
        {topic,
         event{s, "delta", data.empty() ? "{\"n\":" + std::to_string(s) + "}" : data, 1000}});
  }
  return b;
}

run_row running(const std::string& id) {
  run_row r;
  r.info.id = id;
  r.info.owner = "alice";
  r.info.created_at = 1;
  return r;
}

class postgres_store_test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (server_conninfo().empty()) {
      skip_or_fail_without_server();
      return;
    }
    schema_ = std::make_unique<scratch_schema>();
  }

  const std::string& schema() const { return schema_->name(); }

  /// A store in this test's schema; migrated unless told otherwise.
  std::unique_ptr<store> open(unsigned pool_size = 4, bool migrate = true,
                              unsigned connect_timeout_s = 5) {
    auto db = open_postgres({.conninfo = schema_->conninfo(),
                             .pool_size = pool_size,
                             .connect_timeout_s = connect_timeout_s});
    if (!db) {
      ADD_FAILURE() << db.err().message;
      return nullptr;
    }
    if (migrate) {
      if (auto v = (*db)->migrate(); !v) {
        ADD_FAILURE() << v.err().message;
        return nullptr;
      }
    }
    return std::move(*db);
  }

  /// Terminates every session of this test's stores, waiting until each is gone; answers how
  /// many there were.
  int kill_sessions(admin_connection& admin) {
    const std::string killed = admin.exec(
        "SELECT count(*) FILTER (WHERE gone) FROM (SELECT pg_terminate_backend(pid, 10000) AS "
        "gone FROM pg_stat_activity WHERE application_name = $1) AS k",
        {schema()});
    return killed.empty() ? 0 : std::stoi(killed);  // empty: exec failed the test already
  }
  int kill_sessions() {
    admin_connection admin;
    return kill_sessions(admin);
  }

  /// Keeps `threads` callers busy on `db` at once for a moment, so the pool opens several
  /// connections.
  static void use_concurrently(store& db, int threads) {
    std::latch go{threads};
    std::vector<std::thread> users;
    for (int t = 0; t < threads; ++t) {
      users.emplace_back([&] {
        go.arrive_and_wait();
        for (int i = 0; i < 20; ++i) EXPECT_TRUE(db.events_after("run:warm", 0, 10).ok());
      });
    }
    for (auto& u : users) u.join();
  }

  std::unique_ptr<scratch_schema> schema_;
};

TEST_F(postgres_store_test, sessions_killed_while_idle_fail_at_most_once_each_then_work_again) {
  auto db = open(3);
  ASSERT_TRUE(db);
  use_concurrently(*db, 3);
  const int killed = kill_sessions();
  ASSERT_GE(killed, 1);

  // One caller at a time: each dead connection may cost one unavailable, then it is replaced.
  int failures = 0;
  uint64_t next = 1;
  for (int i = 0; i <= killed; ++i) {
    auto w = db->write(events_of("run:a", next, next));
    if (w.ok()) {
      ++next;
    } else {
      EXPECT_EQ(w.err().code, errc::unavailable) << w.err().message;
      ++failures;
    }
  }
  EXPECT_LE(failures, killed);
  auto w = db->write(events_of("run:a", next, next));
  ASSERT_TRUE(w.ok()) << w.err().message;

  // Several callers at once, after killing again: still at most one failure per connection,
  // and every batch goes in when retried (nothing reopened).
  use_concurrently(*db, 3);
  const int killed_again = kill_sessions();
  ASSERT_GE(killed_again, 1);
  std::atomic<int> concurrent_failures{0};
  std::latch go{3};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      const std::string topic = "room:" + std::to_string(t);
      go.arrive_and_wait();
      for (uint64_t s = 1; s <= 5; ++s) {
        auto r = db->write(events_of(topic, s, s));
        if (!r.ok()) {
          EXPECT_EQ(r.err().code, errc::unavailable) << r.err().message;
          ++concurrent_failures;
          r = db->write(events_of(topic, s, s));
          EXPECT_TRUE(r.ok()) << r.err().message;
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_LE(concurrent_failures.load(), killed_again);
  std::printf("[ info     ] killed %d then %d sessions: %d then %d writes failed\n", killed,
              killed_again, failures, concurrent_failures.load());
  for (int t = 0; t < 3; ++t) EXPECT_EQ(*db->last_seq("room:" + std::to_string(t)), 5u);
  EXPECT_EQ(db->events_after("run:a", 0, 100)->size(), next);
}

TEST_F(postgres_store_test, reads_on_killed_sessions_do_not_fail_at_all) {
  auto db = open(2);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 3)).ok());
  use_concurrently(*db, 2);
  ASSERT_GE(kill_sessions(), 1);
  // A read is retried once on a new connection when its connection turns out dead.
  auto r = db->events_after("run:a", 0, 10);
  ASSERT_TRUE(r.ok()) << r.err().message;
  EXPECT_EQ(r->size(), 3u);
  ASSERT_GE(kill_sessions(), 1);
  auto p = db->ping();
  EXPECT_TRUE(p.ok()) << p.err().message;
  ASSERT_GE(kill_sessions(), 1);
  EXPECT_EQ(*db->last_seq("run:a"), 3u);
}

TEST_F(postgres_store_test, writes_hit_by_killed_sessions_fail_whole_and_the_store_recovers) {
  auto db = open(1);
  ASSERT_TRUE(db);
  constexpr uint64_t batches = 20, per_batch = 500;
  const std::string data = "{\"text\":\"" + std::string(1000, 'x') + "\"}";
  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  // Kills the store's session again and again, landing before, during and after statements.
  std::thread killer{[&] {
    admin_connection admin;
    while (!done.load()) {
      kills += kill_sessions(admin);
      std::this_thread::sleep_for(std::chrono::milliseconds(3));  // pacing, not synchronisation
    }
  }};
  int failures = 0;
  for (uint64_t k = 0; k < batches; ++k) {
    const auto b = events_of("run:k", k * per_batch + 1, (k + 1) * per_batch, data);
    int attempts = 0;
    while (attempts < 200) {
      auto w = db->write(b);
      if (w.ok()) break;
      EXPECT_EQ(w.err().code, errc::unavailable) << w.err().message;
      ++failures;
      ++attempts;
    }
    if (attempts == 200) {
      ADD_FAILURE() << "batch " << k << " never got through";  // not ASSERT: join the killer
      break;
    }
  }
  done = true;
  killer.join();
  std::printf("[ info     ] %d kills, %d failed writes (each retried)\n", kills.load(), failures);

  auto w = db->write(events_of("run:k", batches * per_batch + 1, batches * per_batch + 1));
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 1u);
  auto all = db->events_after("run:k", 0, 2 * batches * per_batch);
  ASSERT_TRUE(all.ok()) << all.err().message;
  ASSERT_EQ(all->size(), batches * per_batch + 1);
  for (std::size_t i = 0; i < all->size(); ++i) ASSERT_EQ((*all)[i].seq, i + 1);
}

TEST_F(postgres_store_test, a_caller_waits_for_a_busy_pool_no_longer_than_its_timeout) {
  auto db = open(1, true, 1);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 1)).ok());
  admin_connection admin, locker;
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE " + schema() + ".event_blocks IN ACCESS EXCLUSIVE MODE");
  // The pool's only connection blocks behind the lock...
  std::thread reader{[&] {
    auto r = db->events_after("run:a", 0, 10);
    EXPECT_TRUE(r.ok()) << r.err().message;
  }};
  const auto deadline = steady::now() + std::chrono::seconds(10);
  while (admin.exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                    "wait_event_type = 'Lock'",
                    {schema()}) != "1" &&
         steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // ...so the next caller waits for it, a bounded time.
  const auto t0 = steady::now();
  auto p = db->ping();
  const auto waited = steady::now() - t0;
  locker.exec("COMMIT");
  reader.join();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.err().code, errc::unavailable);
  EXPECT_NE(p.err().message.find("busy"), std::string::npos) << p.err().message;
  EXPECT_GE(waited, std::chrono::milliseconds(900));
  EXPECT_LT(waited, std::chrono::seconds(5));
  EXPECT_TRUE(db->ping().ok());
}

TEST_F(postgres_store_test, stores_migrating_the_same_schema_at_once_agree_on_the_version) {
  constexpr int stores = 4;
  std::vector<std::unique_ptr<store>> dbs;
  for (int i = 0; i < stores; ++i) {
    dbs.push_back(open(4, false));
    ASSERT_TRUE(dbs.back());
  }
  std::latch go{stores};
  std::vector<result<int>> versions(stores, result<int>{errc::internal, "not run"});
  std::vector<std::thread> threads;
  for (int i = 0; i < stores; ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      versions[static_cast<std::size_t>(i)] = dbs[static_cast<std::size_t>(i)]->migrate();
    });
  }
  for (auto& t : threads) t.join();
  for (auto& v : versions) {
    ASSERT_TRUE(v.ok()) << v.err().message;
    EXPECT_EQ(*v, *versions[0]);
  }
  EXPECT_GE(*versions[0], 1);
  admin_connection admin;
  EXPECT_EQ(admin.exec("SELECT count(*) FROM " + schema() + ".schema_migrations"),
            std::to_string(*versions[0]));
  EXPECT_TRUE(dbs[0]->write(events_of("run:a", 1, 2)).ok());
  EXPECT_EQ(dbs[3]->events_after("run:a", 0, 10)->size(), 2u);
}

TEST_F(postgres_store_test, a_database_with_a_newer_schema_is_refused) {
  { ASSERT_TRUE(open()); }
  admin_connection{}.exec("INSERT INTO " + schema() + ".schema_migrations VALUES (999, 0)");
  auto db = open(4, false);
  ASSERT_TRUE(db);
  auto v = db->migrate();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.err().code, errc::internal);
  EXPECT_NE(v.err().message.find("999"), std::string::npos) << v.err().message;
  EXPECT_NE(v.err().message.find("newer"), std::string::npos) << v.err().message;
  EXPECT_TRUE(db->ping().ok());  // the failed migration left its connection usable
}

TEST_F(postgres_store_test, reads_before_migrate_are_errors_and_migrate_then_fixes_them) {
  auto db = open(1, false);
  ASSERT_TRUE(db);
  EXPECT_TRUE(db->ping().ok());
  auto r = db->events_after("run:a", 0, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::internal);
  EXPECT_NE(r.err().message.find("42P01"), std::string::npos) << r.err().message;
  ASSERT_TRUE(db->migrate().ok());
  auto again = db->events_after("run:a", 0, 10);  // same connection, statement prepared now
  EXPECT_TRUE(again.ok()) << again.err().message;
}

TEST_F(postgres_store_test, a_batch_failing_half_way_leaves_nothing_of_it) {
  auto db = open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 2)).ok());
  admin_connection admin;
  admin.exec("CREATE FUNCTION " + schema() +
             ".poison() RETURNS trigger LANGUAGE plpgsql AS "
             "$$BEGIN RAISE EXCEPTION 'poisoned topic'; END$$");
  admin.exec("CREATE TRIGGER poison BEFORE INSERT ON " + schema() +
             ".event_blocks FOR EACH ROW WHEN (NEW.topic = 'run:poison') EXECUTE FUNCTION " +
             schema() + ".poison()");

  batch b;
  b.runs = {running("r1"), running("r2")};
  auto a = events_of("run:a", 3, 10);
  auto p = events_of("run:poison", 1, 3);
  auto c = events_of("room:c", 1, 4);
  for (auto* part : {&a, &p, &c}) {
    b.events.insert(b.events.end(), part->events.begin(), part->events.end());
  }
  auto w = db->write(b);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.err().code, errc::internal);
  EXPECT_NE(w.err().message.find("poisoned topic"), std::string::npos) << w.err().message;
  EXPECT_NE(w.err().message.find("P0001"), std::string::npos) << w.err().message;

  EXPECT_EQ(db->events_after("run:a", 0, 100)->size(), 2u);
  EXPECT_EQ(*db->last_seq("run:a"), 2u);
  EXPECT_EQ(*db->last_seq("room:c"), 0u);
  EXPECT_EQ(db->load_run("r1").err().code, errc::not_found);
  EXPECT_EQ(admin.exec("SELECT sum(last_seq - first_seq + 1) FROM " + schema() + ".event_blocks"),
            "2");

  admin.exec("DROP TRIGGER poison ON " + schema() + ".event_blocks");
  auto retry = db->write(b);
  ASSERT_TRUE(retry.ok()) << retry.err().message;
  EXPECT_EQ(*retry, 15u);
  EXPECT_EQ(*db->last_seq("run:a"), 10u);
  EXPECT_EQ(db->running_runs()->size(), 2u);
}

TEST_F(postgres_store_test, values_are_plain_text_and_read_back_strictly) {
  auto db = open();
  ASSERT_TRUE(db);
  admin_connection admin;
  batch b;
  b.events.push_back({"run:r", event{1, "delta", R"({"b":1,"a":2,"b":3})", 5}});
  auto r = running("r");
  r.info.kind = run_kind::synthetic;
  r.info.status = run_status::timed_out;
  b.runs = {r};
  ASSERT_TRUE(db->write(b).ok());
  EXPECT_EQ(db->events_after("run:r", 0, 1)->at(0).data, R"({"b":1,"a":2,"b":3})");
  // Data is kept as the bytes it came as, in a block a person can read (not jsonb: it would
  // reorder keys and drop duplicates).
  EXPECT_EQ(admin.exec("SELECT convert_from(events, 'UTF8') FROM " + schema() + ".event_blocks"),
            "1 5 delta 19\n{\"b\":1,\"a\":2,\"b\":3}");
  EXPECT_EQ(admin.exec("SELECT status || '/' || kind FROM " + schema() + ".runs"),
            "timed_out/synthetic");  // the contract's strings (protocols/run.hpp)

  admin.exec("UPDATE " + schema() + ".runs SET status = 'Timed_Out'");
  auto bad = db->load_run("r");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.err().code, errc::internal);
  EXPECT_NE(bad.err().message.find("runs.status"), std::string::npos) << bad.err().message;
  admin.exec("UPDATE " + schema() + ".runs SET status = 'running', kind = 'batch'");
  auto listed = db->running_runs();
  ASSERT_FALSE(listed.ok());
  EXPECT_NE(listed.err().message.find("runs.kind"), std::string::npos) << listed.err().message;
  admin.exec("UPDATE " + schema() + ".runs SET kind = 'external', inactivity_s = -1");
  EXPECT_EQ(db->load_run("r").err().code, errc::internal);
}

TEST_F(postgres_store_test, a_pool_of_one_serves_many_threads) {
  auto db = open(1);
  ASSERT_TRUE(db);
  std::atomic<int> bad{0};
  std::latch go{4};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string topic = "room:" + std::to_string(t);
      go.arrive_and_wait();
      for (uint64_t s = 1; s <= 25; ++s) {
        if (!db->write(events_of(topic, s, s)).ok()) ++bad;
        if (!db->events_after(topic, 0, 100).ok()) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  for (int t = 0; t < 4; ++t) EXPECT_EQ(*db->last_seq("room:" + std::to_string(t)), 25u);
}

TEST_F(postgres_store_test, hundred_batches_of_five_hundred_events_are_quick) {
  auto db = open();
  ASSERT_TRUE(db);
  constexpr uint64_t batches = 100, per_batch = 500;
  const std::string data = R"({"text":"a token or two of a streamed answer, about eighty bytes"})";
  const auto t0 = steady::now();
  for (uint64_t k = 0; k < batches; ++k) {
    batch b;
    b.events.reserve(per_batch);
    for (uint64_t i = 0; i < per_batch; ++i) {
      // Ten topics of 50 events each, as a storage actor's batch holding several runs.
      b.events.push_back(
          {"run:" + std::to_string(i / 50), event{k * 50 + i % 50 + 1, "delta", data, 1000}});
    }
    auto w = db->write(b);
    ASSERT_TRUE(w.ok()) << w.err().message;
    ASSERT_EQ(*w, per_batch);
  }
  const double s = std::chrono::duration<double>(steady::now() - t0).count();
  std::printf("[ info     ] %llu events in %.3f s: %.0f events/s\n",
              static_cast<unsigned long long>(batches * per_batch), s, batches * per_batch / s);
  EXPECT_EQ(*db->last_seq("run:9"), batches * 50);
}

// -- event blocks (schema version 2) ---------------------------------------------------------

std::vector<uint64_t> seqs(const std::vector<event>& events) {
  std::vector<uint64_t> out;
  for (const auto& e : events) out.push_back(e.seq);
  return out;
}

std::vector<uint64_t> seq_range_of(uint64_t from, uint64_t to) {
  std::vector<uint64_t> out;
  for (uint64_t s = from; s <= to; ++s) out.push_back(s);
  return out;
}

/// The topic's blocks as "first-last" ranges, in order.
std::string blocks_of(admin_connection& admin, const std::string& schema,
                      const std::string& topic) {
  return admin.exec(
      "SELECT string_agg(first_seq || '-' || last_seq, ' ' ORDER BY first_seq) FROM " + schema +
          ".event_blocks WHERE topic = $1",
      {topic});
}

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char ch : bytes) {
    out += digits[ch >> 4];
    out += digits[ch & 15];
  }
  return out;
}

TEST_F(postgres_store_test, version_1_events_become_one_block_each_encoded_as_the_codec_does) {
  // A database as version 1 left it (its migration, verbatim), with events written by hand.
  admin_connection admin;
  admin.exec("SET search_path = " + schema());
  const std::string version_1 = R"sql(
CREATE TABLE schema_migrations (version INT PRIMARY KEY, applied_at BIGINT NOT NULL);
INSERT INTO schema_migrations VALUES (1, 0);
CREATE TABLE runs (
  id TEXT COLLATE "C" PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, input TEXT NOT NULL,
  status TEXT NOT NULL, reason TEXT NOT NULL, idempotency_key TEXT NOT NULL,
  inactivity_s BIGINT NOT NULL, ttl_s BIGINT NOT NULL, created_at BIGINT NOT NULL,
  ended_at BIGINT NOT NULL, last_seq BIGINT NOT NULL
);
CREATE INDEX runs_by_owner_key ON runs (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX runs_by_status ON runs (status, created_at, id);
CREATE INDEX runs_by_ended ON runs (ended_at);
CREATE TABLE topics (
  topic TEXT COLLATE "C" PRIMARY KEY, last_seq BIGINT NOT NULL, updated_at BIGINT NOT NULL
);
CREATE TABLE events (
  topic TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
  ts BIGINT NOT NULL, PRIMARY KEY (topic, seq)
);
CREATE INDEX events_by_ts ON events (ts);
)sql";
  // One statement at a time: exec() uses the extended protocol.
  for (std::size_t at = 0, end; (end = version_1.find(";\n", at)) != std::string::npos;
       at = end + 2)
    admin.exec(version_1.substr(at, end - at));
  const std::vector<event> stored = {
      {1, "delta", R"({"text":"héllo 😀 \"w\""})", 1700000000000},
      {2, "tool.call-1", "spaces and\na newline, 3 4\n", -5},
      {3, "complete", "", 0},
      {4, "delta", "{\"blob\":\"" + std::string(70000, 'x') + "\"}", 1700000000001},
  };
  for (const auto& e : stored) {
    admin.exec("INSERT INTO events VALUES ('run:v1', $1, $2, $3, $4)",
               {std::to_string(e.seq), e.type, e.data, std::to_string(e.ts)});
  }
  admin.exec("INSERT INTO events VALUES ('room:other', 7, 'message', '{}', 1)");
  admin.exec("INSERT INTO topics VALUES ('run:v1', 4, 0), ('room:other', 9, 0)");

  auto db = open(4, false);
  ASSERT_TRUE(db);
  auto v = db->migrate();
  ASSERT_TRUE(v.ok()) << v.err().message;
  EXPECT_EQ(*v, 2);
  EXPECT_EQ(admin.exec("SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = "
                       "'events'",
                       {schema()}),
            "0");
  for (const auto& e : stored) {
    std::string body;
    append_block_event(body, e);
    EXPECT_EQ(admin.exec("SELECT encode(events, 'hex') FROM event_blocks WHERE topic = 'run:v1' "
                         "AND first_seq = $1 AND last_seq = $1 AND ts = $2",
                         {std::to_string(e.seq), std::to_string(e.ts)}),
              hex(body))
        << "seq " << e.seq;
  }
  auto all = db->events_after("run:v1", 0, 100);
  ASSERT_TRUE(all.ok()) << all.err().message;
  ASSERT_EQ(all->size(), stored.size());
  for (std::size_t i = 0; i < stored.size(); ++i) {
    EXPECT_EQ((*all)[i].seq, stored[i].seq);
    EXPECT_EQ((*all)[i].type, stored[i].type);
    EXPECT_EQ((*all)[i].data, stored[i].data);
    EXPECT_EQ((*all)[i].ts, stored[i].ts);
  }
  EXPECT_EQ(seqs(*db->events_before("run:v1", 4, 2)), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(*db->first_seq("run:v1"), 1u);
  EXPECT_EQ(*db->last_seq("room:other"), 9u);
  EXPECT_EQ(seqs(*db->events_after("room:other", 0, 10)), (std::vector<uint64_t>{7}));

  // Writing on: what was stored is skipped, the rest goes in.
  auto w = db->write(events_of("run:v1", 3, 6));
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 2u);
  EXPECT_EQ(blocks_of(admin, schema(), "run:v1"), "1-1 2-2 3-3 4-4 5-6");
  EXPECT_EQ(seqs(*db->events_after("run:v1", 0, 100)), seq_range_of(1, 6));
  EXPECT_EQ(db->events_after("run:v1", 0, 100)->at(3).data, stored[3].data);
  EXPECT_EQ(*db->last_seq("run:v1"), 6u);
}

TEST_F(postgres_store_test, blocks_hold_at_most_64_events_and_a_retry_fills_only_the_gaps) {
  auto db = open();
  ASSERT_TRUE(db);
  admin_connection admin;
  auto w = db->write(events_of("run:a", 1, 100));
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 100u);
  EXPECT_EQ(blocks_of(admin, schema(), "run:a"), "1-64 65-100");
  w = db->write(events_of("run:a", 50, 130));  // a retry of 50..100 with 30 new events
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 30u);
  // The batch's blocks are 50-113 and 114-130; of the first, only 101-113 was not stored.
  EXPECT_EQ(blocks_of(admin, schema(), "run:a"), "1-64 65-100 101-113 114-130");
  ASSERT_TRUE(db->write(events_of("run:a", 150, 160)).ok());
  w = db->write(events_of("run:a", 131, 170));  // around a stored block, below last_seq
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 29u);
  EXPECT_EQ(blocks_of(admin, schema(), "run:a"),
            "1-64 65-100 101-113 114-130 131-149 150-160 161-170");
  // A batch repeating its own events, and one wholly stored.
  auto twice = events_of("run:a", 171, 180);
  auto again = events_of("run:a", 175, 185);
  twice.events.insert(twice.events.end(), again.events.begin(), again.events.end());
  w = db->write(twice);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 15u);
  w = db->write(events_of("run:a", 1, 185));
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 0u);
  EXPECT_EQ(seqs(*db->events_after("run:a", 0, 1000)), seq_range_of(1, 185));
  EXPECT_EQ(seqs(*db->events_after("run:a", 62, 5)), seq_range_of(63, 67));
  EXPECT_EQ(seqs(*db->events_before("run:a", 152, 5)), seq_range_of(147, 151));
  EXPECT_EQ(*db->last_seq("run:a"), 185u);
  EXPECT_EQ(admin.exec("SELECT sum(last_seq - first_seq + 1) FROM " + schema() + ".event_blocks"),
            "185");
}

TEST_F(postgres_store_test, reads_page_through_many_small_blocks) {
  auto db = open();
  ASSERT_TRUE(db);
  for (uint64_t s = 1; s <= 300; ++s) ASSERT_TRUE(db->write(events_of("room:r", s, s)).ok());
  ASSERT_TRUE(db->write(events_of("room:r", 301, 600)).ok());  // and a few full ones after
  EXPECT_EQ(seqs(*db->events_after("room:r", 0, 250)), seq_range_of(1, 250));
  EXPECT_EQ(seqs(*db->events_after("room:r", 280, 100)), seq_range_of(281, 380));
  EXPECT_EQ(seqs(*db->events_after("room:r", 10, 10000)), seq_range_of(11, 600));
  EXPECT_EQ(seqs(*db->events_before("room:r", 0, 550)), seq_range_of(51, 600));
  EXPECT_EQ(seqs(*db->events_before("room:r", 320, 250)), seq_range_of(70, 319));
  EXPECT_EQ(seqs(*db->events_before("room:r", 20, 1000)), seq_range_of(1, 19));
}

TEST_F(postgres_store_test, writers_of_one_topic_at_once_store_each_seq_once) {
  auto a = open(2), b = open(2);  // two processes, as far as the server can tell
  ASSERT_TRUE(a && b);
  constexpr int topics = 8;
  std::atomic<uint64_t> inserted{0};
  std::atomic<int> failed{0};
  // Overlapping batches of the same topics, fresh ones included (no topic row yet).
  auto writer = [&](store& db, uint64_t offset) {
    for (uint64_t k = 0; k < 10; ++k) {
      batch batch;
      for (int t = 0; t < topics; ++t) {
        auto part =
            events_of("room:" + std::to_string(t), offset + k * 20 + 1, offset + k * 20 + 30);
        batch.events.insert(batch.events.end(), part.events.begin(), part.events.end());
      }
      auto w = db.write(batch);
      if (w.ok())
        inserted += *w;
      else
        ++failed;
    }
  };
  std::thread t1{writer, std::ref(*a), 0}, t2{writer, std::ref(*b), 7};
  t1.join();
  t2.join();
  ASSERT_EQ(failed.load(), 0);
  EXPECT_EQ(inserted.load(), topics * 217u);  // 1..217 of each topic
  admin_connection admin;
  EXPECT_EQ(admin.exec("SELECT count(*) FROM " + schema() + ".event_blocks x JOIN " + schema() +
                       ".event_blocks y ON x.topic = y.topic AND x.first_seq < y.first_seq AND "
                       "y.first_seq <= x.last_seq"),
            "0");  // no two blocks overlap
  for (int t = 0; t < topics; ++t) {
    EXPECT_EQ(seqs(*a->events_after("room:" + std::to_string(t), 0, 1000)), seq_range_of(1, 217));
    EXPECT_EQ(*b->last_seq("room:" + std::to_string(t)), 217u);
  }
}

TEST_F(postgres_store_test, a_damaged_block_is_an_error_naming_its_topic_and_seq) {
  auto db = open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 10)).ok());
  ASSERT_TRUE(db->write(events_of("run:a", 11, 20)).ok());
  admin_connection admin;
  admin.exec("UPDATE " + schema() +
             ".event_blocks SET events = convert_to(E'11 5 delta 50\\n{}', 'UTF8') "
             "WHERE first_seq = 11");
  for (auto r : {db->events_after("run:a", 0, 100), db->events_before("run:a", 0, 5)}) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, errc::internal);
    EXPECT_NE(r.err().message.find("run:a"), std::string::npos) << r.err().message;
    EXPECT_NE(r.err().message.find("seq 11"), std::string::npos) << r.err().message;
  }
  EXPECT_EQ(seqs(*db->events_after("run:a", 0, 10)), seq_range_of(1, 10));  // before it: fine
}

// -- without a server ---------------------------------------------------------------------------

/// A loopback TCP socket bound to a free port; listening (a server that never answers: the
/// kernel completes the handshake, nobody reads) or not (connections are refused).
class loopback_port {
 public:
  explicit loopback_port(bool listening) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
        (listening && ::listen(fd_, 8) != 0)) {
      ADD_FAILURE() << "cannot set up a loopback socket";
    }
    port_ = ntohs(a.sin_port);
  }
  loopback_port(const loopback_port&) = delete;
  loopback_port& operator=(const loopback_port&) = delete;
  ~loopback_port() { ::close(fd_); }
  std::string conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=relay user=relay";
  }

 private:
  int fd_;
  unsigned port_ = 0;
};

TEST(postgres_store_offline, nothing_listening_is_unavailable_at_once) {
  loopback_port closed{false};
  const auto t0 = steady::now();
  auto db = open_postgres({.conninfo = closed.conninfo(), .connect_timeout_s = 5});
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.err().code, errc::unavailable);
  EXPECT_NE(db.err().message.find("refused"), std::string::npos) << db.err().message;
  EXPECT_LT(steady::now() - t0, std::chrono::seconds(2));
}

TEST(postgres_store_offline, a_server_that_never_answers_is_unavailable_after_connect_timeout) {
  loopback_port silent{true};
  const auto t0 = steady::now();
  auto db = open_postgres({.conninfo = silent.conninfo(), .connect_timeout_s = 2});
  const auto took = steady::now() - t0;
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.err().code, errc::unavailable);
  EXPECT_NE(db.err().message.find("timeout"), std::string::npos) << db.err().message;
  EXPECT_GE(took, std::chrono::milliseconds(1500));
  EXPECT_LT(took, std::chrono::seconds(6));
}

TEST(postgres_store_offline, a_malformed_conninfo_is_an_error_not_a_crash) {
  for (const char* bad : {"host=127.0.0.1 port", "nonsense=1", "postgresql://[::1"}) {
    auto db = open_postgres({.conninfo = bad});
    ASSERT_FALSE(db.ok()) << bad;
    EXPECT_EQ(db.err().code, errc::internal) << bad;
    EXPECT_NE(db.err().message.find("conninfo"), std::string::npos) << db.err().message;
  }
}

}  // namespace
}  // namespace relay::storage::test
