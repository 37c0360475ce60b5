#include "net/ws_session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <random>
#include <span>

#include "net/audited.hpp"
#include "protocols/room_access.hpp"

namespace relay::net {

namespace {

// Bounds the end of a connection: the close frame's write and the peer's answer to it.
constexpr std::chrono::seconds close_timeout{5};
// One read at a time into a buffer shared by every session of the thread: an idle connection
// holds no read buffer at all (it waits for readiness, then reads here).
constexpr std::size_t read_chunk = 64 * 1024;

frame_ptr raw_frame(std::string bytes) {
  auto f = std::make_shared<frame>();
  f->bytes = std::move(bytes);
  return f;
}

frame_ptr ws_frame(ws::opcode op, std::string_view payload) {
  auto f = std::make_shared<frame>();
  ws::append_frame(f->bytes, op, payload);
  return f;
}

// A ping frame with no payload, shared by every session (immutable once built).
const frame_ptr& ping_frame() {
  static const frame_ptr f = ws_frame(ws::opcode::ping, {});
  return f;
}

std::string new_session_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(16, '0');
  auto bits = rng();
  for (auto& c : id) {
    c = hex[bits & 0xF];
    bits >>= 4;
  }
  return id;
}

int64_t token_deadline_ms(int64_t exp, int64_t leeway_s) {
  using namespace std::chrono;
  return token_ms_left(exp, leeway_s,
                       duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

}  // namespace

ws_session::ws_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer,
                       connection_slot slot, std::shared_ptr<server_state> state, ws_request req,
                       std::string peer)
    : state_(std::move(state)),
      stream_(std::move(stream)),
      executor_(stream_.get_executor()),
      slot_(std::move(slot)),
      req_(std::move(req)),
      peer_(std::move(peer)),
      reader_(state_->settings().ws_max_message),
      inbox_(state_->settings().ws_outbound_limit),
      heartbeat_timer_(executor_),
      linger_timer_(executor_) {
  limits_.max_message_bytes = state_->settings().ws_max_message;
  limits_.max_data_bytes = state_->node().limits().max_data_bytes;
  // Bytes that followed the upgrade request in the same read are the client's first frames.
  const auto data = buffer.data();
  if (data.size() > 0) reader_.feed({static_cast<const char*>(data.data()), data.size()});
}

ws_session::~ws_session() {
  state_->sessions().remove(this);
  if (counted_) state_->counters().ws_sessions.fetch_sub(1, std::memory_order_relaxed);
}

void ws_session::run() {
  if (!state_->sessions().add(this, weak_from_this())) return close_now();  // stopping
  counted_ = true;
  state_->counters().ws_sessions.fetch_add(1, std::memory_order_relaxed);
  session_id_ = new_session_id();
  // For the synchronous read_some after a readiness wait (asynchronous operations ignore it).
  beast::error_code ec;
  stream_.socket().non_blocking(true, ec);
  if (ec) return close_now();
  send_control(
      raw_frame("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: " +
                req_.accept_key + "\r\n\r\n"));
  send_text(
      ws::encode_hello(session_id_, state_->node().name(), state_->settings().ws_heartbeat_ms));
  spdlog::debug("ws open peer={} session={} user={}", peer_, session_id_, req_.who.sub);
  last_heard_ = std::chrono::steady_clock::now();
  next_ping_ = last_heard_ + std::chrono::milliseconds(state_->settings().ws_heartbeat_ms);
  arm_heartbeat();
  process();  // the first frames may already be here; else this starts reading
}

void ws_session::stop(bool force) {
  asio::post(executor_, [self = shared_from_this(), force] {
    if (force) return self->close_now();
    self->begin_close(ws::close_code::going_away, "server is stopping", true);
  });
}

// ---- client → server ---------------------------------------------------------------------------

void ws_session::do_read() {
  if (reading_ || phase_ == phase::closed) return;
  reading_ = true;
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      beast::bind_front_handler(&ws_session::on_readable, shared_from_this()));
}

void ws_session::on_readable(beast::error_code ec) {
  reading_ = false;
  if (phase_ == phase::closed) return;
  if (ec) {
    fail(ec, "read");
    return close_now();
  }
  thread_local std::array<char, read_chunk> chunk;
  const auto n = stream_.socket().read_some(asio::buffer(chunk), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return do_read();
  if (ec) {
    // EOF without a close frame, or a reset: the client is gone.
    fail(ec, "read");
    return close_now();
  }
  if (reader_failed_) return do_read();  // closing after a protocol error: input is dropped
  reader_.feed({chunk.data(), n});
  process();
}

// Handles buffered frames until more bytes are needed (then reads) or an op awaits its answer.
// Ops of a connection take effect in order, one at a time: a `send` after a `join` is in the room
// after the subscription, two sends keep their order. While one waits nothing more is read, so a
// client that floods ops meets TCP backpressure; op_finished() resumes.
void ws_session::process() {
  paused_ = false;
  while (phase_ != phase::closed && !reader_failed_) {
    if (phase_ == phase::open && inflight_ > 0) {
      paused_ = true;
      return;
    }
    auto ev = reader_.next();
    using kind = ws::frame_reader::event::kind;
    // Only a whole frame shows the peer alive: bytes trickled into one that never completes do
    // not hold the connection past ws.timeout_ms.
    if (ev.what != kind::need_more) last_heard_ = std::chrono::steady_clock::now();
    switch (ev.what) {
      case kind::need_more:
        return do_read();
      case kind::text:
        if (phase_ == phase::open) on_text(ev.payload);
        break;
      case kind::binary:
        if (phase_ == phase::open) {
          state_->counters().ws_messages_in.fetch_add(1, std::memory_order_relaxed);
          send_error({},
                     error{errc::bad_request, "binary frames are not supported: send JSON text"});
        }
        break;
      case kind::ping:
        if (phase_ == phase::open) queue_counted(ws_frame(ws::opcode::pong, ev.payload));
        break;
      case kind::pong:
        break;  // last_heard_ was updated by the read
      case kind::close:
        peer_closed_ = true;
        if (phase_ == phase::open) {
          // Echo the code (RFC 6455 5.5.1); no_status (none given) echoes an empty close.
          begin_close(ev.code, {}, false);
        } else if (!writing_ && queue_.empty() && !close_frame_) {
          return close_now();  // our close went out and this is its answer
        }
        break;
      case kind::fail:
        if (ev.code == ws::close_code::too_big)
          state_->refusals().refuse(refusal::frame_too_large, address_of(peer_));
        spdlog::debug("ws protocol_error peer={} session={} code={} why={}", peer_, session_id_,
                      ev.code, ev.payload);
        reader_failed_ = true;
        begin_close(ev.code, ev.payload, false);
        return do_read();  // wait for EOF (or the close timeout)
    }
  }
  if (phase_ != phase::closed) do_read();
}

void ws_session::on_text(std::string_view text) {
  state_->counters().ws_messages_in.fetch_add(1, std::memory_order_relaxed);
  auto decoded = ws::decode_client_op(text, limits_);
  if (auto* failure = std::get_if<ws::decode_failure>(&decoded)) {
    if (failure->err.code == errc::too_large)
      state_->refusals().refuse(refusal::data_too_large, req_.who.sub);
    return send_error(failure->ref, failure->err);
  }
  dispatch(std::get<ws::decoded_op>(std::move(decoded)));
}

void ws_session::dispatch(ws::decoded_op&& d) {
  std::visit(
      [&](auto&& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, ws::subscribe>)
          op_subscribe(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::unsubscribe>)
          op_unsubscribe(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::join>)
          op_join(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::leave>)
          op_leave(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::send>)
          op_send(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::publish>)
          op_publish(std::move(op), std::move(d.ref));
        else if constexpr (std::is_same_v<T, ws::ping>)
          send_text(ws::encode_pong(d.ref));
        else if constexpr (std::is_same_v<T, ws::auth>)
          op_auth(std::move(op), std::move(d.ref));
      },
      std::move(d.op));
}

bool ws_session::room_refused(std::string_view room, std::string_view ref) {
  if (room_allowed(req_.rooms, room)) return false;
  state_->counters().auth_forbidden.fetch_add(1, std::memory_order_relaxed);
  send_error(ref, error{errc::forbidden, "the token's rooms claim does not include this room"});
  return true;
}

void ws_session::op_subscribe(ws::subscribe&& op, std::string&& ref) {
  if (op.topic.starts_with("room:") && room_refused(std::string_view{op.topic}.substr(5), ref))
    return;
  subscribe_topic(std::move(op.topic), op.after, std::move(ref), sub_kind::subscribe);
}

void ws_session::op_unsubscribe(ws::unsubscribe&& op, std::string&& ref) {
  // Idempotent: a subscription the topic already ended (a finished run) answers ack as well.
  unfollow(op.topic);
  send_text(ws::encode_ack_plain(ref));
}

bool ws_session::subscription_limit_reached(std::string_view ref) {
  if (subs_.size() < state_->settings().ws_max_subscriptions) return false;
  state_->refusals().refuse(refusal::subscriptions, req_.who.sub);
  send_error(ref,
             error{errc::too_large, "too many subscriptions (at most " +
                                        std::to_string(state_->settings().ws_max_subscriptions) +
                                        " per connection)"});
  return true;
}

void ws_session::op_join(ws::join&& op, std::string&& ref) {
  if (room_refused(op.room, ref)) return;
  if (std::find(joined_.begin(), joined_.end(), op.room) != joined_.end())
    return send_error(ref, error{errc::conflict, "already joined " + op.room});
  if (joined_.size() >= state_->settings().ws_max_rooms) {
    state_->refusals().refuse(refusal::rooms, req_.who.sub);
    return send_error(ref,
                      error{errc::too_large, "too many rooms joined (at most " +
                                                 std::to_string(state_->settings().ws_max_rooms) +
                                                 " per connection)"});
  }
  auto topic = "room:" + op.room;
  if (!find_topic(topic) && subscription_limit_reached(ref)) return;
  auto room = op.room;
  auto after = op.after;
  state_->node().join(
      req_.who, std::move(op.room), session_id_,
      on_session<uint32_t>([this, room = std::move(room), topic = std::move(topic), after,
                            ref = std::move(ref)](result<uint32_t> r) mutable {
        if (!r) return send_error(ref, r.err());
        joined_.push_back(room);
        if (auto* s = find_topic(topic)) {
          // Already following the room (a `subscribe`): the join only adds presence.
          return send_text(ws::encode_ack_subscribe(ref, topic, s->last_seq, true));
        }
        subscribe_topic(std::move(topic), after, std::move(ref), sub_kind::join);
      }));
}

void ws_session::op_leave(ws::leave&& op, std::string&& ref) {
  leave_room(op.room);
  unfollow("room:" + op.room);
  send_text(ws::encode_ack_plain(ref));
}

void ws_session::op_send(ws::send&& op, std::string&& ref) {
  if (room_refused(op.room, ref)) return;
  // Refused ops answer `error` (rate_limited) and leave the connection open.
  if (auto r = state_->take(state_->rate_messages(), refusal::rate_messages, req_.who.sub, 1))
    return send_error(ref, r->first);
  state_->node().post_message(
      req_.who, std::move(op.room), std::move(op.message),
      on_session<room_post_reply>([this, ref = std::move(ref)](result<room_post_reply> r) {
        if (!r) return send_error(ref, r.err());
        send_text(ws::encode_ack_send(ref, r->message_id, r->seq));
      }));
}

void ws_session::op_publish(ws::publish&& op, std::string&& ref) {
  if (auto r = state_->take(state_->rate_events(), refusal::rate_events, req_.who.sub, 1))
    return send_error(ref, r->first);
  auto id = op.topic.substr(4);  // the decoder accepts run topics only
  auto done = on_session<uint64_t>([this, ref = std::move(ref)](result<uint64_t> r) {
    if (!r) return send_error(ref, r.err());
    send_text(ws::encode_ack_publish(ref, *r));
  });
  if (at_least(req_.who.who, role::service) && state_->audit().first_append(req_.who.sub, id))
    done = audited(state_->audit(), "run.append", producer_fields(req_.who, id, peer_),
                   std::move(done));
  std::vector<event_input> events;
  events.push_back(event_input{std::move(op.type), std::move(op.data)});
  state_->node().append(req_.who, std::move(id), std::move(events), std::move(done));
}

// A fresh token for the same subject extends the connection past the first token's expiry.
// The role and the rooms claim change with it: they rule the ops that follow, and rooms the new
// claim excludes are left at once (drop_rooms_outside_claim). The pending heartbeat wait notices
// the new expiry when it fires: nothing is re-armed here.
void ws_session::op_auth(ws::auth&& op, std::string&& ref) {
  api a{*state_};
  auto c = a.verify_token(op.token);
  if (!c) {
    a.auth_failed(peer_, c.err());
    return send_error(ref, c.err());
  }
  if (c->sub != req_.who.sub)
    return send_error(ref, error{errc::forbidden, "the token is for another subject"});
  req_.who.who = c->who;
  req_.expires_at_s = c->exp;
  req_.rooms = std::move(c->rooms);
  send_text(ws::encode_ack_plain(ref));
  drop_rooms_outside_claim();
}

// A narrower token must not keep reading what it could no longer join: each room it excludes is
// left (presence) and unfollowed, and the client is told with an `error` op (`forbidden`, no
// `ref`) naming the room's topic, after the `auth` ack. No op is in flight here (process() holds
// ops while one is), so no join can land behind this.
void ws_session::drop_rooms_outside_claim() {
  std::vector<std::string> rooms;
  auto note = [&](std::string_view room) {
    if (!room_allowed(req_.rooms, room) &&
        std::find(rooms.begin(), rooms.end(), room) == rooms.end())
      rooms.emplace_back(room);
  };
  for (const auto& room : joined_) note(room);
  for (const auto& s : subs_)
    if (s.topic.starts_with("room:")) note(std::string_view{s.topic}.substr(5));
  for (const auto& room : rooms) {
    leave_room(room);
    const auto topic = "room:" + room;
    unfollow(topic);
    state_->counters().auth_forbidden.fetch_add(1, std::memory_order_relaxed);
    send_topic_error({}, topic,
                     error{errc::forbidden,
                           "the new token's rooms claim does not include this "
                           "room: it was left and unsubscribed"});
  }
}

void ws_session::subscribe_topic(std::string topic, std::optional<uint64_t> after, std::string ref,
                                 sub_kind kind) {
  if (find_topic(topic))
    return send_error(ref, error{errc::conflict, "already subscribed to " + topic});
  if (subscription_limit_reached(ref)) {
    if (kind == sub_kind::join) leave_room(topic.substr(5));
    return;
  }
  auto& n = state_->node();
  const auto id = n.next_sub_id();
  const bool room = topic.starts_with("room:");
  ++inflight_;  // until the edge answers (on_answer): later ops see the subscription in place
  subscription s;
  s.id = id;
  s.topic = topic;
  s.ref = std::move(ref);
  s.last_seq = after.value_or(0);
  s.kind = kind;
  subs_.push_back(std::move(s));
  // No position on a room: "now" (as for SSE); a run replays from 0.
  n.subscribe(req_.who, std::move(topic), after.value_or(0), weak_from_this(), id, room && !after);
}

void ws_session::leave_room(const std::string& room) {
  auto it = std::find(joined_.begin(), joined_.end(), room);
  if (it == joined_.end()) return;
  joined_.erase(it);
  state_->node().leave(req_.who, room, session_id_, [](result<uint32_t>) {});
}

void ws_session::unfollow(const std::string& topic) {
  if (auto* s = find_topic(topic)) {
    state_->node().unsubscribe(s->id);
    erase(s->id);
  }
}

template <class T, class Done>
callback<T> ws_session::on_session(Done done) {
  ++inflight_;
  return [self = shared_from_this(), done = std::move(done)](result<T> r) mutable {
    if (self->state_->halted()) return;
    auto* raw = self.get();
    asio::post(raw->executor_,
               [self = std::move(self), done = std::move(done), r = std::move(r)]() mutable {
                 if (self->phase_ == phase::open) done(std::move(r));
                 self->op_finished();
               });
  };
}

void ws_session::op_finished() {
  if (inflight_ > 0) --inflight_;
  if (inflight_ == 0 && paused_ && phase_ == phase::open) {
    paused_ = false;
    // Posted: the caller may be iterating over a drained batch.
    asio::post(executor_, [self = shared_from_this()] {
      if (self->phase_ != phase::closed) self->process();
    });
  }
}

// ---- edge → session: the sink (CAF thread) queues and posts, nothing else -----------------------

void ws_session::on_subscribed(uint64_t sub_id, const result<subscribe_ok>& answer) {
  if (inbox_.set_subscribed(sub_id, answer)) post_drain();
}

void ws_session::on_frame(uint64_t sub_id, const frame_ptr& f) {
  if (f && inbox_.push(sub_id, &f, 1)) post_drain();
}

void ws_session::on_frames(uint64_t sub_id, const frame_ptr* frames, std::size_t count) {
  if (inbox_.push(sub_id, frames, count)) post_drain();
}

void ws_session::on_closed(uint64_t sub_id, const error& why) {
  if (inbox_.set_closed(sub_id, why)) post_drain();
}

void ws_session::on_presence(uint64_t sub_id, const presence_ptr& change) {
  if (inbox_.push_presence(sub_id, change)) post_drain();
}

void ws_session::post_drain() {
  if (state_->halted()) return;
  asio::post(executor_, beast::bind_front_handler(&ws_session::on_drain, shared_from_this()));
}

void ws_session::on_drain() {
  inbox_.drain(batch_);
  if (batch_.overflowed) {
    batch_.overflowed = false;
    for (const auto& it : batch_.items) inbox_.release(counted_bytes(it));
    batch_.items.clear();
    if (phase_ == phase::open) slow_consumer(batch_.overflow_bytes);
    return;
  }
  for (auto& it : batch_.items) {
    if (it.frame) {
      auto* s = find(it.sub_id);
      // Dropped: unsubscribed meanwhile, closing, or a duplicate (seq <= the last one queued;
      // a gap's seq is the end of the range it reports).
      if (!s || phase_ != phase::open || it.frame->seq <= s->last_seq) {
        inbox_.release(it.frame->bytes.size());
        continue;
      }
      s->last_seq = it.frame->seq;
      const bool terminal = it.frame->terminal;
      queue_.push_counted(std::move(it.frame));
      // After a run's terminal event the edge has ended the subscription already.
      if (terminal) erase(it.sub_id);
      continue;
    }
    auto& n = *it.other;
    if (n.subscribed) {
      on_answer(it.sub_id, *n.subscribed);
    } else if (n.closed) {
      on_sub_closed(it.sub_id, *n.closed);
    } else if (n.presence) {
      const auto size = n.presence->ws_frame ? n.presence->ws_frame->bytes.size() : 0;
      if (phase_ == phase::open && find(it.sub_id) && n.presence->ws_frame)
        queue_.push_counted(n.presence->ws_frame);
      else
        inbox_.release(size);
    }
  }
  batch_.items.clear();
  pump();
}

void ws_session::on_answer(uint64_t sub_id, const result<subscribe_ok>& answer) {
  auto* s = find(sub_id);
  if (!s || phase_ != phase::open || s->acked) return;
  op_finished();  // the subscribe (or join) op that waited for this answer
  if (!answer) {
    // The edge has forgotten the subscription already.
    auto ref = std::move(s->ref);
    auto topic = std::move(s->topic);
    const auto kind = s->kind;
    erase(sub_id);
    if (kind == sub_kind::join) leave_room(topic.substr(5));
    return send_topic_error(ref, topic, answer.err());
  }
  s->acked = true;
  send_text(ws::encode_ack_subscribe(s->ref, s->topic, answer->last_seq, answer->recovered));
  std::string{}.swap(s->ref);
}

void ws_session::on_sub_closed(uint64_t sub_id, const error& why) {
  auto* s = find(sub_id);
  if (!s || phase_ != phase::open) return;
  auto topic = std::move(s->topic);
  erase(sub_id);
  // The topic ended the subscription (a run passivated, a room stopped): the client may
  // subscribe again, with `after`, wherever the topic lives next.
  send_topic_error({}, topic, why);
}

ws_session::subscription* ws_session::find(uint64_t sub_id) {
  for (auto& s : subs_)
    if (s.id == sub_id) return &s;
  return nullptr;
}

ws_session::subscription* ws_session::find_topic(std::string_view topic) {
  for (auto& s : subs_)
    if (s.topic == topic) return &s;
  return nullptr;
}

void ws_session::erase(uint64_t sub_id) {
  auto it = std::find_if(subs_.begin(), subs_.end(),
                         [sub_id](const subscription& s) { return s.id == sub_id; });
  if (it == subs_.end()) return;
  *it = std::move(subs_.back());
  subs_.pop_back();
}

// ---- server → client ---------------------------------------------------------------------------

void ws_session::send_text(const std::string& json) {
  queue_counted(ws_frame(ws::opcode::text, json));
}

void ws_session::send_error(std::string_view ref, const error& e) { send_topic_error(ref, {}, e); }

void ws_session::send_topic_error(std::string_view ref, std::string_view topic, const error& e) {
  state_->counters().ws_errors.fetch_add(1, std::memory_order_relaxed);
  send_text(ws::encode_topic_error(ref, topic, e.code, e.message));
}

// Answers the session writes itself count against the same outbound limit as events: a client
// that sends ops (or pings) without reading the answers is a slow consumer too.
void ws_session::queue_counted(frame_ptr f) {
  if (phase_ != phase::open) return;
  const auto size = f->bytes.size();
  if (!inbox_.hold(size)) {
    inbox_.release(size);
    return slow_consumer(inbox_.held_bytes() + size);
  }
  queue_.push_counted(std::move(f));
  pump();
}

// Bytes outside the limit: the 101 answer, server pings (one per interval) and the close frame.
void ws_session::send_control(frame_ptr f) {
  queue_.push_control(std::move(f));
  pump();
}

void ws_session::pump() {
  if (writing_ || phase_ == phase::closed) return;
  if (close_frame_) {
    // Closing: what was not started is dropped (unless flushing) and the close frame goes next,
    // after a partly written frame so the stream stays well-framed.
    if (!flush_on_close_) inbox_.release(queue_.drop_unstarted());
    queue_.push_control(std::move(close_frame_));
    close_frame_.reset();
  }
  if (queue_.empty()) {
    if (phase_ == phase::closing) shutdown_gracefully();
    return;
  }
  do_write();
}

void ws_session::do_write() {
  buffers_.clear();
  queue_.gather(buffers_, max_write_buffers);
  writing_ = true;
  // write_some: one completion per writev, so frames arriving meanwhile join the next gather.
  stream_.socket().async_write_some(
      std::span<const asio::const_buffer>{buffers_},
      beast::bind_front_handler(&ws_session::on_write, shared_from_this()));
}

void ws_session::on_write(beast::error_code ec, std::size_t n) {
  writing_ = false;
  if (!ec) {
    auto& c = state_->counters();
    c.writes.fetch_add(1, std::memory_order_relaxed);
    c.bytes_out.fetch_add(n, std::memory_order_relaxed);
    auto done = queue_.consume(n);
    inbox_.release(done.counted_bytes);
    c.frames_out.fetch_add(done.frames, std::memory_order_relaxed);
  }
  if (phase_ == phase::closed) {
    inbox_.release(queue_.clear());  // closed while this write was in flight
    return;
  }
  if (ec) {
    fail(ec, "write");
    return close_now();
  }
  pump();
}

// One timer per connection serves the ping interval and the token's expiry: it waits for
// whichever comes first. An `auth` op that extends the expiry needs no re-arm: the wait ends at
// the old expiry, finds the new one and waits again.
void ws_session::arm_heartbeat() {
  auto at = next_ping_;
  if (req_.expires_at_s > 0) {
    const auto now = std::chrono::steady_clock::now();
    const auto left = token_deadline_ms(req_.expires_at_s, state_->settings().jwt_leeway_s);
    // Compared before adding: a far `exp` must not overflow the time point.
    if (left < std::chrono::duration_cast<std::chrono::milliseconds>(at - now).count())
      at = now + std::chrono::milliseconds(std::max<int64_t>(left, 0));
  }
  heartbeat_timer_.expires_at(at);
  heartbeat_timer_.async_wait(
      beast::bind_front_handler(&ws_session::on_heartbeat, shared_from_this()));
}

void ws_session::on_heartbeat(beast::error_code ec) {
  if (ec || phase_ != phase::open) return;
  const auto& cfg = state_->settings();
  if (req_.expires_at_s > 0 && token_deadline_ms(req_.expires_at_s, cfg.jwt_leeway_s) <= 0) {
    state_->counters().token_expiries.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("ws token_expired peer={} session={} user={}", peer_, session_id_, req_.who.sub);
    send_error({}, error{errc::unauthorized, "token expired"});
    return begin_close(ws::close_code::policy, "token expired (send auth with a fresh one)", true);
  }
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_ping_) {
    const auto silent = now - last_heard_;
    if (silent >= std::chrono::milliseconds(cfg.ws_timeout_ms)) {
      state_->refusals().refuse(
          refusal::ws_timeout, address_of(peer_),
          fmt::format("silent_ms={}",
                      std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()));
      return begin_close(ws::close_code::going_away, "heartbeat timeout", false);
    }
    send_control(ping_frame());
    next_ping_ = now + std::chrono::milliseconds(cfg.ws_heartbeat_ms);
  }
  arm_heartbeat();
}

void ws_session::slow_consumer(std::size_t demanded) {
  state_->counters().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("ws slow_consumer peer={} session={} demanded={} limit={}", peer_, session_id_,
               demanded, inbox_.limit());
  begin_close(ws::close_code::slow_consumer, "slow consumer", false);
}

// ---- the end -----------------------------------------------------------------------------------

// Starts the close handshake: subscriptions and presence end now; the close frame follows what
// is being written (and, with `flush`, everything queued); then our side shuts down and the
// peer's close (or EOF, or close_timeout) ends the connection.
void ws_session::begin_close(uint16_t code, std::string_view reason, bool flush) {
  if (phase_ != phase::open) return;
  phase_ = phase::closing;
  spdlog::debug("ws closing peer={} session={} code={} reason={}", peer_, session_id_, code,
                reason);
  release_everything();
  heartbeat_timer_.cancel();
  flush_on_close_ = flush;
  close_frame_ = raw_frame(ws::close_frame(code, reason));
  linger_timer_.expires_after(close_timeout);
  linger_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) self->close_now();
  });
  pump();
}

// Ends every subscription and presence of this connection (once).
void ws_session::release_everything() {
  if (released_) return;
  released_ = true;
  inbox_.close();
  auto& n = state_->node();
  for (const auto& s : subs_) n.unsubscribe(s.id);
  subs_.clear();
  for (const auto& room : joined_) n.leave(req_.who, room, session_id_, [](result<uint32_t>) {});
  joined_.clear();
}

// Our close frame is out: half-close, then wait for the peer's close frame or EOF (the pending
// read completes), bounded by the linger timer armed in begin_close.
void ws_session::shutdown_gracefully() {
  if (shut_down_) return;
  shut_down_ = true;
  if (peer_closed_) return close_now();  // the handshake is complete
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return close_now();
  do_read();
}

void ws_session::close_now() {
  if (phase_ == phase::closed) return;
  release_everything();
  phase_ = phase::closed;
  spdlog::debug("ws close peer={} session={}", peer_, session_id_);
  // A write in flight still references the queued frames: then on_write drops them.
  if (!writing_) inbox_.release(queue_.clear());
  heartbeat_timer_.cancel();
  linger_timer_.cancel();
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
}

void ws_session::fail(beast::error_code ec, const char* what) {
  if (expected_disconnect(ec)) return;
  spdlog::debug("ws {} peer={} session={} error={}", what, peer_, session_id_, ec.message());
}

}  // namespace relay::net
