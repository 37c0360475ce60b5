// The PostgreSQL backend of storage/store.hpp, over libpq.
//
// Each call borrows one connection from a small pool and gives it back when done, so no libpq
// handle is ever used by two threads and the store is as concurrent as its pool is large. A
// connection the server has closed (restart, pg_terminate_backend, idle timeout) is noticed when it
// is borrowed, or by the command that fails on it, and is replaced on its next use: the store
// recovers by itself when the database comes back. A group commit is ONE statement — the batch
// travels as array parameters into data-modifying CTEs — so 500 events cost one round trip and
// one implicit transaction. Strings are TEXT, byte-exact (jsonb would reorder keys).

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
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
constexpr std::array<const char*, 1> migrations = {
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
};
constexpr int known_version = static_cast<int>(migrations.size());

// ---- statements -----------------------------------------------------------------------------

/// The statements a connection prepares (once per session, on first use: before migrate() the
/// tables they name may not exist yet).
enum class query : uint8_t {
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
    // A whole group commit. $1..$5: the events' columns; $6..$17: the runs' columns; $18: now.
    // Runs repeated in a batch keep their last row (ON CONFLICT may not touch a row twice);
    // topics are upserted in key order so concurrent writers lock them in the same order.
    {"relay_write_batch", R"sql(
WITH new_events AS (
  INSERT INTO events (topic, seq, type, data, ts)
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
  ON CONFLICT (topic, seq) DO NOTHING
  RETURNING 1
), topic_marks AS (
  INSERT INTO topics (topic, last_seq, updated_at)
  SELECT topic, max(seq), $18::bigint FROM unnest($1::text[], $2::bigint[]) AS e(topic, seq)
  GROUP BY topic ORDER BY topic
  ON CONFLICT (topic) DO UPDATE
  SET last_seq = GREATEST(topics.last_seq, excluded.last_seq), updated_at = excluded.updated_at
), run_rows AS (
  INSERT INTO runs (id, owner, kind, input, status, reason, idempotency_key, inactivity_s, ttl_s,
                    created_at, ended_at, last_seq)
  SELECT DISTINCT ON (id) id, owner, kind, input, status, reason, idempotency_key, inactivity_s,
         ttl_s, created_at, ended_at, last_seq
  FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
              $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
              $17::bigint[])
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
SELECT count(*) FROM new_events)sql"},
    {"relay_events_after",
     "SELECT seq, type, data, ts FROM events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3"},
    {"relay_events_before",
     "SELECT seq, type, data, ts FROM (SELECT seq, type, data, ts FROM events "
     "WHERE topic = $1 AND seq <= $2 ORDER BY seq DESC LIMIT $3) AS page ORDER BY seq"},
    {"relay_last_seq", "SELECT last_seq FROM topics WHERE topic = $1"},
    {"relay_first_seq", "SELECT coalesce(min(seq), 0) FROM events WHERE topic = $1"},
    {"relay_load_run", "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE id = $1"},
    {"relay_running_runs",
     "SELECT " RELAY_RUN_COLUMNS " FROM runs WHERE status = $1 ORDER BY created_at, id"},
    // $1: the running status, $2: the cut-off. Counts the runs and their events (the contract
    // does not count topic rows).
    {"relay_delete_runs", R"sql(
WITH gone AS (
  DELETE FROM runs WHERE status <> $1 AND ended_at < $2 RETURNING 'run:' || id AS topic
), gone_events AS (
  DELETE FROM events WHERE topic IN (SELECT topic FROM gone) RETURNING 1
), gone_topics AS (
  DELETE FROM topics WHERE topic IN (SELECT topic FROM gone)
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM gone_events))sql"},
    {"relay_delete_events", "DELETE FROM events WHERE ts < $1"},
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

/// Runs prepared statement `q` with text parameters, preparing it first if this session has not.
result<pg_result> exec(connection& c, query q, std::initializer_list<const char*> params) {
  const auto i = static_cast<std::size_t>(q);
  const statement& s = statements[i];
  if (!c.prepared[i]) {
    pg_result r{PQprepare(c.conn.get(), s.name, s.sql, 0, nullptr)};
    if (auto e = failure(c.conn.get(), r.get(), s.name)) return *e;
    c.prepared.set(i);
  }
  pg_result r{PQexecPrepared(c.conn.get(), s.name, static_cast<int>(params.size()),
                             std::data(params), nullptr, nullptr, 0)};
  if (auto e = failure(c.conn.get(), r.get(), s.name)) return *e;
  return r;
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

/// A PostgreSQL array literal built element by element and sent as ONE text parameter
/// (`$1::text[]`), so a whole batch is one statement. Values are data, never SQL: the server
/// parses the literal.
class array_literal {
 public:
  void reserve(std::size_t bytes) { text_.reserve(bytes); }
  void add(std::string_view s) {
    separate();
    text_ += '"';
    for (;;) {
      auto special = s.find_first_of("\"\\");
      text_.append(s.substr(0, special));
      if (special == std::string_view::npos) break;
      text_ += '\\';
      text_ += s[special];
      s.remove_prefix(special + 1);
    }
    text_ += '"';
  }
  void add(int64_t v) {
    separate();
    text_ += decimal(v);
  }
  /// The finished literal; add nothing after.
  const char* c_str() {
    if (!closed_) text_ += '}';
    closed_ = true;
    return text_.c_str();
  }

 private:
  void separate() {
    if (text_.size() > 1) text_ += ',';
  }
  std::string text_ = "{";
  bool closed_ = false;
};

/// A batch as the array parameters of the write_batch statement.
struct batch_arrays {
  array_literal topic, seq, type, data, ts;
  array_literal id, owner, kind, input, status, reason, key, inactivity, ttl, created, ended, last;
};

result<std::unique_ptr<batch_arrays>> to_arrays(const batch& b) {
  auto a = std::make_unique<batch_arrays>();
  std::size_t data_bytes = 0;
  for (const auto& te : b.events) data_bytes += te.e.data.size() + 3;
  a->data.reserve(data_bytes + 2);
  for (const auto& te : b.events) {
    if (te.e.seq == 0 || te.e.seq > max_stored_seq) {
      return error{errc::internal, "postgres: seq " + std::to_string(te.e.seq) + " of " + te.topic +
                                       " is outside 1.." + std::to_string(max_stored_seq)};
    }
    a->topic.add(te.topic);
    a->seq.add(static_cast<int64_t>(te.e.seq));
    a->type.add(te.e.type);
    a->data.add(te.e.data);
    a->ts.add(te.e.ts);
  }
  for (const auto& r : b.runs) {
    const run_info& i = r.info;
    if (i.last_seq > max_stored_seq) {
      return error{errc::internal, "postgres: last_seq of run " + i.id + " is above " +
                                       std::to_string(max_stored_seq)};
    }
    a->id.add(i.id);
    a->owner.add(i.owner);
    a->kind.add(to_string(i.kind));
    a->input.add(r.input);
    a->status.add(to_string(i.status));
    a->reason.add(i.reason);
    a->key.add(r.idempotency_key);
    a->inactivity.add(static_cast<int64_t>(r.inactivity_s));
    a->ttl.add(static_cast<int64_t>(r.ttl_s));
    a->created.add(i.created_at);
    a->ended.add(i.ended_at);
    a->last.add(static_cast<int64_t>(i.last_seq));
  }
  return a;
}

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

result<std::vector<event>> read_events(const PGresult* r) {
  std::vector<event> out;
  const int n = PQntuples(r);
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    row x{r, i};
    auto seq = x.integer(0, 0, max_bigint);
    if (!seq) return corrupt("events.seq", x.text(0));
    auto ts = x.integer(3, std::numeric_limits<int64_t>::min(), max_bigint);
    if (!ts) return corrupt("events.ts", x.text(3));
    out.push_back(event{static_cast<uint64_t>(*seq), x.text(1), x.text(2), *ts});
  }
  return out;
}

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
    auto arrays = to_arrays(b);
    if (!arrays) return arrays.err();
    batch_arrays& a = **arrays;
    const std::string now = decimal(now_ms());
    // Not retried here: if the connection dies after COMMIT, a retry would report 0 inserted
    // events; the caller retries the batch (safe by design) and knows it is a retry.
    return with_connection(false, [&](connection& c) -> result<uint64_t> {
      auto r =
          exec(c, query::write_batch,
               {a.topic.c_str(), a.seq.c_str(), a.type.c_str(), a.data.c_str(), a.ts.c_str(),
                a.id.c_str(), a.owner.c_str(), a.kind.c_str(), a.input.c_str(), a.status.c_str(),
                a.reason.c_str(), a.key.c_str(), a.inactivity.c_str(), a.ttl.c_str(),
                a.created.c_str(), a.ended.c_str(), a.last.c_str(), now.c_str()});
      if (!r) return r.err();
      return single_count(r->get(), "inserted events");
    });
  }

  result<std::vector<event>> events_after(std::string_view topic, uint64_t after,
                                          std::size_t limit) override {
    const std::string t{topic}, a = clamped(after), l = clamped(limit);
    return with_connection(true, [&](connection& c) -> result<std::vector<event>> {
      auto r = exec(c, query::events_after, {t.c_str(), a.c_str(), l.c_str()});
      if (!r) return r.err();
      return read_events(r->get());
    });
  }

  result<std::vector<event>> events_before(std::string_view topic, uint64_t before_seq,
                                           std::size_t limit) override {
    const std::string t{topic}, l = clamped(limit);
    // seq <= b: "no bound" and any bound past the highest storable seq include that seq too.
    const std::string b = before_seq == 0 || before_seq > max_stored_seq ? clamped(max_stored_seq)
                                                                         : clamped(before_seq - 1);
    return with_connection(true, [&](connection& c) -> result<std::vector<event>> {
      auto r = exec(c, query::events_before, {t.c_str(), b.c_str(), l.c_str()});
      if (!r) return r.err();
      return read_events(r->get());
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
      return single_count(r->get(), "events.seq");
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
        const char* tuples = PQcmdTuples(r->get());
        uint64_t n = 0;
        std::from_chars(tuples, tuples + std::char_traits<char>::length(tuples), n);
        deleted += n;
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
