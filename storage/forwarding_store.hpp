#pragma once
// A store that forwards every call to another one: the base of decorators (a store that owns the
// place its database lives in, one that injects faults in tests, one that measures). Subclasses
// override what they change.

#include <memory>
#include <utility>

#include "storage/store.hpp"

namespace relay::storage {

class forwarding_store : public store {
 public:
  explicit forwarding_store(std::unique_ptr<store> inner = nullptr) : inner_(std::move(inner)) {}

  /// Sets (or replaces) the store calls go to.
  void adopt(std::unique_ptr<store> inner) { inner_ = std::move(inner); }
  store* inner() const noexcept { return inner_.get(); }

  std::string_view backend() const noexcept override { return inner_->backend(); }
  result<int> migrate() override { return inner_->migrate(); }
  result<uint64_t> write(const batch& b) override { return inner_->write(b); }
  result<std::vector<event>> events_after(std::string_view topic, uint64_t after,
                                          std::size_t limit) override {
    return inner_->events_after(topic, after, limit);
  }
  result<std::vector<event>> events_before(std::string_view topic, uint64_t before_seq,
                                           std::size_t limit) override {
    return inner_->events_before(topic, before_seq, limit);
  }
  result<uint64_t> last_seq(std::string_view topic) override { return inner_->last_seq(topic); }
  result<uint64_t> first_seq(std::string_view topic) override { return inner_->first_seq(topic); }
  result<run_row> load_run(std::string_view id) override { return inner_->load_run(id); }
  result<std::vector<run_row>> running_runs() override { return inner_->running_runs(); }
  result<uint64_t> delete_older_than(int64_t events_before_ms,
                                     int64_t runs_ended_before_ms) override {
    return inner_->delete_older_than(events_before_ms, runs_ended_before_ms);
  }
  result<bool> ping() override { return inner_->ping(); }

 protected:
  /// Closes the inner store now (e.g. before removing the place its database lives in).
  void close_inner() noexcept { inner_.reset(); }

 private:
  std::unique_ptr<store> inner_;
};

}  // namespace relay::storage
