// The PostgreSQL backend of storage/store.hpp, over libpq.
//
// Each call borrows one connection from a small pool and gives it back when done, so no libpq
// handle is ever used by two threads and the store is as concurrent as its pool is large. A
// connection the server has closed (restart, pg_terminate_backend, idle timeout) is noticed when it
// is borrowed, or by the command that fails on it, and is replaced on its next use: the store
// recovers by itself when the database comes back. Events are stored in blocks
// (storage/event_block.hpp). A group commit is one transaction of two statements whatever its
// size — one locking the batch's topics, then ONE inserting every block, topic mark and run row,
// the batch travelling as binary array parameters into data-modifying CTEs — plus, for a block
// that may overlap stored ones (a retry), a read of the stored blocks around it. Strings are
// TEXT and block bodies BYTEA, byte-exact (jsonb would reorder keys).

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "storage/event_block.hpp"
#include "storage/store.hpp"

namespace relay::storage {
namespace {

struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, result_deleter>;

struct conn_deleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using pg_conn = std::unique_ptr<PGconn, conn_deleter>;

constexpr int64_t max_bigint = std::numeric_limits<int64_t>::max();

// A server that vanishes without closing the socket (host down, network cut) would leave a
// borrower blocked in libpq for the kernel's ~15 min retransmission timeout; TCP keepalives and a
// TCP user timeout bound that to about half a minute. A conninfo may override them.
constexpr const char* keepalives_idle_s = "10";
constexpr const char* keepalives_interval_s = "5";
constexpr const char* keepalives_count = "3";
constexpr const char* tcp_user_timeout_ms = "30000";

// How long migrate() waits for another process's migration (the advisory lock) before answering
// unavailable; migrations are small, so this only trips when something is stuck.
constexpr const char* migrate_lock_timeout = "SET LOCAL lock_timeout = '60s'";
// pg_advisory_xact_lock key serialising migrations of every Relay process on the database.
constexpr const char* migrate_lock = "SELECT pg_advisory_xact_lock(8243121600932277351)";

// ---- schema ---------------------------------------------------------------------------------

/// migrations[i] takes the schema from version i to i + 1, each in its own transaction. Append
/// only: a released migration is never edited, databases out there have run it. The same tables
/// and indexes as the SQLite backend's (an empty idempotency_key is none); identifiers are
/// COLLATE "C" (bytes compare, and they are ASCII).
constexpr std::array<const char*, 2> migrations = {
    R"sql(
CREATE TABLE runs (
  id              TEXT COLLATE "C" PRIMARY KEY,
  owner           TEXT NOT NULL,
  kind            TEXT NOT NULL,
  input           TEXT NOT NULL,
  status          TEXT NOT NULL,
  reason          TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  inactivity_s    BIGINT NOT NULL,
  ttl_s           BIGINT NOT NULL,
  created_at      BIGINT NOT NULL,
  ended_at        BIGINT NOT NULL,
  last_seq        BIGINT NOT NULL
);
CREATE INDEX runs_by_owner_key ON runs (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX runs_by_status ON runs (status, created_at, id);
CREATE INDEX runs_by_ended ON runs (ended_at);
CREATE TABLE topics (
  topic      TEXT COLLATE "C" PRIMARY KEY,
  last_seq   BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE events (
  topic TEXT COLLATE "C" NOT NULL,
  seq   BIGINT NOT NULL,
  type  TEXT NOT NULL,
  data  TEXT NOT NULL,
  ts    BIGINT NOT NULL,
  PRIMARY KEY (topic, seq)
);
CREATE INDEX events_by_ts ON events (ts);
)sql",
    // Events move into blocks (storage/event_block.hpp): one row per contiguous run of a topic's
    // events instead of one per event. Bodies are stored uncompressed (STORAGE EXTERNAL: never
    // pglz, which cost more CPU than the rest of the write — 2 -> 7 µs/event on 64-event blocks
    // of text-like JSON — and saved next to nothing), in the row up to a page's worth
    // (toast_tuple_target; a 16-event block then costs no TOAST rows), out of line above.
    // Each stored event becomes a block of its own, encoded here exactly as append_block_event
    // does; the data's length counts the UTF-8 bytes the body holds (octet_length of the text
    // itself would count the server encoding's).
    R"sql(
CREATE TABLE event_blocks (
  topic     TEXT COLLATE "C" NOT NULL,
  first_seq BIGINT NOT NULL,
  last_seq  BIGINT NOT NULL,
  ts        BIGINT NOT NULL,
  events    BYTEA NOT NULL,
  PRIMARY KEY (topic, first_seq)
) WITH (toast_tuple_target = 8160);
ALTER TABLE event_blocks ALTER COLUMN events SET STORAGE EXTERNAL;
CREATE INDEX event_blocks_by_ts ON event_blocks (ts);
INSERT INTO event_blocks (topic, first_seq, last_seq, ts, events)
SELECT topic, seq, seq, ts,
       convert_to(seq::text || ' ' || ts::text || ' ' || type || ' ' || octet_length(data)::text ||
                  E'\n', 'UTF8') || data
FROM (SELECT topic, seq, ts, type, convert_to(data, 'UTF8') AS data FROM events) AS e;
DROP TABLE events;
)sql",
};
constexpr int known_version = static_cast<int>(migrations.size());

// ---- statements -----------------------------------------------------------------------------

/// The statements a connection prepares (once per session, on first use: before migrate() the
/// tables they name may not exist yet).
enum class query : uint8_t {
  lock_topics,
  stored_blocks,
  write_batch,
  events_after,
  events_before,
  last_seq,
  first_seq,
  load_run,
  running_runs,
  delete_runs,
  delete_events,
  count,
};
constexpr std::size_t query_count = static_cast<std::size_t>(query::count);

struct statement {
  const char* name;
  const char* sql;
};

#define RELAY_RUN_COLUMNS                                                                      \
  "id, owner, kind, input, status, reason, idempotency_key, inactivity_s, ttl_s, created_at, " \
  "ended_at, last_seq"

constexpr std::array<statement, query_count> statements = {{
    // The first statement of a group commit: $1 the batch's topics, $2 now. Locks each topic's
    // row (creating a missing one) until the commit, in key order so that writers lock them in
    // the same order, and answers its last_seq as the last writer committed it. So the blocks
    // planned from that answer cannot overlap a concurrent writer's: a second writer of a topic
    // waits here, then sees the first one's blocks.
    {"relay_lock_topics", R"sql(
INSERT INTO topics (topic, last_seq, updated_at)
SELECT topic, 0, $2::bigint FROM unnest($1::text[]) AS t(topic) ORDER BY topic
ON CONFLICT (topic) DO UPDATE SET updated_at = excluded.updated_at
RETURNING topic, last_seq)sql"},
    // The stored blocks of topic $1 that may hold a seq in first..last: $2 = first -
    // (max_block_events - 1) (a block holds at most that many events), $3 = last.
    {"relay_stored_blocks",
     "SELECT first_seq, last_seq FROM event_blocks WHERE topic = $1 AND first_seq BETWEEN $2 AND "
     "$3"},
    // The rest of a group commit, after relay_lock_topics. $1..$5: the blocks' columns; $6, $7:
    // each topic's highest seq in the batch; $8..$19: the runs' columns; $20: now. Answers the
    // number of events in the blocks inserted. Runs repeated in a batch keep their last row
    // (ON CONFLICT may not touch a row twice).
    {"relay_write_batch", R"sql(
WITH new_blocks AS (
  INSERT INTO event_blocks (topic, first_seq, last_seq, ts, events)
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
  ON CONFLICT (topic, first_seq) DO NOTHING
  RETURNING last_seq - first_seq + 1 AS n
), topic_marks AS (
  UPDATE topics SET last_seq = m.last_seq, updated_at = $20::bigint
  FROM unnest($6::text[], $7::bigint[]) AS m(topic, last_seq)
  WHERE topics.topic = m.topic AND topics.last_seq < m.last_seq
), run_rows AS (
  INSERT INTO runs (id, owner, kind, input, status, reason, idempotency_key, inactivity_s, ttl_s,
                    created_at, ended_at, last_seq)
  SELECT DISTINCT ON (id) id, owner, kind, input, status, reason, idempotency_key, inactivity_s,
         ttl_s, created_at, ended_at, last_seq
  FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
              $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
              $19::bigint[])
       WITH ORDINALITY AS r(id, owner, kind, input, status, reason, idempotency_key, inactivity_s,
                            ttl_s, created_at, ended_at, last_seq, n)
  ORDER BY id, n DESC
  ON CONFLICT (id) DO UPDATE
  SET owner = excluded.owner, kind = excluded.kind, input = excluded.input,
      status = excluded.status, reason = excluded.reason,
      idempotency_key = excluded.idempotency_key, inactivity_s = excluded.inactivity_s,
      ttl_s = excluded.ttl_s, created_at = excluded.created_at, ended_at = excluded.ended_at,
      last_seq = excluded.last_seq
)
SELECT coalesce(sum(n), 0)::bigint FROM new_blocks)sql"},
    // $2 = $3 + 2 - max_block_events (at least 0): a block holding a seq above $3 starts there
    // or later, so the index range starts there. $4: how many blocks.
    {"relay_events_after",
     "SELECT first_seq, events FROM event_blocks WHERE topic = $1 AND first_seq >= $2 AND "
     "last_seq > $3 ORDER BY first_seq LIMIT $4"},
    {"relay_events_before",
     "SELECT first_seq, events FROM event_blocks WHERE topic = $1 AND first_seq <= $2 "
     "ORDER BY first_seq DESC LIMIT $3"},
    {"relay_last_seq", "SELECT last_seq FROM topics WHERE topic = $1"},
    {"relay_first_seq", "SELECT coalesce(min(first_seq), 0) FROM event_blocks WHERE topic = $1"},
    {"relay_load_run", "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE id = $1"},
    {"relay_running_runs",
     "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE status = $1 ORDER BY created_at, id"},
    // $1: the running status, $2: the cut-off. Counts the runs and their events (the contract
    // does not count topic rows).
    {"relay_delete_runs", R"sql(
WITH gone AS (
  DELETE FROM runs WHERE status <> $1 AND ended_at < $2 RETURNING 'run:' || id AS topic
), gone_blocks AS (
  DELETE FROM event_blocks WHERE topic IN (SELECT topic FROM gone)
  RETURNING last_seq - first_seq + 1 AS n
), gone_topics AS (
  DELETE FROM topics WHERE topic IN (SELECT topic FROM gone)
)
SELECT (SELECT count(*) FROM gone) + (SELECT coalesce(sum(n), 0) FROM gone_blocks)::bigint)sql"},
    // A block goes when its newest event is older than the cut-off $1 (store.hpp).
    {"relay_delete_events", R"sql(
WITH gone AS (DELETE FROM event_blocks WHERE ts < $1 RETURNING last_seq - first_seq + 1 AS n)
SELECT coalesce(sum(n), 0)::bigint FROM gone)sql"},
}};

#undef RELAY_RUN_COLUMNS

// ---- errors ---------------------------------------------------------------------------------

/// libpq messages span lines ("server closed the connection unexpectedly\n\tThis probably...");
/// an error message is one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char ch : text) {
    if (ch == '\n' || ch == '\t' || ch == '\r' || ch == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += ch;
  }
  return out;
}

/// SQLSTATEs meaning "the database cannot serve you now, try again later": connection exceptions
/// (class 08), the server shutting down or starting (57P01..57P03), too many connections (53300),
/// a lock wait past lock_timeout (55P03).
bool unavailable_state(std::string_view s) {
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300" ||
         s == "55P03";
}

/// The error of a command that produced `r` on `c`, or nothing when it succeeded. A lost
/// connection is `unavailable` (retry later); everything else is `internal`.
std::optional<error> failure(PGconn* c, const PGresult* r, std::string_view what) {
  ExecStatusType status = r != nullptr ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return std::nullopt;
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string_view sqlstate = state != nullptr ? state : "";
  std::string text = one_line(r != nullptr ? PQresultErrorMessage(r) : "");
  if (text.empty()) text = one_line(PQerrorMessage(c));
  if (text.empty()) text = PQresStatus(status);
  bool lost = PQstatus(c) != CONNECTION_OK || unavailable_state(sqlstate);
  std::string message = "postgres: " + std::string{what} + ": " + text;
  if (!sqlstate.empty()) message += " (SQLSTATE " + std::string{sqlstate} + ")";
  return error{lost ? errc::unavailable : errc::internal, std::move(message)};
}

error corrupt(std::string_view column, std::string_view value) {
  return {errc::internal, "postgres: " + std::string{column} + " holds '" +
                              std::string{value.substr(0, 64)} + "', which this build cannot read"};
}

// ---- connections and the pool ---------------------------------------------------------------

/// A pooled connection. Only its borrower touches it.
struct connection {
  pg_conn conn;
  std::bitset<query_count> prepared;  // a session's prepared statements die with it
  bool fresh = false;                 // connected for the current borrower
};

// libpq prints notices to stderr by default ("relation ... already exists, skipping", or the FATAL
// a server sends an idle session it closes); this layer has no logger, and what matters reaches
// the caller as an error.
void ignore_notice(void*, const char*) {}

/// True when an idle connection still looks usable. The server says nothing to an idle session
/// unless it is closing it (pg_terminate_backend, shutdown, idle_session_timeout): then it sends a
/// FATAL error and closes the socket. A readable socket is drained without blocking (libpq keeps
/// its sockets non-blocking), and the end of the stream marks the connection bad, so a connection
/// dropped while it sat in the pool is replaced before a command fails on it.
bool still_connected(PGconn* c) {
  for (int i = 0; i < 4 && PQstatus(c) == CONNECTION_OK; ++i) {
    pollfd p{PQsocket(c), POLLIN, 0};
    if (p.fd < 0 || ::poll(&p, 1, 0) <= 0) break;
    if (PQconsumeInput(c) == 0) break;
  }
  return PQstatus(c) == CONNECTION_OK;
}

/// `size` connections, created on first use, borrowed one per call. A borrower that finds every
/// connection busy waits on a condition variable, at most `wait`, then answers unavailable.
class pool {
 public:
  /// A borrowed connection, given back when the lease ends.
  class lease {
   public:
    lease(pool* p, std::size_t slot) noexcept : pool_(p), slot_(slot) {}
    lease(lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), slot_(other.slot_) {}
    lease& operator=(lease&&) = delete;
    ~lease() {
      if (pool_ != nullptr) pool_->release(slot_);
    }
    connection& get() const noexcept { return pool_->slots_[slot_]; }

   private:
    pool* pool_;
    std::size_t slot_;
  };

  explicit pool(const postgres_options& o)
      : conninfo_(o.conninfo),
        connect_timeout_(std::to_string(o.connect_timeout_s)),
        wait_(std::max(1u, o.connect_timeout_s)),
        slots_(std::max(1u, o.pool_size)) {
    for (std::size_t i = slots_.size(); i-- > 0;) idle_.push_back(i);
    // Later keys win: a conninfo (expanded from `dbname`) may override the keepalives but not
    // connect_timeout (its own option) nor the encoding (strings must arrive byte-exact).
    // clang-format off
    const std::pair<const char*, const char*> params[] = {
        {"fallback_application_name", "relay"},
        {"keepalives_idle", keepalives_idle_s},
        {"keepalives_interval", keepalives_interval_s},
        {"keepalives_count", keepalives_count},
        {"tcp_user_timeout", tcp_user_timeout_ms},
        {"dbname", conninfo_.c_str()},
        {"connect_timeout", connect_timeout_.c_str()},
        {"client_encoding", "UTF8"},
    };
    // clang-format on
    for (auto [key, value] : params) {
      keys_.push_back(key);
      values_.push_back(value);
    }
    keys_.push_back(nullptr);
    values_.push_back(nullptr);
  }

  /// A connection of its own for the caller, connected; unavailable when none frees up in time
  /// or the database cannot be reached.
  result<lease> acquire() {
    std::size_t slot = 0;
    {
      std::unique_lock lock(mutex_);
      if (!available_.wait_for(lock, wait_, [&] { return !idle_.empty(); })) {
        return error{errc::unavailable, "postgres: all " + std::to_string(slots_.size()) +
                                            " connections stayed busy for " +
                                            std::to_string(wait_.count()) + " s"};
      }
      slot = idle_.back();  // LIFO: a few warm connections serve a quiet store
      idle_.pop_back();
    }
    lease l{this, slot};
    connection& c = l.get();
    c.fresh = false;
    if (!c.conn || !still_connected(c.conn.get())) {
      if (auto e = connect(c)) return *e;
    }
    return l;
  }

 private:
  /// (Re)connects `c` outside the lock: connecting is I/O, bounded by connect_timeout.
  std::optional<error> connect(connection& c) {
    c.conn.reset(PQconnectdbParams(keys_.data(), values_.data(), 1));
    c.prepared.reset();
    c.fresh = true;
    if (!c.conn) return error{errc::unavailable, "postgres: connect: out of memory"};
    if (PQstatus(c.conn.get()) != CONNECTION_OK) {
      error e{errc::unavailable, "postgres: connect: " + one_line(PQerrorMessage(c.conn.get()))};
      c.conn.reset();
      return e;
    }
    PQsetNoticeProcessor(c.conn.get(), ignore_notice, nullptr);
    return std::nullopt;
  }

  void release(std::size_t slot) noexcept {
    connection& c = slots_[slot];
    // A connection left inside a transaction (a failure between BEGIN and COMMIT whose ROLLBACK
    // failed too) would drag it into the next borrower's statements: drop it instead, here and
    // not under the lock, since PQfinish writes to the socket.
    if (c.conn && PQtransactionStatus(c.conn.get()) != PQTRANS_IDLE) c.conn.reset();
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(slot);
    }
    available_.notify_one();
  }

  const std::string conninfo_;
  const std::string connect_timeout_;
  std::vector<const char*> keys_, values_;  // PQconnectdbParams' arrays, null-terminated
  const std::chrono::seconds wait_;
  std::vector<connection> slots_;  // fixed size; slot i belongs to whoever borrowed it
  std::mutex mutex_;               // guards idle_
  std::condition_variable available_;
  std::vector<std::size_t> idle_;
};

// ---- commands -------------------------------------------------------------------------------

/// The result format of a command: text, or binary (bytea as its bytes, not hex; integers as
/// big-endian words).
enum class answer : int { text = 0, binary = 1 };

/// Runs prepared statement `q` on `n` parameters (lengths and formats null: all text),
/// preparing it first if this session has not.
result<pg_result> exec(connection& c, query q, int n, const char* const* values, const int* lengths,
                       const int* formats, answer format) {
  const auto i = static_cast<std::size_t>(q);
  const statement& s = statements[i];
  if (!c.prepared[i]) {
    pg_result r{PQprepare(c.conn.get(), s.name, s.sql, 0, nullptr)};
    if (auto e = failure(c.conn.get(), r.get(), s.name)) return *e;
    c.prepared.set(i);
  }
  pg_result r{
      PQexecPrepared(c.conn.get(), s.name, n, values, lengths, formats, static_cast<int>(format))};
  if (auto e = failure(c.conn.get(), r.get(), s.name)) return *e;
  return r;
}

/// Runs prepared statement `q` with text parameters.
result<pg_result> exec(connection& c, query q, std::initializer_list<const char*> params,
                       answer format = answer::text) {
  return exec(c, q, static_cast<int>(params.size()), std::data(params), nullptr, nullptr, format);
}

/// Runs prepared statement `q` with binary parameters (each at most max_field_bytes: the
/// caller checks), answering text.
result<pg_result> exec_binary(connection& c, query q, std::span<const std::string_view> params) {
  constexpr std::size_t max_params = 24;
  if (params.size() > max_params) {
    return error{errc::internal,
                 "postgres: " + std::string{statements[static_cast<std::size_t>(q)].name} +
                     ": too many parameters"};
  }
  std::array<const char*, max_params> values{};
  std::array<int, max_params> lengths{}, formats{};
  const std::size_t n = params.size();
  for (std::size_t i = 0; i < n; ++i) {
    values[i] = params[i].data();
    lengths[i] = static_cast<int>(params[i].size());
    formats[i] = 1;
  }
  return exec(c, q, static_cast<int>(n), values.data(), lengths.data(), formats.data(),
              answer::text);
}

/// Runs constant SQL (several statements allowed: the simple protocol) without parameters.
result<pg_result> exec_sql(PGconn* c, const char* sql, std::string_view what) {
  pg_result r{PQexec(c, sql)};
  if (auto e = failure(c, r.get(), what)) return *e;
  return r;
}

/// BEGIN ... COMMIT on one connection; rolled back when it ends uncommitted.
class transaction {
 public:
  explicit transaction(PGconn* c) : c_(c) {}
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  ~transaction() {
    // Nothing to report: on a broken connection the server has rolled back already, and the
    // pool drops a connection still inside a transaction.
    if (open_) PQclear(PQexec(c_, "ROLLBACK"));
  }
  std::optional<error> begin(std::string_view what) {
    auto r = exec_sql(c_, "BEGIN", what);
    if (!r) return r.err();
    open_ = true;
    return std::nullopt;
  }
  std::optional<error> commit(std::string_view what) {
    auto r = exec_sql(c_, "COMMIT", what);
    if (!r) return r.err();  // the destructor's ROLLBACK is harmless after a failed COMMIT
    open_ = false;
    return std::nullopt;
  }

 private:
  PGconn* c_;
  bool open_ = false;
};

// ---- values in and out ----------------------------------------------------------------------

std::string decimal(int64_t v) {
  char buf[24];
  auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  return {buf, end};
}

/// A parameter of a position or a limit: BIGINT holds no more than 2^63-1 (max_stored_seq), and
/// nothing stored is larger, so larger values are clamped instead of wrapping to negative.
std::string clamped(uint64_t v) {
  return decimal(static_cast<int64_t>(std::min<uint64_t>(v, max_bigint)));
}

/// Big-endian words, as PostgreSQL's binary formats have them.
void put_be32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, sizeof b);
}
void put_be64(std::string& out, uint64_t v) {
  put_be32(out, static_cast<uint32_t>(v >> 32));
  put_be32(out, static_cast<uint32_t>(v));
}
uint64_t get_be64(const char* p) noexcept {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

/// Element type oids (pg_type.dat; fixed since PostgreSQL 7).
constexpr uint32_t oid_bytea = 17, oid_int8 = 20, oid_text = 25;

/// The largest value PostgreSQL stores in one field (1 GiB - 1); a parameter's length is an int.
constexpr std::size_t max_field_bytes = (std::size_t{1} << 30) - 1;

/// A one-dimensional PostgreSQL array in the binary format (array_recv: ndim, has-nulls flag,
/// element type, then per dimension its length and lower bound, then each element as a length
/// and its bytes), sent as ONE binary parameter: nothing to escape here, no literal for the
/// server to parse (the text literals' escaping and array_in were a write's main cost). Values are
/// data, never SQL.
class binary_array {
 public:
  explicit binary_array(uint32_t element_oid) {
    put_be32(buf_, 1);  // ndim
    put_be32(buf_, 0);  // no nulls
    put_be32(buf_, element_oid);
    put_be32(buf_, 0);  // the length, set by finish()
    put_be32(buf_, 1);  // lower bound
  }
  void reserve(std::size_t bytes) { buf_.reserve(header + bytes); }
  void add(std::string_view bytes) {
    oversized_ = oversized_ || bytes.size() > max_field_bytes;
    put_be32(buf_, static_cast<uint32_t>(bytes.size()));
    buf_.append(bytes);
    ++n_;
  }
  void add(int64_t v) {
    put_be32(buf_, 8);
    put_be64(buf_, static_cast<uint64_t>(v));
    ++n_;
  }
  /// Starts an element whose bytes the caller appends to the answer; end_element() ends it.
  std::string& begin_element() {
    open_ = buf_.size();
    put_be32(buf_, 0);
    return buf_;
  }
  void end_element() {
    const std::size_t size = buf_.size() - open_ - 4;
    oversized_ = oversized_ || size > max_field_bytes;
    patch(open_, static_cast<uint32_t>(size));
    ++n_;
  }
  /// The parameter; error when it or an element is larger than PostgreSQL takes.
  result<std::string_view> finish(std::string_view what) {
    if (oversized_ || buf_.size() > max_field_bytes) {
      return error{errc::internal, "postgres: " + std::string{what} + " exceed PostgreSQL's " +
                                       std::to_string(max_field_bytes) + " bytes per value"};
    }
    patch(12, n_);
    return std::string_view{buf_};
  }

 private:
  static constexpr std::size_t header = 20;
  void patch(std::size_t at, uint32_t v) {
    for (int i = 3; i >= 0; --i, v >>= 8)
      buf_[at + static_cast<std::size_t>(i)] = static_cast<char>(v);
  }
  std::string buf_;
  uint32_t n_ = 0;
  std::size_t open_ = 0;
  bool oversized_ = false;
};

/// A batch as the parameters of the write_batch statement (after lock_topics): the blocks to
/// insert, each topic's highest seq, the run rows.
struct batch_arrays {
  binary_array topic{oid_text}, first{oid_int8}, last{oid_int8}, ts{oid_int8}, events{oid_bytea};
  binary_array mark_topic{oid_text}, mark_seq{oid_int8};
  binary_array id{oid_text}, owner{oid_text}, kind{oid_text}, input{oid_text}, status{oid_text},
      reason{oid_text}, key{oid_text}, inactivity{oid_int8}, ttl{oid_int8}, created{oid_int8},
      ended{oid_int8}, last_seq{oid_int8};

  /// Events [span) of `events` as one block.
  void add_block(const std::vector<topic_event>& events, block_span span) {
    const event& head = events[span.begin].e;
    int64_t newest = head.ts;
    std::string& body = this->events.begin_element();
    for (std::size_t i = span.begin; i < span.end; ++i) {
      const event& e = events[i].e;
      newest = std::max(newest, e.ts);
      append_block_event(body, e);
    }
    this->events.end_element();
    topic.add(events[span.begin].topic);
    first.add(static_cast<int64_t>(head.seq));
    last.add(static_cast<int64_t>(events[span.end - 1].e.seq));
    ts.add(newest);
  }

  void add_run(const run_row& r) {
    const run_info& i = r.info;
    id.add(i.id);
    owner.add(i.owner);
    kind.add(to_string(i.kind));
    input.add(r.input);
    status.add(to_string(i.status));
    reason.add(i.reason);
    key.add(r.idempotency_key);
    inactivity.add(static_cast<int64_t>(r.inactivity_s));
    ttl.add(static_cast<int64_t>(r.ttl_s));
    created.add(i.created_at);
    ended.add(i.ended_at);
    last_seq.add(static_cast<int64_t>(i.last_seq));
  }
};

/// Refuses a batch holding a seq or a run last_seq the database cannot hold (store.hpp).
std::optional<error> check(const batch& b) {
  for (const auto& te : b.events) {
    if (te.e.seq == 0 || te.e.seq > max_stored_seq) {
      return error{errc::internal, "postgres: seq " + std::to_string(te.e.seq) + " of " + te.topic +
                                       " is outside 1.." + std::to_string(max_stored_seq)};
    }
  }
  for (const auto& r : b.runs) {
    if (r.info.last_seq > max_stored_seq) {
      return error{errc::internal, "postgres: last_seq of run " + r.info.id + " is above " +
                                       std::to_string(max_stored_seq)};
    }
  }
  return std::nullopt;
}

/// What a write knows of one topic of its batch.
struct topic_plan {
  uint64_t batch_max = 0;          // the highest seq of the topic in the batch
  uint64_t known = 0;              // the highest seq stored or planned so far
  std::vector<seq_range> planned;  // the spans of this batch planned so far
};

/// Typed columns of one result row; strict: a value that does not parse fails the read.
class row {
 public:
  row(const PGresult* r, int i) : r_(r), i_(i) {}
  std::string text(int col) const {
    return {PQgetvalue(r_, i_, col), static_cast<std::size_t>(PQgetlength(r_, i_, col))};
  }
  /// The integer in column `col` when it lies in [lo, hi].
  std::optional<int64_t> integer(int col, int64_t lo, int64_t hi) const {
    const char* begin = PQgetvalue(r_, i_, col);
    const char* end = begin + PQgetlength(r_, i_, col);
    int64_t v = 0;
    auto [p, ec] = std::from_chars(begin, end, v);
    if (ec != std::errc{} || p != end || begin == end || v < lo || v > hi) return std::nullopt;
    return v;
  }

 private:
  const PGresult* r_;
  int i_;
};

/// The single non-negative integer a count or an aggregate answers.
result<uint64_t> single_count(const PGresult* r, std::string_view what) {
  if (PQntuples(r) != 1 || PQnfields(r) != 1) {
    return error{errc::internal, "postgres: " + std::string{what} + ": expected one value"};
  }
  auto v = row{r, 0}.integer(0, 0, max_bigint);
  if (!v) return corrupt(what, PQgetvalue(r, 0, 0));
  return static_cast<uint64_t>(*v);
}

/// Column `col` of a binary result holding a BIGINT.
std::optional<int64_t> binary_bigint(const PGresult* r, int i, int col) {
  if (PQgetisnull(r, i, col) != 0 || PQgetlength(r, i, col) != 8) return std::nullopt;
  return static_cast<int64_t>(get_be64(PQgetvalue(r, i, col)));
}

/// Reads pages of blocks of one topic (rows first_seq, events of a binary result), decoding each
/// block for the caller; remembers how many blocks and events it read to size the next page.
class block_reader {
 public:
  explicit block_reader(std::string_view topic) : topic_(topic) {}

  /// Hands each block of `r`, decoded, to `take` (which answers false to stop): true when every
  /// block was taken. A damaged block is an error naming the topic and the block.
  template <class Take>
  result<bool> read(const PGresult* r, Take&& take) {
    for (int i = 0, n = PQntuples(r); i < n; ++i) {
      auto first = binary_bigint(r, i, 0);
      if (!first) {
        return error{errc::internal,
                     "postgres: unreadable first_seq of a block of " + std::string{topic_}};
      }
      last_first_seq_ = *first;
      std::string_view body{PQgetvalue(r, i, 1), static_cast<std::size_t>(PQgetlength(r, i, 1))};
      block_.clear();
      for (event e;;) {
        auto more = next_block_event(body, e);
        if (!more) {
          return error{errc::internal, "postgres: " + more.err().message + " (" +
                                           std::string{topic_} + ", block at seq " +
                                           std::to_string(*first) + ")"};
        }
        if (!*more) break;
        block_.push_back(std::move(e));
      }
      ++blocks_;
      events_ += block_.size();
      if (!take(block_)) return false;
    }
    return true;
  }

  /// How many blocks to ask for to find `wanted` more events: as many as the blocks read so far
  /// suggest (full blocks before the first page), plus slack. Each block of a page holds at
  /// least one wanted event, so sizing pages beats asking for `wanted` blocks: a history page
  /// of 50 in a topic of full blocks reads 2 blocks, not 50.
  uint64_t page(uint64_t wanted) const {
    const uint64_t per_block =
        blocks_ == 0 ? max_block_events : std::max<uint64_t>(1, events_ / blocks_);
    return std::min<uint64_t>(wanted, max_stored_seq - 2) / per_block + 2;
  }

  /// The first seq of the last block read (the next page starts past it).
  uint64_t last_first_seq() const noexcept { return static_cast<uint64_t>(last_first_seq_); }

 private:
  std::string_view topic_;
  uint64_t blocks_ = 0, events_ = 0;
  int64_t last_first_seq_ = 0;
  std::vector<event> block_;
};

/// The enumerator whose contract spelling (to_string) is exactly `s`.
template <class Enum, std::size_t N>
std::optional<Enum> parse_enum(std::string_view s, const std::array<Enum, N>& all) {
  for (Enum e : all) {
    if (to_string(e) == s) return e;
  }
  return std::nullopt;
}
constexpr std::array all_statuses = {run_status::running, run_status::completed, run_status::failed,
                                     run_status::cancelled, run_status::timed_out};
constexpr std::array all_kinds = {run_kind::external, run_kind::synthetic};

/// A row of the RELAY_RUN_COLUMNS select list.
result<run_row> read_run(const PGresult* r, int i) {
  row x{r, i};
  run_row out;
  out.info.id = x.text(0);
  out.info.owner = x.text(1);
  auto kind = parse_enum(x.text(2), all_kinds);
  if (!kind) return corrupt("runs.kind", x.text(2));
  out.info.kind = *kind;
  out.input = x.text(3);
  auto status = parse_enum(x.text(4), all_statuses);
  if (!status) return corrupt("runs.status", x.text(4));
  out.info.status = *status;
  out.info.reason = x.text(5);
  out.idempotency_key = x.text(6);
  constexpr int64_t max_u32 = std::numeric_limits<uint32_t>::max();
  constexpr int64_t min_bigint = std::numeric_limits<int64_t>::min();
  auto inactivity = x.integer(7, 0, max_u32);
  auto ttl = x.integer(8, 0, max_u32);
  auto created = x.integer(9, min_bigint, max_bigint);
  auto ended = x.integer(10, min_bigint, max_bigint);
  auto last = x.integer(11, 0, max_bigint);
  if (!inactivity) return corrupt("runs.inactivity_s", x.text(7));
  if (!ttl) return corrupt("runs.ttl_s", x.text(8));
  if (!created) return corrupt("runs.created_at", x.text(9));
  if (!ended) return corrupt("runs.ended_at", x.text(10));
  if (!last) return corrupt("runs.last_seq", x.text(11));
  out.inactivity_s = static_cast<uint32_t>(*inactivity);
  out.ttl_s = static_cast<uint32_t>(*ttl);
  out.info.created_at = *created;
  out.info.ended_at = *ended;
  out.info.last_seq = static_cast<uint64_t>(*last);
  return out;
}

// ---- the store ------------------------------------------------------------------------------

class postgres_store final : public store {
 public:
  explicit postgres_store(const postgres_options& o) : pool_(o) {}

  /// Connects the first connection, so a wrong address or password is reported by open.
  std::optional<error> connect_one() {
    auto l = pool_.acquire();
    if (!l) return l.err();
    return std::nullopt;
  }

  std::string_view backend() const noexcept override { return "postgres"; }

  result<int> migrate() override {
    return with_connection(false, [](connection& c) -> result<int> {
      for (;;) {
        // One step per transaction, each under the advisory lock: two processes starting at
        // once take turns, and the second finds the work done.
        transaction tx{c.conn.get()};
        if (auto e = tx.begin("migrate")) return *e;
        for (const char* sql :
             {migrate_lock_timeout, migrate_lock,
              "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, "
              "applied_at BIGINT NOT NULL)"}) {
          if (auto r = exec_sql(c.conn.get(), sql, "migrate"); !r) return r.err();
        }
        auto v = exec_sql(c.conn.get(), "SELECT coalesce(max(version), 0) FROM schema_migrations",
                          "migrate");
        if (!v) return v.err();
        auto version = single_count(v->get(), "schema_migrations.version");
        if (!version) return version.err();
        if (*version > static_cast<uint64_t>(known_version)) {
          return error{errc::internal,
                       "postgres: the database has schema version " + std::to_string(*version) +
                           ", newer than this build knows (" + std::to_string(known_version) + ")"};
        }
        const int current = static_cast<int>(*version);
        if (current == known_version) {
          if (auto e = tx.commit("migrate")) return *e;
          return current;
        }
        const std::string what = "migration " + std::to_string(current + 1);
        if (auto r = exec_sql(c.conn.get(), migrations[static_cast<std::size_t>(current)], what);
            !r) {
          return r.err();
        }
        const std::string next = std::to_string(current + 1), now = decimal(now_ms());
        const char* params[] = {next.c_str(), now.c_str()};
        pg_result done{PQexecParams(
            c.conn.get(), "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", 2,
            nullptr, params, nullptr, nullptr, 0)};
        if (auto e = failure(c.conn.get(), done.get(), what)) return *e;
        if (auto e = tx.commit(what)) return *e;
      }
    });
  }

  result<uint64_t> write(const batch& b) override {
    if (b.empty()) return uint64_t{0};
    if (auto e = check(b)) return *e;
    // The batch's topics, each with its highest seq in the batch.
    std::unordered_map<std::string_view, topic_plan> plans;
    for (const auto& te : b.events) {
      auto& p = plans[te.topic];
      p.batch_max = std::max(p.batch_max, te.e.seq);
    }
    std::vector<std::string_view> topics;
    topics.reserve(plans.size());
    for (const auto& [topic, p] : plans) topics.push_back(topic);
    std::sort(topics.begin(), topics.end());
    binary_array topic_list{oid_text};
    for (auto t : topics) topic_list.add(t);
    auto locked_topics = topic_list.finish("the batch's topic names");
    if (!locked_topics) return locked_topics.err();
    const auto spans = plan_blocks(b.events);
    std::string now;
    put_be64(now, static_cast<uint64_t>(now_ms()));

    // Not retried here: if the connection dies after COMMIT, a retry would report 0 inserted
    // events; the caller retries the batch (safe by design) and knows it is a retry.
    return with_connection(false, [&](connection& c) -> result<uint64_t> {
      transaction tx{c.conn.get()};
      if (!b.events.empty()) {
        if (auto e = tx.begin("write")) return *e;
        const std::array<std::string_view, 2> params{*locked_topics, now};
        auto r = exec_binary(c, query::lock_topics, params);
        if (!r) return r.err();
        for (int i = 0, n = PQntuples(r->get()); i < n; ++i) {
          row x{r->get(), i};
          auto seq = x.integer(1, 0, max_bigint);
          auto p = plans.find(x.text(0));
          if (p == plans.end()) return corrupt("topics.topic", x.text(0));
          if (!seq) return corrupt("topics.last_seq", x.text(1));
          p->second.known = static_cast<uint64_t>(*seq);
          p->second.planned.clear();  // a retry of this lambda starts over
        }
      }
      auto arrays = std::make_unique<batch_arrays>();  // large: on the heap
      batch_arrays& a = *arrays;
      std::size_t body_bytes = 0;
      for (const auto& te : b.events) body_bytes += te.e.type.size() + te.e.data.size() + 48;
      a.events.reserve(body_bytes + 4 * spans.size());
      for (const block_span span : spans) {
        const auto& topic = b.events[span.begin].topic;
        topic_plan& p = plans.find(topic)->second;
        const uint64_t first = b.events[span.begin].e.seq, last = b.events[span.end - 1].e.seq;
        if (first > p.known) {
          a.add_block(b.events, span);  // a flood's case: above everything stored, no read
        } else {
          auto stored = stored_ranges(c, topic, first, last);
          if (!stored) return stored.err();
          stored->insert(stored->end(), p.planned.begin(), p.planned.end());
          for (const block_span part : uncovered(b.events, span, *stored)) {
            a.add_block(b.events, part);
          }
        }
        p.known = std::max(p.known, last);
        p.planned.push_back({first, last});
      }
      for (auto t : topics) {
        a.mark_topic.add(t);
        a.mark_seq.add(static_cast<int64_t>(plans.find(t)->second.batch_max));
      }
      for (const auto& r : b.runs) a.add_run(r);
      std::array<std::string_view, 20> params;
      std::size_t n = 0;
      for (binary_array* column :
           {&a.topic, &a.first, &a.last, &a.ts, &a.events, &a.mark_topic, &a.mark_seq, &a.id,
            &a.owner, &a.kind, &a.input, &a.status, &a.reason, &a.key, &a.inactivity, &a.ttl,
            &a.created, &a.ended, &a.last_seq}) {
        auto v = column->finish("the batch's values");
        if (!v) return v.err();
        params[n++] = *v;
      }
      params[n++] = now;
      auto r = exec_binary(c, query::write_batch, params);
      if (!r) return r.err();
      auto inserted = single_count(r->get(), "inserted events");
      if (!inserted) return inserted.err();
      if (!b.events.empty()) {
        if (auto e = tx.commit("write")) return *e;
      }
      return *inserted;
    });
  }

  result<std::vector<event>> events_after(std::string_view topic, uint64_t after,
                                          std::size_t limit) override {
    if (limit == 0 || after >= max_stored_seq) return std::vector<event>{};
    const std::string t{topic}, a = clamped(after);
    return with_connection(true, [&](connection& c) -> result<std::vector<event>> {
      std::vector<event> out;
      out.reserve(std::min<std::size_t>(limit, 256));  // the limit may be far above what is stored
      uint64_t last = after;  // blocks never overlap: skipping seq <= last is a defence, not a need
      block_reader blocks{topic};
      // A block holding a seq above `after` starts at after + 2 - max_block_events or later.
      uint64_t from = after + 2 > max_block_events ? after + 2 - max_block_events : 0;
      for (;;) {
        const uint64_t page = blocks.page(limit - out.size());
        const std::string f = clamped(from), l = clamped(page);
        auto r = exec(c, query::events_after, {t.c_str(), f.c_str(), a.c_str(), l.c_str()},
                      answer::binary);
        if (!r) return r.err();
        auto more = blocks.read(r->get(), [&](std::vector<event>& block) {
          return take_after(block, last, out, limit);
        });
        if (!more) return more.err();
        if (!*more || static_cast<uint64_t>(PQntuples(r->get())) < page) return out;
        from = blocks.last_first_seq() + 1;
      }
    });
  }

  result<std::vector<event>> events_before(std::string_view topic, uint64_t before_seq,
                                           std::size_t limit) override {
    if (limit == 0 || before_seq == 1) return std::vector<event>{};
    // seq <= bound: "no bound" and any bound past the highest storable seq include that seq too.
    const uint64_t bound =
        before_seq == 0 || before_seq > max_stored_seq ? max_stored_seq : before_seq - 1;
    const std::string t{topic};
    return with_connection(true, [&](connection& c) -> result<std::vector<event>> {
      std::vector<event> newest_first;
      newest_first.reserve(std::min<std::size_t>(limit, 256));
      uint64_t lowest = bound + 1;  // of the events kept; a defence against overlaps, as above
      block_reader blocks{topic};
      uint64_t to = bound;  // the page's blocks start at or below
      for (;;) {
        const uint64_t page = blocks.page(limit - newest_first.size());
        const std::string b = clamped(to), l = clamped(page);
        auto r = exec(c, query::events_before, {t.c_str(), b.c_str(), l.c_str()}, answer::binary);
        if (!r) return r.err();
        // Blocks newest first, each one's events taken backwards.
        auto more = blocks.read(r->get(), [&](std::vector<event>& block) {
          return take_before(block, lowest, newest_first, limit);
        });
        if (!more) return more.err();
        if (!*more || static_cast<uint64_t>(PQntuples(r->get())) < page ||
            blocks.last_first_seq() <= 1) {
          break;
        }
        to = blocks.last_first_seq() - 1;
      }
      std::reverse(newest_first.begin(), newest_first.end());
      return newest_first;
    });
  }

  result<uint64_t> last_seq(std::string_view topic) override {
    const std::string t{topic};
    return with_connection(true, [&](connection& c) -> result<uint64_t> {
      auto r = exec(c, query::last_seq, {t.c_str()});
      if (!r) return r.err();
      if (PQntuples(r->get()) == 0) return uint64_t{0};
      return single_count(r->get(), "topics.last_seq");
    });
  }

  result<uint64_t> first_seq(std::string_view topic) override {
    const std::string t{topic};
    return with_connection(true, [&](connection& c) -> result<uint64_t> {
      auto r = exec(c, query::first_seq, {t.c_str()});
      if (!r) return r.err();
      return single_count(r->get(), "event_blocks.first_seq");
    });
  }

  result<run_row> load_run(std::string_view id) override {
    const std::string i{id};
    return with_connection(true, [&](connection& c) -> result<run_row> {
      auto r = exec(c, query::load_run, {i.c_str()});
      if (!r) return r.err();
      if (PQntuples(r->get()) == 0) return error{errc::not_found, "no run " + i};
      return read_run(r->get(), 0);
    });
  }

  result<std::vector<run_row>> running_runs() override {
    const std::string running{to_string(run_status::running)};
    return with_connection(true, [&](connection& c) -> result<std::vector<run_row>> {
      auto r = exec(c, query::running_runs, {running.c_str()});
      if (!r) return r.err();
      std::vector<run_row> out;
      for (int i = 0, n = PQntuples(r->get()); i < n; ++i) {
        auto run = read_run(r->get(), i);
        if (!run) return run.err();
        out.push_back(std::move(*run));
      }
      return out;
    });
  }

  result<uint64_t> delete_older_than(int64_t events_before_ms,
                                     int64_t runs_ended_before_ms) override {
    const std::string running{to_string(run_status::running)};
    const std::string runs_cut = decimal(runs_ended_before_ms);
    const std::string events_cut = decimal(events_before_ms);
    return with_connection(false, [&](connection& c) -> result<uint64_t> {
      transaction tx{c.conn.get()};
      if (auto e = tx.begin("retention")) return *e;
      uint64_t deleted = 0;
      if (runs_ended_before_ms > 0) {
        auto r = exec(c, query::delete_runs, {running.c_str(), runs_cut.c_str()});
        if (!r) return r.err();
        auto n = single_count(r->get(), "deleted runs");
        if (!n) return n.err();
        deleted += *n;
      }
      if (events_before_ms > 0) {
        auto r = exec(c, query::delete_events, {events_cut.c_str()});
        if (!r) return r.err();
        auto n = single_count(r->get(), "deleted events");
        if (!n) return n.err();
        deleted += *n;
      }
      if (auto e = tx.commit("retention")) return *e;
      return deleted;
    });
  }

  result<bool> ping() override {
    return with_connection(true, [](connection& c) -> result<bool> {
      auto r = exec_sql(c.conn.get(), "SELECT 1", "ping");
      if (!r) return r.err();
      return true;
    });
  }

 private:
  /// The seq ranges of `topic`'s stored blocks that may hold a seq in first..last: a block has
  /// at most max_block_events events, so it starts no earlier than first - (max - 1).
  static result<std::vector<seq_range>> stored_ranges(connection& c, const std::string& topic,
                                                      uint64_t first, uint64_t last) {
    const std::string lo = clamped(first > max_block_events ? first - (max_block_events - 1) : 0),
                      hi = clamped(last);
    auto r = exec(c, query::stored_blocks, {topic.c_str(), lo.c_str(), hi.c_str()});
    if (!r) return r.err();
    std::vector<seq_range> out;
    for (int i = 0, n = PQntuples(r->get()); i < n; ++i) {
      row x{r->get(), i};
      auto a = x.integer(0, 0, max_bigint), b = x.integer(1, 0, max_bigint);
      if (!a) return corrupt("event_blocks.first_seq", x.text(0));
      if (!b) return corrupt("event_blocks.last_seq", x.text(1));
      out.push_back({static_cast<uint64_t>(*a), static_cast<uint64_t>(*b)});
    }
    return out;
  }

  /// Runs `fn` on a borrowed connection. A read (`idempotent`) whose connection died under it
  /// — after the borrow-time check, before its answer — runs once more on a new connection: it
  /// changes nothing, so running it twice is harmless. A failure on a connection made for this
  /// call is final (the database is down, not the connection stale).
  template <class F>
  auto with_connection(bool idempotent, F&& fn) -> decltype(fn(std::declval<connection&>())) {
    for (int attempt = 0;; ++attempt) {
      auto l = pool_.acquire();
      if (!l) return l.err();
      connection& c = l->get();
      auto r = fn(c);
      if (r.ok() || !idempotent || attempt > 0 || c.fresh || r.err().code != errc::unavailable) {
        return r;
      }
    }
  }

  pool pool_;
};

}  // namespace

result<std::unique_ptr<store>> open_postgres(const postgres_options& options) {
  if (PQisthreadsafe() == 0) {
    return error{errc::internal, "postgres: libpq was built without thread safety"};
  }
  char* message = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(options.conninfo.c_str(), &message);
  if (parsed == nullptr) {
    error e{errc::internal,
            "postgres: bad conninfo: " + one_line(message != nullptr ? message : "out of memory")};
    PQfreemem(message);
    return e;
  }
  PQconninfoFree(parsed);
  auto s = std::make_unique<postgres_store>(options);
  if (auto e = s->connect_one()) return *e;
  return std::unique_ptr<store>{std::move(s)};
}

}  // namespace relay::storage
