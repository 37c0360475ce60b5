#include "net/listener.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <chrono>
#include <stdexcept>

#include "net/http_session.hpp"
#include "net/tls_tunnel.hpp"

namespace relay::net {

listener::listener(asio::io_context& ioc, const tcp::endpoint& ep,
                   std::shared_ptr<server_state> state, std::shared_ptr<asio::ssl::context> tls)
    : state_(std::move(state)), tls_(std::move(tls)), acceptor_(ioc), backoff_(ioc) {
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
  acceptor_.async_accept(state_->pool().next_executor(),
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
  const auto max = state_->settings().max_connections;
  const bool overloaded = static_cast<std::size_t>(slot.count_at_open()) > max;
  beast::error_code opt_ec;
  socket.set_option(tcp::no_delay(true), opt_ec);  // frames are small and latency matters
  if (tls_)
    std::make_shared<tls_tunnel>(std::move(socket), tls_, state_, std::move(slot), overloaded)
        ->run();
  else
    std::make_shared<http_session>(std::move(socket), state_, std::move(slot), overloaded)->run();
  do_accept();
}

}  // namespace relay::net
