#include "net/http_session.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>

#include "net/sse_session.hpp"
#include "net/ws_session.hpp"

namespace relay::net {

namespace {

std::string peer_of(const tcp::socket& socket) {
  beast::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// How long a closing connection may keep sending what it had in flight before we close.
constexpr std::chrono::seconds linger_timeout{2};
// Bytes read at once while waiting for the first byte of a request.
constexpr std::size_t first_read_size = 4096;
// Pipelined requests: at most this many answers, or bytes of answers, wait to share one write.
constexpr std::size_t max_pending_answers = 32;
constexpr std::size_t max_pending_bytes = 64 * 1024;

/// Appends the HTTP/1.1 serialization of `res` to `out`.
void serialize_into(std::string& out, response& res) {
  http::serializer<false, http::string_body> sr{res};
  beast::error_code ec;
  do {
    sr.next(ec, [&](beast::error_code&, const auto& buffers) {
      std::size_t n = 0;
      for (const auto b : beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(b.data()), b.size());
        n += b.size();
      }
      sr.consume(n);
    });
  } while (!ec && !sr.is_done());
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() ==
         beast::http::make_error_code(beast::http::error::end_of_stream).category();
}

}  // namespace

http_session::http_session(tcp::socket&& socket, std::shared_ptr<server_state> state,
                           connection_slot slot, bool overloaded, bool tls, std::string peer)
    : state_(std::move(state)),
      stream_(std::move(socket)),
      executor_(stream_.get_executor()),
      slot_(std::move(slot)),
      peer_(peer.empty() ? peer_of(stream_.socket()) : std::move(peer)),
      overloaded_(overloaded),
      tls_(tls) {}

http_session::http_session(beast::tcp_stream&& stream, beast::flat_buffer&& buffer,
                           std::shared_ptr<server_state> state, connection_slot slot,
                           std::string peer, bool tls)
    : state_(std::move(state)),
      stream_(std::move(stream)),
      executor_(stream_.get_executor()),
      buffer_(std::move(buffer)),
      slot_(std::move(slot)),
      peer_(std::move(peer)),
      first_request_(false),
      tls_(tls) {}

http_session::~http_session() { state_->sessions().remove(this); }

void http_session::run() {
  // The acceptor runs on another thread: start on the socket's own context.
  asio::dispatch(executor_, beast::bind_front_handler(&http_session::start, shared_from_this()));
}

void http_session::start() {
  if (!state_->sessions().add(this, weak_from_this()))
    return close_now();  // the server is stopping
  header_deadline_ =
      std::chrono::steady_clock::now() + std::chrono::seconds(state_->settings().header_timeout_s);
  do_read();
}

void http_session::run_with(response&& res, unsigned version, bool keep_alive, cors_match cors) {
  if (!state_->sessions().add(this, weak_from_this())) stopping_ = true;
  busy_ = true;
  cors_ = cors;
  version_ = version;
  keep_alive_ = keep_alive;
  reply(std::move(res));
}

void http_session::stop(bool force) {
  asio::post(executor_, [self = shared_from_this(), force] {
    if (self->closed_ || self->handed_off_) return;
    self->stopping_ = true;
    // Idle (waiting for a request): close now. Answering: the answer goes out with
    // `Connection: close` and the session ends after it.
    if (force || !self->busy_) self->close_now();
  });
}

// Reading a request: the wait for its first byte is bounded by the idle timeout (keep-alive); the
// head by header_deadline_ (from accept on a new connection, from the first byte on a kept-alive
// one), which later bytes never move, so a client trickling a header cannot hold the connection;
// the body by limits.body_timeout_s from the end of the head.
void http_session::do_read() {
  if (stopping_) {
    if (!pending_.empty())
      return flush([self = shared_from_this()] { self->shutdown_gracefully(); });
    return shutdown_gracefully();
  }
  parser_.emplace();
  cors_ = cors_none;  // an answer to a malformed request gets no CORS headers
  parser_->header_limit(static_cast<std::uint32_t>(state_->settings().header_limit));
  parser_->body_limit(state_->settings().body_limit);
  reading_body_ = false;
  if (buffer_.size() > 0) {
    // A pipelined request is already here: its head starts now.
    if (!first_request_)
      header_deadline_ = std::chrono::steady_clock::now() +
                         std::chrono::seconds(state_->settings().header_timeout_s);
    if (!pending_.empty()) {
      // Answers are waiting: handle the next request from the buffer if it is all there;
      // before waiting for the socket, the answers go out (the client may wait for them). So
      // the reads below never start with answers pending (nor does a 100 Continue go first).
      switch (parse_buffered()) {
        case parsed::complete:
          return on_request();
        case parsed::failed:
          return;
        case parsed::need_more:
          return flush([self = shared_from_this()] { self->do_read_header(); });
      }
    }
    return do_read_header();
  }
  if (!pending_.empty()) return flush([self = shared_from_this()] { self->do_read(); });
  const auto& s = state_->settings();
  if (first_request_)
    stream_.expires_at(header_deadline_);
  else
    stream_.expires_after(std::chrono::seconds(s.idle_timeout_s));
  stream_.async_read_some(
      buffer_.prepare(first_read_size),
      beast::bind_front_handler(&http_session::on_first_bytes, shared_from_this()));
}

void http_session::on_first_bytes(beast::error_code ec, std::size_t n) {
  if (ec) {
    // A new connection that sent nothing within the header timeout is a (mute) slowloris; a
    // kept-alive one that stays idle simply ends.
    if (ec == beast::error::timeout && first_request_)
      state_->refusals().refuse(refusal::header_timeout, peer_ip(), "sent nothing");
    fail(ec, "read");
    return close_now();
  }
  buffer_.commit(n);
  if (!first_request_)
    header_deadline_ = std::chrono::steady_clock::now() +
                       std::chrono::seconds(state_->settings().header_timeout_s);
  do_read_header();
}

http_session::parsed http_session::parse_buffered() {
  parser_->eager(true);
  for (;;) {
    beast::error_code ec;
    const auto used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (ec == http::error::need_more) return parsed::need_more;
    if (ec) {
      on_read_error(ec);
      return parsed::failed;
    }
    if (parser_->is_done()) return parsed::complete;
    if (used == 0 || buffer_.size() == 0) return parsed::need_more;
  }
}

template <class Next>
void http_session::flush(Next next) {
  busy_ = true;  // a graceful stop() waits for the write
  stream_.expires_after(std::chrono::seconds(state_->settings().idle_timeout_s));
  pending_answers_ = 0;
  asio::async_write(stream_, asio::buffer(pending_),
                    [self = shared_from_this(), next = std::move(next)](beast::error_code ec,
                                                                        std::size_t n) mutable {
                      self->busy_ = false;
                      self->pending_.clear();
                      auto& c = self->state_->counters();
                      c.writes.fetch_add(1, std::memory_order_relaxed);
                      c.bytes_out.fetch_add(n, std::memory_order_relaxed);
                      if (ec) {
                        self->fail(ec, "write");
                        return self->close_now();
                      }
                      next();
                    });
}

void http_session::do_read_header() {
  stream_.expires_at(header_deadline_);
  beast::http::async_read_header(
      stream_, buffer_, *parser_,
      beast::bind_front_handler(&http_session::on_read_header, shared_from_this()));
}

void http_session::on_read_header(beast::error_code ec, std::size_t) {
  if (ec) return on_read_error(ec);
  if (parser_->is_done()) return on_request();
  reading_body_ = true;
  stream_.expires_after(std::chrono::seconds(state_->settings().body_timeout_s));
  const auto& req = parser_->get();
  if (req.version() >= 11 && beast::iequals(req[http::field::expect], "100-continue")) {
    // curl and others wait for this before sending a large body.
    static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
    return asio::async_write(
        stream_, asio::buffer(interim.data(), interim.size()),
        [self = shared_from_this()](beast::error_code ec, std::size_t n) {
          self->state_->counters().writes.fetch_add(1, std::memory_order_relaxed);
          self->state_->counters().bytes_out.fetch_add(n, std::memory_order_relaxed);
          if (ec) {
            self->fail(ec, "write");
            return self->close_now();
          }
          self->do_read_body();
        });
  }
  do_read_body();
}

void http_session::do_read_body() {
  beast::http::async_read(
      stream_, buffer_, *parser_,
      beast::bind_front_handler(&http_session::on_read_body, shared_from_this()));
}

void http_session::on_read_body(beast::error_code ec, std::size_t) {
  if (ec) return on_read_error(ec);
  on_request();
}

void http_session::on_read_error(beast::error_code ec) {
  namespace he = beast::http;
  if (ec == he::error::end_of_stream || ec == he::error::partial_message)
    return close_now();  // the client closed (maybe mid-request): nobody to answer
  if (ec == beast::error::timeout) {
    // Nobody to answer in time: a client this slow is closed (and counted, as an attack may be).
    state_->refusals().refuse(reading_body_ ? refusal::body_timeout : refusal::header_timeout,
                              peer_ip());
    return close_now();
  }
  if (ec == he::error::body_limit || ec == he::error::buffer_overflow) {
    state_->refusals().refuse(refusal::body_too_large, peer_ip());
    return answer_and_close(error_response(errc::too_large, "request body too large"));
  }
  if (ec == he::error::header_limit) {
    state_->refusals().refuse(refusal::header_too_large, peer_ip());
    return answer_and_close(error_response(errc::too_large, "request header too large"));
  }
  if (is_http_error(ec))
    return answer_and_close(error_response(errc::bad_request, "malformed HTTP request"));
  fail(ec, "read");
  close_now();
}

void http_session::on_request() {
  state_->counters().http_requests.fetch_add(1, std::memory_order_relaxed);
  busy_ = true;
  first_request_ = false;
  // No deadline while the node works on the answer; send() sets the write deadline.
  stream_.expires_never();
  request req = parser_->release();
  version_ = req.version();
  keep_alive_ = req.keep_alive();
  if (overloaded_) return reply(error_response(errc::unavailable, "too many connections"));
  const auto& browser = state_->browser();
  cors_ = browser.match(req);
  if (auto res = browser.preflight(req, cors_)) {
    if (cors_ == cors_refused) refuse_origin("preflight");
    return reply(std::move(*res));
  }
  // Nothing may follow this call: the answer can already be in flight when it returns.
  api{*state_}.handle(std::move(req), shared_from_this());
}

void http_session::answer_and_close(response&& res) {
  state_->counters().http_requests.fetch_add(1, std::memory_order_relaxed);
  busy_ = true;
  keep_alive_ = false;
  if (parser_ && parser_->got_some()) version_ = parser_->get().version() == 10 ? 10 : 11;
  reply(std::move(res));
}

void http_session::reply(response&& res) {
  if (!busy_ || closed_ || handed_off_)
    return;  // one answer per request; the connection may have gone meanwhile
  // Every HTTP answer passes here (JSON, errors, 404s, metrics, refused streams): the one
  // place that adds the security and CORS headers.
  state_->browser().apply(res, cors_, tls_);
  finalize(res, version_, keep_alive_ && !stopping_ && !overloaded_);
  if (may_defer(res)) {
    // The next request is already buffered: this answer waits to share a write with the next
    // ones (in order), instead of a write per answer.
    serialize_into(pending_, res);
    ++pending_answers_;
    busy_ = false;
    return do_read();
  }
  send(std::move(res));
}

bool http_session::may_defer(const response& res) const {
  return buffer_.size() > 0 && !res.need_eof() && !stopping_ &&
         pending_answers_ + 1 < max_pending_answers &&
         pending_.size() + res.body().size() < max_pending_bytes;
}

void http_session::send(response&& res) {
  if (!pending_.empty()) {
    // After pipelined answers: all of them and this one in one write.
    const bool close = res.need_eof();
    serialize_into(pending_, res);
    return flush([self = shared_from_this(), close] {
      if (close) return self->shutdown_gracefully();
      self->do_read();
    });
  }
  res_.emplace(std::move(res));
  stream_.expires_after(std::chrono::seconds(state_->settings().idle_timeout_s));
  beast::http::async_write(stream_, *res_,
                           beast::bind_front_handler(&http_session::on_write, shared_from_this()));
}

void http_session::on_write(beast::error_code ec, std::size_t n) {
  busy_ = false;
  auto& c = state_->counters();
  c.writes.fetch_add(1, std::memory_order_relaxed);
  c.bytes_out.fetch_add(n, std::memory_order_relaxed);
  if (ec) {
    fail(ec, "write");
    return close_now();
  }
  const bool close = res_->need_eof();
  res_.reset();
  if (close) return shutdown_gracefully();
  do_read();
}

void http_session::start_stream(stream_request&& req) {
  if (!busy_ || closed_ || handed_off_) return;
  if (stopping_) return reply(error_response(errc::unavailable, "server is stopping"));
  if (!pending_.empty()) {
    // Answers to the requests before this one go first; the stream's head follows them.
    return flush([self = shared_from_this(), req = std::move(req)]() mutable {
      self->busy_ = true;
      self->start_stream(std::move(req));
    });
  }
  busy_ = false;
  handed_off_ = true;
  stream_.expires_never();
  req.cors = cors_;
  req.tls = tls_;
  auto s = std::make_shared<sse_session>(std::move(stream_), std::move(buffer_), std::move(slot_),
                                         state_, std::move(req), std::move(peer_));
  s->run();
}

void http_session::start_websocket(ws_request&& req) {
  if (!busy_ || closed_ || handed_off_) return;
  if (stopping_) return reply(error_response(errc::unavailable, "server is stopping"));
  // Browsers send Origin on every WebSocket and no preflight: with an allow-list set, a page of
  // another origin may not open one (clients that send no Origin, i.e. not browsers, may).
  if (cors_ == cors_refused) {
    refuse_origin("websocket");
    return reply(error_response(errc::forbidden, "origin not allowed"));
  }
  if (!pending_.empty()) {
    return flush([self = shared_from_this(), req = std::move(req)]() mutable {
      self->busy_ = true;
      self->start_websocket(std::move(req));
    });
  }
  busy_ = false;
  handed_off_ = true;
  stream_.expires_never();
  auto s = std::make_shared<ws_session>(std::move(stream_), std::move(buffer_), std::move(slot_),
                                        state_, std::move(req), std::move(peer_));
  s->run();
}

// Closing after an answer: shut down our side, then read (and drop) what the client still sends
// until it closes or linger_timeout passes. Closing at once could make the kernel reset the
// connection and discard the answer before the client reads it.
void http_session::shutdown_gracefully() {
  if (closed_) return;
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return close_now();
  stream_.expires_after(linger_timeout);
  do_linger();
}

void http_session::do_linger() {
  stream_.async_read_some(asio::buffer(discard_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (ec) return self->close_now();
                            self->do_linger();
                          });
}

void http_session::close_now() {
  if (closed_ || handed_off_) return;
  closed_ = true;
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
}

void http_session::refuse_origin(const char* what) {
  state_->counters().cors_refusals.fetch_add(1, std::memory_order_relaxed);
  // At most one line a minute for all refusals: a hostile page must not fill the log.
  static std::atomic<int64_t> last_log_s{0};
  if (once_a_minute(last_log_s))
    spdlog::info(
        "cors refused {} peer={} (logged at most once a minute; see "
        "relay_cors_refusals_total)",
        what, peer_);
}

std::string http_session::peer_ip() const {
  const auto colon = peer_.rfind(':');
  return colon == std::string::npos ? peer_ : peer_.substr(0, colon);
}

void http_session::fail(beast::error_code ec, const char* what) {
  if (expected_disconnect(ec) || ec == beast::http::error::end_of_stream ||
      ec == beast::error::timeout)
    return;
  spdlog::debug("http {} peer={} error={}", what, peer_, ec.message());
}

}  // namespace relay::net
