#pragma once
// The room actor: one per chat room. Owns the room's seq, replay ring, client_msg_id window,
// presence and idle timer (invariant 1). Internal to actors/ (includes CAF).

#include <caf/stateful_actor.hpp>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "actors/counters.hpp"
#include "actors/messages.hpp"
#include "actors/replay_ring.hpp"
#include "actors/storage_actor.hpp"

namespace relay {

/// Everything a room actor starts from. A re-activation or a supervised restart passes the
/// checkpoint's last seq as `resume_seq`.
struct room_spec {
  std::string id;
  std::size_t ring_capacity = 2000;
  unsigned idle_s = 300;
  std::size_t dedup_window = 10000;
  uint64_t resume_seq = 0;  // > 0: continue numbering after this seq with an empty ring
  storage_link storage;     // enabled: events are stored, the ring is reloaded at start
};

struct room_state {
  static inline const char* name = "relay.room";

  explicit room_state(caf::local_actor*) : ring(1) {}

  std::string id;
  std::string topic;  // "room:<id>"
  replay_ring ring;
  std::vector<caf::actor> edges;  // edges with subscribers (monitored); each gets every event once
  std::shared_ptr<room_checkpoint> checkpoint;  // last_seq, members, dedup window
  node_counters* counters = nullptr;
  std::size_t dedup_window = 10000;
  caf::timespan idle{};
  caf::actor_clock::time_point last_activity;
  bool check_pending = false;  // one idle check at a time (CAF 0.17 timers cannot be cancelled)
  storage_link storage;
};

using room_actor_type = caf::stateful_actor<room_state>;

/// The room's behaviour (see actors/messages.hpp for its handlers). `checkpoint` is the shard's
/// record of the room; `counters` outlives the actor.
caf::behavior room_actor(room_actor_type* self, room_spec spec,
                         std::shared_ptr<room_checkpoint> checkpoint, node_counters* counters);

/// Session ids are opaque strings chosen by net/: 1..128 bytes.
constexpr std::size_t max_session_id_bytes = 128;

}  // namespace relay
