#pragma once
// One HTTP/1.1 connection: reads requests under the configured limits and deadlines, hands each
// to the api, writes the answers in order (keep-alive), and turns into an sse_session when a
// request becomes a stream.

#include <array>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "net/api.hpp"
#include "net/beast.hpp"
#include "net/net_counters.hpp"
#include "net/responses.hpp"
#include "net/server_state.hpp"
#include "net/session_registry.hpp"

namespace relay::net {

class http_session final : public stoppable, public std::enable_shared_from_this<http_session> {
 public:
  /// A freshly accepted connection. `overloaded`: past max_connections, so its first request is
  /// answered 503 and the connection closed. `tls`: the socket is the inner end of a tls_tunnel
  /// (answers carry HSTS); `peer`: the client's address when the socket cannot tell it.
  http_session(tcp::socket&& socket, std::shared_ptr<server_state> state, connection_slot slot,
               bool overloaded, bool tls = false, std::string peer = {});
  /// A connection coming back from an SSE subscribe that the node refused (see run_with).
  http_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer,
               std::shared_ptr<server_state> state, connection_slot slot, std::string peer,
               bool tls = false);
  ~http_session();

  /// Any thread: starts reading on the session's executor.
  void run();
  /// Session thread: answers `res` to the request that was read before the handover, then goes
  /// on with keep-alive requests (or closes, per `keep_alive`).
  void run_with(response&& res, unsigned version, bool keep_alive, cors_match cors = cors_none);
  /// Any thread (see stoppable).
  void stop(bool force) override;

  /// The client's address, "ip:port".
  const std::string& peer() const noexcept { return peer_; }

  /// Session thread: the answer to the current request (ignored if there is none).
  void reply(response&& res);
  /// Session thread: hands the connection over to an SSE session for the current request.
  void start_stream(stream_request&& req);
  /// Session thread: hands the connection over to a WebSocket session (the upgrade was checked).
  void start_websocket(ws_request&& req);

  /// Any thread: runs reply(make()) on the session's thread. Holds the session strongly until
  /// then. Dropped once the server has halted (its Asio threads no longer run).
  template <class MakeResponse>
  void post_reply(MakeResponse&& make) {
    if (state_->halted()) return;
    asio::post(executor_,
               [self = shared_from_this(), make = std::forward<MakeResponse>(make)]() mutable {
                 self->reply(make());
               });
  }

  const asio::any_io_executor& executor() const noexcept { return executor_; }
  /// Session thread: the connection's last verified token (api::token_claims).
  token_cache& tokens() noexcept { return tokens_; }

 private:
  void start();
  void do_read();
  void on_first_bytes(beast::error_code ec, std::size_t n);
  void do_read_header();
  void on_read_header(beast::error_code ec, std::size_t n);
  void do_read_body();
  void on_read_body(beast::error_code ec, std::size_t n);
  void on_read_error(beast::error_code ec);
  void on_request();
  void answer_and_close(response&& res);
  void send(response&& res);
  void on_write(beast::error_code ec, std::size_t n);
  /// Pipelining: whether `res` may wait in pending_ while the next request, already buffered,
  /// is handled (see reply()).
  bool may_defer(const response& res) const;
  enum class parsed { complete, need_more, failed };
  /// With answers pending: parses the next request from what is buffered, without reading.
  parsed parse_buffered();
  /// Writes pending_ (one write for every answer in it), then runs `next`.
  template <class Next>
  void flush(Next next);
  void shutdown_gracefully();
  void do_linger();
  void close_now();
  /// Counts (and logs, at most once a minute) a request refused for its Origin.
  void refuse_origin(const char* what);
  void fail(beast::error_code ec, const char* what);
  /// The client's address without the port (the offender of a per-address refusal).
  std::string peer_ip() const;

  std::shared_ptr<server_state> state_;
  beast::tcp_stream stream_;
  asio::any_io_executor executor_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<response> res_;  // the answer being written (alive until the write completes)
  // Answers to pipelined requests not written yet, serialized in order: written together before
  // the session waits for the socket, hands it over, or answers with a close.
  std::string pending_;
  std::size_t pending_answers_ = 0;
  connection_slot slot_;
  std::string peer_;
  std::array<char, 1024> discard_{};  // lingering close: what the client still sends is dropped
  // The request head must be complete by then: set at accept for the first request and at its
  // first byte for the next ones, never moved by the bytes that follow (a trickler cannot extend
  // it). The body then has limits.body_timeout_s from the end of the head.
  std::chrono::steady_clock::time_point header_deadline_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool overloaded_ = false;
  bool first_request_ = true;
  bool reading_body_ = false;  // the current read deadline is the body's
  bool busy_ = false;          // a request was read and is not answered yet
  bool stopping_ = false;      // server stop: close after the current answer
  bool closed_ = false;
  bool handed_off_ = false;      // the socket now belongs to an sse_session or a ws_session
  bool tls_ = false;             // behind a tls_tunnel: answers carry HSTS
  cors_match cors_ = cors_none;  // the current request's Origin against http.cors_origins
  token_cache tokens_;           // the last bearer token verified on this connection
};

}  // namespace relay::net
