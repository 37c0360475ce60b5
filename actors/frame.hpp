#pragma once
// What the edge hands to sessions: an immutable, shared, already-encoded wire frame, and the
// session-side interface (`sink`) the edge writes into. No CAF here: net/ includes this.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "protocols/error.hpp"

namespace relay {

/// Wire formats a session can ask the edge for. The edge encodes each event once per format in use:
/// `sse` an SSE event block, `ws` a whole WebSocket text frame (RFC 6455 header included) carrying
/// the `{"op":"event",...}` message of PROTOCOL.md.
enum class wire_format : uint8_t { sse, ws };
constexpr std::size_t wire_format_count = 2;

/// One encoded frame, shared by every session of the node that streams the same topic.
struct frame {
  enum class kind : uint8_t { event, gap };
  kind what = kind::event;
  uint64_t seq = 0;       // the event's seq (for a gap: the `to` position)
  bool terminal = false;  // a run's terminal event: the stream closes after writing it
  std::string bytes;      // the encoded frame, ready to write
};
using frame_ptr = std::shared_ptr<const frame>;

/// The answer to a subscribe, delivered to the sink before any frame of that subscription.
struct subscribe_ok {
  uint64_t last_seq = 0;  // the topic's last seq at the moment of subscribing
  bool recovered = true;  // false when a gap frame follows (the position was no longer retained)
};

/// A presence change of a room: ephemeral (never in the replay ring, never replayed, no seq).
/// Built once by the edge and shared by every session subscribed to the room.
struct presence_note {
  std::string room;    // the room id (without "room:")
  bool joined = true;  // false: left
  std::string user;
  std::string session_id;
  frame_ptr ws_frame;  // the WebSocket frame of the change (null when no WebSocket follows)
};
using presence_ptr = std::shared_ptr<const presence_note>;

/// A session's receiving end, implemented in net/. All calls for one sink come from the edge,
/// one at a time and in order (on a CAF thread): implementations must be thread-safe against
/// their own session thread, must not block, and should only queue and post.
class sink {
 public:
  virtual ~sink() = default;
  virtual wire_format format() const noexcept = 0;
  /// First call of every subscription: success (frames follow) or the error to answer with.
  virtual void on_subscribed(uint64_t sub_id, const result<subscribe_ok>& answer) = 0;
  /// A replayed or live frame. Frames arrive in seq order; duplicates are possible only across a
  /// topic restart, and sessions drop seq <= the last one they wrote.
  virtual void on_frame(uint64_t sub_id, const frame_ptr& f) = 0;
  /// Several frames of one subscription at once (one lock and at most one post for the batch).
  /// The default forwards to on_frame; sessions override it on the hot path.
  virtual void on_frames(uint64_t sub_id, const frame_ptr* frames, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) on_frame(sub_id, frames[i]);
  }
  /// The topic ended the subscription without a terminal event (e.g. the run was passivated or
  /// the node is stopping). The session closes the stream; the client resumes elsewhere.
  virtual void on_closed(uint64_t sub_id, const error& why) = 0;
  /// A presence change of a room this subscription follows (only after on_subscribed). Sessions
  /// that do not show presence (SSE) keep the default.
  virtual void on_presence(uint64_t /*sub_id*/, const presence_ptr& /*change*/) {}
};

}  // namespace relay
