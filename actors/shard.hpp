#pragma once
// The shard: creates, finds and supervises runs on this node. Every lookup goes through it, so the
// cluster issue can place runs on other nodes without touching callers. Internal to actors/.

#include <caf/stateful_actor.hpp>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "actors/counters.hpp"
#include "actors/messages.hpp"
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

  node_settings settings;
  node_counters* counters = nullptr;
  std::unordered_map<std::string, record> runs;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
  std::map<std::pair<std::string, std::string>, std::string> idempotency;  // (owner, key) → id
  bool stopping = false;
};

using shard_actor_type = caf::stateful_actor<shard_state>;

caf::behavior shard_actor(shard_actor_type* self, node_settings settings, node_counters* counters);

}  // namespace relay
