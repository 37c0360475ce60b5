// The SQLite backend of storage/store.hpp: one database file in WAL mode, one writer connection
// behind a mutex and a small pool of reader connections, so a read never waits for a write.

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "storage/event_block.hpp"
#include "storage/store.hpp"

namespace relay::storage {
namespace {

// PRAGMAs, set on each connection as it opens (only journal_mode is kept in the file):
//
// journal_mode=WAL    Readers and the writer do not block each other: a history page reads a
//                     snapshot while a group commit is being written. Refused if it does not take
//                     (":memory:", a filesystem without shared memory).
// synchronous=NORMAL  In WAL mode a commit is appended to the WAL with write() and returns; the WAL
//                     is fsynced at checkpoints only. A commit therefore survives a crash of the
//                     process (kill -9: the kernel holds the pages), which is what invariant 6
//                     promises; a power loss or kernel crash may lose the commits since the last
//                     checkpoint, never the file's consistency. FULL fsyncs the WAL on every commit
//                     and survives power loss too, but one fsync per group commit (0.1–10 ms on
//                     local disks, more on network volumes) would cap commits by the disk, not the
//                     CPU; it is an option (synchronous_full) for deployments that need it.
// foreign_keys=ON     No foreign key is declared (room topics have no parent row; retention deletes
//                     a run's events itself). ON so that one a later migration declares is enforced
//                     rather than silently ignored, SQLite's default for old schemas.
// busy_timeout        From options: how long a statement waits for a lock another connection holds
//                     (another process on the file, a checkpoint, WAL recovery) before SQLITE_BUSY,
//                     answered as `unavailable`. Our own writes queue on the writer's mutex first.
// temp_store=MEMORY   Sorts and temporary b-trees (IN (subquery) of retention) stay in memory.
// journal_size_limit  After a checkpoint the WAL is truncated to 64 MiB rather than staying at the
//                     high-water mark of a burst.
// query_only=ON       Readers only: a reader connection cannot write, whatever calls it.
// wal_autocheckpoint  Left at 1000 pages (~4 MiB): the commit that crosses it also checkpoints
//                     (passively, so never waiting for readers), which adds its cost to that
//                     commit.

constexpr std::size_t reader_count = 2;  // WAL readers run in parallel; two serve /health + pages

/// Versioned migrations: version i+1 is migrations[i], each applied in its own transaction and
/// recorded in schema_migrations. Append only; never edit a step that has shipped.
struct migration {
  int version;
  const char* sql;
};
constexpr migration migrations[] = {
    {1, R"sql(
CREATE TABLE runs (
  id TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL,
  kind TEXT NOT NULL,
  input TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  inactivity_s INTEGER NOT NULL,
  ttl_s INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL,
  last_seq INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_by_owner_key ON runs (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX runs_by_status ON runs (status, created_at, id);
CREATE INDEX runs_by_ended ON runs (ended_at);
CREATE TABLE topics (
  topic TEXT NOT NULL PRIMARY KEY,
  last_seq INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE events (
  topic TEXT NOT NULL,
  seq INTEGER NOT NULL,
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  ts INTEGER NOT NULL,
  PRIMARY KEY (topic, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX events_by_ts ON events (ts);
)sql"},
    // Events move into blocks (storage/event_block.hpp): one row per contiguous run of a topic's
    // events instead of one per event. A rowid table, so that rows are appended in commit order
    // (a flood into 1 000 topics does not touch 1 000 leaves of a (topic, seq)-ordered tree); the
    // unique index finds a topic's blocks. Each stored event becomes a block of its own, encoded
    // here in SQL exactly as append_block_event does.
    {2, R"sql(
CREATE TABLE event_blocks (
  topic TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  ts INTEGER NOT NULL,
  events BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX event_blocks_by_topic ON event_blocks (topic, first_seq);
CREATE INDEX event_blocks_by_ts ON event_blocks (ts);
INSERT INTO event_blocks (topic, first_seq, last_seq, ts, events)
  SELECT topic, seq, seq, ts,
         CAST(seq || ' ' || ts || ' ' || type || ' ' || length(CAST(data AS BLOB)) || char(10) ||
              data AS BLOB)
  FROM events ORDER BY topic, seq;
DROP TABLE events;
)sql"},
};
constexpr int latest_version = static_cast<int>(std::size(migrations));
constexpr bool numbered_in_order() {
  for (int i = 0; i < latest_version; ++i)
    if (migrations[i].version != i + 1) return false;
  return true;
}
static_assert(numbered_in_order(), "migrations are versions 1..N in order");

/// The statements each connection prepares once, on first use (after migrate() made the tables).
enum class q : std::size_t {
  begin,
  commit,
  rollback,
  upsert_run,
  insert_block,
  blocks_between,
  upsert_topic,
  delete_events_before,
  delete_finished_run_events,
  delete_finished_run_topics,
  delete_finished_runs,
  events_after,
  events_before,
  last_seq,
  first_seq,
  load_run,
  running_runs,
  ping,
  count_
};
constexpr std::size_t statement_count = static_cast<std::size_t>(q::count_);

#define RELAY_FINISHED_RUN_TOPICS \
  "SELECT 'run:' || id FROM runs WHERE status <> 'running' AND ended_at < ?1"
#define RELAY_RUN_COLUMNS                                                                      \
  "id, owner, kind, input, status, reason, idempotency_key, inactivity_s, ttl_s, created_at, " \
  "ended_at, last_seq"

/// Each statement's SQL, listed in the order of `q` (checked below).
struct statement_def {
  q id;
  const char* sql;
};
constexpr statement_def statement_sql[] = {
    {q::begin, "BEGIN IMMEDIATE"},
    {q::commit, "COMMIT"},
    {q::rollback, "ROLLBACK"},
    {q::upsert_run,
     "INSERT INTO runs (" RELAY_RUN_COLUMNS
     ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
     "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, kind = excluded.kind, "
     "input = excluded.input, status = excluded.status, reason = excluded.reason, "
     "idempotency_key = excluded.idempotency_key, inactivity_s = excluded.inactivity_s, "
     "ttl_s = excluded.ttl_s, created_at = excluded.created_at, ended_at = excluded.ended_at, "
     "last_seq = excluded.last_seq"},
    {q::insert_block,
     "INSERT INTO event_blocks (topic, first_seq, last_seq, ts, events) "
     "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (topic, first_seq) DO NOTHING"},
    {q::blocks_between,
     "SELECT first_seq, last_seq FROM event_blocks WHERE topic = ?1 AND first_seq BETWEEN ?2 AND "
     "?3"},
    {q::upsert_topic,
     "INSERT INTO topics (topic, last_seq, updated_at) VALUES (?1, ?2, ?3) "
     "ON CONFLICT (topic) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), "
     "updated_at = excluded.updated_at"},
    {q::delete_events_before,
     "DELETE FROM event_blocks WHERE ts < ?1 RETURNING last_seq - first_seq + 1"},
    {q::delete_finished_run_events,
     "DELETE FROM event_blocks WHERE topic IN (" RELAY_FINISHED_RUN_TOPICS
     ") RETURNING last_seq - first_seq + 1"},
    {q::delete_finished_run_topics,
     "DELETE FROM topics WHERE topic IN (" RELAY_FINISHED_RUN_TOPICS ")"},
    {q::delete_finished_runs, "DELETE FROM runs WHERE status <> 'running' AND ended_at < ?1"},
    // A block holding seq > ?3 starts at or after ?2 = ?3 + 2 - max_block_events.
    {q::events_after,
     "SELECT first_seq, events FROM event_blocks WHERE topic = ?1 AND first_seq >= ?2 AND "
     "last_seq > ?3 ORDER BY first_seq"},
    {q::events_before,
     "SELECT first_seq, events FROM event_blocks WHERE topic = ?1 AND first_seq <= ?2 "
     "ORDER BY first_seq DESC"},
    {q::last_seq, "SELECT last_seq FROM topics WHERE topic = ?1"},
    {q::first_seq,
     "SELECT first_seq FROM event_blocks WHERE topic = ?1 ORDER BY first_seq LIMIT 1"},
    {q::load_run, "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE id = ?1"},
    {q::running_runs,
     "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE status = 'running' ORDER BY created_at, id"},
    // Not `SELECT 1`, which SQLite answers without touching the file: this reads the header under
    // a shared lock, so a vanished, locked or corrupt database shows.
    {q::ping, "PRAGMA schema_version"},
};
constexpr bool listed_in_order() {
  if (std::size(statement_sql) != statement_count) return false;
  for (std::size_t i = 0; i < statement_count; ++i)
    if (static_cast<std::size_t>(statement_sql[i].id) != i) return false;
  return true;
}
static_assert(listed_in_order(), "statement_sql lists every statement in the order of q");

#undef RELAY_FINISHED_RUN_TOPICS
#undef RELAY_RUN_COLUMNS

/// SQLite's result codes as the contract's: what waiting or an operator can fix is `unavailable`
/// (locked, disk full or failing, file missing or not writable), the rest is `internal`.
errc code_of(int rc) noexcept {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
      return errc::unavailable;
    default:
      return errc::internal;
  }
}

/// The error of the last call on `db` that answered `rc` (read it before anything else runs on
/// `db`: the message is per connection).
error failure(sqlite3* db, int rc, std::string_view what) {
  std::string msg = "sqlite: ";
  msg.append(what).append(": ").append(db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  return error{code_of(rc), std::move(msg)};
}

struct finalize {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using statement_ptr = std::unique_ptr<sqlite3_stmt, finalize>;

/// A connection and its cached statements, used by one thread at a time (its mutex): opened
/// SQLITE_OPEN_NOMUTEX, since the mutex already serialises it.
class connection {
 public:
  explicit connection(sqlite3* db) noexcept : db_(db) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    for (auto& s : statements_) s.reset();  // a connection with live statements does not close
    sqlite3_close(db_);
  }

  sqlite3* db() const noexcept { return db_; }
  std::mutex& mutex() noexcept { return mutex_; }

  /// The cached statement `id`, prepared on first use. Not cached when preparing fails (e.g. the
  /// tables do not exist before migrate()), so a later call tries again.
  result<sqlite3_stmt*> statement(q id) {
    auto& slot = statements_[static_cast<std::size_t>(id)];
    if (!slot) {
      sqlite3_stmt* s = nullptr;
      int rc = sqlite3_prepare_v3(db_, statement_sql[static_cast<std::size_t>(id)].sql, -1,
                                  SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(s);
        return failure(db_, rc, "prepare");
      }
      slot.reset(s);
    }
    return slot.get();
  }

 private:
  sqlite3* db_;
  std::mutex mutex_;
  std::array<statement_ptr, statement_count> statements_;
};

/// A cached statement in use: reset, with its bindings dropped, when the call is done with it (a
/// statement left stepping would hold its read snapshot, and SQLITE_STATIC bindings would dangle).
class in_use {
 public:
  explicit in_use(sqlite3_stmt* s) noexcept : s_(s) {}
  in_use(const in_use&) = delete;
  in_use& operator=(const in_use&) = delete;
  ~in_use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

 private:
  sqlite3_stmt* s_;
};

// Parameters bind without copying (SQLITE_STATIC): every caller's arguments outlive its in_use.
// uint64_t does not bind: each one is range-checked and converted where it is used.
int bind(sqlite3_stmt* s, int i, int64_t v) { return sqlite3_bind_int64(s, i, v); }
int bind(sqlite3_stmt* s, int i, uint64_t v) = delete;
int bind(sqlite3_stmt* s, int i, std::string_view v) {
  return sqlite3_bind_text64(s, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC, SQLITE_UTF8);
}
/// Bytes for a BLOB column (a STRICT table refuses TEXT there).
struct blob {
  std::string_view bytes;
};
int bind(sqlite3_stmt* s, int i, blob v) {
  return sqlite3_bind_blob64(s, i, v.bytes.data() ? v.bytes.data() : "", v.bytes.size(),
                             SQLITE_STATIC);
}
template <class... Args>
int bind_all(sqlite3_stmt* s, const Args&... args) {
  int i = 0;
  int rc = SQLITE_OK;
  ((rc = rc == SQLITE_OK ? bind(s, ++i, args) : rc), ...);
  return rc;
}

/// Column `i` as text (a view into the statement's row: copy it before the next step).
std::string_view column_text(sqlite3_stmt* s, int i) {
  // Text first, then its length: the order SQLite documents as safe.
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  auto n = static_cast<std::size_t>(sqlite3_column_bytes(s, i));
  return p ? std::string_view{p, n} : std::string_view{};
}

/// Column `i` as bytes (a view into the statement's row, like column_text).
std::string_view column_blob(sqlite3_stmt* s, int i) {
  auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
  auto n = static_cast<std::size_t>(sqlite3_column_bytes(s, i));
  return p ? std::string_view{p, n} : std::string_view{};
}

/// A seq, bound or limit as SQLite's signed integer (values above 2^63-1 are clamped to it).
int64_t to_db(uint64_t v) noexcept { return static_cast<int64_t>(std::min(v, max_stored_seq)); }

/// Runs `sql` (no parameters, any number of statements): PRAGMAs and migrations, not hot paths.
std::optional<error> exec(sqlite3* db, const char* sql, std::string_view what) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &msg);
  if (rc == SQLITE_OK) return std::nullopt;
  std::string text = "sqlite: ";
  text.append(what).append(": ").append(msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return error{code_of(rc), std::move(text)};
}

/// The first column of the first row of `sql` (one-off, not cached): as text, "" when no row.
result<std::string> query_text(sqlite3* db, const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
  statement_ptr s{raw};
  if (rc != SQLITE_OK) return failure(db, rc, what);
  rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return std::string{};
  if (rc != SQLITE_ROW) return failure(db, rc, what);
  return std::string{column_text(s.get(), 0)};
}

/// The same as an integer (0 when no row).
result<int64_t> query_int(sqlite3* db, const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
  statement_ptr s{raw};
  if (rc != SQLITE_OK) return failure(db, rc, what);
  rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return int64_t{0};
  if (rc != SQLITE_ROW) return failure(db, rc, what);
  return sqlite3_column_int64(s.get(), 0);
}

/// Steps a statement that answers no row.
std::optional<error> run(connection& c, q id, std::string_view what) {
  auto s = c.statement(id);
  if (!s) return s.err();
  in_use use{*s};
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return failure(c.db(), rc, what);
  return std::nullopt;
}

/// Ends a failed transaction (if SQLite has not already: some errors roll back by themselves).
void roll_back(connection& c) {
  if (!sqlite3_get_autocommit(c.db())) (void)run(c, q::rollback, "rollback");
}

result<run_status> parse_status(std::string_view s, std::string_view id) {
  for (auto v : {run_status::running, run_status::completed, run_status::failed,
                 run_status::cancelled, run_status::timed_out})
    if (to_string(v) == s) return v;
  return error{errc::internal, "sqlite: run " + std::string{id} + " has an unknown status '" +
                                   std::string{s} + "'"};
}

result<run_kind> parse_kind(std::string_view s, std::string_view id) {
  for (auto v : {run_kind::external, run_kind::synthetic})
    if (to_string(v) == s) return v;
  return error{errc::internal,
               "sqlite: run " + std::string{id} + " has an unknown kind '" + std::string{s} + "'"};
}

/// The row the statement stands on (columns in RELAY_RUN_COLUMNS order), checked strictly.
result<run_row> run_of(sqlite3_stmt* s) {
  run_row r;
  r.info.id = column_text(s, 0);
  r.info.owner = column_text(s, 1);
  auto kind = parse_kind(column_text(s, 2), r.info.id);
  if (!kind) return kind.err();
  r.info.kind = *kind;
  r.input = column_text(s, 3);
  auto status = parse_status(column_text(s, 4), r.info.id);
  if (!status) return status.err();
  r.info.status = *status;
  r.info.reason = column_text(s, 5);
  r.idempotency_key = column_text(s, 6);
  const int64_t inactivity = sqlite3_column_int64(s, 7), ttl = sqlite3_column_int64(s, 8);
  const int64_t last_seq = sqlite3_column_int64(s, 11);
  if (inactivity < 0 || inactivity > UINT32_MAX || ttl < 0 || ttl > UINT32_MAX || last_seq < 0)
    return error{errc::internal, "sqlite: run " + r.info.id + " has a value out of range"};
  r.inactivity_s = static_cast<uint32_t>(inactivity);
  r.ttl_s = static_cast<uint32_t>(ttl);
  r.info.created_at = sqlite3_column_int64(s, 9);
  r.info.ended_at = sqlite3_column_int64(s, 10);
  r.info.last_seq = static_cast<uint64_t>(last_seq);
  return r;
}

/// Refuses a batch that the database could not store faithfully, before anything is written.
std::optional<error> check(const batch& b) {
  for (const auto& te : b.events)
    if (te.e.seq == 0 || te.e.seq > max_stored_seq)
      return error{errc::internal, "sqlite: write: event seq " + std::to_string(te.e.seq) + " of " +
                                       te.topic + " is outside 1..2^63-1"};
  for (const auto& r : b.runs)
    if (r.info.last_seq > max_stored_seq)
      return error{errc::internal,
                   "sqlite: write: last_seq of run " + r.info.id + " is outside 0..2^63-1"};
  return std::nullopt;
}

result<std::unique_ptr<connection>> open_connection(const std::string& path, int flags,
                                                    unsigned busy_timeout_ms) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  auto c = std::make_unique<connection>(db);  // owns the handle even when opening failed
  if (rc != SQLITE_OK) return failure(db, rc, "open " + path);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(std::min<unsigned>(busy_timeout_ms, INT_MAX)));
  return c;
}

class sqlite_store final : public store {
 public:
  sqlite_store(std::string path, std::unique_ptr<connection> writer,
               std::array<std::unique_ptr<connection>, reader_count> readers)
      : path_(std::move(path)), writer_(std::move(writer)), readers_(std::move(readers)) {}

  std::string_view backend() const noexcept override { return "sqlite"; }

  result<int> migrate() override {
    std::lock_guard lock{writer_->mutex()};
    sqlite3* db = writer_->db();
    // One step per transaction; the version is read under the write lock each time, so two
    // processes migrating the same file at once apply each step once.
    for (;;) {
      if (auto e = exec(db, "BEGIN IMMEDIATE", "migrate")) return *e;
      auto version = current_version();
      if (!version) {
        roll_back(*writer_);
        return version.err();
      }
      if (*version >= latest_version) {
        roll_back(*writer_);
        if (*version > latest_version)
          return error{errc::internal,
                       "sqlite: " + path_ + " has schema version " + std::to_string(*version) +
                           ", newer than this build knows (" + std::to_string(latest_version) +
                           "); refusing to use it: run a newer relay or restore a backup"};
        return static_cast<int>(*version);
      }
      const migration& m = migrations[*version];
      const std::string what = "migration " + std::to_string(m.version);
      auto e = exec(db, m.sql, what);
      if (!e) {
        const std::string record = "INSERT INTO schema_migrations (version, applied_at) VALUES (" +
                                   std::to_string(m.version) + ", " + std::to_string(now_ms()) +
                                   ")";
        e = exec(db, record.c_str(), what);
      }
      if (!e) e = exec(db, "COMMIT", what);
      if (e) {
        roll_back(*writer_);
        return *e;
      }
    }
  }

  result<uint64_t> write(const batch& b) override {
    if (b.empty()) return uint64_t{0};
    if (auto e = check(b)) return *e;
    std::lock_guard lock{writer_->mutex()};
    if (auto e = run(*writer_, q::begin, "write: begin")) return *e;
    auto inserted = write_in_transaction(b);
    if (inserted) {
      if (auto e = run(*writer_, q::commit, "write: commit")) inserted = *e;
    }
    if (!inserted) roll_back(*writer_);
    return inserted;
  }

  result<std::vector<event>> events_after(std::string_view topic, uint64_t after,
                                          std::size_t limit) override {
    if (limit == 0 || after >= max_stored_seq) return std::vector<event>{};
    const uint64_t lower = after + 2 > max_block_events ? after + 2 - max_block_events : 0;
    std::vector<event> out;
    out.reserve(std::min<std::size_t>(limit, 256));  // the limit may be far above what is stored
    uint64_t last = after;  // blocks never overlap; skipping seq <= last is a defence, not a need
    auto e =
        read_blocks(q::events_after, topic, to_db(lower), to_db(after),
                    [&](std::vector<event>& block) { return take_after(block, last, out, limit); });
    if (e) return *e;
    return out;
  }

  result<std::vector<event>> events_before(std::string_view topic, uint64_t before_seq,
                                           std::size_t limit) override {
    if (limit == 0 || before_seq == 1) return std::vector<event>{};
    // seq <= bound: exact at both ends (no bound is max_stored_seq).
    const uint64_t bound = before_seq == 0 ? max_stored_seq : before_seq - 1;
    std::vector<event> newest_first;
    uint64_t lowest = bound + 1;
    auto e = read_blocks(
        q::events_before, topic, to_db(bound), std::nullopt,
        [&](std::vector<event>& block) { return take_before(block, lowest, newest_first, limit); });
    if (e) return *e;
    std::reverse(newest_first.begin(), newest_first.end());
    return newest_first;
  }

  result<uint64_t> last_seq(std::string_view topic) override {
    return read_seq(q::last_seq, topic, "last_seq");
  }

  result<uint64_t> first_seq(std::string_view topic) override {
    return read_seq(q::first_seq, topic, "first_seq");
  }

  result<run_row> load_run(std::string_view id) override {
    auto lease = lease_reader();
    auto s = lease.conn.statement(q::load_run);
    if (!s) return s.err();
    in_use use{*s};
    if (int rc = bind_all(*s, id); rc != SQLITE_OK) return failure(lease.conn.db(), rc, "load_run");
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) return error{errc::not_found, "no run " + std::string{id}};
    if (rc != SQLITE_ROW) return failure(lease.conn.db(), rc, "load_run");
    return run_of(*s);
  }

  result<std::vector<run_row>> running_runs() override {
    auto lease = lease_reader();
    auto s = lease.conn.statement(q::running_runs);
    if (!s) return s.err();
    in_use use{*s};
    std::vector<run_row> out;
    int rc;
    while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
      auto r = run_of(*s);
      if (!r) return r.err();
      out.push_back(std::move(*r));
    }
    if (rc != SQLITE_DONE) return failure(lease.conn.db(), rc, "running_runs");
    return out;
  }

  result<uint64_t> delete_older_than(int64_t events_before_ms,
                                     int64_t runs_ended_before_ms) override {
    if (events_before_ms <= 0 && runs_ended_before_ms <= 0) return uint64_t{0};
    std::lock_guard lock{writer_->mutex()};
    if (auto e = run(*writer_, q::begin, "retention: begin")) return *e;
    uint64_t deleted = 0;
    auto step = [&](q id, int64_t bound, bool count) -> std::optional<error> {
      auto s = writer_->statement(id);
      if (!s) return s.err();
      in_use use{*s};
      int rc = bind_all(*s, bound);
      // Block deletions answer each block's event count (RETURNING); runs count as changes.
      if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(*s)) == SQLITE_ROW)
          deleted += static_cast<uint64_t>(std::max<int64_t>(0, sqlite3_column_int64(*s, 0)));
      }
      if (rc != SQLITE_DONE) return failure(writer_->db(), rc, "retention");
      if (count) deleted += static_cast<uint64_t>(sqlite3_changes64(writer_->db()));
      return std::nullopt;
    };
    std::optional<error> e;
    // A block goes when its newest event is older than the bound (a block is one commit's run
    // of a topic: its events were appended within milliseconds of each other).
    if (events_before_ms > 0) e = step(q::delete_events_before, events_before_ms, false);
    if (!e && runs_ended_before_ms > 0) {
      // Events and topic rows first: they are found through the runs deleted last.
      e = step(q::delete_finished_run_events, runs_ended_before_ms, false);
      if (!e) e = step(q::delete_finished_run_topics, runs_ended_before_ms, false);
      if (!e) e = step(q::delete_finished_runs, runs_ended_before_ms, true);
    }
    if (!e) e = run(*writer_, q::commit, "retention: commit");
    if (e) {
      roll_back(*writer_);
      return *e;
    }
    return deleted;
  }

  result<bool> ping() override {
    auto lease = lease_reader();
    if (auto e = run(lease.conn, q::ping, "ping")) return *e;
    return true;
  }

 private:
  struct reader_lease {
    connection& conn;
    std::unique_lock<std::mutex> lock;
  };

  /// A free reader, else (all busy) a turn on one of them.
  reader_lease lease_reader() {
    for (auto& r : readers_) {
      std::unique_lock lock{r->mutex(), std::try_to_lock};
      if (lock) return {*r, std::move(lock)};
    }
    auto& r = *readers_[next_reader_.fetch_add(1, std::memory_order_relaxed) % reader_count];
    return {r, std::unique_lock{r.mutex()}};
  }

  /// The highest applied version (0: none), creating the bookkeeping table on first use. Inside
  /// migrate()'s transaction.
  result<int64_t> current_version() {
    sqlite3* db = writer_->db();
    if (auto e = exec(db,
                      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                      "applied_at INTEGER NOT NULL)",
                      "migrate"))
      return *e;
    return query_int(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", "migrate");
  }

  /// The body of write(): run rows, events, then each topic's last_seq; inside BEGIN IMMEDIATE.
  result<uint64_t> write_in_transaction(const batch& b) {
    connection& c = *writer_;
    auto upsert_run = c.statement(q::upsert_run);
    if (!upsert_run) return upsert_run.err();
    for (const auto& r : b.runs) {
      in_use use{*upsert_run};
      int rc = bind_all(*upsert_run, std::string_view{r.info.id}, std::string_view{r.info.owner},
                        to_string(r.info.kind), std::string_view{r.input}, to_string(r.info.status),
                        std::string_view{r.info.reason}, std::string_view{r.idempotency_key},
                        static_cast<int64_t>(r.inactivity_s), static_cast<int64_t>(r.ttl_s),
                        r.info.created_at, r.info.ended_at, to_db(r.info.last_seq));
      if (rc == SQLITE_OK) rc = sqlite3_step(*upsert_run);
      if (rc != SQLITE_DONE) return failure(c.db(), rc, "write: run " + r.info.id);
    }
    auto insert_block = c.statement(q::insert_block);
    if (!insert_block) return insert_block.err();
    auto upsert_topic = c.statement(q::upsert_topic);
    if (!upsert_topic) return upsert_topic.err();
    const int64_t now = now_ms();
    const auto& events = b.events;
    const auto spans = plan_blocks(events);
    // Per topic of the batch: the highest seq stored or written so far in this transaction. A
    // block above it is new whole (a flood's case: no read); one at or below it is cut down to
    // the seqs no stored block holds, so a retried batch inserts nothing twice.
    std::unordered_map<std::string_view, uint64_t> known;
    uint64_t inserted = 0;
    // One topic upsert per stretch of a topic's blocks (a topic in two stretches is upserted
    // twice, harmlessly: last_seq keeps the max).
    for (std::size_t k = 0; k < spans.size();) {
      const std::string& topic = events[spans[k].begin].topic;
      auto [slot, fresh] = known.try_emplace(topic, 0);
      if (fresh) {
        auto stored = topic_last_seq(c, topic);
        if (!stored) return stored.err();
        slot->second = *stored;
      }
      uint64_t top = 0;
      for (; k < spans.size() && events[spans[k].begin].topic == topic; ++k) {
        const block_span span = spans[k];
        const uint64_t first = events[span.begin].e.seq, last = events[span.end - 1].e.seq;
        if (first > slot->second) {
          auto n = insert(c, *insert_block, events, span);
          if (!n) return n.err();
          inserted += *n;
        } else {
          auto stored = stored_ranges(c, topic, first, last);
          if (!stored) return stored.err();
          for (const block_span part : uncovered(events, span, *stored)) {
            auto n = insert(c, *insert_block, events, part);
            if (!n) return n.err();
            inserted += *n;
          }
        }
        slot->second = std::max(slot->second, last);
        top = std::max(top, last);
      }
      in_use use{*upsert_topic};
      int rc = bind_all(*upsert_topic, std::string_view{topic}, to_db(top), now);
      if (rc == SQLITE_OK) rc = sqlite3_step(*upsert_topic);
      if (rc != SQLITE_DONE) return failure(c.db(), rc, "write: topic " + topic);
    }
    return inserted;
  }

  /// Inserts events [span) as one block; answers how many events that stored (0 when a block
  /// starting at the same seq was there already).
  static result<uint64_t> insert(connection& c, sqlite3_stmt* s,
                                 const std::vector<topic_event>& events, block_span span) {
    const std::string& topic = events[span.begin].topic;
    int64_t ts = events[span.begin].e.ts;
    for (std::size_t i = span.begin; i < span.end; ++i) ts = std::max(ts, events[i].e.ts);
    const std::string body = encode_block(events, span);
    in_use use{s};
    int rc = bind_all(s, std::string_view{topic}, to_db(events[span.begin].e.seq),
                      to_db(events[span.end - 1].e.seq), ts, blob{body});
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return failure(c.db(), rc, "write: events of " + topic);
    return sqlite3_changes64(c.db()) > 0 ? uint64_t{span.size()} : uint64_t{0};
  }

  /// The topic's last_seq as stored (0 when unknown), read inside the write transaction.
  static result<uint64_t> topic_last_seq(connection& c, std::string_view topic) {
    auto s = c.statement(q::last_seq);
    if (!s) return s.err();
    in_use use{*s};
    int rc = bind_all(*s, topic);
    if (rc == SQLITE_OK) rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) return uint64_t{0};
    if (rc != SQLITE_ROW) return failure(c.db(), rc, "write: last_seq");
    return static_cast<uint64_t>(std::max<int64_t>(0, sqlite3_column_int64(*s, 0)));
  }

  /// The seq ranges of the topic's stored blocks that may hold a seq in first..last: a block has
  /// at most max_block_events events, so it starts no earlier than first - (max - 1).
  static result<std::vector<seq_range>> stored_ranges(connection& c, std::string_view topic,
                                                      uint64_t first, uint64_t last) {
    auto s = c.statement(q::blocks_between);
    if (!s) return s.err();
    in_use use{*s};
    const uint64_t lower = first > max_block_events ? first - (max_block_events - 1) : 0;
    int rc = bind_all(*s, topic, to_db(lower), to_db(last));
    std::vector<seq_range> out;
    if (rc == SQLITE_OK) {
      while ((rc = sqlite3_step(*s)) == SQLITE_ROW)
        out.push_back({static_cast<uint64_t>(sqlite3_column_int64(*s, 0)),
                       static_cast<uint64_t>(sqlite3_column_int64(*s, 1))});
    }
    if (rc != SQLITE_DONE)
      return failure(c.db(), rc, "write: stored blocks of " + std::string{topic});
    return out;
  }

  /// Steps a block query (columns first_seq, events) bound to (topic, a, [b]) and hands each
  /// block's events to `take` until it answers false. Error on a failed step or a damaged block.
  template <class Take>
  std::optional<error> read_blocks(q id, std::string_view topic, int64_t a,
                                   std::optional<int64_t> b, Take take) {
    auto lease = lease_reader();
    auto s = lease.conn.statement(id);
    if (!s) return s.err();
    in_use use{*s};
    int rc = b ? bind_all(*s, topic, a, *b) : bind_all(*s, topic, a);
    if (rc != SQLITE_OK) return failure(lease.conn.db(), rc, "read events");
    std::vector<event> block;
    while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
      block.clear();
      std::string_view body = column_blob(*s, 1);
      for (;;) {
        event e;
        auto more = next_block_event(body, e);
        if (!more)
          return error{errc::internal, "sqlite: " + more.err().message + " (" + std::string{topic} +
                                           " block at seq " +
                                           std::to_string(sqlite3_column_int64(*s, 0)) + ")"};
        if (!*more) break;
        block.push_back(std::move(e));
      }
      if (!take(block)) return std::nullopt;
    }
    if (rc != SQLITE_DONE)
      return failure(lease.conn.db(), rc, "read events of " + std::string{topic});
    return std::nullopt;
  }

  /// One seq (0 when there is no row).
  result<uint64_t> read_seq(q id, std::string_view topic, std::string_view what) {
    auto lease = lease_reader();
    auto s = lease.conn.statement(id);
    if (!s) return s.err();
    in_use use{*s};
    int rc = bind_all(*s, topic);
    if (rc == SQLITE_OK) rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) return uint64_t{0};
    if (rc != SQLITE_ROW) return failure(lease.conn.db(), rc, what);
    return static_cast<uint64_t>(std::max<int64_t>(0, sqlite3_column_int64(*s, 0)));
  }

  const std::string path_;
  // Destroyed readers first, then the writer: the last connection to close checkpoints the WAL
  // into the file and removes it.
  std::unique_ptr<connection> writer_;
  std::array<std::unique_ptr<connection>, reader_count> readers_;
  std::atomic<unsigned> next_reader_{0};
};

}  // namespace

result<std::unique_ptr<store>> open_sqlite(const sqlite_options& options) {
  const std::string& path = options.path;
  if (path.empty() || path == ":memory:")
    return error{errc::internal, "sqlite: the database path must name a file, not '" + path + "'"};
  namespace fs = std::filesystem;
  if (auto dir = fs::path{path}.parent_path(); !dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      return error{errc::unavailable,
                   "sqlite: cannot create directory " + dir.string() + ": " + ec.message()};
  }

  auto writer =
      open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, options.busy_timeout_ms);
  if (!writer) return writer.err();
  sqlite3* db = (*writer)->db();
  // SQLite opens a write-protected file read-only without a word: say so now, not at each commit.
  if (sqlite3_db_readonly(db, "main") == 1)
    return error{errc::unavailable, "sqlite: " + path + " is not writable"};
  auto mode = query_text(db, "PRAGMA journal_mode = WAL", "open " + path);
  if (!mode) return mode.err();
  if (*mode != "wal")
    return error{errc::internal,
                 "sqlite: " + path + " cannot use WAL (journal_mode is '" + *mode + "')"};
  const char* pragmas = options.synchronous_full
                            ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
                              "PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 67108864;"
                            : "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
                              "PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 67108864;";
  if (auto e = exec(db, pragmas, "open " + path)) return *e;

  std::array<std::unique_ptr<connection>, reader_count> readers;
  for (auto& r : readers) {
    auto c = open_connection(path, SQLITE_OPEN_READWRITE, options.busy_timeout_ms);
    if (!c) return c.err();
    if (auto e =
            exec((*c)->db(), "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;", "open " + path))
      return *e;
    r = std::move(*c);
  }
  return std::unique_ptr<store>{
      std::make_unique<sqlite_store>(path, std::move(*writer), std::move(readers))};
}

}  // namespace relay::storage
