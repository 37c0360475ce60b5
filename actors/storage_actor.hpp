#pragma once
// The storage actor: one per node, the only writer of the durable store (DESIGN "Storage",
// invariant 6). Topics send it each batch of new events (the same shared message they send to the
// edges) and their run rows; it groups everything into one transaction per flush — every
// `flush_ms`, or at once past `flush_events` (group commit) — so a flood costs one transaction per
// batch, never one per event. Internal to actors/.
//
// Durability: with `sync` a topic answers its producer only after a `barrier` request, which the
// storage actor answers once everything it received before the barrier is committed; concurrent
// barriers share one commit. A failed commit keeps its events and is retried with backoff
// (bounded: past max_pending_events topics refuse producers with `unavailable`); `storage_up` in
// the counters drives /health.
//
// The store's calls block: the node spawns this actor detached (its own thread), behind a front
// actor (storage_front) that topics talk to: the front runs on CAF's scheduler like the topics and
// collects their events, and hands the writer one batch per flush window (or per flush_events).
// A message to a detached actor wakes its thread; topics sending to it directly cost one thread
// wake-up per producer request, the front one per commit.

#include <spdlog/spdlog.h>

#include <caf/stateful_actor.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "actors/counters.hpp"
#include "actors/messages.hpp"
#include "storage/store.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(relay::storage::batch)  // front → writer, local only

namespace relay {

struct storage_actor_state {
  static inline const char* name = "relay.storage";

  std::shared_ptr<storage::store> db;
  storage_settings settings;
  node_counters* counters = nullptr;
  storage::batch pending;                      // received, not committed
  std::vector<caf::response_promise> waiting;  // barriers answered by the next commit
  bool timer_armed = false;                    // a flush_ms timer is pending
  bool flush_now = false;                      // an immediate flush message is in the mailbox
  bool retrying = false;                       // the last commit failed; a retry is scheduled
  unsigned backoff_ms = 0;
  uint64_t failures = 0;  // consecutive failed commits
};

using storage_actor_type = caf::stateful_actor<storage_actor_state>;

/// The writer. Besides the messages of messages.hpp it takes (storage::batch) from its front.
caf::behavior storage_actor(storage_actor_type* self, std::shared_ptr<storage::store> db,
                            storage_settings settings, node_counters* counters);

struct storage_front_state {
  static inline const char* name = "relay.storage_front";

  caf::actor writer;
  storage_settings settings;
  storage::batch pending;    // collected, not handed to the writer yet
  bool timer_armed = false;  // a flush_ms timer is pending
};

using storage_front_type = caf::stateful_actor<storage_front_state>;

/// The actor topics, the shard and the edge address as "storage": the same messages as the
/// writer's (messages.hpp). Events and rows are collected and handed to `writer` at flush_ms or
/// flush_events; barriers and reads first hand over what was collected, then go to the writer
/// (one sender, so the writer sees them after that batch). stop_atom: hands over, stops the
/// writer (its last commit), quits.
caf::behavior storage_front(storage_front_type* self, caf::actor writer, storage_settings settings);

/// How long a topic waits for storage (a barrier, a load) before answering `unavailable`.
constexpr auto storage_timeout = std::chrono::seconds(30);

/// What a topic needs to reach storage: the actor (null with durability none) and the mode.
struct storage_link {
  caf::actor actor;
  durability mode = durability::none;
  std::size_t max_pending_events = 0;
  std::size_t backpressure_events = 0;  // 0: batched acks never wait

  bool enabled() const noexcept { return static_cast<bool>(actor); }
  bool sync() const noexcept { return actor && mode == durability::sync; }
  /// True when a producer must be refused (`unavailable`) rather than acknowledged: storage is
  /// down in sync mode, or too much is waiting for it in any mode.
  bool refuses(const node_counters& c) const noexcept;
  /// True when a producer's ack must wait for the commit of what it sent: always in sync mode;
  /// in batched mode while storage is behind by backpressure_events or more (back-pressure: a
  /// flood slows to what storage commits instead of filling the bound and being refused). Asked
  /// before the producer's events are counted as pending.
  bool must_wait(const node_counters& c) const noexcept;
};

/// Before `self` handles any other message (await holds them in its mailbox), asks storage for
/// `topic`'s tail — its last seq and at most `max_events` of its newest events — and hands it to
/// `restore`. When storage cannot answer, the actor goes on from `resume_seq` (resumers then get a
/// gap) and the failure is logged. Either way `then()` runs next, still before any other message:
/// what the topic does at start on top of its log (e.g. a run ending as crashed) belongs there.
/// Used by topics starting over a durable log.
template <class Actor, class Restore, class Then>
void restore_from_storage(Actor* self, const storage_link& link, const std::string& topic,
                          std::size_t max_events, uint64_t resume_seq, Restore restore, Then then) {
  self->request(link.actor, storage_timeout, load_atom::value, topic,
                static_cast<uint64_t>(max_events))
      .await(
          [restore = std::move(restore), then](stored_tail& tail) mutable {
            restore(tail);
            then();
          },
          [topic, resume_seq, then](caf::error& err) mutable {
            spdlog::warn("restore from storage failed topic={} error={} (continuing at seq {})",
                         topic, from_caf_error(err).message, resume_seq);
            then();
          });
}

}  // namespace relay
