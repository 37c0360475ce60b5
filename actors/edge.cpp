// The edge (see edge.hpp). Hot path: topic_events → encode each event once → on_frames per
// session (a pointer append and at most one post in the session's inbox).

#include "actors/edge.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>

#include "protocols/room.hpp"
#include "protocols/sse.hpp"
#include "protocols/ws.hpp"
#include "protocols/ws_frame.hpp"

namespace relay {

namespace {

using topic_entry = edge_state::topic;
using subscription = edge_state::subscription;

/// Re-subscribe attempts after a topic went down abnormally (its supervisor restarts it), and the
/// pause between them: the shard may not have processed the down message yet.
constexpr unsigned max_resubscribe_attempts = 40;
constexpr auto resubscribe_pause = std::chrono::milliseconds(50);
constexpr auto subscribe_timeout = std::chrono::seconds(10);

subscription* find_sub(topic_entry& tp, uint64_t id) {
  for (auto& s : tp.subs)
    if (s.id == id) return &s;
  return nullptr;
}

/// Stops listening to a topic nobody on this node follows any more.
void release_topic(edge_actor_type* self, const std::string& name) {
  auto& st = self->state;
  auto it = st.topics.find(name);
  if (it == st.topics.end() || !it->second.subs.empty()) return;
  if (auto& owner = it->second.owner) {
    self->send(owner, unsubscribe_atom::value, caf::actor_cast<caf::actor>(self));
    self->demonitor(owner);
    st.topic_by_owner.erase(owner.address());
  }
  st.topics.erase(it);
}

void remove_sub(edge_actor_type* self, topic_entry& tp, uint64_t id) {
  auto& st = self->state;
  auto it = std::find_if(tp.subs.begin(), tp.subs.end(),
                         [id](const subscription& s) { return s.id == id; });
  if (it == tp.subs.end()) return;
  if (it->acked) node_counters::add(st.counters->subscriptions, -1);
  st.topic_of.erase(id);
  *it = std::move(tp.subs.back());
  tp.subs.pop_back();
}

std::size_t index(wire_format format) noexcept { return static_cast<std::size_t>(format); }

frame_ptr cached_frame(const topic_entry& tp, const event& e, wire_format format) {
  auto& recent = tp.recent[index(format)];
  if (recent.empty()) return nullptr;
  auto first = recent.front()->seq;
  if (e.seq < first || e.seq - first >= recent.size()) return nullptr;
  auto& f = recent[static_cast<std::size_t>(e.seq - first)];
  return f->seq == e.seq ? f : nullptr;
}

void remember(topic_entry& tp, const frame_ptr& f, wire_format format) {
  auto& recent = tp.recent[index(format)];
  if (!recent.empty() && recent.back()->seq + 1 != f->seq) recent.clear();
  recent.push_back(f);
  if (recent.size() > recent_frames) recent.pop_front();
}

void forget_frames(topic_entry& tp) {
  for (auto& recent : tp.recent) recent.clear();
}

void request_subscribe(edge_actor_type* self, const std::string& name, uint64_t sub_id,
                       const caller& who, uint64_t after, bool from_now = false);

void on_sub_error(edge_actor_type* self, const std::string& name, uint64_t sub_id,
                  const caf::error& err) {
  auto& st = self->state;
  auto t = st.topics.find(name);
  if (t == st.topics.end()) return;
  auto sub = find_sub(t->second, sub_id);
  if (!sub) return;
  // A CAF-level failure (the run died while answering, the shard still had its old handle) is
  // transient while a supervisor restarts the run: try again shortly, a bounded number of times.
  if (err.category() != error_category && sub->retries < max_resubscribe_attempts) {
    ++sub->retries;
    self->delayed_send(self, resubscribe_pause, resub_atom::value, sub_id);
    return;
  }
  auto why = from_caf_error(err);
  if (auto out = sub->out.lock()) {
    if (!sub->acked)
      out->on_subscribed(sub_id, why);
    else
      out->on_closed(sub_id, why);
  }
  remove_sub(self, t->second, sub_id);
  release_topic(self, name);
}

void request_fill(edge_actor_type* self, const std::string& name, uint64_t sub_id, uint64_t after);

/// Hands `events` (seq order) to the sub's sink as frames, skipping what it has; answers whether
/// a terminal event was among them.
bool deliver(edge_actor_type* self, topic_entry& tp, subscription& sub, const std::string& name,
             std::vector<event>& events, const std::shared_ptr<sink>& out) {
  auto& frames = self->state.scratch[index(sub.format)];
  frames.clear();
  bool terminal = false;
  std::size_t n = 0;
  for (auto& e : events) {
    if (e.seq <= sub.sent_seq) continue;
    auto f = cached_frame(tp, e, sub.format);
    if (!f) f = encode_frame(e, sub.format, terminal_type(name, e.type), name);
    terminal = terminal || f->terminal;
    sub.sent_seq = e.seq;
    frames.push_back(std::move(f));
    ++n;
  }
  if (!frames.empty()) out->on_frames(sub.id, frames.data(), frames.size());
  frames.clear();
  node_counters::add(self->state.counters->events_out, n);
  return terminal;
}

void deliver_gap(subscription& sub, const std::string& name, uint64_t from, uint64_t to,
                 const std::shared_ptr<sink>& out) {
  if (to < from || to <= sub.sent_seq) return;
  auto f = encode_gap(std::max(from, sub.sent_seq + 1), to, sub.format, name);
  out->on_frames(sub.id, &f, 1);
  sub.sent_seq = to;
}

/// A chunk of stored events for a sub whose position is older than the topic's ring. The first
/// chunk decides the ack: recovered unless storage lacks the first events asked for (retention).
/// When the gap is covered, the held ring part follows and the sub asks the topic again from its
/// new position, which catches the live events that passed while it was filling.
void on_fill(edge_actor_type* self, const std::string& name, uint64_t sub_id,
             std::vector<event>& events) {
  auto& st = self->state;
  auto t = st.topics.find(name);
  if (t == st.topics.end()) return;
  auto& tp = t->second;
  auto sub = find_sub(tp, sub_id);
  if (!sub || !sub->filling) return;
  auto out = sub->out.lock();
  if (!out) {
    remove_sub(self, tp, sub_id);
    release_topic(self, name);
    return;
  }
  const uint64_t from = sub->sent_seq + 1;
  // Storage holds contiguous seqs from its oldest retained one: what precedes the first
  // returned event (or everything, when none came back) is gone.
  const uint64_t first = events.empty() ? sub->fill_to + 1 : events.front().seq;
  if (!sub->acked) {
    const bool recovered = first <= from;
    if (!recovered) node_counters::add(st.counters->gaps);
    out->on_subscribed(sub_id, subscribe_ok{sub->fill_last_seq, recovered});
    sub->acked = true;
    node_counters::add(st.counters->subscriptions, 1);
  }
  if (first > from) deliver_gap(*sub, name, from, std::min(first - 1, sub->fill_to), out);
  // Only the gap is filled from storage; what follows it comes from the held ring part.
  std::erase_if(events, [to = sub->fill_to](const event& e) { return e.seq > to; });
  bool terminal = deliver(self, tp, *sub, name, events, out);
  if (!terminal && sub->sent_seq < sub->fill_to && events.size() >= fill_chunk) {
    request_fill(self, name, sub_id, sub->sent_seq);
    return;
  }
  // The gap is covered (or storage has no more of it: reported as a gap), then the ring part.
  if (!terminal && sub->sent_seq < sub->fill_to) {
    if (first <= from) node_counters::add(st.counters->gaps);  // not counted at the ack
    deliver_gap(*sub, name, sub->sent_seq + 1, sub->fill_to, out);
  }
  sub->filling = false;
  if (!terminal) terminal = deliver(self, tp, *sub, name, sub->held, out);
  sub->held.clear();
  sub->held.shrink_to_fit();
  if (terminal || sub->fill_ended) {
    if (!terminal) out->on_closed(sub_id, error{errc::not_found, "the run has ended"});
    remove_sub(self, tp, sub_id);
    release_topic(self, name);
    return;
  }
  request_subscribe(self, name, sub_id, sub->who, sub->sent_seq);
}

void request_fill(edge_actor_type* self, const std::string& name, uint64_t sub_id, uint64_t after) {
  self->request(self->state.storage, subscribe_timeout, fill_atom::value, name, after, fill_chunk)
      .then([=](std::vector<event>& events) { on_fill(self, name, sub_id, events); },
            [=](caf::error& err) {
              // Storage cannot help now: what it would have filled is reported as a gap.
              spdlog::warn("replay from storage failed topic={} error={}", name,
                           from_caf_error(err).message);
              std::vector<event> none;
              on_fill(self, name, sub_id, none);
            });
}

/// The topic answered a subscribe: hand the replay to the session, then it is live.
void on_replay(edge_actor_type* self, const std::string& name, uint64_t sub_id, replay_reply& r) {
  auto& st = self->state;
  auto t = st.topics.find(name);
  if (t == st.topics.end()) {
    // Unsubscribed while the answer was on its way: the topic registered us for nothing.
    self->send(r.topic_actor, unsubscribe_atom::value, caf::actor_cast<caf::actor>(self));
    return;
  }
  auto& tp = t->second;
  if (tp.owner != r.topic_actor) {
    if (tp.owner) {
      self->demonitor(tp.owner);
      st.topic_by_owner.erase(tp.owner.address());
    }
    tp.owner = r.topic_actor;
    forget_frames(tp);
    self->monitor(tp.owner);
    st.topic_by_owner[tp.owner.address()] = name;
  }
  auto sub = find_sub(tp, sub_id);
  if (!sub) return;
  auto out = sub->out.lock();
  if (!out) {
    remove_sub(self, tp, sub_id);
    release_topic(self, name);
    return;
  }
  if (r.gap && st.storage && r.gap_to > sub->sent_seq) {
    // Older than the ring: storage fills the gap first (see on_fill).
    sub->filling = true;
    sub->fill_to = r.gap_to;
    sub->fill_last_seq = r.last_seq;
    sub->fill_ended = r.ended;
    sub->held = std::move(r.events);
    sub->retries = 0;
    // The topic counted a gap; on_fill counts one again only if storage cannot cover it.
    st.counters->gaps.fetch_sub(1, std::memory_order_relaxed);
    request_fill(self, name, sub_id, sub->sent_seq);
    return;
  }
  if (!sub->acked) {
    out->on_subscribed(sub_id, subscribe_ok{r.last_seq, !r.gap});
    sub->acked = true;
    node_counters::add(st.counters->subscriptions, 1);
  }
  if (r.gap) deliver_gap(*sub, name, r.gap_from, r.gap_to, out);
  const bool terminal = deliver(self, tp, *sub, name, r.events, out);
  sub->sent_seq = std::max(sub->sent_seq, r.last_seq);
  sub->live = true;
  sub->from_now = false;
  sub->retries = 0;
  if (!terminal && r.ended) out->on_closed(sub_id, error{errc::not_found, "the run has ended"});
  if (terminal || r.ended) {
    remove_sub(self, tp, sub_id);
    release_topic(self, name);
  }
}

void request_subscribe(edge_actor_type* self, const std::string& name, uint64_t sub_id,
                       const caller& who, uint64_t after, bool from_now) {
  auto on_ok = [=](replay_reply& r) { on_replay(self, name, sub_id, r); };
  auto on_err = [=](caf::error& err) { on_sub_error(self, name, sub_id, err); };
  auto me = caf::actor_cast<caf::actor>(self);
  if (name.starts_with("room:")) {
    self->request(self->state.shard, subscribe_timeout, caf::subscribe_atom::value,
                  room_atom::value, name.substr(5), who, after, from_now, me)
        .then(on_ok, on_err);
    return;
  }
  self->request(self->state.shard, subscribe_timeout, caf::subscribe_atom::value, name.substr(4),
                who, after, me)
      .then(on_ok, on_err);
}

/// A room's presence change: one shared note for every session that follows the room.
void on_presence(edge_actor_type* self, room_presence& msg) {
  auto& st = self->state;
  auto t = st.topics.find(msg.topic);
  if (t == st.topics.end()) return;
  auto note = std::make_shared<presence_note>();
  note->room = msg.topic.substr(5);
  note->joined = msg.joined;
  note->user = std::move(msg.user);
  note->session_id = std::move(msg.session_id);
  const auto& subs = t->second.subs;
  if (std::any_of(subs.begin(), subs.end(),
                  [](const subscription& s) { return s.format == wire_format::ws; })) {
    auto json = ws::encode_presence(
        note->room, note->joined ? ws::presence_change::joined : ws::presence_change::left,
        note->user, note->session_id);
    auto f = std::make_shared<frame>();
    ws::append_frame(f->bytes, ws::opcode::text, json);
    note->ws_frame = std::move(f);
  }
  presence_ptr shared = std::move(note);
  for (auto& sub : t->second.subs) {
    if (!sub.acked) continue;  // never ahead of on_subscribed
    if (auto out = sub.out.lock()) out->on_presence(sub.id, shared);
  }
}

/// Registers a subscription and asks the topic for its replay.
void add_subscription(edge_actor_type* self, uint64_t sub_id, const caller& who,
                      const std::string& topic, uint64_t after, bool from_now,
                      std::weak_ptr<sink>& out) {
  auto& st = self->state;
  auto sink_ptr = out.lock();
  if (!sink_ptr) return;
  if (!known_topic(topic)) {
    sink_ptr->on_subscribed(sub_id, error{errc::not_found, "unknown topic"});
    return;
  }
  if (st.topic_of.count(sub_id)) {
    sink_ptr->on_subscribed(sub_id, error{errc::conflict, "subscription id in use"});
    return;
  }
  from_now = from_now && topic.starts_with("room:");  // runs replay from `after` (0: all)
  subscription sub;
  sub.id = sub_id;
  sub.who = who;
  sub.out = std::move(out);
  sub.format = sink_ptr->format();
  sub.sent_seq = from_now ? 0 : after;
  sub.from_now = from_now;
  st.topics[topic].subs.push_back(std::move(sub));
  st.topic_of.emplace(sub_id, topic);
  request_subscribe(self, topic, sub_id, who, from_now ? 0 : after, from_now);
}

/// Live events of a topic: encode each once, hand the shared frames to every live session.
void on_events(edge_actor_type* self, topic_events& msg) {
  auto& st = self->state;
  auto t = st.topics.find(msg.topic);
  if (t == st.topics.end() || msg.events.empty()) {
    // A stale registration (we released the topic while events were in flight): say so again.
    if (t == st.topics.end())
      if (auto src = caf::actor_cast<caf::actor>(self->current_sender()))
        self->send(src, unsubscribe_atom::value, caf::actor_cast<caf::actor>(self));
    return;
  }
  auto& tp = t->second;
  // Encode each event once per wire format that a live session of this node reads.
  std::array<bool, wire_format_count> wanted{};
  for (auto& sub : tp.subs)
    if (sub.live) wanted[index(sub.format)] = true;
  // (A cache that misses some seqs restarts at its next event: remember() keeps them contiguous.)
  bool terminal = false;
  for (auto& e : msg.events) terminal = terminal || terminal_type(msg.topic, e.type);
  std::size_t encoded = 0;
  for (std::size_t k = 0; k < wire_format_count; ++k) {
    auto& frames = st.scratch[k];
    frames.clear();
    if (!wanted[k]) continue;
    const auto format = static_cast<wire_format>(k);
    for (auto& e : msg.events) {
      auto f = encode_frame(e, format, terminal_type(msg.topic, e.type), msg.topic);
      remember(tp, f, format);
      frames.push_back(std::move(f));
    }
    encoded += frames.size();
  }
  node_counters::add(st.counters->frames_encoded, encoded);
  const uint64_t first = msg.events.front().seq;
  const uint64_t last = msg.events.back().seq;
  uint64_t delivered = 0;
  std::vector<uint64_t> finished;
  for (auto& sub : tp.subs) {
    if (!sub.live) continue;  // its replay is on the way and covers these events
    auto out = sub.out.lock();
    if (!out) {
      finished.push_back(sub.id);
      continue;
    }
    if (sub.sent_seq >= last) continue;
    auto& frames = st.scratch[index(sub.format)];
    std::size_t from =
        sub.sent_seq >= first ? static_cast<std::size_t>(sub.sent_seq - first + 1) : 0;
    out->on_frames(sub.id, frames.data() + from, frames.size() - from);
    delivered += frames.size() - from;
    sub.sent_seq = last;
    if (terminal) finished.push_back(sub.id);
  }
  for (auto& frames : st.scratch) frames.clear();
  node_counters::add(st.counters->events_out, delivered);
  if (!finished.empty()) {
    for (auto id : finished) remove_sub(self, tp, id);
    release_topic(self, msg.topic);
  }
}

void on_topic_down(edge_actor_type* self, caf::down_msg& dm) {
  auto& st = self->state;
  auto o = st.topic_by_owner.find(dm.source);
  if (o == st.topic_by_owner.end()) return;
  auto name = std::move(o->second);
  st.topic_by_owner.erase(o);
  auto t = st.topics.find(name);
  if (t == st.topics.end()) return;
  auto& tp = t->second;
  tp.owner = nullptr;
  forget_frames(tp);
  if (dm.reason == caf::exit_reason::normal || dm.reason == caf::exit_reason::user_shutdown) {
    // Passivated or stopped: the streams end; clients resume wherever the topic lives next.
    for (auto& sub : tp.subs) {
      if (auto out = sub.out.lock())
        out->on_closed(sub.id, error{errc::unavailable, "the topic was closed"});
      if (sub.acked) node_counters::add(st.counters->subscriptions, -1);
      st.topic_of.erase(sub.id);
    }
    st.topics.erase(t);
    return;
  }
  // Crashed: its supervisor restarts it. Every live session resumes from what it was sent; those
  // still waiting for a replay get an error answer to their request and retry on their own.
  for (auto& sub : tp.subs) {
    if (!sub.live) continue;
    sub.live = false;
    request_subscribe(self, name, sub.id, sub.who, sub.sent_seq);
  }
}

}  // namespace

bool known_topic(const std::string& topic) noexcept {
  if (topic.starts_with("run:")) return topic.size() > 4;
  return topic.starts_with("room:") && valid_room_id(std::string_view{topic}.substr(5));
}

bool terminal_type(const std::string& topic, const std::string& type) noexcept {
  return topic.starts_with("run:") &&
         (type == "complete" || type == "error" || type == "cancelled");
}

namespace {

/// A WebSocket text frame around `json` (header first, so one buffer holds the whole frame).
std::string ws_text_frame(std::string_view json) {
  std::string out;
  out.reserve(ws::frame_header_size(json.size()) + json.size());
  ws::append_frame(out, ws::opcode::text, json);
  return out;
}

}  // namespace

frame_ptr encode_frame(const event& e, wire_format format, bool terminal, std::string_view topic) {
  auto f = std::make_shared<frame>();
  f->what = frame::kind::event;
  f->seq = e.seq;
  f->terminal = terminal;
  if (format == wire_format::sse) {
    f->bytes = sse_frame(e);
  } else {
    thread_local std::string json;  // the edge runs on any CAF thread; reused per event
    json.clear();
    ws::append_event(json, topic, e);
    f->bytes = ws_text_frame(json);
  }
  return f;
}

frame_ptr encode_gap(uint64_t from, uint64_t to, wire_format format, std::string_view topic) {
  auto f = std::make_shared<frame>();
  f->what = frame::kind::gap;
  f->seq = to;
  f->bytes = format == wire_format::sse ? sse_gap_frame(from, to)
                                        : ws_text_frame(ws::encode_gap(topic, from, to));
  return f;
}

caf::behavior edge_actor(edge_actor_type* self, caf::actor shard, node_counters* counters,
                         caf::actor storage) {
  self->state.shard = std::move(shard);
  self->state.storage = std::move(storage);
  self->state.counters = counters;
  self->set_down_handler([=](caf::down_msg& dm) { on_topic_down(self, dm); });
  return {
      [=](caf::subscribe_atom, uint64_t sub_id, const caller& who, const std::string& topic,
          uint64_t after, std::weak_ptr<sink>& out) {
        add_subscription(self, sub_id, who, topic, after, false, out);
      },
      [=](caf::subscribe_atom, uint64_t sub_id, const caller& who, const std::string& topic,
          uint64_t after, bool from_now, std::weak_ptr<sink>& out) {
        add_subscription(self, sub_id, who, topic, after, from_now, out);
      },
      [=](unsubscribe_atom, uint64_t sub_id) {
        auto& st = self->state;
        auto it = st.topic_of.find(sub_id);
        if (it == st.topic_of.end()) return;
        auto name = it->second;
        auto t = st.topics.find(name);
        if (t != st.topics.end()) {
          remove_sub(self, t->second, sub_id);
          release_topic(self, name);
        }
      },
      [=](resub_atom, uint64_t sub_id) {
        auto& st = self->state;
        auto it = st.topic_of.find(sub_id);
        if (it == st.topic_of.end()) return;
        auto name = it->second;
        auto sub = find_sub(st.topics[name], sub_id);
        if (sub) request_subscribe(self, name, sub_id, sub->who, sub->sent_seq, sub->from_now);
      },
      [=](topic_events& msg) { on_events(self, msg); },
      [=](room_presence& msg) { on_presence(self, msg); },
      [=](stop_atom) {
        auto& st = self->state;
        for (auto& [name, tp] : st.topics)
          for (auto& sub : tp.subs)
            if (auto out = sub.out.lock())
              out->on_closed(sub.id, error{errc::unavailable, "the server is stopping"});
        st.topics.clear();
        st.topic_of.clear();
        node_counters::add(st.counters->subscriptions,
                           -st.counters->subscriptions.load(std::memory_order_relaxed));
        self->quit();
      },
  };
}

}  // namespace relay
