#pragma once
// One TLS connection (tls.port): the handshake under tls.handshake_timeout_s, then the decrypted
// bytes are relayed to and from an ordinary http_session over a socket pair, so HTTP, SSE and
// WebSocket run over TLS through exactly the code that serves plain connections.
//
// Why a socket pair and not sessions templated on the stream type: the sessions write shared,
// pre-encoded frames with gather writes straight to the socket, and the WebSocket session waits
// for readiness so an idle connection holds no read buffer; neither exists on an SSL stream.
// The pair keeps the plain path exactly as it was (no byte or branch more per plain connection)
// and costs TLS connections what TLS costs anyway: OpenSSL's buffers, two relay buffers and two
// more descriptors.
//
// Threads: everything runs on the accepted socket's context (one thread), as the session does.
// Lifetime: pending operations hold the tunnel. It ends when both directions have ended: the
// client's (EOF, close_notify, error) is passed on as EOF to the session; the session's (it
// closed or shut down its side) ends the TLS connection with close_notify, bounded in time.

#include <array>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "net/beast.hpp"
#include "net/net_counters.hpp"
#include "net/server_state.hpp"

namespace relay::net {

class tls_tunnel : public std::enable_shared_from_this<tls_tunnel> {
 public:
  /// Bytes relayed per read in each direction (a TLS record holds at most 16 KiB).
  static constexpr std::size_t chunk = 8 * 1024;

  /// `slot` counts the connection from the accept on and moves to the http_session.
  /// `state` is held weakly: a tunnel still in its handshake when the server stops must not keep
  /// the server's contexts alive (its pending operations are dropped with them).
  tls_tunnel(tcp::socket&& socket, std::shared_ptr<asio::ssl::context> ctx,
             const std::shared_ptr<server_state>& state, connection_slot slot, bool overloaded);

  /// Any thread: starts the handshake on the socket's context.
  void run();

 private:
  void start();
  void on_handshake(beast::error_code ec);
  void start_session(const std::shared_ptr<server_state>& state);
  // client → session
  void do_read_client();
  void on_read_client(beast::error_code ec, std::size_t n);
  // session → client
  void do_read_session();
  void on_read_session(beast::error_code ec, std::size_t n);
  void on_wrote_client(beast::error_code ec, std::size_t n);
  // the end
  void client_ended();
  void session_ended();
  void shutdown_tls();
  void arm(std::chrono::steady_clock::duration d);
  void disarm();
  void close();

  std::shared_ptr<asio::ssl::context> ctx_;  // outlives the stream's SSL object
  asio::ssl::stream<tcp::socket> tls_;
  asio::local::stream_protocol::socket pair_;  // our end; the session owns the other
  asio::steady_timer timer_;                   // handshake, each write to the client, the end
  std::weak_ptr<server_state> state_;
  connection_slot slot_;
  std::string peer_;
  std::chrono::seconds write_timeout_;
  std::array<char, chunk> from_client_{};
  std::array<char, chunk> from_session_{};
  bool overloaded_ = false;
  bool client_done_ = false;   // the client's direction has ended
  bool session_done_ = false;  // the session's direction has ended
  bool shutting_down_ = false;
  bool closed_ = false;
};

}  // namespace relay::net
