#pragma once
// One SSE stream (PROTOCOL.md "Server-Sent Events"): the sink the edge writes frames into, and
// the writer that moves them to the socket in batches.
//
// Threads: the sink calls come from a CAF thread and only touch the outbox (a mutex-protected
// inbox); the first one after a drain posts one drain handler onto the session's executor.
// Everything else runs on the session's thread: exactly one write in flight, each a gather-write
// of everything queued (up to max_write_buffers).

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/frame.hpp"
#include "net/api.hpp"
#include "net/beast.hpp"
#include "net/frame_queue.hpp"
#include "net/net_counters.hpp"
#include "net/outbox.hpp"
#include "net/server_state.hpp"
#include "net/session_registry.hpp"

namespace relay::net {

class sse_session final : public sink,
                          public stoppable,
                          public std::enable_shared_from_this<sse_session> {
 public:
  /// Buffers per gather-write; Asio hands at most 64 to one writev, so more gains nothing.
  static constexpr std::size_t max_write_buffers = 64;

  sse_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer, connection_slot slot,
              std::shared_ptr<server_state> state, stream_request req, std::string peer);
  ~sse_session() override;

  /// Session thread: subscribes; the answer arrives through on_subscribed.
  void run();
  /// Any thread (see stoppable): flush then close, or close now.
  void stop(bool force) override;

  // sink: called by the edge on a CAF thread.
  wire_format format() const noexcept override { return wire_format::sse; }
  void on_subscribed(uint64_t sub_id, const result<subscribe_ok>& answer) override;
  void on_frame(uint64_t sub_id, const frame_ptr& f) override;
  void on_frames(uint64_t sub_id, const frame_ptr* frames, std::size_t count) override;
  void on_closed(uint64_t sub_id, const error& why) override;

 private:
  enum class phase : uint8_t { subscribing, streaming, shutting_down, closed, handed_off };

  void post_drain();
  void on_drain();
  void on_answer(const result<subscribe_ok>& answer);
  void slow_consumer(std::size_t demanded);
  void pump();
  void do_write();
  void on_write(beast::error_code ec, std::size_t n);
  void do_read();
  void on_read(beast::error_code ec, std::size_t n);
  void arm_heartbeat();
  void on_heartbeat(beast::error_code ec);
  void shutdown_gracefully();
  void close_now();
  void fail(beast::error_code ec, const char* what);

  std::shared_ptr<server_state> state_;
  beast::tcp_stream stream_;
  asio::any_io_executor executor_;
  beast::flat_buffer buffer_;  // bytes read with the request; kept for a handover back to HTTP
  connection_slot slot_;
  stream_request req_;
  std::string peer_;
  uint64_t sub_id_ = 0;
  // While subscribing no operation is pending on the socket and the edge holds the sink weakly:
  // the session holds itself until the answer (or a close) arrives.
  std::shared_ptr<sse_session> self_;

  outbox inbox_;                             // edge → session
  outbox::batch batch_;                      // reused by every drain
  frame_queue queue_;                        // session → socket
  std::vector<asio::const_buffer> buffers_;  // the gather list of the write in flight
  std::array<char, 64> read_buf_{};          // client bytes are read only to notice EOF

  asio::steady_timer heartbeat_timer_;
  asio::steady_timer delay_timer_;   // write coalescing (sse_write_delay_ms)
  asio::steady_timer linger_timer_;  // bounds the graceful shutdown
  std::chrono::steady_clock::time_point last_write_;

  phase phase_ = phase::subscribing;
  bool writing_ = false;
  bool closing_ = false;  // flush what is queued, then shut down
  bool delay_armed_ = false;
  bool delay_done_ = false;
  bool write_posted_ = false;  // a write waits at the back of the thread's queue (pump)
  bool write_turn_ = false;    // ... and its turn has come: write now
  bool counted_ = false;       // counted in relay_sse_sessions
};

}  // namespace relay::net
