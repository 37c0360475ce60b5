#pragma once
// The fixture of the actor tests: a shard and an edge on CAF's deterministic test coordinator,
// driven in virtual time from GoogleTest.

// CAF's test DSL first: GoogleTest's FAIL macro would break it.
#include <caf/all.hpp>
#include <caf/test/dsl.hpp>
// clang-format off
#include <gtest/gtest.h>
// clang-format on

#include <optional>
#include <utility>

#include "actors/edge.hpp"
#include "actors/messages.hpp"
#include "actors/shard.hpp"
#include "actors/storage_actor.hpp"

namespace relay::test {

struct test_config : caf::actor_system_config {
  test_config() { register_message_types(*this); }
};

/// Settings shared by the actor tests: a small ring and a restart budget of 2 in 10 s.
inline node_settings small_node() {
  node_settings s;
  s.restart_max = 2;
  s.restart_window_s = 10;
  s.ring_capacity = 100;
  return s;
}

class node_fixture : public ::testing::Test {
 public:  // tests also build nodes of their own (e.g. two over one database)
  /// With `db`, a storage actor (spawned like any actor here: the coordinator runs it
  /// deterministically) writes to it with settings.storage's durability and flush bounds.
  explicit node_fixture(node_settings s = small_node(),
                        std::shared_ptr<storage::store> db = nullptr)
      : settings(std::move(s)) {
    storage_link link;
    if (db) {
      auto writer = fx.sys.spawn(storage_actor, std::move(db), settings.storage, &counters);
      storage = fx.sys.spawn(storage_front, writer, settings.storage);
      link = storage_link{storage, settings.storage.mode, settings.storage.max_pending_events,
                          settings.storage.backpressure_events};
    }
    shard = fx.sys.spawn(shard_actor, settings, &counters, link);
    edge = fx.sys.spawn(edge_actor, shard, &counters, storage);
    fx.sched.run();
  }

  ~node_fixture() override {
    caf::anon_send(edge, stop_atom::value);
    caf::anon_send(shard, stop_atom::value);
    fx.sched.run();
    if (storage) {
      caf::anon_send(storage, stop_atom::value);
      fx.sched.run();
    }
  }

  /// Sends a request to the shard, runs the scheduler, and returns the answer (or the error).
  template <class T, class... Ts>
  result<T> ask(Ts&&... xs) {
    std::optional<result<T>> out;
    auto handle = fx.self->request(shard, caf::infinite, std::forward<Ts>(xs)...);
    fx.sched.run();  // the answer is in self's mailbox afterwards: receive does not block
    handle.receive([&](T& x) { out.emplace(std::move(x)); },
                   [&](caf::error& e) { out.emplace(from_caf_error(e)); });
    EXPECT_TRUE(out.has_value()) << "no answer";
    return out ? std::move(*out) : result<T>{errc::internal, "no answer"};
  }

  /// Advances virtual time and lets every actor react (timers fire, messages are consumed).
  void advance(caf::timespan d) {
    fx.advance_time(d);
    fx.sched.run();
  }

  test_coordinator_fixture<test_config> fx;
  node_settings settings;
  node_counters counters;
  caf::actor storage;  // null without a store
  caf::actor shard;
  caf::actor edge;
  uint64_t next_sub = 1;
};

}  // namespace relay::test
