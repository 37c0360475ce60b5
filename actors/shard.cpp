// The shard (see shard.hpp): activation, lookup and supervision of runs.

#include "actors/shard.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>

namespace relay {

namespace {

using record = shard_state::record;

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

/// A run actor went down. Normal exits are passivations. Abnormal ones are restarted within the
/// budget (max restart_max restarts in restart_window_s, a sliding window as OTP supervisors keep
/// it); past the budget the run is started once more only to end as failed/crashed, so that its
/// subscribers receive the `error` event.
void on_down(shard_actor_type* self, caf::down_msg& dm) {
  auto& st = self->state;
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
    st.runs.erase(it);
    return;
  }
  auto now = self->clock().now();
  auto window =
      std::chrono::duration_cast<caf::timespan>(std::chrono::seconds(st.settings.restart_window_s));
  while (!rec.restarts.empty() && now - rec.restarts.front() >= window) rec.restarts.pop_front();
  rec.spec.resume_seq = rec.checkpoint->last_seq.load(std::memory_order_relaxed);
  if (rec.restarts.size() < st.settings.restart_max) {
    rec.restarts.push_back(now);
    node_counters::add(st.counters->restarts);
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

}  // namespace

caf::behavior shard_actor(shard_actor_type* self, node_settings settings, node_counters* counters) {
  self->state.settings = std::move(settings);
  self->state.counters = counters;
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
        record rec;
        rec.spec.info.id = new_run_id();
        rec.spec.info.kind = req.kind;
        rec.spec.info.owner = owner;
        rec.spec.info.created_at = now_ms();
        req.owner = owner;
        rec.spec.request = std::move(req);
        rec.spec.ring_capacity = st.settings.ring_capacity;
        rec.spec.synthetic_batch = st.settings.synthetic_batch;
        rec.checkpoint = std::make_shared<run_checkpoint>();
        auto id = rec.spec.info.id;
        if (!rec.spec.request.idempotency_key.empty())
          st.idempotency[{owner, rec.spec.request.idempotency_key}] = id;
        auto& stored = st.runs.emplace(id, std::move(rec)).first->second;
        start_run(self, stored);
        node_counters::add(st.counters->runs_created);
        spdlog::debug("run create id={} owner={} kind={}", id, owner,
                      to_string(stored.spec.info.kind));
        return create_run_reply{current_info(stored), true};
      },
      [=](caf::get_atom, const std::string& id, const caller& who) -> caf::result<run_info> {
        auto rec = find(self, id);
        if (!rec) return no_such_run();
        auto rp = self->make_response_promise();
        rp.delegate(rec->handle, caf::get_atom::value, who);
        return rp;
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
        auto rec = find(self, id);
        if (!rec) return no_such_run();
        auto rp = self->make_response_promise();
        rp.delegate(rec->handle, append_atom::value, who, std::move(events));
        return rp;
      },
      [=](finish_atom, const std::string& id, const caller& who, finish_kind how,
          std::string& data) -> caf::result<run_info> {
        auto rec = find(self, id);
        if (!rec) return no_such_run();
        auto rp = self->make_response_promise();
        rp.delegate(rec->handle, finish_atom::value, who, how, std::move(data));
        return rp;
      },
      [=](caf::subscribe_atom, const std::string& id, const caller& who, uint64_t after,
          const caf::actor& edge) -> caf::result<replay_reply> {
        auto rec = find(self, id);
        if (!rec) return no_such_run();
        auto rp = self->make_response_promise();
        rp.delegate(rec->handle, caf::subscribe_atom::value, who, after, edge);
        return rp;
      },
      [=](ended_atom, run_info& info) {
        if (auto rec = find(self, info.id)) {
          rec->spec.info = std::move(info);
          forget_key(self, rec->spec);
        }
      },
      [=](stop_atom) {
        auto& st = self->state;
        st.stopping = true;
        for (auto& [id, rec] : st.runs)
          self->send_exit(rec.handle, caf::exit_reason::user_shutdown);
        self->quit();
      },
  };
}

}  // namespace relay
