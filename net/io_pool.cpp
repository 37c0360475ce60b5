#include "net/io_pool.hpp"

#include <spdlog/spdlog.h>

#include <exception>

namespace relay::net {

io_pool::io_pool(unsigned threads) {
  const unsigned n = threads == 0 ? 1 : threads;
  contexts_.reserve(n);
  guards_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    // Concurrency hint 1: only one thread runs each context (others only post to it).
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.emplace_back(asio::make_work_guard(*contexts_.back()));
  }
}

io_pool::~io_pool() {
  stop();
  join();
}

void io_pool::start() {
  for (std::size_t i = 0; i < contexts_.size(); ++i) {
    threads_.emplace_back([ctx = contexts_[i].get(), i] {
      // A handler that throws must not take the whole server down: log it and keep running.
      for (;;) {
        try {
          ctx->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("asio handler_exception thread={} what={}", i, e.what());
        } catch (...) {
          spdlog::error("asio handler_exception thread={} what=unknown", i);
        }
      }
    });
  }
}

asio::any_io_executor io_pool::next_executor() noexcept {
  const auto i = next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size();
  return contexts_[i]->get_executor();
}

void io_pool::release_work() noexcept {
  for (auto& g : guards_) g.reset();
}

void io_pool::stop() noexcept {
  release_work();
  for (auto& c : contexts_) c->stop();
}

void io_pool::join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void io_pool::drain_after_join() {
  for (auto& c : contexts_) {
    c->restart();
    try {
      c->poll();
    } catch (const std::exception& e) {
      spdlog::error("asio handler_exception during stop what={}", e.what());
    }
  }
}

}  // namespace relay::net
