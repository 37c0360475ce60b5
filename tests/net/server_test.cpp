// The server over loopback with a real node: the parts of the contract that belong to net/
// (status codes, SSE framing and closing, resume, keep-alive after a refused stream, limits,
// slow consumers, graceful stop). The full black-box suite lives with the integration tests.

#include "net/server.hpp"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "actors/node.hpp"
#include "protocols/jwt.hpp"

namespace relay {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr const char* secret = "net-test-secret";

std::string token(const std::string& sub, role who) {
  claims c;
  c.sub = sub;
  c.who = who;
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  c.exp = now + 600;
  return sign_hs256(c, secret, now);
}

// A blocking-style client over async operations, each bounded by a deadline.
class client {
 public:
  explicit client(uint16_t port, int rcvbuf = 0) : stream_(ioc_) {
    if (rcvbuf > 0) {
      stream_.socket().open(tcp::v4());
      stream_.socket().set_option(asio::socket_base::receive_buffer_size(rcvbuf));
    }
    stream_.socket().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  }

  void send(std::string_view raw) {
    run([&](auto done) { asio::async_write(stream_, asio::buffer(raw), done); });
  }

  void send(http::request<http::string_body> req) {
    req.prepare_payload();
    run([&](auto done) { http::async_write(stream_, req, done); });
  }

  /// One response, or nullopt on a closed connection / timeout.
  std::optional<http::response<http::string_body>> read_response(
      std::chrono::steady_clock::duration timeout = 5s) {
    http::response<http::string_body> res;
    auto ec = run([&](auto done) { http::async_read(stream_, buffer_, res, done); }, timeout);
    if (ec) return std::nullopt;
    return res;
  }

  /// Raw bytes until the server closes (or the timeout passes: `closed` says which).
  std::string read_to_eof(bool& closed, std::chrono::steady_clock::duration timeout = 5s) {
    std::string out{static_cast<const char*>(buffer_.data().data()), buffer_.size()};
    buffer_.consume(buffer_.size());
    const auto until = std::chrono::steady_clock::now() + timeout;
    std::array<char, 65536> chunk;
    closed = false;
    while (std::chrono::steady_clock::now() < until) {
      std::size_t n = 0;
      auto ec = run(
          [&](auto done) {
            stream_.async_read_some(asio::buffer(chunk),
                                    [&n, done](beast::error_code e, std::size_t k) mutable {
                                      n = k;
                                      done(e, k);
                                    });
          },
          until - std::chrono::steady_clock::now());
      out.append(chunk.data(), n);
      if (ec) {
        closed = ec != beast::error::timeout;
        break;
      }
    }
    return out;
  }

  tcp::socket& socket() { return stream_.socket(); }

 private:
  template <class Start>
  beast::error_code run(Start start, std::chrono::steady_clock::duration timeout = 5s) {
    beast::error_code result;
    stream_.expires_after(timeout);
    start([&result](beast::error_code ec, std::size_t) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

http::request<http::string_body> get(std::string target, const std::string& tok = {}) {
  http::request<http::string_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "test");
  if (!tok.empty()) req.set(http::field::authorization, "Bearer " + tok);
  return req;
}

http::request<http::string_body> post(std::string target, std::string body,
                                      const std::string& tok) {
  auto req = get(std::move(target), tok);
  req.method(http::verb::post);
  req.body() = std::move(body);
  return req;
}

std::vector<uint64_t> sse_ids(const std::string& stream) {
  std::vector<uint64_t> ids;
  static const std::regex id_line{"(^|\n)id: ([0-9]+)\n"};
  for (auto it = std::sregex_iterator(stream.begin(), stream.end(), id_line);
       it != std::sregex_iterator(); ++it)
    ids.push_back(std::stoull((*it)[2]));
  return ids;
}

class server_test : public ::testing::Test {
 protected:
  void start(server_settings s = {}, node_settings n = {}) {
    s.host = "127.0.0.1";
    s.port = 0;        // ephemeral: tests may run in parallel
    s.io_threads = 2;  // sessions spread over two contexts
    s.jwt_secret = secret;
    // In-process server tests keep events in memory; storage has its own tests (and the Node
    // integration tests run the binary with its default, SQLite).
    n.storage.mode = durability::none;
    node_ = std::make_unique<node>(n);
    server_ = std::make_unique<server>(s, *node_);
    server_->start();
    port_ = server_->bound_port();
  }

  void TearDown() override {
    if (server_) server_->stop();
    if (node_) node_->stop();
  }

  /// Creates a run as `tok` and answers its id.
  std::string create_run(const std::string& body, const std::string& tok) {
    client c{port_};
    c.send(post("/v1/runs", body, tok));
    auto res = c.read_response();
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->result_int(), 201u) << res->body();
    return std::string{boost::json::parse(res->body()).at("id").as_string()};
  }

  double metric(const std::string& name) {
    client c{port_};
    c.send(get("/metrics"));
    auto res = c.read_response();
    if (!res) return -1;
    std::smatch m;
    std::regex line{"(^|\n)" + name + " ([0-9.e+]+)\n"};
    const std::string body = res->body();
    if (!std::regex_search(body, m, line)) return -1;
    return std::stod(m[2]);
  }

  std::unique_ptr<node> node_;
  std::unique_ptr<server> server_;
  uint16_t port_ = 0;
  const std::string alice_ = token("alice", role::user);
};

TEST_F(server_test, health_needs_no_token_and_v1_does) {
  start();
  client c{port_};
  c.send(get("/health"));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200u);
  EXPECT_EQ((*res)[http::field::content_type], "application/json");
  auto body = boost::json::parse(res->body()).as_object();
  EXPECT_EQ(body.at("status"), "ok");
  EXPECT_EQ(body.at("storage"), "ok");
  EXPECT_TRUE(body.at("uptime_s").is_int64());

  c.send(get("/v1/runs"));  // same connection: keep-alive
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 401u);
  EXPECT_EQ((*res)[http::field::www_authenticate], "Bearer");
  EXPECT_EQ(boost::json::parse(res->body()).at("error").at("code"), "unauthorized");

  c.send(get("/v1/runs", "not.a.jwt"));
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 401u);
}

TEST_F(server_test, method_not_allowed_names_the_allowed_methods) {
  start();
  client c{port_};
  auto req = get("/v1/runs", alice_);
  req.method(http::verb::delete_);
  c.send(req);
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 405u);
  EXPECT_EQ((*res)[http::field::allow], "GET, POST");
}

TEST_F(server_test, synthetic_run_streams_in_order_and_closes_after_the_terminal_event) {
  start();
  auto id =
      create_run(R"({"kind":"synthetic","input":{"count":50,"size":16,"interval_ms":0}})", alice_);
  client c{port_};
  c.send(get("/v1/runs/" + id + "/events", alice_));
  bool closed = false;
  auto stream = c.read_to_eof(closed);
  EXPECT_TRUE(closed) << "the stream must close after the terminal event";
  EXPECT_EQ(stream.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_NE(stream.find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_NE(stream.find("Cache-Control: no-cache\r\n"), std::string::npos);
  EXPECT_EQ(stream.find("Content-Length"), std::string::npos);
  EXPECT_NE(stream.find("\r\n\r\nretry: 2000\n\n"), std::string::npos);
  auto ids = sse_ids(stream);
  ASSERT_EQ(ids.size(), 51u);  // 50 deltas + complete
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i + 1);
  EXPECT_NE(stream.find("event: complete\n"), std::string::npos);
}

TEST_F(server_test, resumes_from_last_event_id_then_from_after) {
  start();
  auto id =
      create_run(R"({"kind":"synthetic","input":{"count":20,"size":4,"interval_ms":0}})", alice_);
  {
    client c{port_};
    auto req = get("/v1/runs/" + id + "/events", alice_);
    req.set("Last-Event-ID", "15");
    c.send(req);
    bool closed = false;
    auto ids = sse_ids(c.read_to_eof(closed));
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 16u);
    EXPECT_EQ(ids.back(), 21u);
  }
  {
    client c{port_};
    c.send(get("/v1/runs/" + id + "/events?after=19&access_token=" + alice_));
    bool closed = false;
    auto ids = sse_ids(c.read_to_eof(closed));
    EXPECT_EQ(ids, (std::vector<uint64_t>{20, 21}));
  }
  {
    client c{port_};
    c.send(get("/v1/runs/" + id + "/events?after=x", alice_));
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 400u);
  }
}

TEST_F(server_test, a_refused_stream_answers_http_and_keeps_the_connection) {
  start();
  client c{port_};
  c.send(get("/v1/runs/AAAAAAAAAAAAAAAAAAAAAA/events", alice_));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 404u);
  EXPECT_EQ(boost::json::parse(res->body()).at("error").at("code"), "not_found");
  c.send(get("/health"));
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200u);
}

TEST_F(server_test, external_run_append_and_complete_reach_the_stream) {
  start();
  auto id = create_run(R"({"kind":"external"})", alice_);
  client s{port_};
  s.send(get("/v1/runs/" + id + "/events", alice_));
  const auto svc = token("worker", role::service);
  client c{port_};
  c.send(post("/v1/runs/" + id + "/events",
              R"([{"type":"delta","data":1},{"type":"delta","data":2}])", svc));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 202u) << res->body();
  EXPECT_EQ(res->body(), R"({"last_seq":2})");
  c.send(post("/v1/runs/" + id + "/complete", R"({"data":{"ok":true}})", svc));
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200u);
  EXPECT_EQ(boost::json::parse(res->body()).at("status"), "completed");
  bool closed = false;
  auto ids = sse_ids(s.read_to_eof(closed));
  EXPECT_TRUE(closed);
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(server_test, a_user_may_not_create_runs_for_others) {
  start();
  client c{port_};
  c.send(post("/v1/runs", R"({"kind":"external","owner":"bob"})", alice_));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 403u);
}

TEST_F(server_test, oversized_and_malformed_requests_are_answered_then_closed) {
  server_settings s;
  s.body_limit = 1024;
  start(s);
  {
    client c{port_};
    c.send(post("/v1/runs", std::string(4096, 'x'), alice_));
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 413u);
    EXPECT_FALSE(res->keep_alive());
  }
  {
    client c{port_};
    c.send("NOT HTTP AT ALL\r\n\r\n");
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 400u);
    bool closed = false;
    c.read_to_eof(closed, 3s);
    EXPECT_TRUE(closed);
  }
}

TEST_F(server_test, past_max_connections_new_ones_get_503) {
  server_settings s;
  s.max_connections = 1;
  start(s);
  client first{port_};
  first.send(get("/health"));
  ASSERT_TRUE(first.read_response());
  client second{port_};
  second.send(get("/health"));
  auto res = second.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 503u);
}

TEST_F(server_test, a_client_that_does_not_read_is_closed_as_a_slow_consumer) {
  server_settings s;
  s.sse_outbound_limit = 256 * 1024;
  start(s);
  auto id = create_run(
      R"({"kind":"synthetic","input":{"count":100000,"size":2000,"interval_ms":0}})", alice_);
  client c{port_, 4096};
  c.send(get("/v1/runs/" + id + "/events", alice_));
  // Never read; wait (bounded) for the server to count the drop.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (metric("relay_slow_consumer_drops_total") < 1 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(metric("relay_slow_consumer_drops_total"), 1);
  EXPECT_EQ(metric("relay_sse_sessions"), 0);
}

TEST_F(server_test, batching_moves_many_frames_per_write) {
  node_settings n;
  n.ring_capacity = 10000;  // the flood may finish before the client subscribes: replay it all
  start({}, n);
  auto id = create_run(R"({"kind":"synthetic","input":{"count":5000,"size":32,"interval_ms":0}})",
                       alice_);
  const double writes_before = metric("relay_writes_total");
  client c{port_};
  c.send(get("/v1/runs/" + id + "/events", alice_));
  bool closed = false;
  auto ids = sse_ids(c.read_to_eof(closed, 20s));
  ASSERT_TRUE(closed);
  ASSERT_EQ(ids.size(), 5001u);
  const double frames = metric("relay_frames_out_total");
  const double writes = metric("relay_writes_total") - writes_before;
  EXPECT_EQ(frames, 5001);
  // The run floods faster than one frame per write could keep up with: writes carry batches.
  EXPECT_LT(writes, frames / 4) << "writes=" << writes;
}

TEST_F(server_test, stop_flushes_and_closes_live_streams) {
  start();
  auto id = create_run(R"({"kind":"external"})", alice_);
  client s{port_};
  s.send(get("/v1/runs/" + id + "/events", alice_));
  // Wait until the stream is established.
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (metric("relay_sse_sessions") < 1 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(metric("relay_sse_sessions"), 1);
  const auto t0 = std::chrono::steady_clock::now();
  std::thread stopper{[this] { server_->stop(); }};
  bool closed = false;
  auto bytes = s.read_to_eof(closed, 5s);
  stopper.join();
  EXPECT_TRUE(closed);
  EXPECT_NE(bytes.find("retry: 2000"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

}  // namespace
}  // namespace relay
