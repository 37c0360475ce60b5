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
//
// run (one per run; owns seq, ring, status, inactivity timer, TTL):
//   (get_atom, caller) → run_info; (append_atom, caller, events) → uint64_t;
//   (finish_atom, caller, finish_kind, data) → run_info;
//   (subscribe_atom, caller, after, actor edge) → replay_reply   (registers the edge in the same
//   step) (unsubscribe_atom, actor edge) (emit_atom) synthetic producer step; (timeout_atom)
//   inactivity check; (passivate_atom) TTL end
//
// edge (one per node; encodes once per event and fans out to sessions):
//   (subscribe_atom, sub_id, caller, topic, after, weak_ptr<sink>)  from node::subscribe
//   (unsubscribe_atom, sub_id)                                       from node::unsubscribe
//   topic_events                                                     from a topic: live events
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
#include <memory>
#include <string>
#include <vector>

#include "actors/frame.hpp"
#include "actors/node.hpp"
#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "protocols/run.hpp"

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

/// The durable-state stand-in a shard keeps for each run until storage lands: written by the run
/// actor, read by the shard when it restarts one (so seq continues). Local only, never a message.
struct run_checkpoint {
  std::atomic<uint64_t> last_seq{0};
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

// -- errors across actors ------------------------------------------------------------------------

/// relay::error → caf::error (category `relay`, the message in the context).
inline caf::error make_error(errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), error_category,
                    caf::make_message(std::move(message))};
}

/// caf::error → relay::error. CAF's own errors (timeouts, a dead receiver) become unavailable or
/// not_found; anything else internal.
relay::error from_caf_error(const caf::error& e);

/// Registers every message type above with the actor system config (same names on every node).
void register_message_types(caf::actor_system_config& cfg);

}  // namespace relay

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::weak_ptr<relay::sink>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<relay::run_checkpoint>)
