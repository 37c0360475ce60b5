#pragma once
// Durable storage of runs and topic events (DESIGN.md "Storage", invariant 6), behind one interface
// with two real backends: SQLite (the embedded default) and PostgreSQL (shared by a cluster).
//
// Knows nothing of actors or sockets: the storage actor (actors/) drives it, batching writes into
// group commits; readers (history pages, replays older than a ring) call it directly. Calls block.
//
// Schema (the same in both backends, created and upgraded by versioned migrations):
//   schema_migrations(version, applied_at)
//   runs(id PK, owner, kind, input, status, reason, idempotency_key, inactivity_s, ttl_s,
//        created_at, ended_at, last_seq)                  — index (owner, idempotency_key),
//        (status)
//   topics(topic PK, last_seq, updated_at)                — a topic's numbering survives retention
//   event_blocks(topic, first_seq, last_seq, ts, events)  — unique (topic, first_seq), index (ts):
//        a topic's events first_seq..last_seq in one row (storage/event_block.hpp; version 2 —
//        version 1 had one row per event); room messages are events of room topics

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "protocols/run.hpp"

namespace relay::storage {

/// A run as stored: its public view plus what re-activating it after a restart needs.
struct run_row {
  run_info info;                // id, kind, status, owner, reason, last_seq, created_at, ended_at
  std::string input = "{}";     // compact JSON of the create request's `input`
  std::string idempotency_key;  // empty: none
  uint32_t inactivity_s = 60;
  uint32_t ttl_s = 600;
};

/// The highest seq a store accepts: both databases hold integers as signed 64-bit.
inline constexpr uint64_t max_stored_seq = INT64_MAX;  // 2^63 - 1

/// An event and the topic it belongs to ("run:<id>" or "room:<id>").
struct topic_event {
  std::string topic;
  event e;
};

/// One group commit: written in one transaction, all or nothing.
struct batch {
  std::vector<run_row> runs;        // upserted by id (the newest state of each run)
  std::vector<topic_event> events;  // inserted; an existing (topic, seq) is kept as it is
  bool empty() const noexcept { return runs.empty() && events.empty(); }
};

/// Thread safety: every method may be called from several threads at once (the storage actor's
/// writer and readers); backends serialise internally where they must. Every failure is an
/// `error` (code `unavailable` when the database cannot be reached or is busy past its timeout,
/// `not_found` for a missing run, `internal` otherwise); nothing throws.
class store {
 public:
  virtual ~store() = default;

  /// "sqlite" or "postgres", for logs and /health.
  virtual std::string_view backend() const noexcept = 0;

  /// Applies the migrations not applied yet, each in its own transaction, recording each version
  /// in schema_migrations. Idempotent. Answers the schema version in place afterwards.
  virtual result<int> migrate() = 0;

  /// Writes `b` in one transaction. Run rows replace the stored row with the same id; events whose
  /// (topic, seq) is already stored are skipped, so retrying a batch after an error is safe. Each
  /// topic's last_seq becomes max(stored, highest seq in the batch). Answers the number of events
  /// actually inserted. On error nothing of the batch is written. Every seq (and run last_seq) must
  /// be in 1..max_stored_seq (last_seq: 0..max_stored_seq); a batch holding another is refused
  /// whole (internal) before anything is written.
  virtual result<uint64_t> write(const batch& b) = 0;

  /// Events of `topic` with seq > after, ascending, at most `limit` (a replay older than a ring).
  /// Empty when limit is 0 or after >= max_stored_seq.
  virtual result<std::vector<event>> events_after(std::string_view topic, uint64_t after,
                                                  std::size_t limit) = 0;

  /// A history page: the newest `limit` events of `topic` with seq < before_seq (0: no bound),
  /// returned oldest first. Empty when limit is 0.
  virtual result<std::vector<event>> events_before(std::string_view topic, uint64_t before_seq,
                                                   std::size_t limit) = 0;

  /// The topic's last seq ever written (kept when retention deletes its events); 0 if unknown.
  virtual result<uint64_t> last_seq(std::string_view topic) = 0;

  /// The lowest seq still stored for `topic` (after retention); 0 when it has no events.
  virtual result<uint64_t> first_seq(std::string_view topic) = 0;

  /// A run by id; error not_found when there is none.
  virtual result<run_row> load_run(std::string_view id) = 0;

  /// Runs whose status is `running` (to re-activate after a crash), oldest first.
  virtual result<std::vector<run_row>> running_runs() = 0;

  /// Retention: deletes events with ts < events_before_ms (of every topic; a block of events
  /// goes when its newest event is that old, so an event may outlive the bound by as long as its
  /// block took to fill — one group commit), and finished runs
  /// (status not running) with ended_at < runs_ended_before_ms together with their events and
  /// topic row. 0 disables either part. One transaction. Answers the number of events and runs
  /// deleted (topic rows are not counted).
  virtual result<uint64_t> delete_older_than(int64_t events_before_ms,
                                             int64_t runs_ended_before_ms) = 0;

  /// A cheap round trip to the database (for /health and for probing recovery).
  virtual result<bool> ping() = 0;
};

/// The SQLite backend: one file (created with its directory if missing), WAL journal, one writer
/// connection and a small pool of readers (reads never wait for a write). A commit survives a
/// crash of the process; with `synchronous_full` it also survives a power loss, at one fsync per
/// commit (see the PRAGMA notes in sqlite_store.cpp).
struct sqlite_options {
  std::string path = "data/relay.db";
  unsigned busy_timeout_ms = 5000;  // waiting for a lock another connection holds
  bool synchronous_full = false;    // PRAGMA synchronous=FULL instead of NORMAL
};
result<std::unique_ptr<store>> open_sqlite(const sqlite_options& options);

/// The PostgreSQL backend: a libpq connection string and a small pool of connections.
struct postgres_options {
  std::string conninfo;  // e.g. "host=127.0.0.1 port=5432 dbname=relay user=relay"
  unsigned pool_size = 4;
  unsigned connect_timeout_s = 5;
};
result<std::unique_ptr<store>> open_postgres(const postgres_options& options);

}  // namespace relay::storage
