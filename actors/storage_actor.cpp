// The storage actor (see storage_actor.hpp).

#include "actors/storage_actor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>

namespace relay {

namespace {

using std::chrono::milliseconds;

constexpr unsigned retry_min_ms = 50;
constexpr unsigned retry_max_ms = 5000;

/// Schedules a flush: at once when enough is waiting (or a barrier wants it), else after flush_ms.
/// "At once" is a message to ourselves, so everything already in the mailbox joins the commit.
void schedule_flush(storage_actor_type* self, bool now) {
  auto& st = self->state;
  if (st.retrying) return;  // the retry timer flushes
  if (now) {
    if (!st.flush_now) self->send(self, flush_atom::value);
    st.flush_now = true;
    return;
  }
  if (st.timer_armed) return;
  st.timer_armed = true;
  self->delayed_send(self, milliseconds(st.settings.flush_ms), check_atom::value);
}

/// Writes the rows and events of a refused batch one at a time; what the database still refuses is
/// logged and dropped (counted in storage_errors). Answers the events written, or `unavailable`
/// when the database went away meanwhile (then the whole batch is retried later, harmlessly:
/// writes are idempotent).
result<uint64_t> salvage(storage_actor_type* self, const error& why) {
  auto& st = self->state;
  spdlog::error(
      "storage refused a batch backend={} events={} runs={} error={}; writing it piecewise",
      st.db->backend(), st.pending.events.size(), st.pending.runs.size(), why.message);
  uint64_t written = 0;
  std::size_t dropped = 0;
  for (auto& row : st.pending.runs) {
    auto r = st.db->write(storage::batch{{row}, {}});
    if (!r && r.err().code == errc::unavailable) return r.err();
    if (!r) {
      ++dropped;
      spdlog::error("storage dropped run row id={} error={}", row.info.id, r.err().message);
    }
  }
  for (auto& e : st.pending.events) {
    auto r = st.db->write(storage::batch{{}, {e}});
    if (!r && r.err().code == errc::unavailable) return r.err();
    if (r) {
      written += *r;
    } else {
      ++dropped;
      spdlog::error("storage dropped event topic={} seq={} error={}", e.topic, e.e.seq,
                    r.err().message);
    }
  }
  node_counters::add(st.counters->storage_errors, dropped);
  return written;
}

/// Commits everything pending, in transactions of at most flush_events events (many moderate
/// commits store more per second than one huge statement, and bound how long one takes), then
/// answers the barriers that were waiting. On failure what is left stays pending for the retry.
/// Slices are moved out of the pending list by position and the list is dropped once at the end
/// (erasing each slice from the front would move the whole backlog once per slice).
void flush(storage_actor_type* self) {
  auto& st = self->state;
  storage::batch work = std::move(st.pending);
  st.pending = storage::batch{};
  std::size_t next = 0;  // the first event of `work` not committed yet
  for (bool first = true; !work.empty() && (first || next < work.events.size()); first = false) {
    storage::batch slice;
    if (first) slice.runs = std::move(work.runs);  // rows ride with the first slice
    const std::size_t n = std::min(st.settings.flush_events, work.events.size() - next);
    const auto from = work.events.begin() + static_cast<std::ptrdiff_t>(next);
    slice.events.assign(std::make_move_iterator(from),
                        std::make_move_iterator(from + static_cast<std::ptrdiff_t>(n)));
    next += n;
    const auto events = slice.events.size();
    const auto t0 = std::chrono::steady_clock::now();
    auto written = st.db->write(slice);
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    if (!written && written.err().code != errc::unavailable) {
      // The database refused the batch itself (not a connection problem): retrying it as a
      // whole would block every later commit. Write its parts one by one, drop what is refused.
      std::swap(st.pending, slice);  // salvage works on st.pending
      written = salvage(self, written.err());
      std::swap(st.pending, slice);
    }
    if (!written) {
      // Back to pending, in order: this slice, then what this flush had not reached.
      st.pending = std::move(slice);
      st.pending.events.insert(
          st.pending.events.end(),
          std::make_move_iterator(work.events.begin() + static_cast<std::ptrdiff_t>(next)),
          std::make_move_iterator(work.events.end()));
      node_counters::add(st.counters->storage_errors);
      st.counters->storage_up.store(0, std::memory_order_relaxed);
      ++st.failures;
      st.backoff_ms = std::clamp(st.backoff_ms * 2, retry_min_ms, retry_max_ms);
      if (st.failures == 1 || st.failures % 50 == 0)
        spdlog::warn("storage commit failed backend={} pending={} failures={} retry_ms={} error={}",
                     st.db->backend(), st.pending.events.size(), st.failures, st.backoff_ms,
                     written.err().message);
      // Whoever waits for a commit hears now that it did not happen (their producer gets 503);
      // the events stay pending and are written when the database is back.
      for (auto& rp : st.waiting)
        rp.deliver(make_error(errc::unavailable, "storage is unavailable"));
      st.waiting.clear();
      st.retrying = true;
      self->delayed_send(self, milliseconds(st.backoff_ms), retry_atom::value);
      return;
    }
    if (st.failures > 0)
      spdlog::info("storage recovered backend={} after_failures={}", st.db->backend(), st.failures);
    st.failures = 0;
    st.backoff_ms = 0;
    st.counters->storage_up.store(1, std::memory_order_relaxed);
    node_counters::add(st.counters->storage_commits);
    node_counters::add(st.counters->storage_events_written, *written);
    node_counters::add(st.counters->storage_commit_us, static_cast<uint64_t>(us));
    st.counters->storage_last_commit_us.store(us, std::memory_order_relaxed);
    // Topics count what they send (so the bound holds while a commit runs); commits discount it.
    node_counters::add(st.counters->storage_pending, -static_cast<int64_t>(events));
  }
  for (auto& rp : st.waiting) rp.deliver(true);
  st.waiting.clear();
}

void add_events(storage_actor_type* self, const topic_events& msg) {
  auto& st = self->state;
  for (const auto& e : msg.events) st.pending.events.push_back(storage::topic_event{msg.topic, e});
  schedule_flush(self, st.pending.events.size() >= st.settings.flush_events);
}

/// Retention: deletes what is older than the configured ages, then runs again after the interval.
void retain(storage_actor_type* self) {
  auto& st = self->state;
  const auto& cfg = st.settings;
  const int64_t now = now_ms();
  const int64_t events_before =
      cfg.retention_events_s ? now - static_cast<int64_t>(cfg.retention_events_s) * 1000 : 0;
  const int64_t runs_before =
      cfg.retention_runs_s ? now - static_cast<int64_t>(cfg.retention_runs_s) * 1000 : 0;
  auto deleted = st.db->delete_older_than(events_before, runs_before);
  if (!deleted)
    spdlog::warn("storage retention failed backend={} error={}", st.db->backend(),
                 deleted.err().message);
  else if (*deleted > 0)
    spdlog::info("storage retention deleted={} events_older_than_s={} runs_ended_before_s={}",
                 *deleted, cfg.retention_events_s, cfg.retention_runs_s);
  node_counters::add(st.counters->storage_retained, deleted ? *deleted : 0);
  self->delayed_send(self, std::chrono::seconds(std::max(1u, cfg.retention_interval_s)),
                     retain_atom::value);
}

/// Adds a run's row to `runs`; the newest state wins: it replaces an older row of the same run.
void put_row(std::vector<storage::run_row>& runs, storage::run_row row) {
  auto it = std::find_if(runs.begin(), runs.end(),
                         [&](const storage::run_row& r) { return r.info.id == row.info.id; });
  if (it != runs.end())
    *it = std::move(row);
  else
    runs.push_back(std::move(row));
}

void add_row(storage_actor_type* self, const storage::run_row& row) {
  put_row(self->state.pending.runs, row);
  schedule_flush(self, false);
}

/// A batch from the front: joins what is pending and is committed at once — by a message to
/// ourselves, so batches already in the mailbox join the same commit.
void add_batch(storage_actor_type* self, storage::batch& b) {
  auto& st = self->state;
  if (st.pending.empty()) {
    st.pending = std::move(b);
  } else {
    for (auto& row : b.runs) put_row(st.pending.runs, std::move(row));
    st.pending.events.insert(st.pending.events.end(), std::make_move_iterator(b.events.begin()),
                             std::make_move_iterator(b.events.end()));
  }
  schedule_flush(self, true);
}

// -- the front ---------------------------------------------------------------------------------

/// Hands what the front collected to the writer, in one message.
void hand_over(storage_front_type* self) {
  auto& st = self->state;
  if (st.pending.empty()) return;
  self->send(st.writer, std::move(st.pending));
  st.pending = storage::batch{};
}

/// Hands over at once past flush_events, else within flush_ms.
void front_schedule(storage_front_type* self) {
  auto& st = self->state;
  if (st.pending.events.size() >= st.settings.flush_events) return hand_over(self);
  if (st.timer_armed) return;
  st.timer_armed = true;
  self->delayed_send(self, milliseconds(st.settings.flush_ms), check_atom::value);
}

void front_add_events(storage_front_type* self, const topic_events& msg) {
  auto& events = self->state.pending.events;
  for (const auto& e : msg.events) events.push_back(storage::topic_event{msg.topic, e});
}

}  // namespace

bool storage_link::refuses(const node_counters& c) const noexcept {
  if (!actor) return false;
  if (mode == durability::sync && c.storage_up.load(std::memory_order_relaxed) == 0) return true;
  return max_pending_events > 0 && c.storage_pending.load(std::memory_order_relaxed) >=
                                       static_cast<int64_t>(max_pending_events);
}

bool storage_link::must_wait(const node_counters& c) const noexcept {
  if (!actor || mode == durability::none) return false;
  if (mode == durability::sync) return true;
  return backpressure_events > 0 && c.storage_pending.load(std::memory_order_relaxed) >=
                                        static_cast<int64_t>(backpressure_events);
}

caf::behavior storage_front(storage_front_type* self, caf::actor writer,
                            storage_settings settings) {
  auto& st = self->state;
  st.writer = std::move(writer);
  st.settings = std::move(settings);
  st.settings.flush_ms = std::max(1u, st.settings.flush_ms);
  st.settings.flush_events = std::max<std::size_t>(1, st.settings.flush_events);
  // The writer answers barriers and reads; the front hands over first, so they see every event
  // sent to storage before them.
  auto to_writer = [self](auto... xs) {
    hand_over(self);
    return self->delegate(self->state.writer, xs...);
  };
  return {
      [=](const topic_events& msg) {
        front_add_events(self, msg);
        front_schedule(self);
      },
      [=](persist_atom, const storage::run_row& row) {
        put_row(self->state.pending.runs, row);
        front_schedule(self);
      },
      [=](persist_atom, const storage::run_row& row, const topic_events& msg) {
        put_row(self->state.pending.runs, row);
        front_add_events(self, msg);
        front_schedule(self);
      },
      [=](check_atom) {  // the flush_ms timer
        self->state.timer_armed = false;
        hand_over(self);
      },
      [=](barrier_atom a) { return to_writer(a); },
      [=](load_atom a, const std::string& topic, uint64_t max_events) {
        return to_writer(a, topic, max_events);
      },
      [=](load_run_atom a, const std::string& id) { return to_writer(a, id); },
      [=](running_atom a) { return to_writer(a); },
      [=](history_atom a, const std::string& topic, uint64_t before_seq, uint64_t limit) {
        return to_writer(a, topic, before_seq, limit);
      },
      [=](fill_atom a, const std::string& topic, uint64_t after, uint64_t limit) {
        return to_writer(a, topic, after, limit);
      },
      [=](stop_atom a) {
        hand_over(self);
        self->send(self->state.writer, a);
        self->quit();
      },
  };
}

caf::behavior storage_actor(storage_actor_type* self, std::shared_ptr<storage::store> db,
                            storage_settings settings, node_counters* counters) {
  auto& st = self->state;
  st.db = std::move(db);
  st.settings = std::move(settings);
  st.settings.flush_ms = std::max(1u, st.settings.flush_ms);
  st.settings.flush_events = std::max<std::size_t>(1, st.settings.flush_events);
  st.counters = counters;
  if (st.settings.retention_events_s > 0 || st.settings.retention_runs_s > 0)
    self->delayed_send(self, std::chrono::seconds(std::max(1u, st.settings.retention_interval_s)),
                       retain_atom::value);
  return {
      // What the front collected.
      [=](storage::batch& b) { add_batch(self, b); },
      // Live events of a topic: the message the topic also sends to its edges.
      [=](const topic_events& msg) { add_events(self, msg); },
      // A run's row when it is created.
      [=](persist_atom, const storage::run_row& row) { add_row(self, row); },
      // A run's row with the events that changed it (its terminal event): one commit for both.
      [=](persist_atom, const storage::run_row& row, const topic_events& msg) {
        add_row(self, row);
        add_events(self, msg);
      },
      // Answered once everything received before it is committed (sync durability).
      [=](barrier_atom) -> caf::result<bool> {
        auto rp = self->make_response_promise<bool>();
        self->state.waiting.push_back(rp);
        schedule_flush(self, true);
        return rp;
      },
      // A topic starting: what storage holds of it. Pending events are committed first, so a
      // topic restarted right after a crash finds everything it had sent.
      [=](load_atom, const std::string& topic, uint64_t max_events) -> caf::result<stored_tail> {
        auto& st = self->state;
        if (!st.pending.empty()) flush(self);
        auto last = st.db->last_seq(topic);
        if (!last) return make_error(errc::unavailable, "storage: " + last.err().message);
        stored_tail tail;
        tail.last_seq = *last;
        if (*last == 0 || max_events == 0) return tail;
        const uint64_t after = *last > max_events ? *last - max_events : 0;
        auto events = st.db->events_after(topic, after, static_cast<std::size_t>(max_events));
        if (!events) return make_error(errc::unavailable, "storage: " + events.err().message);
        tail.events = std::move(*events);
        return tail;
      },
      [=](load_run_atom, const std::string& id) -> caf::result<storage::run_row> {
        auto& st = self->state;
        if (!st.pending.runs.empty()) flush(self);
        auto row = st.db->load_run(id);
        if (!row) return make_error(row.err().code, row.err().message);
        return std::move(*row);
      },
      [=](running_atom) -> caf::result<std::vector<storage::run_row>> {
        auto rows = self->state.db->running_runs();
        if (!rows) return make_error(errc::unavailable, "storage: " + rows.err().message);
        return std::move(*rows);
      },
      // Reads of events: what is pending is committed first, so a read sees every event that was
      // acknowledged before it.
      [=](history_atom, const std::string& topic, uint64_t before_seq,
          uint64_t limit) -> caf::result<std::vector<event>> {
        auto& st = self->state;
        if (!st.pending.events.empty()) flush(self);
        auto page = st.db->events_before(topic, before_seq, static_cast<std::size_t>(limit));
        if (!page) return make_error(errc::unavailable, "storage: " + page.err().message);
        return std::move(*page);
      },
      [=](fill_atom, const std::string& topic, uint64_t after,
          uint64_t limit) -> caf::result<std::vector<event>> {
        auto& st = self->state;
        if (!st.pending.events.empty()) flush(self);
        auto events = st.db->events_after(topic, after, static_cast<std::size_t>(limit));
        if (!events) return make_error(errc::unavailable, "storage: " + events.err().message);
        return std::move(*events);
      },
      [=](retain_atom) { retain(self); },
      [=](flush_atom) {
        self->state.flush_now = false;
        flush(self);
      },
      [=](check_atom) {  // the flush_ms timer
        self->state.timer_armed = false;
        flush(self);
      },
      [=](retry_atom) {
        self->state.retrying = false;
        flush(self);
      },
      // Node shutdown: one last commit (its outcome is logged), then stop.
      [=](stop_atom) {
        auto& st = self->state;
        st.retrying = false;
        flush(self);
        if (!st.pending.empty())
          spdlog::error("storage stopping with {} uncommitted events (the database is down)",
                        st.pending.events.size());
        self->quit();
      },
  };
}

}  // namespace relay
