#include "net/tls_tunnel.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>

#include "net/http_session.hpp"
#include "net/refusals.hpp"

namespace relay::net {

namespace {

// How long the end of a connection may take: the last bytes and the close_notify exchange.
constexpr std::chrono::seconds linger_timeout{2};

std::string peer_of(const tcp::socket& socket) {
  beast::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// A failed handshake is a refusal: one log line a minute at most, whoever the offenders are;
// relay_tls_handshake_failures_total counts every one.
void log_handshake_failure(const std::string& peer, const beast::error_code& ec) {
  static std::atomic<int64_t> last_log_s{0};
  if (once_a_minute(last_log_s))
    spdlog::info(
        "tls handshake failed peer={} error={} (logged at most once a minute; see "
        "relay_tls_handshake_failures_total)",
        peer, ec.message());
}

}  // namespace

tls_tunnel::tls_tunnel(tcp::socket&& socket, std::shared_ptr<asio::ssl::context> ctx,
                       const std::shared_ptr<server_state>& state, connection_slot slot,
                       bool overloaded)
    : ctx_(std::move(ctx)),
      tls_(std::move(socket), *ctx_),
      pair_(tls_.get_executor()),
      timer_(tls_.get_executor()),
      state_(state),
      slot_(std::move(slot)),
      peer_(peer_of(tls_.next_layer())),
      // A client that takes no bytes for this long is gone (the session's own limits decide the
      // rest; this only keeps a stalled TLS write from holding the tunnel forever).
      write_timeout_(state->settings().idle_timeout_s),
      overloaded_(overloaded) {}

void tls_tunnel::run() {
  asio::dispatch(tls_.get_executor(),
                 beast::bind_front_handler(&tls_tunnel::start, shared_from_this()));
}

void tls_tunnel::start() {
  auto state = state_.lock();
  if (!state) return close();
  arm(std::chrono::seconds(state->settings().tls_handshake_timeout_s));
  tls_.async_handshake(asio::ssl::stream_base::server,
                       beast::bind_front_handler(&tls_tunnel::on_handshake, shared_from_this()));
}

void tls_tunnel::on_handshake(beast::error_code ec) {
  disarm();
  auto state = state_.lock();
  if (!state || state->halted()) return close();
  if (ec) {
    state->counters().tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
    log_handshake_failure(peer_, closed_ ? beast::error::timeout : ec);
    return close();
  }
  state->counters().tls_handshakes.fetch_add(1, std::memory_order_relaxed);
  start_session(state);
}

void tls_tunnel::start_session(const std::shared_ptr<server_state>& state) {
  beast::error_code ec;
  asio::local::stream_protocol::socket inner(tls_.get_executor());
  asio::local::connect_pair(pair_, inner, ec);
  tcp::socket session_socket(tls_.get_executor());
  // The session's end is a stream socket like any other; it only ever reads, writes, waits and
  // shuts down, which do not care about the address family (the peer is passed in).
  if (!ec) {
    const auto fd = inner.release(ec);
    if (!ec) session_socket.assign(tcp::v4(), fd, ec);
    if (ec && fd >= 0) ::close(fd);
  }
  if (ec) {
    spdlog::warn("tls socket pair error={}", ec.message());
    return close();
  }
  std::make_shared<http_session>(std::move(session_socket), state, std::move(slot_), overloaded_,
                                 true, peer_)
      ->run();
  do_read_client();
  do_read_session();
}

// ---- client → session --------------------------------------------------------------------------

void tls_tunnel::do_read_client() {
  tls_.async_read_some(asio::buffer(from_client_),
                       beast::bind_front_handler(&tls_tunnel::on_read_client, shared_from_this()));
}

void tls_tunnel::on_read_client(beast::error_code ec, std::size_t n) {
  if (ec) return client_ended();  // EOF, close_notify, a reset, bad records, or our cancel
  // The session reads at its own pace: while it does not, this write waits and the client meets
  // TCP backpressure, exactly as on a plain connection.
  asio::async_write(pair_, asio::buffer(from_client_.data(), n),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      if (ec) return self->client_ended();
                      self->do_read_client();
                    });
}

// ---- session → client --------------------------------------------------------------------------

void tls_tunnel::do_read_session() {
  pair_.async_read_some(
      asio::buffer(from_session_),
      beast::bind_front_handler(&tls_tunnel::on_read_session, shared_from_this()));
}

void tls_tunnel::on_read_session(beast::error_code ec, std::size_t n) {
  if (ec) return session_ended();  // the session closed or shut down its side
  arm(write_timeout_);
  asio::async_write(tls_, asio::buffer(from_session_.data(), n),
                    beast::bind_front_handler(&tls_tunnel::on_wrote_client, shared_from_this()));
}

void tls_tunnel::on_wrote_client(beast::error_code ec, std::size_t) {
  disarm();
  if (ec) return close();  // the client is gone (or stalled past write_timeout_)
  do_read_session();
}

// ---- the end -----------------------------------------------------------------------------------

void tls_tunnel::client_ended() {
  if (client_done_) return;
  client_done_ = true;
  // The session sees EOF, as it would from a plain client, and ends in its own way (a session
  // lingering after its last answer stops waiting).
  beast::error_code ec;
  pair_.shutdown(asio::socket_base::shutdown_send, ec);
  if (session_done_) return shutdown_tls();
  if (ec) close();
}

void tls_tunnel::session_ended() {
  session_done_ = true;
  if (client_done_) return shutdown_tls();
  // No write to the client is pending (this direction just ended): cancelling the socket ends
  // only the client read, whose handler (client_ended) then sends close_notify.
  beast::error_code ec;
  tls_.next_layer().cancel(ec);
  if (ec) close();
}

void tls_tunnel::shutdown_tls() {
  if (shutting_down_ || closed_) return;
  shutting_down_ = true;
  arm(linger_timeout);
  tls_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close(); });
}

void tls_tunnel::arm(std::chrono::steady_clock::duration d) {
  timer_.expires_after(d);
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    // A wait replaced or cancelled meanwhile is not a timeout.
    if (ec || self->timer_.expiry() > std::chrono::steady_clock::now()) return;
    self->close();
  });
}

void tls_tunnel::disarm() { timer_.expires_at(std::chrono::steady_clock::time_point::max()); }

void tls_tunnel::close() {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  beast::error_code ec;
  tls_.next_layer().shutdown(tcp::socket::shutdown_both, ec);
  tls_.next_layer().close(ec);
  pair_.close(ec);
}

}  // namespace relay::net
