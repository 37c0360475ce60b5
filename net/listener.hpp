#pragma once
// Accepts connections and hands each to an http_session on the next Asio context (round robin),
// or, on the TLS listener, to a tls_tunnel that hands it to one after the handshake. The server
// runs its listeners on an accept thread of their own, apart from that pool (net/server.cpp).

#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <optional>

#include "net/beast.hpp"
#include "net/responses.hpp"
#include "net/server_state.hpp"

namespace boost::asio::ssl {
class context;
}

namespace relay::net {

class shunner;

class listener : public std::enable_shared_from_this<listener> {
 public:
  /// Opens, binds and listens on `ep` (the acceptor runs on `ioc`). Throws std::runtime_error.
  /// With `tls`, every connection is TLS (tls_tunnel). `shun` (optional) is told of every
  /// refusal at accept and filters this socket; it runs on `ioc` and outlives the listener's
  /// handlers.
  listener(asio::io_context& ioc, const tcp::endpoint& ep, std::shared_ptr<server_state> state,
           std::shared_ptr<asio::ssl::context> tls = nullptr, shunner* shun = nullptr);

  uint16_t port() const noexcept { return port_; }
  /// Starts accepting (any thread).
  void run();
  /// Stops accepting (any thread); established connections are not touched.
  void stop();

 private:
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  /// The per-address checks of a new connection from `client` (client_key): the answer that
  /// refuses it, or none.
  std::optional<response> admit(const std::string& client, connection_slot& slot);
  /// Answers `res` on the listener's thread and closes the socket (see admit).
  void refuse_now(tcp::socket& socket, response&& res);

  std::shared_ptr<server_state> state_;
  std::shared_ptr<asio::ssl::context> tls_;
  shunner* shun_;
  tcp::acceptor acceptor_;
  asio::steady_timer backoff_;  // out of file descriptors: retry accepting a little later
  tcp::endpoint peer_;          // the accepted client's address, filled in by accept() itself
  uint16_t port_ = 0;
  bool stopped_ = false;
};

}  // namespace relay::net
