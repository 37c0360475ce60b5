#pragma once
// The shard: creates, finds and supervises runs and rooms on this node. Every lookup goes through
// it, so the cluster issue can place runs on other nodes without touching callers. Internal to
// actors/.

#include <caf/stateful_actor.hpp>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "actors/counters.hpp"
#include "actors/messages.hpp"
#include "actors/room_actor.hpp"
#include "actors/run_actor.hpp"

namespace relay {

struct shard_state {
  static inline const char* name = "relay.shard";

  /// A supervised run: how to start it again, and its restart history (sliding window).
  struct record {
    run_spec spec;  // spec.info tracks status changes reported by the run
    caf::actor handle;
    std::shared_ptr<run_checkpoint> checkpoint;
    std::deque<caf::actor_clock::time_point> restarts;
  };

  /// A room activated at least once in this process. Kept after passivation (handle empty) so
  /// that a re-activated room continues its seq; storage replaces this stand-in.
  struct room_record {
    caf::actor handle;  // empty while passivated
    std::shared_ptr<room_checkpoint> checkpoint;
    std::deque<caf::actor_clock::time_point> restarts;
    bool broken = false;  // crashed past its budget: unavailable until the window has room again
  };

  node_settings settings;
  node_counters* counters = nullptr;
  std::unordered_map<std::string, record> runs;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
  std::map<std::pair<std::string, std::string>, std::string> idempotency;  // (owner, key) → id
  std::unordered_map<std::string, room_record> rooms;
  std::unordered_map<caf::actor_addr, std::string> room_by_addr;
  // Runs not yet terminal, per owner (runs.max_active_per_user); an owner leaves at 0.
  std::unordered_map<std::string, uint32_t> active_by_owner;
  storage_link storage;
  bool stopping = false;
};

using shard_actor_type = caf::stateful_actor<shard_state>;

/// `storage`: the node's storage actor and durability (disabled with durability none); runs and
/// rooms get it in their specs.
caf::behavior shard_actor(shard_actor_type* self, node_settings settings, node_counters* counters,
                          storage_link storage = {});

}  // namespace relay
