#pragma once
// The table of contents of the actor layer: every atom and every message type that crosses an actor
// boundary, each a plain struct with an `inspect` overload (invariant 5: cluster-ready). Included
// by actors/*.cpp and actor tests only — CAF headers stay out of net/ and protocols/.
//
// Handlers, by actor (request → reply):
//
// shard (one per node; supervises and routes by id — DESIGN "Supervision"):
//   (create_atom, caller, create_run_request)            → create_run_reply
//   (get_atom, id, caller)                               → run_info        (delegated to the run)
//   (list_atom, caller, bool active_only)                → std::vector<run_info>
//   (append_atom, id, caller, std::vector<event_input>)  → uint64_t last_seq (delegated)
//   (finish_atom, id, caller, finish_kind, data)         → run_info          (delegated)
//   (subscribe_atom, id, caller, uint64_t after, actor edge) → replay_reply  (delegated)
//   (ended_atom, run_info)   from a run that reached a terminal state: frees its idempotency key
//   rooms (activated on demand: the shard spawns the room, monitored, when a request names one
//   without an actor; invalid room ids answer bad_request):
//   (room_post_atom, room, caller, room_message_input)   → room_post_reply  (via the shard, which
//                                                          retries once if the room just
//                                                          passivated)
//   (subscribe_atom, room_atom, room, caller, uint64_t after, bool from_now, actor edge)
//                                                        → replay_reply      (delegated)
//   (room_join_atom, room, caller, session_id)           → uint32_t user's sessions after joining
//   (room_leave_atom, room, caller, session_id)          → uint32_t user's sessions after leaving
//   (presence_atom, room, caller)                        → std::vector<presence_member>
//   (fault_atom, topic)  → bool   ends the topic's actor abnormally (a crash its supervision must
//   absorb); refused unless node_settings.fault_injection (set only by the relay-fault-test binary)
//
// run (one per run; owns seq, ring, status, inactivity timer, TTL):
//   (get_atom, caller) → run_info; (append_atom, caller, events) → uint64_t;
//   (finish_atom, caller, finish_kind, data) → run_info;
//   (subscribe_atom, caller, after, actor edge) → replay_reply   (registers the edge in the same
//   step) (unsubscribe_atom, actor edge) (emit_atom) synthetic producer step; (timeout_atom)
//   inactivity check; (passivate_atom) TTL end
//
// room (one per room; owns seq, ring, dedup window, presence, idle timer):
//   (room_post_atom, caller, room_message_input) → room_post_reply (event `message`, next seq)
//   (subscribe_atom, caller, after, bool from_now, actor edge) → replay_reply (registers the edge
//   in the same step; from_now: no events, last_seq = the current one)
//   (unsubscribe_atom, actor edge)
//   (room_join_atom, caller, session_id) → uint32_t; (room_leave_atom, caller, session_id) →
//   uint32_t; both send room_presence to the edges when the user's first/last session changes
//   (presence_atom, caller) → std::vector<presence_member>
//   (check_atom) idle check: passivates after room_idle_s without members and edges
//
// storage (one per node: a front on the scheduler that collects, and a detached writer that
// commits; group commit — see storage_actor.hpp):
//   topic_events                      from a topic: its new events (the message the edges get)
//   (persist_atom, storage::run_row)  from a run: its row at creation
//   (persist_atom, storage::run_row, topic_events)  its row with its terminal event (one commit)
//   (barrier_atom) → bool             answered after everything received before is committed
//   (load_atom, topic, uint64_t max_events) → stored_tail   commits what is pending, then reads
//   (load_run_atom, id) → storage::run_row                  not_found when unknown
//   (running_atom) → std::vector<storage::run_row>          runs left running (recovery at start)
//   (history_atom, topic, uint64_t before_seq, uint64_t limit) → std::vector<event>  (a page)
//   (fill_atom, topic, uint64_t after, uint64_t limit) → std::vector<event>  (replay beyond a ring)
//   (flush_atom) (check_atom) (retry_atom) (retain_atom) its own timers; (stop_atom) last
//   commit, then quit
//
// edge (one per node; encodes once per event and fans out to sessions):
//   (subscribe_atom, sub_id, caller, topic, after, weak_ptr<sink>)  from node::subscribe
//   (unsubscribe_atom, sub_id)                                       from node::unsubscribe
//   (subscribe_atom, sub_id, caller, topic, after, bool from_now, weak_ptr<sink>)  ditto, rooms
//   topic_events                                                     from a topic: live events
//   room_presence                                                    from a room: to its sinks
//   (stop_atom)                                                      node shutdown: close all

#include <atomic>
#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_clock.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/meta/type_name.hpp>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/frame.hpp"
#include "actors/node.hpp"
#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "protocols/run.hpp"
#include "storage/store.hpp"

namespace relay {

// -- atoms (at most 10 characters each) ---------------------------------------------------------

using create_atom = caf::atom_constant<caf::atom("create")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using append_atom = caf::atom_constant<caf::atom("append")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;
using unsubscribe_atom = caf::atom_constant<caf::atom("unsub")>;
using ended_atom = caf::atom_constant<caf::atom("ended")>;
using emit_atom = caf::atom_constant<caf::atom("emit")>;
using check_atom = caf::atom_constant<caf::atom("check")>;
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using resub_atom = caf::atom_constant<caf::atom("resub")>;
using room_atom = caf::atom_constant<caf::atom("room")>;
using room_post_atom = caf::atom_constant<caf::atom("room_post")>;
using room_join_atom = caf::atom_constant<caf::atom("room_join")>;
using room_leave_atom = caf::atom_constant<caf::atom("room_leave")>;
using presence_atom = caf::atom_constant<caf::atom("presence")>;
using persist_atom = caf::atom_constant<caf::atom("persist")>;
using barrier_atom = caf::atom_constant<caf::atom("barrier")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using load_run_atom = caf::atom_constant<caf::atom("load_run")>;
using running_atom = caf::atom_constant<caf::atom("running")>;
using history_atom = caf::atom_constant<caf::atom("history")>;
using fill_atom = caf::atom_constant<caf::atom("fill")>;
using retain_atom = caf::atom_constant<caf::atom("retain")>;
using fault_atom = caf::atom_constant<caf::atom("fault")>;

/// The error category of relay::errc inside caf::error.
constexpr caf::atom_value error_category = caf::atom("relay");

// -- messages -----------------------------------------------------------------------------------

/// Live events of one topic, sent by the topic once per subscribed edge (invariant 2).
struct topic_events {
  std::string topic;
  std::vector<event> events;
};

/// A topic's answer to subscribe: what the subscriber missed, and the topic's handle (the edge
/// monitors it, to re-subscribe after a supervised restart).
struct replay_reply {
  caf::actor topic_actor;
  uint64_t last_seq = 0;
  bool gap = false;
  uint64_t gap_from = 0;
  uint64_t gap_to = 0;
  bool ended = false;  // the topic is terminal: nothing will follow the replay
  std::vector<event> events;
};

/// What storage holds of a topic when its actor starts: its last seq and the newest events (at
/// most a ring's worth), oldest first, so a restarted or re-activated topic continues without gap.
struct stored_tail {
  uint64_t last_seq = 0;
  std::vector<event> events;
};

/// A presence change of a room, sent by the room once per subscribed edge (ephemeral: no seq).
struct room_presence {
  std::string topic;  // "room:<id>"
  bool joined = true;
  std::string user;
  std::string session_id;
};

/// The durable-state stand-in a shard keeps for each run until storage lands: written by the run
/// actor, read by the shard when it restarts one (so seq continues). Local only, never a message.
struct run_checkpoint {
  std::atomic<uint64_t> last_seq{0};
};

/// What a shard keeps for each room it has activated in this process, so that a restarted or
/// re-activated room continues: `last_seq` (written by the room, read by the shard) and the state
/// that must survive a crash — members and the dedup window — which only the room's current
/// incarnation touches (a restart is spawned after the shard saw the old one down). Local only.
struct room_checkpoint {
  std::atomic<uint64_t> last_seq{0};
  std::map<std::string, std::set<std::string>> members;  // user → session ids
  struct dedup {
    std::unordered_map<std::string, room_post_reply> answers;  // user '\0' client_msg_id → reply
    std::deque<std::string> order;                             // oldest first, for eviction
  } recent;
};

// -- inspect overloads ---------------------------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("relay.event"), x.seq, x.type, x.data, x.ts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_input& x) {
  return f(caf::meta::type_name("relay.event_input"), x.type, x.data);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, caller& x) {
  return f(caf::meta::type_name("relay.caller"), x.sub, x.who);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, synthetic_params& x) {
  return f(caf::meta::type_name("relay.synthetic_params"), x.count, x.size, x.interval_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, create_run_request& x) {
  return f(caf::meta::type_name("relay.create_run_request"), x.kind, x.input, x.synthetic,
           x.idempotency_key, x.owner, x.inactivity_s, x.ttl_s);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_info& x) {
  return f(caf::meta::type_name("relay.run_info"), x.id, x.kind, x.status, x.owner, x.reason,
           x.last_seq, x.created_at, x.ended_at);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stored_tail& x) {
  return f(caf::meta::type_name("relay.stored_tail"), x.last_seq, x.events);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, create_run_reply& x) {
  return f(caf::meta::type_name("relay.create_run_reply"), x.info, x.created);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, topic_events& x) {
  return f(caf::meta::type_name("relay.topic_events"), x.topic, x.events);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replay_reply& x) {
  return f(caf::meta::type_name("relay.replay_reply"), x.topic_actor, x.last_seq, x.gap, x.gap_from,
           x.gap_to, x.ended, x.events);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_message_input& x) {
  return f(caf::meta::type_name("relay.room_message_input"), x.text, x.has_text, x.data,
           x.client_msg_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_post_reply& x) {
  return f(caf::meta::type_name("relay.room_post_reply"), x.message_id, x.seq);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, presence_member& x) {
  return f(caf::meta::type_name("relay.presence_member"), x.user, x.sessions);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_presence& x) {
  return f(caf::meta::type_name("relay.room_presence"), x.topic, x.joined, x.user, x.session_id);
}

namespace storage {  // found by ADL
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_row& x) {
  return f(caf::meta::type_name("relay.run_row"), x.info, x.input, x.idempotency_key,
           x.inactivity_s, x.ttl_s);
}
}  // namespace storage

// -- errors across actors ------------------------------------------------------------------------

/// relay::error → caf::error (category `relay`, the message in the context). The CAF code is
/// errc + 1: code 0 is CAF's "no error", which would silently turn bad_request into success.
inline caf::error make_error(errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(static_cast<uint8_t>(code) + 1), error_category,
                    caf::make_message(std::move(message))};
}

/// caf::error → relay::error. CAF's own errors (timeouts, a dead receiver) become unavailable or
/// not_found; anything else internal.
relay::error from_caf_error(const caf::error& e);

class replay_ring;
struct node_counters;

/// The answer to a subscribe at position `after`, from a topic's ring (counts replay hits and
/// gaps). With `from_now` the subscriber starts at the ring's last seq and is owed nothing.
replay_reply make_replay_reply(const replay_ring& ring, uint64_t after, bool from_now,
                               caf::actor topic, node_counters& counters);

/// Registers every message type above with the actor system config (same names on every node).
void register_message_types(caf::actor_system_config& cfg);

}  // namespace relay

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::weak_ptr<relay::sink>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<relay::run_checkpoint>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<relay::room_checkpoint>)
