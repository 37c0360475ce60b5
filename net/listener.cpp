#include "net/listener.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <sstream>
#include <stdexcept>

#include "net/http_session.hpp"
#include "net/shunner.hpp"
#include "net/tls_tunnel.hpp"

namespace relay::net {

listener::listener(asio::io_context& ioc, const tcp::endpoint& ep,
                   std::shared_ptr<server_state> state, std::shared_ptr<asio::ssl::context> tls,
                   shunner* shun)
    : state_(std::move(state)), tls_(std::move(tls)), shun_(shun), acceptor_(ioc), backoff_(ioc) {
  beast::error_code ec;
  auto check = [&](const char* what) {
    if (ec)
      throw std::runtime_error("cannot " + std::string{what} + " " + ep.address().to_string() +
                               ":" + std::to_string(ep.port()) + ": " + ec.message());
  };
  acceptor_.open(ep.protocol(), ec);
  check("open");
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  check("set reuse_address on");
  acceptor_.bind(ep, ec);
  check("bind");
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  check("listen on");
  port_ = acceptor_.local_endpoint(ec).port();
  check("read the port of");
  if (shun_) shun_->watch(acceptor_.native_handle());
}

void listener::run() {
  asio::dispatch(acceptor_.get_executor(),
                 beast::bind_front_handler(&listener::do_accept, shared_from_this()));
}

void listener::stop() {
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
    self->stopped_ = true;
    beast::error_code ec;
    self->acceptor_.close(ec);
    self->backoff_.cancel();
  });
}

void listener::do_accept() {
  if (stopped_) return;
  // The new socket lives on the next context of the pool: its session runs on that thread.
  acceptor_.async_accept(state_->pool().next_executor(), peer_,
                         beast::bind_front_handler(&listener::on_accept, shared_from_this()));
}

void listener::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || stopped_) return;
  if (ec) {
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory) {
      // Accepting again at once would spin: back off and let connections close meanwhile.
      spdlog::warn("http accept error={} backoff_ms=100", ec.message());
      backoff_.expires_after(std::chrono::milliseconds(100));
      backoff_.async_wait([self = shared_from_this()](beast::error_code e) {
        if (!e) self->do_accept();
      });
      return;
    }
    spdlog::debug("http accept error={}", ec.message());
    return do_accept();
  }
  connection_slot slot{state_->counters().connections};
  const auto& s = state_->settings();
  const bool overloaded = static_cast<std::size_t>(slot.count_at_open()) > s.max_connections;
  // The address comes with accept(): no getpeername() per connection, refused ones included.
  // Per-address limits count its client (an IPv6 address's prefix, net/shunner.hpp).
  const auto& addr = peer_.address();
  auto key = client_key(addr, s.ipv6_prefix);
  auto refused = admit(key, slot);
  if (!refused) {
    beast::error_code opt_ec;
    socket.set_option(tcp::no_delay(true), opt_ec);  // frames are small and latency matters
    if (shun_) shun_->clear_inherited(socket.native_handle());
  } else if (shun_) {
    shun_->refused(addr, key);
  }
  if (overloaded) state_->refusals().refuse(refusal::connections, "*");
  if (refused && tls_) {
    // A refused TLS client gets no handshake (its 429 would need one): closed at once, counted.
    beast::error_code ignored;
    socket.close(ignored);
  } else if (refused) {
    refuse_now(socket, std::move(*refused));  // `slot` is released with it, below
  } else if (tls_) {
    std::make_shared<tls_tunnel>(std::move(socket), tls_, state_, std::move(slot), overloaded)
        ->run();
  } else {
    auto peer = addr.to_string() + ":" + std::to_string(peer_.port());
    std::make_shared<http_session>(std::move(socket), state_, std::move(slot), overloaded, false,
                                   std::move(peer))
        ->run();
  }
  do_accept();
}

// Per client address: the connection-attempt bucket and the open-connection count. A refused
// connection is answered 429 at once by refuse_now, without reading its request: a flood from one
// address costs one short-lived socket per attempt, not a session waiting for a request.
std::optional<response> listener::admit(const std::string& client, connection_slot& slot) {
  const auto& s = state_->settings();
  const bool per_ip = s.max_connections_per_ip > 0;
  if (!per_ip && !state_->rate_connections().enabled()) return std::nullopt;
  auto t = state_->rate_connections().try_take(client, 1, limiter_clock::now());
  if (!t.ok) {
    state_->refusals().refuse(refusal::rate_connections, client);
    return rate_limited_response("too many connection attempts from this address",
                                 t.retry_after_s());
  }
  if (!per_ip) return std::nullopt;
  slot.attach(ip_slot{state_->per_ip(), client});
  if (slot.ip().count_at_open() > s.max_connections_per_ip) {
    state_->refusals().refuse(refusal::connections_per_ip, client);
    return rate_limited_response("too many open connections from this address", 1);
  }
  return std::nullopt;
}

// The cheapest answer to a refused connection: no session, no thread hop, no lingering read. The
// socket is the listener's alone until here. Written at once without blocking (a fresh socket's
// send buffer takes a small answer whole; if not, the client is gone anyway), then closed; a
// request the client already sent may turn the close into a reset, after the answer.
void listener::refuse_now(tcp::socket& socket, response&& res) {
  finalize(res, 11, false);
  std::ostringstream text;
  text << res;
  const auto bytes = text.str();
  // One send() that never blocks (MSG_DONTWAIT: no fcntl to switch the socket's mode first).
  const auto n =
      ::send(socket.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  auto& c = state_->counters();
  c.http_requests.fetch_add(1, std::memory_order_relaxed);
  c.writes.fetch_add(1, std::memory_order_relaxed);
  if (n > 0) c.bytes_out.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  beast::error_code ec;
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

}  // namespace relay::net
