#pragma once
// The node: the actor layer as seen from net/ and app/. It owns the CAF actor system, the shard
// (supervisor of runs), and the edge (the bridge between topics and sessions). No CAF types here,
// so Beast translation units never compile CAF headers.
//
// Threading: every method may be called from any thread and returns at once. Callbacks run exactly
// once on a CAF thread; callers post back onto their own executor. Nothing here blocks.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "actors/frame.hpp"
#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "protocols/jwt.hpp"
#include "protocols/metrics.hpp"
#include "protocols/room.hpp"
#include "protocols/run.hpp"

namespace relay {

/// How acknowledged events are kept (storage.durability): `none` memory only; `batched` written in
/// group commits every flush_ms (an ack may precede the commit by up to that window); `sync` the
/// producer's ack waits for the commit.
enum class durability : uint8_t { none, batched, sync };

/// The config spelling (inline: app/config.cpp, which the fuzz targets build alone, needs it).
inline std::string_view to_string(durability d) noexcept {
  switch (d) {
    case durability::none:
      return "none";
    case durability::batched:
      return "batched";
    case durability::sync:
      return "sync";
  }
  return "?";
}

/// Options of durable storage (storage.* keys).
struct storage_settings {
  std::string backend = "sqlite";           // storage.backend: sqlite | postgres
  std::string path = "data/relay.db";       // storage.path: the SQLite file
  std::string postgres;                     // storage.postgres: a libpq connection string
  durability mode = durability::batched;    // storage.durability
  unsigned flush_ms = 20;                   // storage.flush_ms: group commit window
  std::size_t flush_events = 512;           // storage.flush_events: ... or this many events
  std::size_t max_pending_events = 100000;  // storage.max_pending_events: past it, 503
  std::size_t backpressure_events = 10000;  // storage.backpressure_events: past it acks wait
  uint64_t retention_events_s = 0;  // storage.retention_events_s: older events deleted (0: never)
  uint64_t retention_runs_s = 0;    // storage.retention_runs_s: runs ended longer ago (0: never)
  unsigned retention_interval_s = 300;  // storage.retention_interval_s: how often it runs
};

/// Options of the actor layer (config keys in config/relay.conf, see app/config.cpp).
struct node_settings {
  std::string name = "relay-1";      // node.name
  unsigned scheduler_threads = 0;    // node.scheduler_threads (0: hardware concurrency)
  unsigned scheduler_poll = 0;       // node.scheduler_poll: queue polls before an idle worker waits
  std::size_t ring_capacity = 2000;  // runs.ring_capacity
  run_limits limits;                 // runs.* bounds and defaults
  unsigned restart_max = 3;          // supervisor.restart_max: restarts allowed ...
  unsigned restart_window_s = 60;    // supervisor.restart_window_s: ... within this window
  std::size_t synthetic_batch = 64;  // runs.synthetic_batch: events per tick in flood mode
  // rooms.idle_s: a room without members or subscribers passivates after this long.
  unsigned room_idle_s = 300;
  std::size_t room_dedup_window = 10000;  // rooms.dedup_window: (user, client_msg_id) pairs kept
  storage_settings storage;
  // Not a config key: only the relay-fault-test binary (tests/) sets it, to let its admin
  // endpoint crash a topic's actor (node::inject_fault). The relay executable never does.
  bool fault_injection = false;
};

/// What /health says about storage.
struct storage_health {
  std::string backend;  // "sqlite", "postgres", or "none"
  bool ok = true;       // false while writes fail (producers may get 503)
  uint64_t pending_events = 0;
};

/// Who is calling (from a verified token).
struct caller {
  std::string sub;
  role who = role::user;
};

enum class finish_kind : uint8_t { complete, fail, cancel };

struct create_run_reply {
  run_info info;
  bool created = true;  // false: an active run with the same owner + idempotency key was returned
};

/// The answer to a room message: the same for a retried send with the same client_msg_id.
struct room_post_reply {
  std::string message_id;
  uint64_t seq = 0;
};

/// One member of a room: a user and how many of its sessions have joined.
struct presence_member {
  std::string user;
  uint32_t sessions = 0;
};

template <class T>
using callback = std::function<void(result<T>)>;

class node {
 public:
  /// Opens storage (unless durability is none) and starts the actors. Throws std::runtime_error
  /// when the store cannot be opened or migrated.
  explicit node(node_settings settings);
  ~node();  // stops if still running
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// Creates a run owned by `who.sub` (or `req.owner` when the caller is a service).
  void create_run(const caller& who, create_run_request req, callback<create_run_reply> done);

  /// A run's public view. Runs of other users answer not_found (ids cannot be probed).
  void get_run(const caller& who, std::string id, callback<run_info> done);

  /// The caller's runs (a service or admin: all), newest first; `active_only` keeps running ones.
  void list_runs(const caller& who, bool active_only, callback<std::vector<run_info>> done);

  /// Appends producer events (service or admin role; the owning user may read but not produce:
  /// forbidden). Answers the last assigned seq. A terminal run answers conflict.
  void append(const caller& who, std::string id, std::vector<event_input> events,
              callback<uint64_t> done);

  /// complete/fail: service or admin role; cancel: the owner, a service or an admin. `data` is
  /// compact JSON (complete: the data, fail: the error object). A terminal run answers conflict.
  void finish(const caller& who, std::string id, finish_kind how, std::string data,
              callback<run_info> done);

  /// Subscribes `out` to a topic ("run:<id>" or "room:<id>") from position `after` (0: from the
  /// beginning), or with `from_now` from the topic's current last seq (`after` is then ignored;
  /// rooms use it when the client names no position). The answer and then the frames arrive
  /// through `out` under `sub_id` (from next_sub_id()); a room subscription also receives the
  /// room's presence changes (sink::on_presence). The edge holds `out` weakly: a session that goes
  /// away needs no unsubscribe to be collected, but should unsubscribe to free the slot at once.
  void subscribe(const caller& who, std::string topic, uint64_t after, std::weak_ptr<sink> out,
                 uint64_t sub_id, bool from_now = false);
  void unsubscribe(uint64_t sub_id);
  uint64_t next_sub_id() noexcept;

  // -- rooms (any authenticated caller may post, join and read for now; issue 5 adds a claim) --

  /// Posts a message (validated by protocols/room.hpp) as `who.sub` into `room` (activated on
  /// demand). A retry with the same client_msg_id from the same user answers the first reply and
  /// appends nothing. Errors: bad_request (room id, empty message), unavailable.
  void post_message(const caller& who, std::string room, room_message_input msg,
                    callback<room_post_reply> done);

  /// Adds session `session_id` of `who.sub` to the room's members; the room announces `joined`
  /// when it is the user's first session. Idempotent per session. Answers the user's session
  /// count. Sessions must leave (at the latest when they close): presence is not timed out.
  void join(const caller& who, std::string room, std::string session_id, callback<uint32_t> done);

  /// Removes a session; `left` is announced when it was the user's last one. Answers the user's
  /// remaining session count (leaving a room one never joined answers 0, not an error).
  void leave(const caller& who, std::string room, std::string session_id, callback<uint32_t> done);

  /// A page of the room's history from storage: the newest `limit` messages with seq <
  /// `before_seq` (0: the newest), oldest first. Errors: bad_request (room id), not_found (storage
  /// is off: durability none), unavailable (storage down).
  void room_history(const caller& who, std::string room, uint64_t before_seq, uint32_t limit,
                    callback<std::vector<event>> done);

  /// The room's members, sorted by user.
  void room_presence(const caller& who, std::string room,
                     callback<std::vector<presence_member>> done);

  /// Test builds only (node_settings.fault_injection, else forbidden): ends the actor of a topic
  /// ("run:<id>" or "room:<id>") abnormally, as a crash would, so that its supervisor restarts it.
  /// not_found when the topic has no active actor.
  void inject_fault(std::string topic, callback<bool> done);

  /// Appends the actor layer's metrics (active runs, events in/out, replay hits, gaps, restarts…).
  void collect_metrics(std::vector<metric_sample>& out) const;

  const std::string& name() const noexcept;

  /// Storage state for /health (cheap: atomics).
  storage_health storage() const;

  /// The bounds and defaults for run requests (runs.* in config); request parsing uses them.
  const run_limits& limits() const noexcept;

  /// Ends every subscription (sinks get on_closed), stops all actors and the actor system.
  /// Idempotent; blocks until the actor system has shut down (call it off the Asio threads).
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace relay
