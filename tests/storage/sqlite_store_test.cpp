// The SQLite backend (storage/sqlite_store.cpp): the conformance suite on a fresh file per test,
// then what only SQLite has — the file and its directory, WAL, schema versions on reopen, files
// that are not databases, unwritable paths, a batch failing half-way, a lock held elsewhere.

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "storage/forwarding_store.hpp"
#include "tests/storage/store_conformance.hpp"

namespace relay::storage::test {
namespace {

namespace fs = std::filesystem;

/// A fresh directory under the temp dir, removed with everything in it when destroyed.
class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "relay-storage-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error{"mkdtemp failed"};
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

/// A store that owns the directory of its database file: the conformance suite's stores, so
/// that no test leaves anything in /tmp.
class store_in_temp_dir final : public forwarding_store {
 public:
  ~store_in_temp_dir() override { close_inner(); }  // the file closes before its directory goes
  const fs::path& dir() const noexcept { return dir_.path(); }

 private:
  temp_dir dir_;
};

std::unique_ptr<store> make_sqlite() {
  auto s = std::make_unique<store_in_temp_dir>();
  auto db = open_sqlite({.path = (s->dir() / "relay.db").string()});
  return adopt_migrated(std::move(s), std::move(db));
}

INSTANTIATE_TEST_SUITE_P(sqlite, store_conformance,
                         ::testing::Values(store_factory{"sqlite", make_sqlite}),
                         [](const auto& info) { return info.param.name; });

// -- SQLite only ---------------------------------------------------------------------------------

batch events_of(const std::string& topic, uint64_t from, uint64_t to) {
  batch b;
  for (uint64_t s = from; s <= to; ++s)
    b.events.push_back({topic, event{s, "delta", "{\"n\":" + std::to_string(s) + "}", 1000}});
  return b;
}

run_row running(const std::string& id) {
  run_row r;
  r.info.id = id;
  r.info.owner = "alice";
  r.info.created_at = 1;
  return r;
}

/// A plain SQLite connection to the same file, as an operator's shell or another process.
class raw_connection {
 public:
  explicit raw_connection(const fs::path& file, int flags = SQLITE_OPEN_READWRITE) {
    if (sqlite3_open_v2(file.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      ADD_FAILURE() << "cannot open " << file << ": " << sqlite3_errmsg(db_);
  }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;
  ~raw_connection() { sqlite3_close(db_); }

  /// Runs `sql`; answers SQLite's result code (the test asserts what it expects).
  int exec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
      out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

class sqlite_store_test : public ::testing::Test {
 protected:
  fs::path file() const { return dir_.path() / "relay.db"; }

  std::unique_ptr<store> open(sqlite_options options = {}) {
    if (options.path == sqlite_options{}.path) options.path = file().string();
    auto db = open_sqlite(options);
    if (!db) {
      ADD_FAILURE() << db.err().message;
      return nullptr;
    }
    auto v = (*db)->migrate();
    if (!v) {
      ADD_FAILURE() << v.err().message;
      return nullptr;
    }
    return std::move(*db);
  }

  temp_dir dir_;
};

TEST_F(sqlite_store_test, creates_the_file_and_its_missing_directories) {
  const auto nested = dir_.path() / "a" / "b" / "relay.db";
  auto db = open({.path = nested.string()});
  ASSERT_TRUE(db);
  EXPECT_TRUE(fs::is_directory(dir_.path() / "a" / "b"));
  EXPECT_TRUE(fs::is_regular_file(nested));
  EXPECT_EQ(db->backend(), "sqlite");
  EXPECT_TRUE(db->ping().ok());
}

TEST_F(sqlite_store_test, the_file_is_in_wal_mode_with_the_schema_of_version_two) {
  auto db = open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 3)).ok());
  raw_connection raw{file()};
  EXPECT_EQ(raw.text("PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(fs::exists(file().string() + "-wal"));
  EXPECT_EQ(raw.text("SELECT group_concat(version) FROM schema_migrations"), "1,2");
  // One batch of one topic's contiguous events: one row.
  EXPECT_EQ(raw.text("SELECT count(*) || ' ' || first_seq || '..' || last_seq FROM event_blocks"),
            "1 1..3");
  EXPECT_EQ(raw.text("SELECT count(*) FROM sqlite_schema WHERE name = 'events'"), "0");
}

TEST_F(sqlite_store_test, a_version_one_file_is_migrated_with_every_event_byte_exact) {
  {
    // The schema of version 1 as it shipped, with events written the way it wrote them.
    raw_connection raw{file(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE};
    ASSERT_EQ(raw.exec(R"sql(
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
INSERT INTO schema_migrations VALUES (1, 0);
CREATE TABLE runs (id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL,
  input TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, idempotency_key TEXT NOT NULL,
  inactivity_s INTEGER NOT NULL, ttl_s INTEGER NOT NULL, created_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL, last_seq INTEGER NOT NULL) STRICT;
CREATE INDEX runs_by_owner_key ON runs (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX runs_by_status ON runs (status, created_at, id);
CREATE INDEX runs_by_ended ON runs (ended_at);
CREATE TABLE topics (topic TEXT NOT NULL PRIMARY KEY, last_seq INTEGER NOT NULL,
  updated_at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE events (topic TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
  data TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (topic, seq)) STRICT, WITHOUT ROWID;
CREATE INDEX events_by_ts ON events (ts);
INSERT INTO topics VALUES ('room:r', 9, 0), ('run:a', 2, 0);
INSERT INTO events VALUES
  ('room:r', 7, 'message', '{"text":"h\u00e9llo 😀 é
line 2","user":"a b"}', 1700000000001),
  ('room:r', 9, 'message', '{"text":"9"}', -3),
  ('run:a', 1, 'tool.call-1', '[1,{"a":null}]', 5),
  ('run:a', 2, 'complete', 'null', 6);
)sql"),
              SQLITE_OK);
  }
  auto db = open();
  ASSERT_TRUE(db);
  auto room = db->events_after("room:r", 0, 100);
  ASSERT_TRUE(room.ok()) << room.err().message;
  ASSERT_EQ(room->size(), 2u);
  EXPECT_EQ((*room)[0].seq, 7u);
  EXPECT_EQ((*room)[0].type, "message");
  EXPECT_EQ((*room)[0].data, "{\"text\":\"h\\u00e9llo 😀 é\nline 2\",\"user\":\"a b\"}");
  EXPECT_EQ((*room)[0].ts, 1700000000001);
  EXPECT_EQ((*room)[1].seq, 9u);
  EXPECT_EQ((*room)[1].ts, -3);
  auto run = db->events_after("run:a", 0, 100);
  ASSERT_TRUE(run.ok());
  ASSERT_EQ(run->size(), 2u);
  EXPECT_EQ((*run)[0].type, "tool.call-1");
  EXPECT_EQ((*run)[0].data, "[1,{\"a\":null}]");
  EXPECT_EQ((*run)[1].data, "null");
  EXPECT_EQ(*db->first_seq("room:r"), 7u);
  EXPECT_EQ(*db->last_seq("room:r"), 9u);
  // Writing goes on where version 1 stopped; a retry of a migrated event inserts nothing.
  auto more = events_of("room:r", 9, 11);
  auto w = db->write(more);
  ASSERT_TRUE(w.ok()) << w.err().message;
  EXPECT_EQ(*w, 2u);
  auto after = db->events_after("room:r", 0, 100);
  ASSERT_TRUE(after.ok());
  std::vector<uint64_t> all;
  for (const auto& e : *after) all.push_back(e.seq);
  EXPECT_EQ(all, (std::vector<uint64_t>{7, 9, 10, 11}));
}

TEST_F(sqlite_store_test, data_survives_closing_and_reopening_and_migrate_keeps_the_version) {
  {
    auto db = open();
    ASSERT_TRUE(db);
    auto b = events_of("room:r", 1, 20);
    b.runs.push_back(running("x"));
    ASSERT_TRUE(db->write(b).ok());
  }
  auto db = open_sqlite({.path = file().string()});
  ASSERT_TRUE(db.ok()) << db.err().message;
  auto v = (*db)->migrate();
  ASSERT_TRUE(v.ok()) << v.err().message;
  EXPECT_EQ(*v, 2);
  EXPECT_EQ((*db)->events_after("room:r", 0, 100)->size(), 20u);
  EXPECT_EQ(*(*db)->last_seq("room:r"), 20u);
  EXPECT_TRUE((*db)->load_run("x").ok());
  EXPECT_EQ(*(*db)->migrate(), 2);
}

TEST_F(sqlite_store_test, a_commit_survives_kill_9_of_the_process_that_made_it) {
  // The child commits (synchronous=NORMAL: into the WAL, not yet fsynced or checkpointed) and
  // is killed without closing anything; the committed batch must be there, whole.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto db = open_sqlite({.path = file().string()});
    if (!db || !(*db)->migrate()) _exit(2);
    auto b = events_of("run:k", 1, 500);
    b.runs.push_back(running("k"));
    if (!(*db)->write(b)) _exit(3);
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  auto db = open();
  ASSERT_TRUE(db);
  EXPECT_EQ(db->events_after("run:k", 0, 1000)->size(), 500u);
  EXPECT_EQ(*db->last_seq("run:k"), 500u);
  EXPECT_TRUE(db->load_run("k").ok());
}

TEST_F(sqlite_store_test, a_database_with_a_newer_schema_is_refused) {
  { ASSERT_TRUE(open()); }
  {
    raw_connection raw{file()};
    ASSERT_EQ(raw.exec("INSERT INTO schema_migrations VALUES (999, 0)"), SQLITE_OK);
  }
  auto db = open_sqlite({.path = file().string()});
  ASSERT_TRUE(db.ok()) << db.err().message;
  auto v = (*db)->migrate();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.err().code, errc::internal);
  EXPECT_NE(v.err().message.find("999"), std::string::npos) << v.err().message;
  EXPECT_NE(v.err().message.find("newer"), std::string::npos) << v.err().message;
}

TEST_F(sqlite_store_test, a_file_that_is_not_a_database_is_an_error_not_a_crash) {
  {
    std::ofstream out{file(), std::ios::binary};
    for (int i = 0; i < 1000; ++i) out << "this is not a SQLite database. ";
  }
  auto db = open_sqlite({.path = file().string()});
  if (db.ok()) {
    EXPECT_FALSE((*db)->migrate().ok());
    EXPECT_FALSE((*db)->write(events_of("run:a", 1, 1)).ok());
  } else {
    EXPECT_EQ(db.err().code, errc::internal) << db.err().message;
  }
}

TEST_F(sqlite_store_test, a_corrupted_database_answers_errors_not_crashes) {
  {
    auto db = open();
    ASSERT_TRUE(db);
    for (int k = 0; k < 20; ++k)
      ASSERT_TRUE(db->write(events_of("run:a", k * 100 + 1, k * 100 + 100)).ok());
  }  // closing checkpoints everything into the main file
  {
    std::fstream f{file(), std::ios::in | std::ios::out | std::ios::binary};
    f.seekp(4096);  // page 2 onwards: b-tree pages of the tables
    const std::string garbage(8 * 4096, '\xff');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  auto db = open_sqlite({.path = file().string()});
  if (!db.ok()) return;  // refused at open: fine
  int errors = 0;
  if (!(*db)->migrate().ok()) ++errors;
  if (!(*db)->events_after("run:a", 0, 5000).ok()) ++errors;
  if (!(*db)->first_seq("run:a").ok()) ++errors;
  if (!(*db)->write(events_of("run:a", 5001, 5100)).ok()) ++errors;
  EXPECT_GT(errors, 0);
}

TEST_F(sqlite_store_test, an_unusable_path_is_an_error_not_a_crash) {
  { std::ofstream{dir_.path() / "plain-file"} << "x"; }
  auto under_file =
      open_sqlite({.path = (dir_.path() / "plain-file" / "sub" / "relay.db").string()});
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(under_file.err().code, errc::unavailable) << under_file.err().message;

  auto a_directory = open_sqlite({.path = dir_.path().string()});
  ASSERT_FALSE(a_directory.ok());
  EXPECT_EQ(a_directory.err().code, errc::unavailable) << a_directory.err().message;

  for (const char* bad : {"", ":memory:"}) {
    auto r = open_sqlite({.path = bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.err().code, errc::internal);
  }

  if (geteuid() == 0) return;  // root writes through permissions: the rest cannot be tested
  const auto locked = dir_.path() / "locked";
  fs::create_directory(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  auto unwritable = open_sqlite({.path = (locked / "relay.db").string()});
  ASSERT_FALSE(unwritable.ok());
  EXPECT_EQ(unwritable.err().code, errc::unavailable) << unwritable.err().message;
}

TEST_F(sqlite_store_test, a_batch_failing_half_way_leaves_nothing_of_it) {
  auto db = open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 2)).ok());
  raw_connection raw{file()};
  ASSERT_EQ(
      raw.exec("CREATE TRIGGER poison BEFORE INSERT ON event_blocks WHEN NEW.topic = 'run:poison' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned topic'); END"),
      SQLITE_OK);

  batch b;
  b.runs = {running("r1"), running("r2")};
  auto a = events_of("run:a", 3, 10);  // before the poison: written, then rolled back
  auto p = events_of("run:poison", 1, 3);
  auto c = events_of("room:c", 1, 4);  // after it: never reached
  for (auto* part : {&a, &p, &c})
    b.events.insert(b.events.end(), part->events.begin(), part->events.end());
  auto w = db->write(b);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.err().code, errc::internal);
  EXPECT_NE(w.err().message.find("poisoned topic"), std::string::npos) << w.err().message;

  EXPECT_EQ(db->events_after("run:a", 0, 100)->size(), 2u);
  EXPECT_EQ(*db->last_seq("run:a"), 2u);
  EXPECT_EQ(*db->last_seq("run:poison"), 0u);
  EXPECT_EQ(db->load_run("r1").err().code, errc::not_found);
  EXPECT_TRUE(db->running_runs()->empty());
  EXPECT_EQ(raw.text("SELECT sum(last_seq - first_seq + 1) FROM event_blocks"), "2");

  // The writer is usable again, and the retry writes the whole batch once the cause is gone.
  ASSERT_EQ(raw.exec("DROP TRIGGER poison"), SQLITE_OK);
  auto retry = db->write(b);
  ASSERT_TRUE(retry.ok()) << retry.err().message;
  EXPECT_EQ(*retry, 15u);
  EXPECT_EQ(*db->last_seq("run:a"), 10u);
  EXPECT_EQ(db->running_runs()->size(), 2u);
}

TEST_F(sqlite_store_test, a_lock_held_elsewhere_makes_writes_unavailable_while_reads_go_on) {
  auto db = open({.busy_timeout_ms = 50});
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 5)).ok());
  raw_connection raw{file()};
  ASSERT_EQ(raw.exec("BEGIN IMMEDIATE; INSERT INTO topics VALUES ('room:other', 1, 0)"), SQLITE_OK);

  auto w = db->write(events_of("run:a", 6, 6));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.err().code, errc::unavailable) << w.err().message;
  auto r = db->events_after("run:a", 0, 100);  // WAL: readers do not wait for the writer
  ASSERT_TRUE(r.ok()) << r.err().message;
  EXPECT_EQ(r->size(), 5u);
  EXPECT_TRUE(db->ping().ok());

  ASSERT_EQ(raw.exec("COMMIT"), SQLITE_OK);
  auto again = db->write(events_of("run:a", 6, 6));
  ASSERT_TRUE(again.ok()) << again.err().message;
  EXPECT_EQ(*db->last_seq("room:other"), 1u);
}

TEST_F(sqlite_store_test, reads_before_migrate_are_errors_and_migrate_then_fixes_them) {
  auto db = open_sqlite({.path = file().string()});
  ASSERT_TRUE(db.ok()) << db.err().message;
  EXPECT_TRUE((*db)->ping().ok());
  auto r = (*db)->events_after("run:a", 0, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::internal);
  ASSERT_TRUE((*db)->migrate().ok());
  EXPECT_TRUE((*db)->events_after("run:a", 0, 10).ok());
}

TEST_F(sqlite_store_test, synchronous_full_works_the_same) {
  auto db = open({.synchronous_full = true});
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->write(events_of("run:a", 1, 10)).ok());
  EXPECT_EQ(db->events_after("run:a", 0, 100)->size(), 10u);
}

TEST_F(sqlite_store_test, hundred_batches_of_five_hundred_events_are_quick) {
  auto db = open();
  ASSERT_TRUE(db);
  constexpr uint64_t batches = 100, per_batch = 500;
  const std::string data = R"({"text":"a token or two of a streamed answer, about eighty bytes"})";
  const auto t0 = std::chrono::steady_clock::now();
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
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  db.reset();  // checkpoints the WAL into the file
  const auto bytes = fs::file_size(file());
  std::printf("[ info     ] %llu events in %.3f s: %.0f events/s, %.1f bytes on disk per event\n",
              static_cast<unsigned long long>(batches * per_batch), s, batches * per_batch / s,
              static_cast<double>(bytes) / (batches * per_batch));
  auto again = open();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again->last_seq("run:0"), batches * per_batch / 10);
}

}  // namespace
}  // namespace relay::storage::test
