#pragma once
// The edge: one per node, the bridge between topics and the sessions of this node (DESIGN
// invariant 2). A topic sends each event once to the edge; the edge encodes it once per wire
// format into a shared immutable frame and hands that frame to every subscribed session's sink.
// Internal to actors/.

#include <array>
#include <caf/stateful_actor.hpp>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/counters.hpp"
#include "actors/messages.hpp"

namespace relay {

struct edge_state {
  static inline const char* name = "relay.edge";

  /// One session's subscription to one topic.
  struct subscription {
    uint64_t id = 0;
    caller who;
    std::weak_ptr<sink> out;
    wire_format format = wire_format::sse;
    uint64_t sent_seq = 0;  // last seq handed to the sink
    bool live = false;      // replay answered: live events flow to it
    bool acked = false;     // on_subscribed was called (only once, even across topic restarts)
    unsigned retries = 0;   // re-subscribe attempts after the topic went down
    bool from_now = false;  // until the first replay: start at the topic's current last seq
    // Replay beyond the ring: while `filling`, older events come from storage in chunks; the
    // ring part of the topic's reply waits in `held`, and live events are caught up afterwards.
    bool filling = false;
    uint64_t fill_to = 0;        // the last seq storage is asked for (the gap's end)
    uint64_t fill_last_seq = 0;  // the topic's last seq at the reply (for the ack)
    bool fill_ended = false;     // the topic had ended at the reply
    std::vector<event> held;
  };

  /// The subscriptions of one topic on this node, and the last frames encoded for it, so that
  /// replays to many resuming sessions reuse frames instead of re-encoding them.
  struct topic {
    caf::actor owner;  // the topic's actor (monitored) once a replay named it
    std::vector<subscription> subs;
    // Per wire format: contiguous seqs, at most recent_frames each.
    std::array<std::deque<frame_ptr>, wire_format_count> recent;
  };

  caf::actor shard;
  caf::actor storage;  // null without durable storage: a position older than a ring is a gap
  node_counters* counters = nullptr;
  std::unordered_map<std::string, topic> topics;
  std::unordered_map<uint64_t, std::string> topic_of;  // sub id → topic name
  std::unordered_map<caf::actor_addr, std::string> topic_by_owner;
  // Reused per batch on the hot path, one per wire format.
  std::array<std::vector<frame_ptr>, wire_format_count> scratch;
};

using edge_actor_type = caf::stateful_actor<edge_state>;

/// Frames kept per topic for replays (a few seconds of a fast stream).
constexpr std::size_t recent_frames = 1024;

/// Events asked from storage at once when a replay reaches beyond a topic's ring.
constexpr uint64_t fill_chunk = 1000;

/// `storage`: the node's storage actor, or null (then resumes older than a ring get a gap).
caf::behavior edge_actor(edge_actor_type* self, caf::actor shard, node_counters* counters,
                         caf::actor storage);

/// Encodes an event of `topic` ("run:<id>" / "room:<id>") for a wire format.
frame_ptr encode_frame(const event& e, wire_format format, bool terminal, std::string_view topic);
frame_ptr encode_gap(uint64_t from, uint64_t to, wire_format format, std::string_view topic);

/// "run:<id>" with a non-empty id, or "room:<id>" with a valid room id.
bool known_topic(const std::string& topic) noexcept;

/// A run's terminal events close its streams.
bool terminal_type(const std::string& topic, const std::string& type) noexcept;

}  // namespace relay
