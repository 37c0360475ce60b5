#pragma once
// One WebSocket connection (PROTOCOL.md "WebSocket"): the client's ops in, acks, events, presence
// and errors out. It is the sink of every subscription it holds (runs and rooms alike).
//
// Framing is our own (protocols/ws_frame.hpp), not beast::websocket: the edge encodes each event
// once into a complete WebSocket frame shared by every session, and a session writes its queue
// with gather writes, exactly as SSE does. Client frames are parsed by a bounded frame reader.
//
// Threads: sink calls come from a CAF thread and only touch the inbox (mutex) and post one drain.
// Node callbacks post back. Everything else runs on the session's thread: one read pending (a
// readiness wait, so an idle connection owns no read buffer), one write in flight.

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/frame.hpp"
#include "net/api.hpp"
#include "net/beast.hpp"
#include "net/frame_queue.hpp"
#include "net/net_counters.hpp"
#include "net/server_state.hpp"
#include "net/session_registry.hpp"
#include "net/ws_inbox.hpp"
#include "protocols/ws.hpp"
#include "protocols/ws_frame.hpp"

namespace relay::net {

class ws_session final : public sink,
                         public stoppable,
                         public std::enable_shared_from_this<ws_session> {
 public:
  static constexpr std::size_t max_write_buffers = 64;

  /// `buffer`: bytes the HTTP session read past the upgrade request (the client's first frames).
  ws_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer, connection_slot slot,
             std::shared_ptr<server_state> state, ws_request req, std::string peer);
  ~ws_session() override;

  /// Session thread: answers 101, sends `hello`, starts reading.
  void run();
  /// Any thread (see stoppable): close 1001 after a flush, or close the socket now.
  void stop(bool force) override;

  // sink: called by the edge on a CAF thread.
  wire_format format() const noexcept override { return wire_format::ws; }
  void on_subscribed(uint64_t sub_id, const result<subscribe_ok>& answer) override;
  void on_frame(uint64_t sub_id, const frame_ptr& f) override;
  void on_frames(uint64_t sub_id, const frame_ptr* frames, std::size_t count) override;
  void on_closed(uint64_t sub_id, const error& why) override;
  void on_presence(uint64_t sub_id, const presence_ptr& change) override;

 private:
  enum class phase : uint8_t { open, closing, closed };
  /// Why a subscription exists: a `subscribe` op, or a `join` (whose ack it answers).
  enum class sub_kind : uint8_t { subscribe, join };

  struct subscription {
    uint64_t id = 0;
    std::string topic;
    std::string ref;        // echoed in the ack
    uint64_t last_seq = 0;  // last seq queued to the client: anything at or below it is dropped
    sub_kind kind = sub_kind::subscribe;
    bool acked = false;
  };

  // client → server
  void do_read();
  void on_readable(beast::error_code ec);
  void process();
  void on_text(std::string_view text);
  void dispatch(ws::decoded_op&& op);
  void op_subscribe(ws::subscribe&& op, std::string&& ref);
  void op_unsubscribe(ws::unsubscribe&& op, std::string&& ref);
  void op_join(ws::join&& op, std::string&& ref);
  void op_leave(ws::leave&& op, std::string&& ref);
  void op_send(ws::send&& op, std::string&& ref);
  void op_publish(ws::publish&& op, std::string&& ref);
  void op_auth(ws::auth&& op, std::string&& ref);
  /// True (after answering `forbidden`) when the token's rooms claim excludes `room`.
  bool room_refused(std::string_view room, std::string_view ref);
  /// After an `auth` op: leaves and unfollows every room the new rooms claim excludes.
  void drop_rooms_outside_claim();
  void subscribe_topic(std::string topic, std::optional<uint64_t> after, std::string ref,
                       sub_kind kind);
  /// True (after answering an error) when the connection follows ws_max_subscriptions topics.
  bool subscription_limit_reached(std::string_view ref);
  void leave_room(const std::string& room);
  /// Ends the subscription to `topic`, if there is one.
  void unfollow(const std::string& topic);
  /// Runs `done(result)` on the session's thread for a node answer; holds later ops until then.
  template <class T, class Done>
  callback<T> on_session(Done done);
  void op_finished();

  // edge → session
  void post_drain();
  void on_drain();
  void on_answer(uint64_t sub_id, const result<subscribe_ok>& answer);
  void on_sub_closed(uint64_t sub_id, const error& why);
  subscription* find(uint64_t sub_id);
  subscription* find_topic(std::string_view topic);
  void erase(uint64_t sub_id);

  // server → client
  void send_text(const std::string& json);
  void send_error(std::string_view ref, const error& e);
  void send_topic_error(std::string_view ref, std::string_view topic, const error& e);
  void queue_counted(frame_ptr f);
  void send_control(frame_ptr f);
  void pump();
  void do_write();
  void on_write(beast::error_code ec, std::size_t n);
  void arm_heartbeat();
  void on_heartbeat(beast::error_code ec);
  void slow_consumer(std::size_t demanded);

  // the end
  void begin_close(uint16_t code, std::string_view reason, bool flush);
  void release_everything();
  void shutdown_gracefully();
  void close_now();
  void fail(beast::error_code ec, const char* what);

  std::shared_ptr<server_state> state_;
  beast::tcp_stream stream_;
  asio::any_io_executor executor_;
  connection_slot slot_;
  ws_request req_;
  std::string peer_;
  std::string session_id_;
  ws_limits limits_;

  ws::frame_reader reader_;
  std::vector<subscription> subs_;   // at most ws_max_subscriptions, found by id or topic
  std::vector<std::string> joined_;  // rooms this session joined (presence), left at close

  ws_inbox inbox_;         // edge → session
  ws_inbox::batch batch_;  // reused by every drain
  frame_queue queue_;      // session → socket
  std::vector<asio::const_buffer> buffers_;

  asio::steady_timer heartbeat_timer_;
  asio::steady_timer linger_timer_;
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point next_ping_;  // the heartbeat timer also waits for expiry

  unsigned inflight_ = 0;  // answers the current op still waits for (node calls, a subscribe)
  phase phase_ = phase::open;
  bool reading_ = false;  // a readiness wait is pending
  bool paused_ = false;   // process() stopped for an op in flight
  bool writing_ = false;
  bool counted_ = false;         // counted in relay_ws_sessions
  bool shut_down_ = false;       // our side was shut down after the close frame
  bool peer_closed_ = false;     // the peer's close frame arrived
  bool reader_failed_ = false;   // a protocol error: further input is dropped
  bool flush_on_close_ = false;  // write everything queued before the close frame
  bool released_ = false;        // subscriptions and presence were given up
  frame_ptr close_frame_;        // set by begin_close until pump() queues it
};

}  // namespace relay::net
