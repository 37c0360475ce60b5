// The run actor (see run_actor.hpp). Every handler runs on the actor's own turn: no locks.

#include "actors/run_actor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <string>

#include "protocols/json_text.hpp"

namespace relay {

namespace {

using std::chrono::seconds;

bool may_produce(const caller& who) noexcept { return at_least(who.who, role::service); }

/// The run's row as storage keeps it.
storage::run_row make_row(const run_state& st) {
  storage::run_row row;
  row.info = st.info;
  row.input = st.request.input;
  row.idempotency_key = st.request.idempotency_key;
  row.inactivity_s = st.request.inactivity_s;
  row.ttl_s = st.request.ttl_s;
  return row;
}

/// Appends events to the ring, numbers them, and sends them once to every subscribed edge and to
/// storage. The only place a run assigns seq. `with_row`: the run's row travels to storage in the
/// same message, so both land in the same commit (a terminal event never without its status).
void publish(run_actor_type* self, std::vector<event> batch, bool with_row = false) {
  auto& st = self->state;
  for (auto& e : batch) st.ring.push(e);
  st.info.last_seq = st.ring.last_seq();
  st.checkpoint->last_seq.store(st.info.last_seq, std::memory_order_relaxed);
  node_counters::add(st.counters->events_in, batch.size());
  if (st.edges.empty() && !st.storage.enabled()) return;
  // One message shared by every edge and storage (CAF messages are copy-on-write).
  auto msg = caf::make_message(topic_events{st.topic, std::move(batch)});
  for (auto& edge : st.edges) self->send(edge, msg);
  if (!st.storage.enabled()) return;
  // Counted as pending now, not when storage gets to it: the bound holds while a commit runs.
  node_counters::add(st.counters->storage_pending,
                     static_cast<int64_t>(msg.get_as<topic_events>(0).events.size()));
  if (with_row)
    self->send(st.storage.actor, persist_atom::value, make_row(st), msg.get_as<topic_events>(0));
  else
    self->send(st.storage.actor, msg);
}

/// The run's row alone (at creation: no event yet).
void persist_row(run_actor_type* self) {
  auto& st = self->state;
  if (st.storage.enabled()) self->send(st.storage.actor, persist_atom::value, make_row(st));
}

/// Answers `value` at once, or when `wait` (storage_link::must_wait, asked before the events were
/// sent: sync durability or back-pressure) once storage has committed everything sent so far.
template <class T>
caf::result<T> after_commit(run_actor_type* self, bool wait, T value) {
  auto& st = self->state;
  if (!wait) return value;
  auto rp = self->make_response_promise<T>();
  self->request(st.storage.actor, storage_timeout, barrier_atom::value)
      .then([rp, value](bool) mutable { rp.deliver(std::move(value)); },
            [rp](caf::error& err) mutable { rp.deliver(err); });
  return rp;
}

/// A restarted run refills its ring from storage, so subscribers carry on without a gap.
void restore(run_actor_type* self, stored_tail& tail, uint64_t resume_seq) {
  auto& st = self->state;
  st.ring.reload(std::move(tail.events), std::max(tail.last_seq, resume_seq));
  st.info.last_seq = st.ring.last_seq();
  st.synthetic_emitted = st.info.last_seq;  // a synthetic run emits one delta per seq
  st.checkpoint->last_seq.store(st.info.last_seq, std::memory_order_relaxed);
}

event make_event(run_actor_type* self, std::string type, std::string data) {
  return event{self->state.ring.last_seq() + 1, std::move(type), std::move(data), now_ms()};
}

/// Moves the run to a terminal status and appends its terminal event (complete, error or
/// cancelled). Arms the TTL after which the actor passivates and tells the shard.
void end_run(run_actor_type* self, run_status status, std::string reason, std::string type,
             std::string data) {
  auto& st = self->state;
  st.info.status = status;
  st.info.reason = std::move(reason);
  st.info.ended_at = now_ms();
  std::vector<event> batch;
  batch.push_back(make_event(self, std::move(type), std::move(data)));
  publish(self, std::move(batch), true);
  self->send(st.shard, ended_atom::value, st.info);
  self->delayed_send(self, seconds(st.request.ttl_s), passivate_atom::value);
  spdlog::debug("run end id={} status={} reason={} last_seq={}", st.info.id, to_string(status),
                st.info.reason, st.info.last_seq);
}

/// One pending inactivity check at a time (CAF timers cannot be cancelled): when it fires, the
/// run times out if no producer event came within inactivity_s, else re-arms for the remainder.
void arm_check(run_actor_type* self, caf::timespan in) {
  self->delayed_send(self, in, check_atom::value);
}

void check_inactivity(run_actor_type* self) {
  auto& st = self->state;
  if (is_terminal(st.info.status)) return;
  auto idle = std::chrono::duration_cast<caf::timespan>(seconds(st.request.inactivity_s));
  auto elapsed = self->clock().now() - st.last_activity;
  if (elapsed >= idle) {
    node_counters::add(st.counters->timeouts);
    end_run(self, run_status::timed_out, "inactivity", "error",
            R"({"code":"timed_out","message":"no producer event within )" +
                std::to_string(st.request.inactivity_s) + R"( s"})");
    return;
  }
  arm_check(self, idle - elapsed);
}

std::string synthetic_data(uint64_t i, uint32_t size) {
  std::string data = R"({"i":)" + std::to_string(i) + R"(,"text":")";
  data.append(size, 'x');
  data += "\"}";
  return data;
}

/// One step of the synthetic producer: one delta per tick with an interval, or a batch of
/// `synthetic_batch` deltas per message in flood mode (then yields the mailbox to other messages).
void emit_synthetic(run_actor_type* self) {
  auto& st = self->state;
  if (is_terminal(st.info.status)) return;
  const auto& p = st.request.synthetic;
  uint64_t n = p.interval_ms == 0 ? st.synthetic_batch : 1;
  std::vector<event> batch;
  while (n-- > 0 && st.synthetic_emitted < p.count) {
    ++st.synthetic_emitted;
    event e{st.ring.last_seq() + 1 + batch.size(), "delta",
            synthetic_data(st.synthetic_emitted, p.size), now_ms()};
    batch.push_back(std::move(e));
  }
  if (!batch.empty()) {
    st.last_activity = self->clock().now();
    publish(self, std::move(batch));
  }
  if (st.synthetic_emitted >= p.count) {
    end_run(self, run_status::completed, "", "complete",
            R"({"count":)" + std::to_string(p.count) + "}");
    return;
  }
  if (p.interval_ms == 0)
    self->send(self, emit_atom::value);
  else
    self->delayed_send(self, std::chrono::milliseconds(p.interval_ms), emit_atom::value);
}

}  // namespace

/// `{"by":"<sub>"}`, the sub escaped (it comes from a token).
static std::string cancelled_data(std::string_view sub) {
  std::string out = R"({"by":)";
  append_json_string(out, sub);
  out += '}';
  return out;
}

bool may_read(const caller& who, const std::string& owner) noexcept {
  return who.sub == owner || at_least(who.who, role::service);
}

caf::behavior run_actor(run_actor_type* self, run_spec spec, caf::actor shard,
                        std::shared_ptr<run_checkpoint> checkpoint, node_counters* counters) {
  auto& st = self->state;
  st.info = std::move(spec.info);
  st.request = std::move(spec.request);
  st.topic = "run:" + st.info.id;
  st.ring = replay_ring{spec.ring_capacity};
  st.shard = std::move(shard);
  st.checkpoint = std::move(checkpoint);
  st.counters = counters;
  st.synthetic_batch = spec.synthetic_batch ? spec.synthetic_batch : 1;
  st.storage = spec.storage;
  st.last_activity = self->clock().now();
  node_counters::add(counters->runs_active, 1);
  self->attach_functor([counters] { node_counters::add(counters->runs_active, -1); });

  if (spec.resume_seq > 0) {
    // Restarted by the supervisor. Without a durable log the ring starts empty; numbering
    // continues, so resuming clients get a `gap` instead of a silent loss.
    st.ring.reset(spec.resume_seq);
    st.info.last_seq = spec.resume_seq;
    st.synthetic_emitted = spec.resume_seq;
  }
  // What the run does on top of its log: end as crashed past the restart budget (its `error`
  // event follows the restored events), stay replayable when taken over finished, or go on.
  auto start = [self, crashed = spec.crashed] {
    auto& st = self->state;
    if (crashed) {
      end_run(
          self, run_status::failed, "crashed", "error",
          R"({"code":"crashed","message":"the run crashed more often than its restart budget allows"})");
    } else if (is_terminal(st.info.status)) {
      // A finished run taken over from storage: replayable for its TTL, then passivated again.
      self->delayed_send(self, seconds(st.request.ttl_s), passivate_atom::value);
    } else {
      arm_check(self, std::chrono::duration_cast<caf::timespan>(seconds(st.request.inactivity_s)));
      if (st.info.kind == run_kind::synthetic) self->send(self, emit_atom::value);
    }
  };
  if ((spec.resume_seq > 0 || spec.from_storage) && st.storage.enabled()) {
    // With a durable log: refill the ring first (await holds every other message meanwhile).
    const auto resume = spec.resume_seq;
    restore_from_storage(
        self, st.storage, st.topic, spec.ring_capacity, resume,
        [=](stored_tail& tail) { restore(self, tail, resume); }, start);
  } else {
    if (spec.resume_seq == 0 && !spec.from_storage) persist_row(self);  // a new run
    start();
  }

  return {
      [=](caf::get_atom, const caller& who) -> caf::result<run_info> {
        auto& st = self->state;
        if (!may_read(who, st.info.owner)) return make_error(errc::not_found, "no such run");
        return st.info;
      },
      [=](append_atom, const caller& who, std::vector<event_input>& in) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (!may_read(who, st.info.owner)) return make_error(errc::not_found, "no such run");
        if (!may_produce(who))
          return make_error(errc::forbidden, "appending events needs the service role");
        if (is_terminal(st.info.status))
          return make_error(errc::conflict, "run is " + std::string{to_string(st.info.status)});
        if (st.storage.refuses(*st.counters))
          return make_error(errc::unavailable, "storage is unavailable; try again");
        std::vector<event> batch;
        batch.reserve(in.size());
        auto ts = now_ms();
        auto seq = st.ring.last_seq();
        for (auto& x : in) batch.push_back(event{++seq, std::move(x.type), std::move(x.data), ts});
        st.last_activity = self->clock().now();
        const bool wait = st.storage.must_wait(*st.counters);
        publish(self, std::move(batch));
        return after_commit<uint64_t>(self, wait, st.info.last_seq);
      },
      [=](finish_atom, const caller& who, finish_kind how,
          std::string& data) -> caf::result<run_info> {
        auto& st = self->state;
        if (!may_read(who, st.info.owner)) return make_error(errc::not_found, "no such run");
        if (how != finish_kind::cancel && !may_produce(who))
          return make_error(errc::forbidden, "completing or failing a run needs the service role");
        if (is_terminal(st.info.status))
          return make_error(errc::conflict, "run is " + std::string{to_string(st.info.status)});
        const bool wait = st.storage.must_wait(*st.counters);
        switch (how) {
          case finish_kind::complete:
            end_run(self, run_status::completed, "", "complete", std::move(data));
            break;
          case finish_kind::fail:
            end_run(self, run_status::failed, "failed", "error", std::move(data));
            break;
          case finish_kind::cancel:
            end_run(self, run_status::cancelled, "cancelled by " + who.sub, "cancelled",
                    cancelled_data(who.sub));
            break;
        }
        return after_commit<run_info>(self, wait, st.info);
      },
      [=](caf::subscribe_atom, const caller& who, uint64_t after,
          const caf::actor& edge) -> caf::result<replay_reply> {
        auto& st = self->state;
        if (!may_read(who, st.info.owner)) return make_error(errc::not_found, "no such run");
        // Registering the edge and answering the replay happen in this one step (invariant 3):
        // every later event reaches the edge after this reply.
        if (std::find(st.edges.begin(), st.edges.end(), edge) == st.edges.end())
          st.edges.push_back(edge);
        auto reply = make_replay_reply(st.ring, after, false, caf::actor_cast<caf::actor>(self),
                                       *st.counters);
        reply.ended = is_terminal(st.info.status);
        return reply;
      },
      [=](unsubscribe_atom, const caf::actor& edge) {
        auto& edges = self->state.edges;
        edges.erase(std::remove(edges.begin(), edges.end(), edge), edges.end());
      },
      [=](emit_atom) { emit_synthetic(self); },
      [=](check_atom) { check_inactivity(self); },
      [=](passivate_atom) {
        node_counters::add(self->state.counters->passivations);
        spdlog::debug("run passivate id={}", self->state.info.id);
        self->quit();
      },
  };
}

}  // namespace relay
