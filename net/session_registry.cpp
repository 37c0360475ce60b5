#include "net/session_registry.hpp"

#include <vector>

namespace relay::net {

bool session_registry::add(const void* key, std::weak_ptr<stoppable> s) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (stopping_) return false;
  sessions_.emplace(key, std::move(s));
  return true;
}

void session_registry::remove(const void* key) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (sessions_.erase(key) > 0 && sessions_.empty()) empty_.notify_all();
}

void session_registry::stop_all(bool force) {
  std::vector<std::shared_ptr<stoppable>> live;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stopping_ = true;
    live.reserve(sessions_.size());
    for (auto& [key, weak] : sessions_)
      if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->stop(force);
}

bool session_registry::wait_empty(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock{mutex_};
  return empty_.wait_for(lock, timeout, [this] { return sessions_.empty(); });
}

std::size_t session_registry::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return sessions_.size();
}

}  // namespace relay::net
