// relay::node (see node.hpp): the CAF actor system behind a CAF-free facade.

#include "actors/node.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "actors/counters.hpp"
#include "actors/edge.hpp"
#include "actors/messages.hpp"
#include "actors/shard.hpp"
#include "actors/storage_actor.hpp"
#include "protocols/room.hpp"
#include "storage/store.hpp"

namespace relay {
/// A request a session makes of the actors, run by a bridge actor: sends it and installs the
/// handler that hands the answer to the session's callback.
struct bridge_job {
  std::function<void(caf::event_based_actor*)> run;
};
}  // namespace relay

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(relay::bridge_job)

namespace relay {

namespace {

/// Long-lived actors through which sessions (threads outside CAF) make requests. A short-lived
/// actor per request would cost a spawn and, when it ends, a wake-up of CAF's clock thread
/// (local_actor::cleanup cancels the actor's timeouts there): a context switch per request.
/// `index` only numbers them: CAF 0.17 binds a null tuple for a spawn without arguments (a UBSan
/// finding in caf/detail/init_fun_factory.hpp), so every spawn here passes one.
caf::behavior bridge_actor(caf::event_based_actor* self, std::size_t /*index*/) {
  return {[self](bridge_job& job) { job.run(self); }};
}

/// Requests from sessions carry no timeout of their own: in CAF 0.17 every request with one adds
/// an entry to the clock thread and wakes it, and removes it again at the answer — two thread
/// wake-ups per HTTP request, 6-10 % of the server's CPU under a producer flood (bench/RESULTS.md).
/// An answer still always comes: an actor that ends answers what is in its mailbox with an error
/// (503 here), and where topics wait on others (storage barriers, loads) those requests carry
/// their own timeouts (storage_timeout).
constexpr auto request_timeout = caf::infinite;

class node_config : public caf::actor_system_config {
 public:
  explicit node_config(const node_settings& s) {
    register_message_types(*this);
    auto threads = s.scheduler_threads ? s.scheduler_threads
                                       : std::max(2u, std::thread::hardware_concurrency());
    set("scheduler.max-threads", static_cast<size_t>(threads));
    // A flooding topic yields its worker after this many messages, so one busy actor never
    // holds a scheduler thread for long (CAF's default is unlimited).
    set("scheduler.max-throughput", size_t{256});
    // An idle worker of CAF 0.17's work-stealing scheduler polls its queue before it waits on its
    // condition variable: 100 polls in a spin, then 500 with a 50 µs sleep between them, 25 ms in
    // all. Under a steady load below saturation (an event every few ms) the workers never get to
    // wait and burn the CPU the Asio threads need: the SSE bench's 1 000 events/s × 100 subscribers
    // used 9.3 µs per delivery with CAF's polling and 6.3 µs without, and its p99 fell from 22 ms
    // to 1.6 ms (bench/RESULTS.md). Waiting at once costs a futex wake per message that finds the
    // worker asleep, which the flood figures show is cheaper than the polling.
    const auto polls = static_cast<size_t>(s.scheduler_poll);
    set("work-stealing.aggressive-poll-attempts", polls);
    set("work-stealing.moderate-poll-attempts", polls);
  }
};

}  // namespace

struct node::impl {
  explicit impl(node_settings s) : settings(std::move(s)), config(settings) {
    auto db = open_store(settings.storage);  // throws at start-up when it cannot
    system = std::make_unique<caf::actor_system>(config);
    storage_link link;
    if (db) {
      // Detached: the store's calls block, so the storage actor gets a thread of its own.
      auto writer = system->spawn<caf::detached>(storage_actor, db, settings.storage, &counters);
      storage = system->spawn(storage_front, writer, settings.storage);
      link = storage_link{storage, settings.storage.mode, settings.storage.max_pending_events,
                          settings.storage.backpressure_events};
    }
    shard = system->spawn(shard_actor, settings, &counters, link);
    edge = system->spawn(edge_actor, shard, &counters, storage);
    const std::size_t threads = settings.scheduler_threads ? settings.scheduler_threads
                                                           : std::thread::hardware_concurrency();
    for (std::size_t i = 0; i < std::max<std::size_t>(2, threads); ++i)
      bridges.push_back(system->spawn(bridge_actor, i));
    spdlog::info(
        "node started name={} scheduler_threads={} ring_capacity={} storage={} durability={}",
        settings.name, system->scheduler().num_workers(), settings.ring_capacity, backend(),
        to_string(settings.storage.mode));
  }

  /// The configured store, migrated; null with durability none.
  static std::shared_ptr<storage::store> open_store(const storage_settings& s) {
    if (s.mode == durability::none) return nullptr;
    result<std::unique_ptr<storage::store>> db{errc::internal, "unknown storage.backend"};
    if (s.backend == "sqlite")
      db = storage::open_sqlite(storage::sqlite_options{s.path});
    else if (s.backend == "postgres")
      db = storage::open_postgres(storage::postgres_options{s.postgres});
    if (!db) throw std::runtime_error("storage " + s.backend + ": " + db.err().message);
    auto version = (*db)->migrate();
    if (!version)
      throw std::runtime_error("storage " + s.backend + " migration: " + version.err().message);
    spdlog::info("storage open backend={} {} schema_version={}", s.backend,
                 s.backend == "sqlite" ? "path=" + s.path : std::string{"postgres"}, *version);
    return std::shared_ptr<storage::store>{std::move(*db)};
  }

  std::string backend() const { return storage ? settings.storage.backend : "none"; }

  /// Sends a request from a short-lived actor and calls `done` with the answer on a CAF thread.
  /// Never blocks the caller (no scoped_actor on a request path: CAF-NOTES "Bridging").
  template <class T, class MakeRequest>
  void ask(callback<T> done, MakeRequest make_request) {
    if (stopped.load()) {
      done(result<T>{errc::unavailable, "the server is stopping"});
      return;
    }
    const auto& bridge =
        bridges[next_bridge.fetch_add(1, std::memory_order_relaxed) % bridges.size()];
    caf::anon_send(bridge, bridge_job{[done = std::move(done),
                                       make_request = std::move(make_request)](auto* self) mutable {
                     make_request(self).then(
                         [done](T& x) { done(result<T>{std::move(x)}); },
                         [done](caf::error& e) { done(result<T>{from_caf_error(e)}); });
                   }});
  }

  node_settings settings;
  node_counters counters;
  node_config config;
  std::unique_ptr<caf::actor_system> system;
  caf::actor storage;  // null with durability none
  caf::actor shard;
  caf::actor edge;
  std::vector<caf::actor> bridges;  // ask() takes them in turn
  std::atomic<uint64_t> next_bridge{0};
  std::atomic<uint64_t> next_sub{1};
  std::atomic<bool> stopped{false};
};

node::node(node_settings settings) : impl_(std::make_unique<impl>(std::move(settings))) {}

node::~node() { stop(); }

void node::create_run(const caller& who, create_run_request req, callback<create_run_reply> done) {
  auto shard = impl_->shard;
  impl_->ask<create_run_reply>(std::move(done), [=, req = std::move(req)](auto* self) mutable {
    return self->request(shard, request_timeout, create_atom::value, who, std::move(req));
  });
}

void node::get_run(const caller& who, std::string id, callback<run_info> done) {
  auto shard = impl_->shard;
  impl_->ask<run_info>(std::move(done), [=, id = std::move(id)](auto* self) mutable {
    return self->request(shard, request_timeout, caf::get_atom::value, std::move(id), who);
  });
}

void node::list_runs(const caller& who, bool active_only, callback<std::vector<run_info>> done) {
  auto shard = impl_->shard;
  impl_->ask<std::vector<run_info>>(std::move(done), [=](auto* self) {
    return self->request(shard, request_timeout, list_atom::value, who, active_only);
  });
}

void node::append(const caller& who, std::string id, std::vector<event_input> events,
                  callback<uint64_t> done) {
  auto shard = impl_->shard;
  impl_->ask<uint64_t>(std::move(done),
                       [=, id = std::move(id), events = std::move(events)](auto* self) mutable {
                         return self->request(shard, request_timeout, append_atom::value,
                                              std::move(id), who, std::move(events));
                       });
}

void node::finish(const caller& who, std::string id, finish_kind how, std::string data,
                  callback<run_info> done) {
  auto shard = impl_->shard;
  impl_->ask<run_info>(std::move(done),
                       [=, id = std::move(id), data = std::move(data)](auto* self) mutable {
                         return self->request(shard, request_timeout, finish_atom::value,
                                              std::move(id), who, how, std::move(data));
                       });
}

void node::subscribe(const caller& who, std::string topic, uint64_t after, std::weak_ptr<sink> out,
                     uint64_t sub_id, bool from_now) {
  if (impl_->stopped.load()) {
    if (auto s = out.lock())
      s->on_subscribed(sub_id, error{errc::unavailable, "the server is stopping"});
    return;
  }
  caf::anon_send(impl_->edge, caf::subscribe_atom::value, sub_id, who, std::move(topic), after,
                 from_now, std::move(out));
}

void node::post_message(const caller& who, std::string room, room_message_input msg,
                        callback<room_post_reply> done) {
  auto shard = impl_->shard;
  impl_->ask<room_post_reply>(
      std::move(done), [=, room = std::move(room), msg = std::move(msg)](auto* self) mutable {
        return self->request(shard, request_timeout, room_post_atom::value, std::move(room), who,
                             std::move(msg));
      });
}

void node::join(const caller& who, std::string room, std::string session_id,
                callback<uint32_t> done) {
  auto shard = impl_->shard;
  impl_->ask<uint32_t>(std::move(done), [=, room = std::move(room),
                                         session_id = std::move(session_id)](auto* self) mutable {
    return self->request(shard, request_timeout, room_join_atom::value, std::move(room), who,
                         std::move(session_id));
  });
}

void node::leave(const caller& who, std::string room, std::string session_id,
                 callback<uint32_t> done) {
  auto shard = impl_->shard;
  impl_->ask<uint32_t>(std::move(done), [=, room = std::move(room),
                                         session_id = std::move(session_id)](auto* self) mutable {
    return self->request(shard, request_timeout, room_leave_atom::value, std::move(room), who,
                         std::move(session_id));
  });
}

void node::room_history(const caller&, std::string room, uint64_t before_seq, uint32_t limit,
                        callback<std::vector<event>> done) {
  if (!valid_room_id(room))
    return done(result<std::vector<event>>{errc::bad_request, "invalid room id"});
  auto storage = impl_->storage;
  if (!storage)
    return done(result<std::vector<event>>{
        errc::not_found, "room history needs durable storage (storage.durability is none)"});
  impl_->ask<std::vector<event>>(std::move(done), [=, topic = "room:" + room](auto* self) mutable {
    return self->request(storage, request_timeout, history_atom::value, std::move(topic),
                         before_seq, static_cast<uint64_t>(limit));
  });
}

void node::room_presence(const caller& who, std::string room,
                         callback<std::vector<presence_member>> done) {
  auto shard = impl_->shard;
  impl_->ask<std::vector<presence_member>>(
      std::move(done), [=, room = std::move(room)](auto* self) mutable {
        return self->request(shard, request_timeout, presence_atom::value, std::move(room), who);
      });
}

void node::inject_fault(std::string topic, callback<bool> done) {
  if (!impl_->settings.fault_injection)
    return done(result<bool>{errc::forbidden, "fault injection is not built into this server"});
  auto shard = impl_->shard;
  impl_->ask<bool>(std::move(done), [=, topic = std::move(topic)](auto* self) mutable {
    return self->request(shard, request_timeout, fault_atom::value, std::move(topic));
  });
}

void node::unsubscribe(uint64_t sub_id) {
  if (!impl_->stopped.load()) caf::anon_send(impl_->edge, unsubscribe_atom::value, sub_id);
}

uint64_t node::next_sub_id() noexcept {
  return impl_->next_sub.fetch_add(1, std::memory_order_relaxed);
}

const std::string& node::name() const noexcept { return impl_->settings.name; }

storage_health node::storage() const {
  auto& c = impl_->counters;
  storage_health h;
  h.backend = impl_->backend();
  h.ok = !impl_->storage || c.storage_up.load(std::memory_order_relaxed) != 0;
  h.pending_events = static_cast<uint64_t>(
      std::max<int64_t>(0, c.storage_pending.load(std::memory_order_relaxed)));
  return h;
}

const run_limits& node::limits() const noexcept { return impl_->settings.limits; }

void node::collect_metrics(std::vector<metric_sample>& out) const {
  auto& c = impl_->counters;
  auto get = [](const auto& a) { return static_cast<double>(a.load(std::memory_order_relaxed)); };
  out.push_back({"relay_runs_active", "Run actors alive (running or within their TTL)", "gauge",
                 get(c.runs_active), ""});
  out.push_back({"relay_runs_created_total", "Runs created", "counter", get(c.runs_created), ""});
  out.push_back({"relay_subscriptions", "Live subscriptions at this node's edge", "gauge",
                 get(c.subscriptions), ""});
  out.push_back(
      {"relay_events_in_total", "Events appended to topics", "counter", get(c.events_in), ""});
  out.push_back({"relay_events_out_total", "Event deliveries handed to sessions", "counter",
                 get(c.events_out), ""});
  out.push_back({"relay_frames_encoded_total", "Frames encoded by the edge (once per event)",
                 "counter", get(c.frames_encoded), ""});
  out.push_back({"relay_replay_hits_total", "Subscriptions that received a replay from the ring",
                 "counter", get(c.replay_hits), ""});
  out.push_back(
      {"relay_gaps_total", "Subscriptions that started with a gap", "counter", get(c.gaps), ""});
  out.push_back({"relay_restarts_total", "Supervised restarts of crashed topics", "counter",
                 get(c.restarts), ""});
  out.push_back({"relay_crashes_final_total", "Topics failed past their restart budget", "counter",
                 get(c.crashes_final), ""});
  out.push_back({"relay_run_timeouts_total", "Runs ended by their inactivity timer", "counter",
                 get(c.timeouts), ""});
  out.push_back({"relay_rooms_active", "Room actors alive", "gauge", get(c.rooms_active), ""});
  out.push_back({"relay_room_messages_total", "Messages appended to rooms (retries excluded)",
                 "counter", get(c.room_messages), ""});
  out.push_back({"relay_presence_members", "Room members (room, user) with at least one session",
                 "gauge", get(c.presence_members), ""});
  out.push_back(
      {"relay_passivations_total", "Topic actors passivated", "counter", get(c.passivations), ""});
  out.push_back({"relay_storage_up", "1 while storage commits succeed (0: failing, retrying)",
                 "gauge", get(c.storage_up), ""});
  out.push_back({"relay_storage_pending_events", "Events received by storage, not yet committed",
                 "gauge", get(c.storage_pending), ""});
  out.push_back({"relay_storage_commits_total", "Storage transactions committed (group commits)",
                 "counter", get(c.storage_commits), ""});
  out.push_back({"relay_storage_events_written_total", "Events written to storage", "counter",
                 get(c.storage_events_written), ""});
  out.push_back({"relay_storage_errors_total", "Failed storage transactions (retried)", "counter",
                 get(c.storage_errors), ""});
  out.push_back({"relay_storage_commit_seconds_sum", "Time spent in storage commits", "counter",
                 get(c.storage_commit_us) / 1e6, ""});
  out.push_back({"relay_storage_retention_deleted_total", "Rows deleted by storage retention",
                 "counter", get(c.storage_retained), ""});
  out.push_back({"relay_storage_last_commit_seconds", "Duration of the latest storage commit",
                 "gauge", get(c.storage_last_commit_us) / 1e6, ""});
}

void node::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  spdlog::info("node stopping name={}", impl_->settings.name);
  caf::anon_send(impl_->edge, stop_atom::value);
  caf::anon_send(impl_->shard, stop_atom::value);
  if (impl_->storage) {
    // Storage stops last, after every topic has sent its last events (bounded wait).
    auto& c = impl_->counters;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((c.runs_active.load() > 0 || c.rooms_active.load() > 0) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    caf::anon_send(impl_->storage, stop_atom::value);
  }
  for (auto& bridge : impl_->bridges) caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
  impl_->system->await_all_actors_done();
  impl_->bridges.clear();
  impl_->edge = nullptr;
  impl_->shard = nullptr;
  impl_->storage = nullptr;
  impl_->system.reset();
  spdlog::info("node stopped");
}

}  // namespace relay
