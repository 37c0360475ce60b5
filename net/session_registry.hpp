#pragma once
// The live sessions of a server, so that a graceful stop can reach every one of them.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace relay::net {

/// What the registry can ask of a session. Called from the stopping thread: implementations post
/// onto their own executor and return at once.
class stoppable {
 public:
  /// `force == false`: finish the current answer or flush the stream, then close.
  /// `force == true`: close the socket now.
  virtual void stop(bool force) = 0;

 protected:
  ~stoppable() = default;
};

class session_registry {
 public:
  /// Registers a live session under `key` (its address). False once stop_all() has run: the
  /// session should close at once.
  bool add(const void* key, std::weak_ptr<stoppable> s);
  /// Called from the session's destructor.
  void remove(const void* key);

  /// Asks every live session to stop; later add()s are refused. Calls the sessions without
  /// holding the lock.
  void stop_all(bool force);

  /// Waits until no session is left or the timeout passes; true when none is left.
  bool wait_empty(std::chrono::milliseconds timeout);

  std::size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable empty_;
  std::unordered_map<const void*, std::weak_ptr<stoppable>> sessions_;
  bool stopping_ = false;
};

}  // namespace relay::net
