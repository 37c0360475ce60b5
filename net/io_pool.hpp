#pragma once
// The fixed pool of Asio threads: one io_context per thread, so a session pinned to a context
// runs on one thread and needs no strand.

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "net/beast.hpp"

namespace relay::net {

class io_pool {
 public:
  explicit io_pool(unsigned threads);
  ~io_pool();  // stops and joins (must not run on a pool thread)
  io_pool(const io_pool&) = delete;
  io_pool& operator=(const io_pool&) = delete;

  /// Starts one thread per context. Handlers that throw are logged and the thread goes on.
  void start();
  /// The context of the next accepted connection (round robin; any thread).
  asio::any_io_executor next_executor() noexcept;
  asio::io_context& context(std::size_t i) { return *contexts_.at(i); }
  std::size_t size() const noexcept { return contexts_.size(); }

  /// Lets run() return once the contexts are out of work.
  void release_work() noexcept;
  /// Stops the contexts at once (pending handlers stay queued).
  void stop() noexcept;
  /// Joins the threads (after stop() or once out of work).
  void join();
  /// After join(): runs the handlers that became ready on the calling thread (sockets are closed
  /// by then), so handlers holding sessions are not left queued.
  void drain_after_join();

 private:
  using guard = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<guard> guards_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace relay::net
