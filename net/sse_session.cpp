#include "net/sse_session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <span>

#include "net/http_session.hpp"
#include "protocols/sse.hpp"

namespace relay::net {

namespace {

constexpr std::chrono::seconds linger_timeout{2};

int64_t token_deadline_ms(int64_t exp, int64_t leeway_s) {
  using namespace std::chrono;
  return token_ms_left(exp, leeway_s,
                       duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

frame_ptr control_frame(std::string bytes) {
  auto f = std::make_shared<frame>();
  f->bytes = std::move(bytes);
  return f;
}

// `: hb\n\n`, shared by every session (immutable once built).
const frame_ptr& heartbeat_frame() {
  static const frame_ptr f = control_frame(std::string{sse_heartbeat()});
  return f;
}

// The response header (no Content-Length: the stream lasts until we close it) and `retry:`.
// `browser_lines`: the security and CORS headers every HTTP answer carries.
frame_ptr stream_head(unsigned version, unsigned retry_ms, std::string_view browser_lines) {
  std::string head = version == 10 ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.1 200 OK\r\n";
  head +=
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\n"
      "Connection: keep-alive\r\n";
  head += browser_lines;
  head += "\r\n";
  head += sse_retry(retry_ms);
  return control_frame(std::move(head));
}

}  // namespace

sse_session::sse_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer,
                         connection_slot slot, std::shared_ptr<server_state> state,
                         stream_request req, std::string peer)
    : state_(std::move(state)),
      stream_(std::move(stream)),
      executor_(stream_.get_executor()),
      buffer_(std::move(buffer)),
      slot_(std::move(slot)),
      req_(std::move(req)),
      peer_(std::move(peer)),
      inbox_(state_->settings().sse_outbound_limit),
      queue_(req_.after),
      heartbeat_timer_(executor_),
      delay_timer_(executor_),
      linger_timer_(executor_) {}

sse_session::~sse_session() {
  state_->sessions().remove(this);
  if (counted_) state_->counters().sse_sessions.fetch_sub(1, std::memory_order_relaxed);
}

void sse_session::run() {
  if (!state_->sessions().add(this, weak_from_this()))
    return close_now();  // the server is stopping
  self_ = shared_from_this();
  sub_id_ = state_->node().next_sub_id();
  state_->node().subscribe(req_.who, req_.topic, req_.after, weak_from_this(), sub_id_,
                           req_.from_now);
}

void sse_session::stop(bool force) {
  asio::post(executor_, [self = shared_from_this(), force] {
    if (force || self->phase_ == phase::subscribing) return self->close_now();
    self->closing_ = true;
    self->pump();
  });
}

// ---- sink (CAF thread): queue and post, nothing else -------------------------------------------

void sse_session::on_subscribed(uint64_t sub_id, const result<subscribe_ok>& answer) {
  if (sub_id == sub_id_ && inbox_.set_subscribed(answer)) post_drain();
}

void sse_session::on_frame(uint64_t sub_id, const frame_ptr& f) {
  if (sub_id == sub_id_ && inbox_.push(f)) post_drain();
}

void sse_session::on_frames(uint64_t sub_id, const frame_ptr* frames, std::size_t count) {
  if (sub_id == sub_id_ && inbox_.push(frames, count)) post_drain();
}

void sse_session::on_closed(uint64_t sub_id, const error& why) {
  if (sub_id == sub_id_ && inbox_.set_closed(why)) post_drain();
}

void sse_session::post_drain() {
  if (state_->halted()) return;
  asio::post(executor_, beast::bind_front_handler(&sse_session::on_drain, shared_from_this()));
}

// ---- session thread ----------------------------------------------------------------------------

void sse_session::on_drain() {
  inbox_.drain(batch_);
  if (batch_.subscribed) {
    auto answer = std::move(*batch_.subscribed);
    batch_.subscribed.reset();
    on_answer(answer);
  }
  if (batch_.overflowed && phase_ == phase::streaming) {
    batch_.overflowed = false;
    const auto demanded = batch_.overflow_bytes;
    for (const auto& f : batch_.frames) inbox_.release(f->bytes.size());
    batch_.frames.clear();
    return slow_consumer(demanded);
  }
  batch_.overflowed = false;
  for (const auto& f : batch_.frames) {
    // Duplicates (seq <= the last one queued) and anything after the terminal frame are dropped;
    // so is everything once the stream is no longer writing.
    if (phase_ != phase::streaming || closing_ || !queue_.push(f)) inbox_.release(f->bytes.size());
  }
  batch_.frames.clear();
  if (batch_.closed) {
    batch_.closed.reset();
    closing_ = true;  // flush what we have, then close; the client resumes elsewhere
  }
  pump();
}

void sse_session::on_answer(const result<subscribe_ok>& answer) {
  if (phase_ != phase::subscribing) return;
  auto keep = std::move(self_);  // from here on pending operations hold the session
  if (!answer) {
    // Answer the normal HTTP error on this connection and let HTTP keep-alive go on.
    phase_ = phase::handed_off;
    inbox_.close();
    heartbeat_timer_.cancel();
    auto h = std::make_shared<http_session>(std::move(stream_), std::move(buffer_), state_,
                                            std::move(slot_), peer_, req_.tls);
    h->run_with(error_response(answer.err()), req_.version, req_.keep_alive, req_.cors);
    return;
  }
  phase_ = phase::streaming;
  // The request's read buffer was kept only for a handover back to HTTP; a stream never hands
  // back, so give its memory up (idle streams are most connections: bytes here are per client).
  buffer_ = beast::flat_buffer{};
  counted_ = true;
  state_->counters().sse_sessions.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("sse open peer={} topic={} after={} last_seq={} recovered={}", peer_, req_.topic,
                req_.after, answer->last_seq, answer->recovered);
  queue_.push_control(stream_head(req_.version, state_->settings().sse_retry_ms,
                                  state_->browser().raw_lines(req_.cors, req_.tls)));
  last_write_ = std::chrono::steady_clock::now();
  do_read();
  arm_heartbeat();
}

void sse_session::slow_consumer(std::size_t demanded) {
  state_->counters().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
  // `demanded`: the bytes the session would have held had the refused frame been queued.
  spdlog::info("sse slow_consumer peer={} topic={} last_seq_queued={} demanded={} limit={}", peer_,
               req_.topic, queue_.last_seq(), demanded, inbox_.limit());
  close_now();
}

// Starts a write when none is in flight and something is queued; closes once a closing stream has
// nothing left to write.
void sse_session::pump() {
  if (phase_ != phase::streaming || writing_) return;
  if (queue_.empty()) {
    if (closing_) shutdown_gracefully();
    return;
  }
  const auto delay = state_->settings().sse_write_delay_ms;
  if (delay > 0 && !closing_ && !delay_done_) {
    // Coalescing: let more frames join the first write after a quiet spell.
    if (!delay_armed_) {
      delay_armed_ = true;
      delay_timer_.expires_after(std::chrono::milliseconds(delay));
      delay_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        self->delay_armed_ = false;
        if (ec) return;
        self->delay_done_ = true;
        self->pump();
      });
    }
    return;
  }
  if (!write_turn_) {
    // The write goes to the back of the thread's queue: the drains and writes already waiting
    // there (other streams' share of the same events) run first, and frames that reach this
    // stream meanwhile join its write. Under a flood that is several frames per writev instead of
    // one; when the thread is idle the queue is empty and the write follows at once.
    if (!write_posted_) {
      write_posted_ = true;
      asio::post(executor_, [self = shared_from_this()] {
        self->write_posted_ = false;
        if (self->phase_ != phase::streaming) return;
        self->write_turn_ = true;
        self->on_drain();  // takes what arrived meanwhile, then pump() writes
        self->write_turn_ = false;
      });
    }
    return;
  }
  do_write();
}

void sse_session::do_write() {
  delay_done_ = false;
  buffers_.clear();
  queue_.gather(buffers_, max_write_buffers);
  writing_ = true;
  // write_some, not async_write: one completion per writev, so a partial write lets the frames
  // that arrived meanwhile join the next gather.
  // On the socket itself with a span over buffers_: no timer (streams have no deadline) and no
  // copy of the gather list per write.
  stream_.socket().async_write_some(
      std::span<const asio::const_buffer>{buffers_},
      beast::bind_front_handler(&sse_session::on_write, shared_from_this()));
}

void sse_session::on_write(beast::error_code ec, std::size_t n) {
  writing_ = false;
  frame_queue::progress done;
  if (!ec) {
    auto& c = state_->counters();
    c.writes.fetch_add(1, std::memory_order_relaxed);
    c.bytes_out.fetch_add(n, std::memory_order_relaxed);
    done = queue_.consume(n);
    inbox_.release(done.counted_bytes);
    c.frames_out.fetch_add(done.frames, std::memory_order_relaxed);
    last_write_ = std::chrono::steady_clock::now();
  }
  if (phase_ == phase::closed) {
    inbox_.release(queue_.clear());  // closed while this write was in flight
    return;
  }
  if (ec) {
    fail(ec, "write");
    return close_now();
  }
  if (done.terminal) {
    closing_ = true;
    // Nothing after the terminal frame: drop the rest so the stream closes now.
    inbox_.release(queue_.clear());
  }
  pump();
}

// Client bytes are not expected on a stream; a pending read exists to notice the client leaving
// (EOF or reset) without waiting for the next write to fail.
void sse_session::do_read() {
  stream_.socket().async_read_some(
      asio::buffer(read_buf_),
      beast::bind_front_handler(&sse_session::on_read, shared_from_this()));
}

void sse_session::on_read(beast::error_code ec, std::size_t) {
  if (ec) {
    if (phase_ == phase::streaming) fail(ec, "read");
    return close_now();  // the client left, or our graceful shutdown completed
  }
  do_read();
}

// The heartbeat timer also waits for the token's expiry (one timer per stream).
void sse_session::arm_heartbeat() {
  const auto period = std::chrono::seconds(std::max(1u, state_->settings().sse_heartbeat_s));
  auto at = last_write_ + period;
  const auto now = std::chrono::steady_clock::now();
  if (at <= now) at = now + period;
  if (req_.expires_at_s > 0) {
    const auto left = token_deadline_ms(req_.expires_at_s, state_->settings().jwt_leeway_s);
    // Compared before adding: a far `exp` must not overflow the time point.
    if (left < std::chrono::duration_cast<std::chrono::milliseconds>(at - now).count())
      at = now + std::chrono::milliseconds(std::max<int64_t>(left, 0));
  }
  heartbeat_timer_.expires_at(at);
  heartbeat_timer_.async_wait(
      beast::bind_front_handler(&sse_session::on_heartbeat, shared_from_this()));
}

void sse_session::on_heartbeat(beast::error_code ec) {
  if (ec || phase_ != phase::streaming || closing_) return;
  if (req_.expires_at_s > 0 &&
      token_deadline_ms(req_.expires_at_s, state_->settings().jwt_leeway_s) <= 0) {
    // No way to refresh a stream in-band: end it after what is queued; the EventSource
    // reconnects with a fresh token and resumes from Last-Event-ID.
    state_->counters().token_expiries.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("sse token_expired peer={} topic={} user={}", peer_, req_.topic, req_.who.sub);
    closing_ = true;
    return pump();
  }
  const auto period = std::chrono::seconds(std::max(1u, state_->settings().sse_heartbeat_s));
  if (!writing_ && queue_.empty() && std::chrono::steady_clock::now() - last_write_ >= period) {
    queue_.push_control(heartbeat_frame());
    last_write_ = std::chrono::steady_clock::now();  // no second beat before this one is out
    pump();
  }
  arm_heartbeat();
}

// The end of a stream that said everything: shut down our side after the last write, then wait
// (bounded) for the client to close, so the final frames are not lost to a reset.
void sse_session::shutdown_gracefully() {
  if (phase_ != phase::streaming) return;
  phase_ = phase::shutting_down;
  heartbeat_timer_.cancel();
  delay_timer_.cancel();
  state_->node().unsubscribe(sub_id_);
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return close_now();
  linger_timer_.expires_after(linger_timeout);
  linger_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) self->close_now();
  });
  // The pending read completes with EOF when the client closes: on_read closes then.
}

void sse_session::close_now() {
  if (phase_ == phase::closed || phase_ == phase::handed_off) return;
  // A graceful shutdown unsubscribed already; sub_id_ == 0: never subscribed.
  const bool unsubscribe = sub_id_ != 0 && phase_ != phase::shutting_down;
  spdlog::debug("sse close peer={} topic={} last_seq_queued={}", peer_, req_.topic,
                queue_.last_seq());
  phase_ = phase::closed;
  auto keep = std::move(self_);
  inbox_.close();
  // A write in flight still references the queued frames: then on_write drops them.
  if (!writing_) inbox_.release(queue_.clear());
  heartbeat_timer_.cancel();
  delay_timer_.cancel();
  linger_timer_.cancel();
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
  if (unsubscribe) state_->node().unsubscribe(sub_id_);
}

void sse_session::fail(beast::error_code ec, const char* what) {
  if (expected_disconnect(ec)) return;
  spdlog::debug("sse {} peer={} topic={} error={}", what, peer_, req_.topic, ec.message());
}

}  // namespace relay::net
