#include "net/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <stdexcept>

#include "net/io_pool.hpp"
#include "net/listener.hpp"
#include "net/server_state.hpp"
#include "net/shunner.hpp"
#include "net/tls_context.hpp"

namespace relay {

namespace {

// Graceful stop: how long sessions get to flush and close, then how long after forcing them.
constexpr std::chrono::milliseconds flush_timeout{2000};
constexpr std::chrono::milliseconds force_timeout{500};

// The accept thread's niceness above the process's: when the CPU is short, the kernel runs the
// threads that serve established connections first and accepting new ones (a flood's refusals
// included) gets what is left; a nice of 5 is about a third of an equal share, so accepting slows
// but never stops.
constexpr int accept_nice_increment = 5;

void lower_this_thread_priority(int increment) {
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, 0);
  if (current == -1 && errno != 0) return;
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  if (setpriority(PRIO_PROCESS, tid, std::min(current + increment, 19)) != 0)
    spdlog::warn("http accept thread priority not lowered errno={}", errno);
}

}  // namespace

struct server::impl {
  impl(server_settings settings, node& n)
      : state(std::make_shared<net::server_state>(std::move(settings), n)) {}

  std::shared_ptr<net::server_state> state;
  // The listeners accept (and refuse) on a thread of their own, apart from the sessions' pool: a
  // connection flood then competes for the CPU through the kernel's scheduler, at a lower
  // priority, instead of queueing thousands of accept completions ahead of each delivery in the
  // one FIFO of a session thread (bench/RESULTS.md, hostile-client runs).
  net::io_pool accept_pool{1};
  // Repeat offenders' connection attempts dropped by the kernel (limits.shun_*); on the accept
  // thread, and destroyed before it (its timer's handler never outlives it).
  std::unique_ptr<net::shunner> shunner;
  std::shared_ptr<net::listener> listener;
  std::shared_ptr<net::listener> tls_listener;  // only with tls.cert_path
  std::mutex mutex;                             // start/stop
  bool started = false;
  bool stopped = false;
  uint16_t port = 0;
  uint16_t tls_port = 0;
};

server::server(server_settings settings, node& n)
    : impl_(std::make_unique<impl>(std::move(settings), n)) {}

server::~server() { stop(); }

void server::start() {
  std::lock_guard<std::mutex> guard{impl_->mutex};
  if (impl_->started) return;
  auto& state = *impl_->state;
  const auto& cfg = state.settings();
  net::beast::error_code ec;
  auto address = net::asio::ip::make_address(cfg.host, ec);
  if (ec) throw std::runtime_error("invalid server.host '" + cfg.host + "': " + ec.message());
  auto& accept_context = impl_->accept_pool.context(0);
  if (cfg.shun_s > 0)
    impl_->shunner = std::make_unique<net::shunner>(
        accept_context,
        net::shunner::options{std::chrono::seconds(cfg.shun_s), cfg.shun_after, cfg.rate_max_keys,
                              cfg.ipv6_prefix, std::chrono::seconds(cfg.shun_max_s)},
        state.refusals(), state.counters().shunned_clients);
  impl_->listener =
      std::make_shared<net::listener>(accept_context, net::tcp::endpoint{address, cfg.port},
                                      impl_->state, nullptr, impl_->shunner.get());
  impl_->port = impl_->listener->port();
  if (!cfg.tls_cert_path.empty() || !cfg.tls_key_path.empty()) {
    // Certificate errors stop start-up here, before anything is served.
    auto tls_context = net::load_tls_context(cfg);
    const auto& tls_host = cfg.tls_host.empty() ? cfg.host : cfg.tls_host;
    auto tls_address = net::asio::ip::make_address(tls_host, ec);
    if (ec) throw std::runtime_error("invalid tls.host '" + tls_host + "': " + ec.message());
    impl_->tls_listener = std::make_shared<net::listener>(
        accept_context, net::tcp::endpoint{tls_address, cfg.tls_port}, impl_->state,
        std::move(tls_context), impl_->shunner.get());
    impl_->tls_port = impl_->tls_listener->port();
    impl_->tls_listener->run();
    spdlog::info("https listening host={} port={}", tls_host, impl_->tls_port);
  }
  impl_->listener->run();
  state.pool().start();
  net::asio::post(accept_context, [] { lower_this_thread_priority(accept_nice_increment); });
  impl_->accept_pool.start();
  impl_->started = true;
  spdlog::info("http listening host={} port={} io_threads={}", cfg.host, impl_->port,
               state.pool().size());
}

void server::add_admin_action(std::string name, admin_action action) {
  std::lock_guard<std::mutex> guard{impl_->mutex};
  impl_->state->admin_actions()[std::move(name)] = std::move(action);
}

uint16_t server::bound_port() const noexcept { return impl_->port; }
uint16_t server::bound_tls_port() const noexcept { return impl_->tls_port; }

// Stop accepting, ask every session to finish (answer in progress, SSE flush), wait a bounded
// time, force what is left, then stop and join the Asio threads.
void server::stop() {
  std::lock_guard<std::mutex> guard{impl_->mutex};
  if (!impl_->started || impl_->stopped) return;
  impl_->stopped = true;
  auto& state = *impl_->state;
  // The shunner first: it forgets the listening sockets before they close (their descriptors
  // may be reused) and its timer no longer holds the accept thread.
  if (impl_->shunner)
    net::asio::post(impl_->accept_pool.context(0), [s = impl_->shunner.get()] { s->stop(); });
  impl_->listener->stop();
  if (impl_->tls_listener) impl_->tls_listener->stop();
  // Closing the acceptors ends the accept thread's work: once it is joined, no session can be
  // created behind the stop_all below.
  impl_->accept_pool.release_work();
  impl_->accept_pool.join();
  state.sessions().stop_all(false);
  if (!state.sessions().wait_empty(flush_timeout)) {
    spdlog::info("http stop forcing sessions={}", state.sessions().size());
    state.sessions().stop_all(true);
    state.sessions().wait_empty(force_timeout);
  }
  state.set_halted();
  state.pool().stop();
  state.pool().join();
  // Handlers completed by the closes above but not yet run would keep their sessions (and this
  // state) alive in the stopped contexts: run them here, on this thread, now that no Asio
  // thread runs.
  state.pool().drain_after_join();
  impl_->listener.reset();
  impl_->tls_listener.reset();
  spdlog::info("http stopped sessions_left={}", state.sessions().size());
}

}  // namespace relay
