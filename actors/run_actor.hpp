#pragma once
// The run actor: one per run. Owns the run's seq, replay ring, status, inactivity timer and TTL
// (invariant 1). Internal to actors/ (includes CAF).

#include <caf/stateful_actor.hpp>
#include <cstddef>
#include <memory>

#include "actors/counters.hpp"
#include "actors/messages.hpp"
#include "actors/replay_ring.hpp"
#include "actors/storage_actor.hpp"

namespace relay {

/// Everything a run actor starts from. A supervised restart passes the same spec with
/// `resume_seq` (and `crashed` past the restart budget).
struct run_spec {
  run_info info;               // id, kind, owner, created_at
  create_run_request request;  // input, synthetic parameters, inactivity_s, ttl_s, key
  std::size_t ring_capacity = 2000;
  std::size_t synthetic_batch = 64;
  uint64_t resume_seq = 0;    // > 0: continue numbering after this seq with an empty ring
  bool crashed = false;       // start as failed/crashed and append the `error` event
  storage_link storage;       // enabled: events and the run's row are stored; a restart reloads
  bool from_storage = false;  // taken over from storage: reload the ring, keep the stored status
};

struct run_state {
  static inline const char* name = "relay.run";

  explicit run_state(caf::local_actor*) : ring(1) {}

  run_info info;
  create_run_request request;
  std::string topic;  // "run:<id>"
  replay_ring ring;
  std::vector<caf::actor> edges;  // edges with subscribers; each gets every event once
  caf::actor shard;
  std::shared_ptr<run_checkpoint> checkpoint;
  node_counters* counters = nullptr;
  std::size_t synthetic_batch = 64;
  uint64_t synthetic_emitted = 0;  // deltas emitted so far
  caf::actor_clock::time_point last_activity;
  storage_link storage;
};

using run_actor_type = caf::stateful_actor<run_state>;

/// The run's behaviour (see actors/messages.hpp for its handlers). `shard` is told when the run
/// ends; `checkpoint` receives every assigned seq; `counters` outlives the actor.
caf::behavior run_actor(run_actor_type* self, run_spec spec, caf::actor shard,
                        std::shared_ptr<run_checkpoint> checkpoint, node_counters* counters);

/// May `who` read (get, stream) a run owned by `owner`? Owners, services and admins.
bool may_read(const caller& who, const std::string& owner) noexcept;

}  // namespace relay
