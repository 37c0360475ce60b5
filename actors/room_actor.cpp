// The room actor (see room_actor.hpp). Every handler runs on the actor's own turn: no locks.

#include "actors/room_actor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>

#include "protocols/room.hpp"

namespace relay {

namespace {

std::string dedup_key(const std::string& user, const std::string& client_msg_id) {
  std::string key;
  key.reserve(user.size() + 1 + client_msg_id.size());
  key += user;
  key += '\0';
  key += client_msg_id;
  return key;
}

bool is_idle(const room_state& st) noexcept {
  return st.checkpoint->members.empty() && st.edges.empty();
}

/// Records activity. When the room has no members and no edges, makes sure one idle check is
/// pending: it fires at the latest room_idle_s from now and re-arms itself for the remainder if
/// activity happened since (one pending check at a time: CAF 0.17 timers cannot be cancelled).
void touch(room_actor_type* self) {
  auto& st = self->state;
  st.last_activity = self->clock().now();
  if (is_idle(st) && !st.check_pending) {
    st.check_pending = true;
    self->delayed_send(self, st.idle, check_atom::value);
  }
}

void check_idle(room_actor_type* self) {
  auto& st = self->state;
  st.check_pending = false;
  if (!is_idle(st)) return;  // armed again by the touch that makes the room empty
  auto elapsed = self->clock().now() - st.last_activity;
  if (elapsed < st.idle) {
    st.check_pending = true;
    self->delayed_send(self, st.idle - elapsed, check_atom::value);
    return;
  }
  // Passivate: last_seq stays in the shard's checkpoint; the dedup window goes with the ring
  // (a retry arriving after room_idle_s of silence is a new message).
  node_counters::add(st.counters->passivations);
  st.checkpoint->recent = {};
  spdlog::debug("room passivate id={} last_seq={}", st.id, st.ring.last_seq());
  self->quit();
}

/// Appends one event, numbers it, and sends it once to every subscribed edge. The only place a
/// room assigns seq.
void publish(room_actor_type* self, event e) {
  auto& st = self->state;
  st.ring.push(e);
  st.checkpoint->last_seq.store(st.ring.last_seq(), std::memory_order_relaxed);
  node_counters::add(st.counters->events_in);
  node_counters::add(st.counters->room_messages);
  if (st.edges.empty() && !st.storage.enabled()) return;
  std::vector<event> batch;
  batch.push_back(std::move(e));
  // One message shared by the edges and storage (CAF messages are copy-on-write).
  auto msg = caf::make_message(topic_events{st.topic, std::move(batch)});
  for (auto& edge : st.edges) self->send(edge, msg);
  if (st.storage.enabled()) {
    node_counters::add(st.counters->storage_pending, 1);  // discounted by the commit
    self->send(st.storage.actor, msg);
  }
}

/// Fills the ring from what storage holds, so a re-activated or restarted room continues its
/// numbering and replays without a gap. `resume_seq` (the shard's checkpoint) wins when it is
/// ahead: then the events in between were never stored and resumers get a gap.
void restore(room_actor_type* self, stored_tail& tail, uint64_t resume_seq) {
  auto& st = self->state;
  st.ring.reload(std::move(tail.events), std::max(tail.last_seq, resume_seq));
  st.checkpoint->last_seq.store(st.ring.last_seq(), std::memory_order_relaxed);
  spdlog::debug("room restored id={} last_seq={} ring={}", st.id, st.ring.last_seq(),
                st.ring.size());
}

/// Presence is ephemeral and off the message path: a separate message to each edge, no seq.
void announce(room_actor_type* self, bool joined, const std::string& user,
              const std::string& session_id) {
  auto& st = self->state;
  spdlog::debug("room presence id={} {} user={} session={}", st.id, joined ? "joined" : "left",
                user, session_id);
  if (st.edges.empty()) return;
  auto msg = caf::make_message(room_presence{st.topic, joined, user, session_id});
  for (auto& edge : st.edges) self->send(edge, msg);
}

caf::error check_session(const std::string& session_id) {
  if (session_id.empty() || session_id.size() > max_session_id_bytes)
    return make_error(errc::bad_request, "session id must be 1..128 bytes");
  return caf::none;
}

}  // namespace

caf::behavior room_actor(room_actor_type* self, room_spec spec,
                         std::shared_ptr<room_checkpoint> checkpoint, node_counters* counters) {
  auto& st = self->state;
  st.id = std::move(spec.id);
  st.topic = "room:" + st.id;
  st.ring = replay_ring{spec.ring_capacity};
  st.checkpoint = std::move(checkpoint);
  st.counters = counters;
  st.dedup_window = spec.dedup_window ? spec.dedup_window : 1;
  st.idle = std::chrono::duration_cast<caf::timespan>(std::chrono::seconds(spec.idle_s));
  st.storage = spec.storage;
  // Without a durable log the ring starts empty; numbering continues, so resuming clients get a
  // `gap` instead of a silent loss. With one, the ring is reloaded before any other message is
  // handled (await keeps them in the mailbox).
  if (spec.resume_seq > 0) st.ring.reset(spec.resume_seq);
  if (st.storage.enabled()) {
    const auto resume = spec.resume_seq;
    restore_from_storage(
        self, st.storage, st.topic, spec.ring_capacity, resume,
        [=](stored_tail& tail) { restore(self, tail, resume); }, [] {});
  }
  node_counters::add(counters->rooms_active, 1);
  self->attach_functor([counters] { node_counters::add(counters->rooms_active, -1); });
  self->set_down_handler([=](caf::down_msg& dm) {
    // An edge went away (its node stopped): it no longer counts as a subscriber.
    auto& edges = self->state.edges;
    edges.erase(std::remove_if(edges.begin(), edges.end(),
                               [&](const caf::actor& e) { return e.address() == dm.source; }),
                edges.end());
    touch(self);
  });
  touch(self);

  return {
      [=](room_post_atom, const caller& who,
          room_message_input& in) -> caf::result<room_post_reply> {
        auto& st = self->state;
        if (!in.has_text && in.data.empty())
          return make_error(errc::bad_request, "a message needs text or data");
        if (st.storage.refuses(*st.counters))
          return make_error(errc::unavailable, "storage is unavailable; try again");
        touch(self);
        auto& recent = st.checkpoint->recent;
        std::string key;
        if (!in.client_msg_id.empty()) {
          key = dedup_key(who.sub, in.client_msg_id);
          if (auto it = recent.answers.find(key); it != recent.answers.end()) return it->second;
        }
        room_post_reply reply{new_message_id(), st.ring.last_seq() + 1};
        const bool wait = st.storage.must_wait(*st.counters);
        publish(self, event{reply.seq, "message", room_message_data(reply.message_id, who.sub, in),
                            now_ms()});
        if (!key.empty()) {
          recent.answers.emplace(key, reply);
          recent.order.push_back(std::move(key));
          while (recent.order.size() > st.dedup_window) {
            recent.answers.erase(recent.order.front());
            recent.order.pop_front();
          }
        }
        if (!wait) return reply;
        // Sync durability or back-pressure: the sender hears back once the message is committed.
        auto rp = self->make_response_promise<room_post_reply>();
        self->request(st.storage.actor, storage_timeout, barrier_atom::value)
            .then([rp, reply](bool) mutable { rp.deliver(reply); },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [=](caf::subscribe_atom, const caller&, uint64_t after, bool from_now,
          const caf::actor& edge) -> caf::result<replay_reply> {
        auto& st = self->state;
        // Registering the edge and answering the replay happen in this one step (invariant 3).
        if (std::find(st.edges.begin(), st.edges.end(), edge) == st.edges.end()) {
          st.edges.push_back(edge);
          self->monitor(edge);
        }
        touch(self);
        return make_replay_reply(st.ring, after, from_now, caf::actor_cast<caf::actor>(self),
                                 *st.counters);
      },
      [=](unsubscribe_atom, const caf::actor& edge) {
        auto& edges = self->state.edges;
        auto it = std::find(edges.begin(), edges.end(), edge);
        if (it == edges.end()) return;
        self->demonitor(edge);
        edges.erase(it);
        touch(self);
      },
      [=](room_join_atom, const caller& who,
          const std::string& session_id) -> caf::result<uint32_t> {
        if (auto err = check_session(session_id)) return err;
        auto& sessions = self->state.checkpoint->members[who.sub];
        bool first = sessions.empty();
        sessions.insert(session_id);
        if (first) {
          node_counters::add(self->state.counters->presence_members, 1);
          announce(self, true, who.sub, session_id);
        }
        touch(self);
        return static_cast<uint32_t>(sessions.size());
      },
      [=](room_leave_atom, const caller& who,
          const std::string& session_id) -> caf::result<uint32_t> {
        if (auto err = check_session(session_id)) return err;
        auto& members = self->state.checkpoint->members;
        auto it = members.find(who.sub);
        if (it == members.end()) return uint32_t{0};
        if (it->second.erase(session_id) == 0) return static_cast<uint32_t>(it->second.size());
        if (!it->second.empty()) return static_cast<uint32_t>(it->second.size());
        members.erase(it);
        node_counters::add(self->state.counters->presence_members, -1);
        announce(self, false, who.sub, session_id);
        touch(self);
        return uint32_t{0};
      },
      [=](presence_atom, const caller&) -> std::vector<presence_member> {
        std::vector<presence_member> out;
        auto& members = self->state.checkpoint->members;
        out.reserve(members.size());
        for (auto& [user, sessions] : members)
          out.push_back({user, static_cast<uint32_t>(sessions.size())});
        touch(self);
        return out;
      },
      [=](check_atom) { check_idle(self); },
  };
}

}  // namespace relay
