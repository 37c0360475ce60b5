// The shard (see shard.hpp): activation, lookup and supervision of runs and rooms.

#include "actors/shard.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>

#include "protocols/room.hpp"

namespace relay {

namespace {

using record = shard_state::record;
using room_record = shard_state::room_record;
using time_point = caf::actor_clock::time_point;

/// Drops restarts older than restart_window_s from `restarts` (a sliding window, as OTP
/// supervisors keep it).
void prune_restarts(shard_actor_type* self, std::deque<time_point>& restarts) {
  auto now = self->clock().now();
  auto window = std::chrono::duration_cast<caf::timespan>(
      std::chrono::seconds(self->state.settings.restart_window_s));
  while (!restarts.empty() && now - restarts.front() >= window) restarts.pop_front();
}

/// The restart budget shared by runs and rooms: max restart_max restarts in restart_window_s.
/// Records and counts a restart and answers true when one is still allowed.
bool take_restart(shard_actor_type* self, std::deque<time_point>& restarts) {
  auto& st = self->state;
  prune_restarts(self, restarts);
  if (restarts.size() >= st.settings.restart_max) return false;
  restarts.push_back(self->clock().now());
  node_counters::add(st.counters->restarts);
  return true;
}

caf::actor start_run(shard_actor_type* self, record& rec) {
  auto& st = self->state;
  auto handle = self->spawn<caf::monitored>(run_actor, rec.spec, caf::actor_cast<caf::actor>(self),
                                            rec.checkpoint, st.counters);
  st.by_addr[handle.address()] = rec.spec.info.id;
  rec.handle = handle;
  return handle;
}

run_info current_info(const record& rec) {
  run_info info = rec.spec.info;
  info.last_seq = rec.checkpoint->last_seq.load(std::memory_order_relaxed);
  return info;
}

void forget_key(shard_actor_type* self, const run_spec& spec) {
  auto& keys = self->state.idempotency;
  if (spec.request.idempotency_key.empty()) return;
  auto it = keys.find({spec.info.owner, spec.request.idempotency_key});
  if (it != keys.end() && it->second == spec.info.id) keys.erase(it);
}

/// runs.max_active_per_user bookkeeping: a run counts from its creation (or adoption while
/// running) until the shard learns that it ended.
void count_active(shard_state& st, const std::string& owner) { ++st.active_by_owner[owner]; }

void uncount_active(shard_state& st, const std::string& owner) {
  auto it = st.active_by_owner.find(owner);
  if (it == st.active_by_owner.end()) return;
  if (--it->second == 0) st.active_by_owner.erase(it);
}

/// A run actor went down. Normal exits are passivations. Abnormal ones are restarted within the
/// budget (max restart_max restarts in restart_window_s, a sliding window as OTP supervisors keep
/// it); past the budget the run is started once more only to end as failed/crashed, so that its
/// subscribers receive the `error` event.
void on_room_down(shard_actor_type* self, caf::down_msg& dm);

void on_down(shard_actor_type* self, caf::down_msg& dm) {
  auto& st = self->state;
  if (st.room_by_addr.count(dm.source)) {
    on_room_down(self, dm);
    return;
  }
  auto a = st.by_addr.find(dm.source);
  if (a == st.by_addr.end()) return;
  auto id = std::move(a->second);
  st.by_addr.erase(a);
  auto it = st.runs.find(id);
  if (it == st.runs.end()) return;
  auto& rec = it->second;
  if (dm.reason == caf::exit_reason::normal || st.stopping || is_terminal(rec.spec.info.status)) {
    // Passivated after its TTL (or crashed when already terminal: nothing left to serve).
    forget_key(self, rec.spec);
    if (!is_terminal(rec.spec.info.status)) uncount_active(st, rec.spec.info.owner);
    st.runs.erase(it);
    return;
  }
  rec.spec.resume_seq = rec.checkpoint->last_seq.load(std::memory_order_relaxed);
  if (take_restart(self, rec.restarts)) {
    spdlog::warn("run restart id={} reason={} resume_seq={} restarts_in_window={}", id,
                 caf::to_string(dm.reason), rec.spec.resume_seq, rec.restarts.size());
  } else {
    rec.spec.crashed = true;
    node_counters::add(st.counters->crashes_final);
    spdlog::error("run crashed id={} reason={} restart budget exhausted ({} in {} s)", id,
                  caf::to_string(dm.reason), st.settings.restart_max, st.settings.restart_window_s);
  }
  start_run(self, rec);
}

/// Answers `rp`-style: finds a run or returns not_found.
record* find(shard_actor_type* self, const std::string& id) {
  auto it = self->state.runs.find(id);
  return it == self->state.runs.end() ? nullptr : &it->second;
}

caf::error no_such_run() { return make_error(errc::not_found, "no such run"); }

/// The create request of a stored run (a synthetic run's parameters are parsed from its input).
create_run_request stored_request(const shard_state& st, const storage::run_row& row) {
  create_run_request req;
  if (row.info.kind == run_kind::synthetic) {
    auto parsed =
        parse_create_run(R"({"kind":"synthetic","input":)" + row.input + "}", st.settings.limits);
    if (parsed)
      req = std::move(*parsed);
    else
      spdlog::warn("run restore id={}: stored input no longer parses ({}); defaults used",
                   row.info.id, parsed.err().message);
  }
  req.kind = row.info.kind;
  req.input = row.input;
  req.idempotency_key = row.idempotency_key;
  req.owner = row.info.owner;
  req.inactivity_s = row.inactivity_s;
  req.ttl_s = row.ttl_s;
  return req;
}

/// Takes over a run that storage knows and this shard does not (after a restart of the process,
/// or after its actor passivated): its actor starts again from the stored row and reloads its
/// ring and seq from storage. A running one gets its inactivity timer again; a synthetic one
/// continues emitting; a finished one stays replayable for its TTL.
record& adopt(shard_actor_type* self, storage::run_row row) {
  auto& st = self->state;
  record rec;
  rec.spec.request = stored_request(st, row);
  rec.spec.info = std::move(row.info);
  rec.spec.ring_capacity = st.settings.ring_capacity;
  rec.spec.synthetic_batch = st.settings.synthetic_batch;
  rec.spec.storage = st.storage;
  rec.spec.from_storage = true;
  rec.checkpoint = std::make_shared<run_checkpoint>();
  rec.checkpoint->last_seq.store(rec.spec.info.last_seq, std::memory_order_relaxed);
  auto id = rec.spec.info.id;
  if (!is_terminal(rec.spec.info.status) && !rec.spec.request.idempotency_key.empty())
    st.idempotency[{rec.spec.info.owner, rec.spec.request.idempotency_key}] = id;
  if (!is_terminal(rec.spec.info.status)) count_active(st, rec.spec.info.owner);
  auto& stored = st.runs.emplace(id, std::move(rec)).first->second;
  start_run(self, stored);
  spdlog::debug("run adopted from storage id={} status={}", id, to_string(stored.spec.info.status));
  return stored;
}

/// Sends `xs` to run `id` on behalf of the current request (delegated: the run answers the
/// requester). A run this shard does not know is looked up in storage first.
template <class... Ts>
caf::response_promise to_run(shard_actor_type* self, const std::string& id, Ts... xs) {
  auto rp = self->make_response_promise();
  if (auto rec = find(self, id)) {
    rp.delegate(rec->handle, std::move(xs)...);
    return rp;
  }
  auto& st = self->state;
  if (!st.storage.enabled() || !valid_run_id(id)) {
    rp.deliver(no_such_run());
    return rp;
  }
  self->request(st.storage.actor, storage_timeout, load_run_atom::value, id)
      .then(
          [=](storage::run_row& row) mutable {
            auto rec = find(self, id);  // another request may have adopted it meanwhile
            if (!rec) rec = &adopt(self, std::move(row));
            rp.delegate(rec->handle, xs...);
          },
          [=](caf::error& err) mutable {
            auto e = from_caf_error(err);
            rp.deliver(e.code == errc::not_found ? no_such_run() : make_error(e.code, e.message));
          });
  return rp;
}

/// At start: runs that were running when the process ended are taken over again.
void recover_orphans(shard_actor_type* self) {
  auto& st = self->state;
  if (!st.storage.enabled()) return;
  self->request(st.storage.actor, storage_timeout, running_atom::value)
      .then(
          [=](std::vector<storage::run_row>& rows) {
            std::size_t adopted = 0;
            for (auto& row : rows)
              if (!find(self, row.info.id)) {
                adopt(self, std::move(row));
                ++adopted;
              }
            if (adopted > 0) spdlog::info("recovered {} runs left running", adopted);
          },
          [=](caf::error& err) {
            spdlog::error("run recovery failed: {}", from_caf_error(err).message);
          });
}

// -- rooms ------------------------------------------------------------------------------------

void start_room(shard_actor_type* self, const std::string& id, room_record& rec) {
  auto& st = self->state;
  room_spec spec;
  spec.id = id;
  spec.ring_capacity = st.settings.ring_capacity;
  spec.storage = st.storage;
  spec.idle_s = st.settings.room_idle_s;
  spec.dedup_window = st.settings.room_dedup_window;
  spec.resume_seq = rec.checkpoint->last_seq.load(std::memory_order_relaxed);
  rec.handle =
      self->spawn<caf::monitored>(room_actor, std::move(spec), rec.checkpoint, st.counters);
  st.room_by_addr[rec.handle.address()] = id;
}

/// The room's actor, activated on first use (or again after passivation, continuing its seq).
/// A room that crashed past its restart budget stays unavailable until the window has room.
/// On failure answers an empty handle and sets `err`.
caf::actor activate_room(shard_actor_type* self, const std::string& id, caf::error& err) {
  auto& st = self->state;
  if (!valid_room_id(id)) {
    err = make_error(errc::bad_request, "room ids are 1..128 of [A-Za-z0-9._:-]");
    return {};
  }
  if (st.stopping) {
    err = make_error(errc::unavailable, "the server is stopping");
    return {};
  }
  auto& rec = st.rooms[id];
  if (rec.handle) return rec.handle;
  if (!rec.checkpoint) rec.checkpoint = std::make_shared<room_checkpoint>();
  if (rec.broken) {
    prune_restarts(self, rec.restarts);
    if (rec.restarts.size() >= st.settings.restart_max) {
      err = make_error(errc::unavailable, "the room crashed repeatedly; try again later");
      return {};
    }
    rec.broken = false;
  }
  start_room(self, id, rec);
  spdlog::debug("room activate id={} resume_seq={}", id, rec.checkpoint->last_seq.load());
  return rec.handle;
}

/// Normal exits are passivations (the record keeps the seq); crashes restart the room within
/// the same budget as runs. Past it the room is left down (its members stay in the checkpoint),
/// and requests answer unavailable until the window has room again.
void on_room_down(shard_actor_type* self, caf::down_msg& dm) {
  auto& st = self->state;
  auto a = st.room_by_addr.find(dm.source);
  auto id = std::move(a->second);
  st.room_by_addr.erase(a);
  auto it = st.rooms.find(id);
  if (it == st.rooms.end()) return;
  auto& rec = it->second;
  if (rec.handle.address() == dm.source) rec.handle = nullptr;
  if (dm.reason == caf::exit_reason::normal || st.stopping) return;
  if (!rec.handle && take_restart(self, rec.restarts)) {
    spdlog::warn("room restart id={} reason={} resume_seq={} restarts_in_window={}", id,
                 caf::to_string(dm.reason), rec.checkpoint->last_seq.load(), rec.restarts.size());
    start_room(self, id, rec);
    return;
  }
  rec.broken = true;
  node_counters::add(st.counters->crashes_final);
  spdlog::error("room crashed id={} reason={} restart budget exhausted ({} in {} s)", id,
                caf::to_string(dm.reason), st.settings.restart_max, st.settings.restart_window_s);
}

bool receiver_down(const caf::error& e) {
  return e.category() == caf::atom("system") &&
         e.code() == static_cast<uint8_t>(caf::sec::request_receiver_down);
}

/// Forwards a request to a room and its answer back. Unlike `delegate`, the answer passes through
/// the shard, so a request that reached a room in the instant it passivated (the shard had not
/// seen it down yet) is retried once on a fresh activation instead of failing.
template <class T, class... Ts>
void ask_room(shard_actor_type* self, std::string id, caf::response_promise rp, bool retry,
              Ts... xs) {
  caf::error err;
  auto handle = activate_room(self, id, err);
  if (!handle) {
    rp.deliver(std::move(err));
    return;
  }
  self->request(handle, caf::infinite, xs...)
      .then([rp](T& x) mutable { rp.deliver(std::move(x)); },
            [=](caf::error& e) mutable {
              if (retry && receiver_down(e)) {
                auto it = self->state.rooms.find(id);
                if (it != self->state.rooms.end() && it->second.handle == handle) {
                  self->state.room_by_addr.erase(handle.address());
                  it->second.handle = nullptr;
                }
                ask_room<T>(self, id, rp, false, xs...);
                return;
              }
              rp.deliver(std::move(e));
            });
}

template <class T, class... Ts>
caf::result<T> to_room(shard_actor_type* self, const std::string& id, Ts... xs) {
  caf::error err;
  if (!activate_room(self, id, err)) return err;
  auto rp = self->make_response_promise();
  ask_room<T>(self, id, rp, true, std::move(xs)...);
  return rp;
}

}  // namespace

caf::behavior shard_actor(shard_actor_type* self, node_settings settings, node_counters* counters,
                          storage_link storage) {
  self->state.settings = std::move(settings);
  self->state.counters = counters;
  self->state.storage = std::move(storage);
  recover_orphans(self);
  self->set_down_handler([=](caf::down_msg& dm) { on_down(self, dm); });

  return {
      [=](create_atom, const caller& who,
          create_run_request& req) -> caf::result<create_run_reply> {
        auto& st = self->state;
        if (!req.owner.empty() && req.owner != who.sub && !at_least(who.who, role::service))
          return make_error(errc::forbidden, "only a service may create runs for another owner");
        std::string owner = req.owner.empty() ? who.sub : req.owner;
        if (!req.idempotency_key.empty()) {
          auto k = st.idempotency.find({owner, req.idempotency_key});
          if (k != st.idempotency.end())
            if (auto rec = find(self, k->second); rec && !is_terminal(rec->spec.info.status))
              return create_run_reply{current_info(*rec), false};
        }
        if (const auto max = st.settings.limits.max_active_per_user; max > 0) {
          auto n = st.active_by_owner.find(owner);
          if (n != st.active_by_owner.end() && n->second >= max)
            return make_error(errc::rate_limited, "too many active runs for " + owner +
                                                      " (at most " + std::to_string(max) +
                                                      "): finish one first");
        }
        record rec;
        rec.spec.info.id = new_run_id();
        rec.spec.info.kind = req.kind;
        rec.spec.info.owner = owner;
        rec.spec.info.created_at = now_ms();
        req.owner = owner;
        rec.spec.request = std::move(req);
        rec.spec.ring_capacity = st.settings.ring_capacity;
        rec.spec.synthetic_batch = st.settings.synthetic_batch;
        rec.spec.storage = st.storage;
        rec.checkpoint = std::make_shared<run_checkpoint>();
        auto id = rec.spec.info.id;
        if (!rec.spec.request.idempotency_key.empty())
          st.idempotency[{owner, rec.spec.request.idempotency_key}] = id;
        auto& stored = st.runs.emplace(id, std::move(rec)).first->second;
        count_active(st, owner);
        start_run(self, stored);
        node_counters::add(st.counters->runs_created);
        spdlog::debug("run create id={} owner={} kind={}", id, owner,
                      to_string(stored.spec.info.kind));
        return create_run_reply{current_info(stored), true};
      },
      [=](caf::get_atom, const std::string& id, const caller& who) -> caf::result<run_info> {
        return to_run(self, id, caf::get_atom::value, who);
      },
      [=](list_atom, const caller& who, bool active_only) -> std::vector<run_info> {
        std::vector<run_info> out;
        for (auto& [id, rec] : self->state.runs) {
          if (!may_read(who, rec.spec.info.owner)) continue;
          if (active_only && is_terminal(rec.spec.info.status)) continue;
          out.push_back(current_info(rec));
        }
        std::sort(out.begin(), out.end(), [](const run_info& a, const run_info& b) {
          return a.created_at != b.created_at ? a.created_at > b.created_at : a.id < b.id;
        });
        constexpr std::size_t max_listed = 1000;  // a page bound; history pages come with storage
        if (out.size() > max_listed) out.resize(max_listed);
        return out;
      },
      [=](append_atom, const std::string& id, const caller& who,
          std::vector<event_input>& events) -> caf::result<uint64_t> {
        return to_run(self, id, append_atom::value, who, std::move(events));
      },
      [=](finish_atom, const std::string& id, const caller& who, finish_kind how,
          std::string& data) -> caf::result<run_info> {
        return to_run(self, id, finish_atom::value, who, how, std::move(data));
      },
      [=](caf::subscribe_atom, const std::string& id, const caller& who, uint64_t after,
          const caf::actor& edge) -> caf::result<replay_reply> {
        return to_run(self, id, caf::subscribe_atom::value, who, after, edge);
      },
      [=](room_post_atom, const std::string& room, const caller& who,
          room_message_input& msg) -> caf::result<room_post_reply> {
        return to_room<room_post_reply>(self, room, room_post_atom::value, who, std::move(msg));
      },
      [=](caf::subscribe_atom, room_atom, const std::string& room, const caller& who,
          uint64_t after, bool from_now, const caf::actor& edge) -> caf::result<replay_reply> {
        // Delegated, not forwarded: the room's reply must reach the edge directly, ahead of the
        // live events the room sends it afterwards (invariant 3). The edge retries a subscribe
        // that hit a room in the instant it passivated.
        caf::error err;
        auto room_actor = activate_room(self, room, err);
        if (!room_actor) return err;
        auto rp = self->make_response_promise();
        rp.delegate(room_actor, caf::subscribe_atom::value, who, after, from_now, edge);
        return rp;
      },
      [=](room_join_atom, const std::string& room, const caller& who,
          std::string& session_id) -> caf::result<uint32_t> {
        return to_room<uint32_t>(self, room, room_join_atom::value, who, std::move(session_id));
      },
      [=](room_leave_atom, const std::string& room, const caller& who,
          std::string& session_id) -> caf::result<uint32_t> {
        return to_room<uint32_t>(self, room, room_leave_atom::value, who, std::move(session_id));
      },
      [=](presence_atom, const std::string& room,
          const caller& who) -> caf::result<std::vector<presence_member>> {
        return to_room<std::vector<presence_member>>(self, room, presence_atom::value, who);
      },
      [=](fault_atom, const std::string& topic) -> caf::result<bool> {
        auto& st = self->state;
        if (!st.settings.fault_injection)
          return make_error(errc::forbidden, "fault injection is off");
        caf::actor target;
        if (topic.starts_with("run:")) {
          if (auto rec = find(self, topic.substr(4))) target = rec->handle;
        } else if (topic.starts_with("room:")) {
          auto it = st.rooms.find(topic.substr(5));
          if (it != st.rooms.end()) target = it->second.handle;
        }
        if (!target) return make_error(errc::not_found, "no active actor for " + topic);
        spdlog::warn("fault injected topic={}", topic);
        self->send_exit(target, make_error(errc::internal, "fault injected"));
        return true;
      },
      [=](ended_atom, run_info& info) {
        if (auto rec = find(self, info.id)) {
          if (!is_terminal(rec->spec.info.status) && is_terminal(info.status))
            uncount_active(self->state, rec->spec.info.owner);
          rec->spec.info = std::move(info);
          forget_key(self, rec->spec);
        }
      },
      [=](stop_atom) {
        auto& st = self->state;
        st.stopping = true;
        for (auto& [id, rec] : st.runs)
          self->send_exit(rec.handle, caf::exit_reason::user_shutdown);
        for (auto& [id, rec] : st.rooms)
          if (rec.handle) self->send_exit(rec.handle, caf::exit_reason::user_shutdown);
        self->quit();
      },
  };
}

}  // namespace relay
